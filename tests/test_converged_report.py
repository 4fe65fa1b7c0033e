"""The converged study's generated blocks (crapnet_core.report.converged) against the committed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crapnet_core.report import converged as cv

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _runs(table: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((RESULTS / table).glob("seed0/*/metrics.json"))]


def test_fold_means_equal_each_runs_own_mean_and_pool_test_groups():
    table = "chaos_setting1_crapnet_converged"
    runs = _runs(table)
    if not runs:
        pytest.skip("no converged CRAPNet fold committed yet")
    folds = cv.fold_means(RESULTS, table)
    assert sorted(folds) == sorted(m["fold"] for m in runs)
    for m in runs:  # one run per fold: the fold mean is metrics.json's own mean (organ means over its scans)
        assert folds[m["fold"]] == pytest.approx(m["mean"]["dice"], abs=1e-6)
    sup_runs = [m for m in _runs("chaos_setting1_alpnet_sup_converged") if m["fold"] == 0]
    if len(sup_runs) == 2:  # two test groups (kidneys; liver and spleen) pooled into one fold mean of four organs
        organs = {o: v["dice_mean"] for m in sup_runs for o, v in m["per_organ"].items()}
        assert len(organs) == 4
        assert cv.fold_means(RESULTS, "chaos_setting1_alpnet_sup_converged")[0] == pytest.approx(
            np.mean(list(organs.values())), abs=1e-6
        )


def test_validation_scans_are_fold_4s_test_scans():
    scans, fold = cv.validation_fold(RESULTS)
    assert scans == ["36", "37", "38", "39"] and fold == 4


def test_rerun_summary_has_a_row_per_committed_check(tmp_path):
    text = cv.rerun_summary(RESULTS)
    for path in RESULTS.glob("rerun_check*/rerun_check.json"):
        assert f"`{path.parent.name}/`" in text
    assert "No rerun check" in cv.rerun_summary(tmp_path)


def test_an_undeclared_or_empty_table_reads_as_not_run(tmp_path):
    assert cv.fold_means(tmp_path, "chaos_setting1_crapnet_converged") is None
