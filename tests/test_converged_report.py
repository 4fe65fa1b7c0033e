"""The converged study's generated blocks (crapnet_core.report.converged) against the committed files, and
what changed with the budget and the budget curves (issue 18)."""

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


def test_the_last_point_of_each_committed_budget_curve_is_the_trained_model():
    """The budget curve's last checkpoint is the trained model: its fold mean equals the fold's committed
    metrics.json mean (the same model scored twice on the same test scans)."""
    curves = cv.budget_curve_points(RESULTS)
    assert curves, "no converged budget curve is committed"
    checked = 0
    for (ds, m), points in curves.items():
        fm = cv.fold_means(RESULTS, f"{ds}_setting1_{m}_converged")
        last = points[max(points)]
        for fold, dice in last.items():
            assert dice == pytest.approx(fm[fold], abs=5e-4), (ds, m, fold)
            checked += 1
    assert checked >= 5


def _budget(folder: Path, fold: int, organs: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    pts = [{"step": s, "dice": {**organs, "mean": sum(organs.values()) / len(organs)}} for s in (1000, 20000)]
    (folder / "budget.json").write_text(json.dumps({"fold": fold, "points": pts}))


def test_a_supervised_fold_counts_once_both_test_groups_have_a_curve(tmp_path):
    seed = tmp_path / "chaos_setting1_alpnet_sup_converged" / "seed0"
    _budget(seed / "chaos_s1_all_f0_alpnet_sup_converged_aaaaaaaaaaaa", 0, {"liver": 0.8, "spleen": 0.6})
    _budget(seed / "chaos_s1_all_f0_alpnet_sup_converged_bbbbbbbbbbbb", 0, {"left_kidney": 0.2, "right_kidney": 0.4})
    _budget(seed / "chaos_s1_all_f1_alpnet_sup_converged_cccccccccccc", 1, {"left_kidney": 0.3, "right_kidney": 0.5})
    points = cv.budget_curve_points(tmp_path)[("chaos", "alpnet_sup")]
    assert points[20000] == {0: pytest.approx(0.5)}  # fold 1 has one group only: left out
    text = cv.budget_curves(tmp_path)
    assert "| CHAOS MRI | ALPNet (supervised) | 50.00 (1) | 50.00 (1) |" in text


def test_what_changed_with_the_budget_averages_the_same_folds_at_both_budgets():
    text = cv.budget_change(RESULTS, json.loads((RESULTS / "compare" / "analysis.json").read_text()))
    for ds, m in (("chaos", "crapnet"), ("chaos", "alpnet")):
        lite = cv.fold_means(RESULTS, f"{ds}_setting1_{m}_lite")
        conv = cv.fold_means(RESULTS, f"{ds}_setting1_{m}_converged")
        common = sorted(set(lite) & set(conv))
        change = sum(conv[f] - lite[f] for f in common) / len(common)
        row = next(
            r for r in text.splitlines() if r.startswith(f"| CHAOS MRI | {cv.table_label(f'{ds}_setting1_{m}_lite')} |")
        )
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == ", ".join(map(str, common))
        assert cells[5].startswith(cv.pts(change, 2))


def _seed_summary(root: Path, table: str, seed: int, dice: float, folds=range(5)) -> None:
    """results/<table>/seed<k>/summary.json: two scans per fold, every scan's liver Dice ``dice``."""
    per_fold = {str(f): {"per_scan": {"liver": {str(2 * f + i): dice for i in range(2)}}} for f in folds}
    s = {"dataset": "chaos", "setting": 1, "method": "crapnet", "profile": "converged", "organs": ["liver"]}
    s.update(folds=list(folds), per_fold=per_fold)
    (root / table / f"seed{seed}").mkdir(parents=True)
    (root / table / f"seed{seed}" / "summary.json").write_text(json.dumps(s))


def test_the_seed_column_averages_complete_seeds_only(tmp_path):
    table = "chaos_setting1_crapnet_converged"
    _seed_summary(tmp_path, table, 0, 0.50)
    _seed_summary(tmp_path, table, 1, 0.52)
    _seed_summary(tmp_path, table, 2, 0.10, folds=(0, 3))  # still in training: two folds, far lower
    means, partial = cv.seed_means(tmp_path, table)
    assert means == pytest.approx({0: 0.50, 1: 0.52}) and partial == {2: [0, 3]}
    cell = cv._seeds_cell(means, partial)
    assert cell == "51.00 (seeds 0, 1: ± 1.41 over seeds); seed 2: folds 0, 3 so far"
    assert cv._seeds_cell({0: 0.5}, {}) == "seed 0 only"
    assert cv.seed_means(tmp_path, "chaos_setting1_alpnet_converged") == ({}, {})


def test_a_weak_call_says_which_half_of_the_rule_is_missing():
    row = {"organ": "mean", "mean_diff": 0.1859, "ci_low": 0.1101, "ci_high": 0.2617}
    e = {"result": {"rows": [row]}, "call": "weak", "reason": "one seed and no seed band measured"}
    assert cv._diff(e) == "+18.59 [+11.01, +26.17], *weak* (one seed and no seed band measured)"
    assert cv._diff({**e, "call": "resolved"}) == "+18.59 [+11.01, +26.17], **resolved**"


def test_the_seed_column_when_no_seed_is_complete():
    assert (
        cv._seeds_cell({}, {0: [0, 1], 2: [3]})
        == "no seed complete yet; seed 0: folds 0, 1 so far; seed 2: fold 3 so far"
    )
    assert cv._seeds_cell({}, {}) == "–"


def test_only_chaos_rows_leave_out_the_validation_fold(tmp_path):
    """The budget was chosen on CHAOS scans: a Synapse row's 'without fold 4' cell is not its mean again."""
    import shutil

    from crapnet_core.engine.decision import table_name

    results = tmp_path / "results"
    for name in ("select_converged", "chaos_setting1_crapnet_lite", table_name("chaos", 1, "crapnet", "converged")):
        shutil.copytree(RESULTS / name, results / name)
    run = sorted((RESULTS / "sabs_setting1_crapnet_lite" / "seed0").glob("*/metrics.json"))[0].parent
    shutil.copytree(run, results / table_name("sabs", 1, "crapnet", "converged") / "seed0" / run.name)
    family = {"family": "converged", "title": "t", "question": "?", "comparisons": []}
    text = cv.converged_table(results, {"families": {"converged": family}})
    chaos, synapse = (
        next(line.split(" | ") for line in text.splitlines() if line.startswith(f"| {ds} | CRAPNet |"))
        for ds in ("CHAOS MRI", "Synapse CT")
    )
    assert chaos[4][0].isdigit() and chaos[4] != chaos[3]
    assert synapse[3][0].isdigit() and synapse[4] == "– (none chose the budget)"
