"""benchmarks/gpu_check.sh in its CPU dry-run mode (what a lent GPU machine will run), and the
runtime-only torch.compile switch of the training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("CRAPNET_DATA_ROOT", None)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--budget-min", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("env", "weights", "steps", "kernels", "packed", "train"):
        data = json.loads((out / f"{name}.json").read_text())
        assert "error" not in data, (name, data)
    steps = json.loads((out / "steps.json").read_text())
    assert {"crapnet", "alpnet"} <= set(steps) and steps["crapnet"]["steps_per_s"] > 0
    assert steps["crapnet"]["device"] == "cpu" and steps["crapnet"]["profile"] == "smoke"
    kernels = json.loads((out / "kernels.json").read_text())
    assert (
        kernels["crapnet"]["launches_per_step"]["aten_kernels"]
        < kernels["crapnet-blockwise"]["launches_per_step"]["aten_kernels"]
    )
    assert "skipped" in kernels["crapnet-compiled"]
    packed = json.loads((out / "packed.json").read_text())["runs"]
    assert set(packed) == {"1", "2"} and packed["2"]["workers_ok"] == 2
    weights = json.loads((out / "weights.json").read_text())
    assert weights["coco_deeplabv3_resnet101"]["file"].startswith("deeplabv3_resnet101_coco")
    train = json.loads((out / "train.json").read_text())
    assert train["returncode"] == 0 and 0.0 <= train["mean"]["dice"] <= 1.0
    assert (out / "train_run" / "metrics.json").is_file()
    summary = (out / "summary.md").read_text()
    assert "packed K=2" in summary and "FAILED" not in summary
    assert (out / "gpu_check.log").read_text().count("[packed:") == 1


def test_compile_switch_is_runtime_only_and_keeps_parameter_names():
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.training import build_model, compile_model

    cfg = make_config("smoke", "phantom", 1, 0, "crapnet", [])
    on = make_config("smoke", "phantom", 1, 0, "crapnet", ["train.compile=true"])
    assert on.train.compile == "on" and cfg.train.compile == "auto"
    assert on.config_hash() == cfg.config_hash(), "a runtime switch must not change the run folder"
    model = build_model(cfg)
    keys = list(model.state_dict())
    assert compile_model(model) is model and list(model.state_dict()) == keys


def test_packed_section_skips_what_would_overrun_the_budget(tmp_path):
    """The lent machine's 15 minutes hold one run: a section must end inside its budget, not after."""
    import importlib.util
    import time
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    args = SimpleNamespace(dry_run=False, out=tmp_path, data_root=None, coco_cached=False)
    out = gpu_check.section_packed(args, deadline=time.time() + 20)
    assert out["runs"] == {} and set(out["skipped"]) == {"1", "2", "4", "8"}
    assert "packed K=8: skipped" in gpu_check.summary(tmp_path, {"packed": out})
