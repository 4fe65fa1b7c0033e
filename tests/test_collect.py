"""The collector (crapnet_core.report.collect): committed pages are what it regenerates; no hand-typed numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crapnet_core.report import collect as col

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


def test_committed_pages_are_what_the_collector_regenerates():
    """A page, README or cached comparison that differs from what the collector writes fails here:
    rerun `crapnet study collect` after changing results, prose or the rule."""
    stale = col.collect(RESULTS, REPO, check=True)
    assert stale == [], f"stale generated files (run crapnet study collect): {stale}"


def test_cached_comparisons_match_their_inputs():
    data = json.loads((RESULTS / "compare" / "analysis.json").read_text())
    assert data["inputs_sha256"] == col.inputs_sha256(RESULTS)
    assert data["analysis_version"] == col.ANALYSIS_VERSION
    assert data["rule"] == {"alpha": 0.05, "confidence": 0.95, "correction": "Holm"}


def test_a_nan_in_the_comparisons_is_an_error_not_invalid_json(tmp_path, monkeypatch):
    monkeypatch.setattr(col, "all_comparisons", lambda results: {"families": {"f": {"mean_a": float("nan")}}})
    with pytest.raises(ValueError, match="NaN or infinite"):
        col.analysis(tmp_path, recompute=True)
    assert "NaN" not in (RESULTS / "compare" / "analysis.json").read_text()


@pytest.mark.parametrize("page", col.NUMBER_CHECKED)
def test_no_hand_typed_result_number_outside_the_generated_blocks(page):
    found = col.hand_typed_numbers((REPO / page).read_text())
    assert found == [], f"{page}: numbers typed by hand outside <!-- results:... --> blocks: {found}"


def test_the_number_check_catches_typed_results():
    text = (
        "Under this budget (paired: CHAOS −1.05 [-4.13, 1.49]) the attention changes 2.5–7 % and bypassing "
        "gains +4.5; the 0.95 rule and `code 1.23` are fine.\n<!-- results:x -->\n44.71\n<!-- /results:x -->\n"
    )
    assert col.hand_typed_numbers(text) == ["−1.05", "-4.13", "1.49", "2.5", "7 %", "+4.5"]


def test_fill_needs_every_block_once():
    text = "a\n<!-- results:one -->\nold\n<!-- /results:one -->\nb\n"
    out = col.fill(text, {"one": "new table\n"}, ["one"], "page.md")
    assert "new table" in out and "old" not in out and out.startswith("a\n") and out.endswith("b\n")
    assert col.fill(out, {"one": "new table\n"}, ["one"], "page.md") == out  # idempotent
    with pytest.raises(ValueError, match="page.md: block two appears 0 times"):
        col.fill(text, {"two": "x"}, ["two"], "page.md")


def _summary(folder: Path, method: str, per_fold_dice, overrides=()):
    folder.mkdir(parents=True, exist_ok=True)
    organs = ("left_kidney", "right_kidney", "spleen", "liver")
    per_fold = {}
    for f, m in enumerate(per_fold_dice):
        scans = {str(4 * f + i): m + 0.01 * i for i in range(4)}
        per_fold[str(f)] = {
            "dice": {o: m + 0.015 for o in (*organs, "mean")},
            "hd95": {o: 10.0 for o in (*organs, "mean")},
            "asd": {o: 2.0 for o in (*organs, "mean")},
            "per_scan": {o: scans for o in organs},
        }
    s = {
        "dataset": "chaos",
        "setting": 1,
        "method": method,
        "profile": "lite",
        "folds": list(range(len(per_fold_dice))),
        "organs": list(organs),
        "per_fold": per_fold,
        "overrides": list(overrides),
        "mean": {"dice": {"mean": sum(per_fold_dice) / len(per_fold_dice)}},
    }
    (folder / "summary.json").write_text(json.dumps(s))


def test_tables_read_seed0_and_the_family_calls(tmp_path):
    _summary(tmp_path / "chaos_setting1_crapnet_lite" / "seed0", "crapnet", [0.40, 0.50, 0.45, 0.42, 0.48])
    _summary(
        tmp_path / "chaos_setting1_crapnet-blocks7_lite" / "seed0",
        "crapnet",
        [0.30, 0.34, 0.31, 0.29, 0.33],
        ["model.n_blocks=7"],
    )
    an = col.analysis(tmp_path)
    e = col.entry(an, "ablations", "chaos_setting1_crapnet-blocks7_lite", "chaos_setting1_crapnet_lite")
    assert e["status"] == "done" and e["result"]["rows"][-1]["mean_diff"] == pytest.approx(-0.136)
    # one seed and no three-seed tables under this results folder: no band, so at most weak
    assert e["band"] is None and e["call"] in ("weak", "not resolved")
    blocks = col.table_blocks(tmp_path, an)
    rows = {line.split(" | ")[0].strip("| "): line for line in blocks["table3"].splitlines() if line.startswith("| ")}
    assert "46.50 ± 4.12" in rows["5 (paper)"] and "−13.60 [" in rows["7"]
    assert "not run yet" in rows["9"] and "78.02" in rows["9"]  # the paper's mean stays, ours are "–"
    assert "| CRAPNet, 7 blocks − CRAPNet | 0 | −13.60 |" in blocks["table4"]  # the family table
    assert "not run yet" in blocks["paired"]  # the main family has no table here
