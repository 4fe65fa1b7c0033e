"""The environment record (engine.environment) and determinism of training (issue 25)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crapnet_core.engine.environment import (
    KERNEL_FLAGS,
    NUMERIC_PACKAGES,
    cpu_info,
    describe,
    deterministic,
    differences,
    environment,
    provenance_environment,
    read_run_environment,
    write_run_environment,
)
from crapnet_core.engine.experiment import make_config
from crapnet_core.engine.training import train

REPO = Path(__file__).resolve().parents[1]


def _smoke(*overrides: str):
    return make_config("smoke", "phantom", 1, 0, "crapnet", ["train.device=cpu", *overrides])


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["model"]


def test_environment_records_packages_cpu_threads_and_device():
    env = environment()
    assert set(env["packages"]) == set(NUMERIC_PACKAGES)
    assert env["packages"]["torch"] == torch.__version__
    import numpy
    import scipy

    assert env["packages"]["numpy"] == numpy.__version__ and env["packages"]["scipy"] == scipy.__version__
    assert env["python"].count(".") == 2
    assert env["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").is_file():
        assert set(env["cpu"]["flags"]) <= set(KERNEL_FLAGS) and env["cpu"]["model"]
    assert env["threads"]["torch_intra_op"] == torch.get_num_threads()
    assert env["threads"]["torch_inter_op"] == torch.get_num_interop_threads()
    assert env["device"] == {"type": "cpu"}
    assert env["torch_build"]["onednn"] and env["torch_build"]["parallel_backend"]
    json.dumps(env)  # JSON-able
    assert "CPU" in describe(env) and "torch " + torch.__version__ in describe(env)


def test_cpu_info_reads_the_kernel_flags(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nstepping\t: 1\n"
        "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma f16c lahf_lm\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: avx512f\n"
    )
    info = cpu_info(fake)
    assert info["model"] == "AMD EPYC 7B13" and info["vendor"] == "AuthenticAMD"
    assert info["family_model_stepping"] == "25/1/1"
    assert info["flags"] == ["sse4_2", "avx", "avx2", "fma", "f16c"]  # first processor only, kernel flags only
    assert cpu_info(tmp_path / "absent")["flags"] is None


def test_differences_name_what_can_change_a_number():
    a = environment()
    a["cpu"]["flags"] = ["avx", "avx2"]
    b = json.loads(json.dumps(a))
    assert differences(a, b) == []
    b["packages"]["scipy"] = "0.0.1"
    b["cpu"]["flags"] = ["avx", "amx_tile"]
    b["cpu"]["logical_cores"] = 999  # not a numeric difference
    out = differences(a, b)
    assert any(d.startswith("packages.scipy: ") and d.endswith("-> 0.0.1") for d in out)
    assert "cpu.flags: -avx2, +amx_tile" in out
    assert not any("logical_cores" in d for d in out)
    assert any("logical_cores" in d for d in differences(a, b, all_keys=True))
    assert differences(None, a) == ["environment: not recorded (first)"]


def test_run_environment_keeps_the_first_start_and_lists_resumes(tmp_path):
    first = write_run_environment(tmp_path)
    assert read_run_environment(tmp_path) == first and "resumes" not in first
    again = write_run_environment(tmp_path, step=4)
    assert again["resumes"][0]["step"] == 4 and again["resumes"][0]["differences"] == []
    assert {k: v for k, v in again.items() if k != "resumes"} == first
    assert read_run_environment(tmp_path / "nothing") is None
    prov = provenance_environment([tmp_path])
    assert prov["source"] == "training" and "resumes" not in prov
    assert provenance_environment([tmp_path / "nothing"])["source"] == "collection"


def test_deterministic_switch_is_restored():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic("cpu"):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before
    with deterministic("cpu", enabled=False):
        assert not torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_the_deterministic_switch_leaves_the_weights_unchanged(tmp_path):
    """CPU ops used by training have deterministic kernels: the switch changes no bit (so
    runs trained before it existed stay valid), and it stays out of the config hash."""
    on, off = _smoke("train.deterministic=true"), _smoke("train.deterministic=false")
    assert on.config_hash() == off.config_hash()
    a = _weights(train(on, tmp_path / "on", progress=False))
    b = _weights(train(off, tmp_path / "off", progress=False))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_run_environment(tmp_path / "on")["deterministic"] is True
    assert read_run_environment(tmp_path / "off")["deterministic"] is False


def test_two_runs_of_one_smoke_config_give_bitwise_identical_weights(tmp_path):
    """One run in this process, one in a fresh interpreter (`crapnet train`): same bits."""
    cfg = _smoke()
    a = _weights(train(cfg, tmp_path / "here", progress=False))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "crapnet_core.cli",
            "train",
            "--profile",
            "smoke",
            "--dataset",
            "phantom",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "there"),
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    b = _weights(tmp_path / "there" / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    recorded = read_run_environment(tmp_path / "there")
    assert recorded["deterministic"] is True and recorded["threads"]["torch_intra_op"] == cfg.train.threads
    assert differences(read_run_environment(tmp_path / "here"), recorded) == []


@pytest.mark.parametrize("device", ["cpu"])
def test_metrics_record_the_training_and_evaluation_environment(tmp_path, device):
    from crapnet_core.engine.evaluation import evaluate

    train(_smoke(), tmp_path / "run", progress=False)
    m = evaluate(tmp_path / "run", progress=False, save_predictions=False, device=device)
    assert m["environment"]["train"] == read_run_environment(tmp_path / "run")
    assert m["environment"]["evaluate"]["device"]["type"] == device
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["environment"]["evaluate"]["packages"] == m["environment"]["evaluate"]["packages"]


def test_this_build_page_shows_the_environment_and_the_rerun_spread():
    from crapnet_core.book.build import environment_md

    env = environment()
    md = "\n".join(
        environment_md(
            env,
            {
                "machine": "2-core CPU (X)",
                "spread": {
                    "n": 2,
                    "identical": 1,
                    "mean_difference": -0.02,
                    "mean_abs_difference": 0.02,
                    "max_abs_difference": 0.0386,
                    "sd_difference": 0.01,
                },
            },
        )
    )
    assert f"| torch | {torch.__version__} |" in md and f"| scipy | {env['packages']['scipy']} |" in md
    assert env["cpu"]["torch_capability"] in md and "intra-op" in md
    assert "moved by 2.00 points on average (largest 3.86)" in md and "1 of 2" in md
    assert "Not recorded." in "\n".join(environment_md(None))


def test_the_interim_runners_flat_record_compares_on_its_fields():
    """The first converged-study runs recorded a flat environment (cpu_model, cpu_flags, ...)."""
    import monai  # noqa: F401  (sets CUBLAS_WORKSPACE_CONFIG, as in a training process)

    from crapnet_core.engine.environment import normalise

    env = environment()
    flat = {
        "python": env["python"],
        "packages": dict(env["packages"]),
        "cpu_model": env["cpu"]["model"],
        "cpu_flags": sorted(set(env["cpu"]["flags"] or []) - {"f16c"} | {"sse4_1"}),
        "torch_cpu_capability": env["cpu"]["torch_capability"],
        "cpu_count": 2,
        "torch_threads": env["threads"]["torch_intra_op"],
    }
    assert normalise(flat)["cpu"]["flags"] == [f for f in env["cpu"]["flags"] or [] if f != "f16c"]
    assert normalise(env) is env
    assert differences(flat, env) == []  # f16c: not looked for by the flat recorder, not a difference
    assert differences(env, flat) == []
    # a capability other than this machine's (an AVX2 machine recorded "AVX2" and saw no difference)
    other = "DEFAULT" if env["cpu"]["torch_capability"] != "DEFAULT" else "AVX2"
    flat["torch_cpu_capability"] = other
    flat["packages"]["numpy"] = "1.0"
    out = differences(flat, env)
    assert any(d.startswith(f"cpu.torch_capability: {other} ->") for d in out)
    assert any(d.startswith("packages.numpy: 1.0 ->") for d in out)
    assert f"torch kernels {other}" in describe(flat)
