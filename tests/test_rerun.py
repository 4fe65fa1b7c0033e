"""The rerun check (engine.rerun, ``crapnet rerun-check``): committed vs rerun Dice of sampled folds."""

from __future__ import annotations

import json
import shutil

import pytest

from crapnet_core.cli import main
from crapnet_core.engine.rerun import (
    RerunError,
    RerunSample,
    committed_fold,
    read_samples,
    rerun_check,
    rerun_spread,
)
from crapnet_core.engine.runs import cross_validate

TABLE = "phantom_setting1_crapnet_smoke"


def test_samples_parse_and_refuse_bad_input(tmp_path):
    assert RerunSample.parse("chaos_setting1_crapnet_lite:0:3") == RerunSample("chaos_setting1_crapnet_lite", 0, 3)
    assert RerunSample.parse({"table": "t", "seed": "1", "fold": 2}) == RerunSample("t", 1, 2)
    assert str(RerunSample("t", 1, 2)) == "t:1:2"
    for bad in ("chaos:0", "chaos:a:0", "../x:0:0", {"table": "t", "seed": 0}):
        with pytest.raises(ValueError, match="rerun sample"):
            RerunSample.parse(bad)
    (tmp_path / "s.yaml").write_text("rerun_sample:\n  - a:0:1\n  - {table: b, seed: 1, fold: 0}\n")
    assert read_samples(tmp_path / "s.yaml") == [RerunSample("a", 0, 1), RerunSample("b", 1, 0)]
    (tmp_path / "s.json").write_text('["a:0:1"]')
    assert read_samples(tmp_path / "s.json") == [RerunSample("a", 0, 1)]
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="empty.json"):
        read_samples(tmp_path / "empty.json")


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A committed table of the older layout (summary.json + run_info.json per seed), fold 0
    of the smoke profile on the phantom, and its run folder."""
    root = tmp_path_factory.mktemp("committed")
    runs = root / "runs"
    summary = cross_validate(
        "phantom", 1, "crapnet", "smoke", runs, overrides=["train.device=cpu"], folds=[0], progress=False
    )
    results = root / "results"
    seed = results / TABLE / "seed0"
    seed.mkdir(parents=True)
    (seed / "summary.json").write_text(json.dumps(summary))
    (seed / "run_info.json").write_text(json.dumps({"commit": "abc1234", "machine": "2-core CPU (test)", "torch": "x"}))
    return results, runs / summary["per_fold"]["0"]["runs"][0], summary


def test_a_rerun_on_the_same_machine_is_identical(committed, tmp_path):
    results, _, summary = committed
    check = rerun_check(
        [f"{TABLE}:0:0"],
        results_root=results,
        out=tmp_path / "out",
        runs_root=tmp_path / "runs",
        progress=False,
        diagnosis="nothing to explain",
    )
    fold = check["folds"][0]
    assert fold["runs"] == summary["per_fold"]["0"]["runs"]
    assert fold["comparison"]["identical"] is True
    assert fold["comparison"]["dice"]["mean"]["difference"] == 0.0
    assert fold["comparison"]["dice"]["mean"]["committed"] == summary["per_fold"]["0"]["dice"]["mean"]
    assert fold["committed_environment"] is None  # the older tables did not record it
    assert fold["environment_differences"] == ["environment: not recorded (first)"]
    assert fold["rerun_environment"]["source"] == "training"
    assert check["spread"]["n"] == 1 and check["spread"]["max_abs_difference"] == 0.0
    md = (tmp_path / "out" / "rerun_check.md").read_text()
    assert f"`{TABLE}:0:0`" in md and "| Mean |" in md and "not recorded" in md and "nothing to explain" in md
    assert json.loads((tmp_path / "out" / "rerun_check.json").read_text())["folds"][0]["comparison"]["identical"]


def test_a_committed_number_that_differs_is_reported(committed, tmp_path):
    results, _, summary = committed
    changed = tmp_path / "results"
    shutil.copytree(results, changed)
    path = changed / TABLE / "seed0" / "summary.json"
    data = json.loads(path.read_text())
    data["per_fold"]["0"]["dice"]["mean"] += 0.05
    scan = next(iter(data["per_fold"]["0"]["per_scan"]["liver"]))
    data["per_fold"]["0"]["per_scan"]["liver"][scan] += 0.01
    path.write_text(json.dumps(data))
    check = rerun_check(
        [RerunSample(TABLE, 0, 0)],
        results_root=changed,
        out=tmp_path / "out",
        runs_root=tmp_path / "runs",
        progress=False,
    )
    comp = check["folds"][0]["comparison"]
    assert comp["dice"]["mean"]["difference"] == pytest.approx(-0.05, abs=1e-6)
    assert comp["identical"] is False and comp["max_scan_difference"] == pytest.approx(0.01, abs=1e-6)
    assert rerun_spread(check)["mean_difference"] == pytest.approx(-0.05, abs=1e-6)


def test_a_config_hash_that_the_code_no_longer_makes_is_refused(committed, tmp_path):
    results, _, _ = committed
    changed = tmp_path / "results"
    shutil.copytree(results, changed)
    path = changed / TABLE / "seed0" / "summary.json"
    data = json.loads(path.read_text())
    run = data["per_fold"]["0"]["runs"][0]
    data["per_fold"]["0"]["runs"] = [run[:-12] + "0" * 12]
    path.write_text(json.dumps(data))
    with pytest.raises(RerunError, match="config hash changed"):
        rerun_check([f"{TABLE}:0:0"], results_root=changed, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(RerunError, match="no fold 3"):
        committed_fold(results, RerunSample(TABLE, 0, 3))
    with pytest.raises(RerunError, match="no such committed table"):
        committed_fold(results, RerunSample(TABLE, 7, 0))


def test_per_run_layout_uses_the_saved_config_and_the_cli_writes_the_table(committed, tmp_path, capsys):
    _, run_dir, summary = committed
    results = tmp_path / "results"
    dest = results / "phantom_table" / "seed0" / run_dir.name
    dest.mkdir(parents=True)
    for name in ("config.json", "metrics.json"):
        shutil.copy(run_dir / name, dest / name)
    env = json.loads((run_dir / "environment.json").read_text())
    (dest / "run_info.json").write_text(json.dumps({"commit": "abc1234", "environment": env}))
    record = committed_fold(results, RerunSample("phantom_table", 0, 0))
    assert record["layout"] == "per-run" and record["runs"] == [run_dir.name]
    assert record["dice"]["mean"] == summary["per_fold"]["0"]["dice"]["mean"]
    assert record["environment"] == env
    code = main(
        [
            "rerun-check",
            "--results",
            str(results),
            "--sample",
            "phantom_table:0:0",
            "--out",
            str(tmp_path / "out"),
            "--runs",
            str(tmp_path / "runs"),
            "--no-progress",
        ]
    )
    assert code == 0
    check = json.loads((tmp_path / "out" / "rerun_check.json").read_text())
    assert check["folds"][0]["comparison"]["identical"] is True
    assert check["folds"][0]["environment_differences"] == []  # same machine, same packages
    assert "rerun-check" in check["command"]
    assert "| Mean |" in capsys.readouterr().out
    # a bad sample is one clear line, exit 2
    assert main(["rerun-check", "--results", str(results), "--sample", "nope", "--out", str(tmp_path / "o2")]) == 2
    assert "TABLE:SEED:FOLD" in capsys.readouterr().err
