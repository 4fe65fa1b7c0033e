"""The declared decision rule (issue 19): Holm, the calls, the seed band, families on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crapnet_core.engine import decision as dec
from crapnet_core.engine.comparisons import load_table
from crapnet_core.facts import METHODS


def test_holm_known_values_and_missing_comparisons():
    # Holm (1979): ascending p 0.01, 0.02, 0.04 with m = 3 -> 0.03, 0.04, 0.04
    assert dec.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # a declared comparison not run yet counts with p = 1 and makes the others' threshold stricter
    adj = dec.holm([0.01, None, 0.02], 3)
    assert adj[1] is None and adj[0] == pytest.approx(0.03) and adj[2] == pytest.approx(0.04)
    assert dec.holm([0.01, 0.02], 4) == pytest.approx([0.04, 0.06])
    with pytest.raises(ValueError, match="smaller"):
        dec.holm([0.1, 0.2], 1)
    with pytest.raises(ValueError, match="lie in"):
        dec.holm([1.5])


def test_decide_the_rule():
    assert dec.decide(True, 0.01, False, 0.05, None)[0] == "resolved"
    assert dec.decide(True, 0.2, False, 0.05, None) == ("weak", "interval excludes 0, corrected p ≥ 0.05")
    assert dec.decide(False, 0.01, False, 0.05, None)[0] == "weak"
    assert dec.decide(False, 0.2, False, 0.05, None)[0] == "not resolved"
    # one seed: inside the band, or no band, never resolved
    assert dec.decide(True, 0.01, True, 0.02, 0.03) == ("weak", "one seed, inside the seed band")
    assert dec.decide(True, 0.01, True, -0.05, 0.03)[0] == "resolved"
    assert dec.decide(True, 0.01, True, 0.05, None)[0] == "weak"


def test_declared_families_name_known_tables():
    seen = set()
    for fam in dec.FAMILIES:
        assert fam.key not in seen and fam.comparisons
        seen.add(fam.key)
        for c in fam.comparisons:
            for name in (c.a, c.b):
                ds, rest = name.split("_setting")
                setting, body = rest.split("_", 1)
                method = body.rsplit("_", 1)[0].split("-")[0]
                assert ds in ("chaos", "sabs") and setting in ("1", "2") and method in METHODS, name
    with pytest.raises(ValueError, match="declared: main"):
        dec.family("nope")


def _table(
    root: Path, name: str, seed: int, offsets: dict[int, float], noise: float, rng, dataset="chaos", folds=range(5)
):
    """results/<name>/seed<k>/summary.json with 5 folds (or ``folds``) x 4 scans, fold f shifted by offsets[f]."""
    per_fold = {}
    for f in folds:
        scans = {str(4 * f + i): 0.5 + offsets[f] + float(rng.normal(0, noise)) for i in range(4)}
        per_fold[str(f)] = {"per_scan": {"liver": scans}, "dice": {"liver": float(np.mean(list(scans.values())))}}
    s = {
        "dataset": dataset,
        "setting": 1,
        "method": name.split("_")[2].split("-")[0],
        "profile": "lite",
        "organs": ["liver"],
        "folds": list(folds),
        "per_fold": per_fold,
    }
    folder = root / name / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(s))


def test_a_seed_still_in_training_enters_no_mean_over_seeds(tmp_path):
    from crapnet_core.engine.comparisons import compare_tables, complete_seeds

    rng = np.random.default_rng(1)
    for m in ("crapnet", "alpnet"):
        for k in range(2):
            _table(
                tmp_path, f"chaos_setting1_{m}_lite", k, {f: float(rng.normal(0, 0.02)) for f in range(5)}, 0.005, rng
            )
    before = dec.seed_band(tmp_path, "chaos")
    # seed 2 of CRAPNet has scored folds 3 and 4 so far, both far below the other folds: as a
    # "5-fold mean" it would look 30 points worse and widen the band several-fold
    _table(tmp_path, "chaos_setting1_crapnet_lite", 2, {3: -0.3, 4: -0.3}, 0.005, rng, folds=(3, 4))
    t = load_table(tmp_path / "chaos_setting1_crapnet_lite")
    assert complete_seeds(t) == ([0, 1], {2: "folds 3, 4 of 0, 1, 2, 3, 4 scored"})
    after = dec.seed_band(tmp_path, "chaos")
    assert after["band"] == pytest.approx(before["band"]) and after["df"] == before["df"] == 2
    assert after["left_out"] == {"chaos_setting1_crapnet_lite": {2: "folds 3, 4 of 0, 1, 2, 3, 4 scored"}}
    assert before["left_out"] == {}
    # a comparison over "the seeds both tables have" takes only complete ones
    res = compare_tables(t, load_table(tmp_path / "chaos_setting1_alpnet_lite"), n_resamples=999)
    assert res["a"]["seeds"] == [0, 1] and res["b"]["seeds"] == [0, 1]
    # a table with one complete seed and a partial one has no seed-to-seed spread to measure
    _table(tmp_path, "chaos_setting1_panet_lite", 0, dict.fromkeys(range(5), 0.0), 0.005, rng)
    _table(tmp_path, "chaos_setting1_panet_lite", 1, {0: 0.1}, 0.005, rng, folds=(0,))
    band = dec.seed_band(tmp_path, "chaos")
    assert band["df"] == 2 and set(band["left_out"]) == {"chaos_setting1_crapnet_lite", "chaos_setting1_panet_lite"}


def test_complete_seeds_edge_cases(tmp_path):
    from crapnet_core.engine.comparisons import _default_seeds, complete_seeds

    rng = np.random.default_rng(2)
    # every seed lacks fold 4: complete with each other, not against the five declared folds
    for k in range(2):
        _table(tmp_path, "chaos_setting1_alpnet_lite", k, dict.fromkeys(range(5), 0.0), 0.01, rng, folds=range(4))
    t = load_table(tmp_path / "chaos_setting1_alpnet_lite")
    assert complete_seeds(t) == ([0, 1], {})
    why = "folds 0, 1, 2, 3 of 0, 1, 2, 3, 4 scored"
    assert complete_seeds(t, folds=range(5)) == ([], {0: why, 1: why})
    assert dec.seed_band(tmp_path, "chaos", tables=["chaos_setting1_alpnet_lite"]) is None
    # no seed complete: a comparison's default takes the seed that scored the most
    _table(tmp_path, "chaos_setting1_panet_lite", 0, dict.fromkeys(range(5), 0.0), 0.01, rng, folds=(0, 1))
    _table(tmp_path, "chaos_setting1_panet_lite", 1, dict.fromkeys(range(5), 0.0), 0.01, rng, folds=(2, 3, 4))
    t = load_table(tmp_path / "chaos_setting1_panet_lite")
    assert complete_seeds(t)[0] == [] and _default_seeds(t) == [1]
    assert complete_seeds(t)[1][0] == "folds 0, 1 of 0, 1, 2, 3, 4 scored"
    # a fold scored in part (one of its two test groups, or some scans): named as such
    t["seeds"][1]["liver"].pop(next(s for s, f in t["fold_of"].items() if f == 3))
    t["seeds"][0]["liver"].update({s: 0.5 for s, f in t["fold_of"].items() if f in (2, 3, 4)})
    assert complete_seeds(t)[1] == {1: "folds 2, 4 of 0, 1, 2, 3, 4 scored (fold 3 in part)"}


def test_seed_band_and_one_seed_calls(tmp_path):
    rng = np.random.default_rng(0)
    # three-seed tables: the same method with a model effect per (fold, seed) of sd 0.02
    for m in ("crapnet", "alpnet", "panet"):
        for k in range(3):
            _table(
                tmp_path, f"chaos_setting1_{m}_lite", k, {f: float(rng.normal(0, 0.02)) for f in range(5)}, 0.005, rng
            )
    band = dec.seed_band(tmp_path, "chaos")
    assert band["df"] == 6 and len(band["pairs"]) == 9
    means = {t: v["seed_means"] for t, v in band["tables"].items()}
    pooled = np.mean([np.var(list(v.values()), ddof=1) for v in means.values()])
    from scipy import stats as sps

    assert band["band"] == pytest.approx(sps.t.ppf(0.975, 6) * np.sqrt(2 * pooled))
    assert dec.seed_band(tmp_path, "sabs") is None
    # a one-seed variant 1 point better in every scan of every fold: interval and test agree, but
    # 1 point is inside the band -> weak
    base = load_table(tmp_path / "chaos_setting1_crapnet_lite")["seeds"][0]["liver"]
    folder = tmp_path / "chaos_setting1_crapnet-blocks7_lite" / "seed0"
    folder.mkdir(parents=True)
    per_fold = {
        str(f): {
            "per_scan": {
                "liver": {s: base[s] + 0.01 + float(rng.normal(0, 0.002)) for s in map(str, range(4 * f, 4 * f + 4))}
            }
        }
        for f in range(5)
    }
    (folder / "summary.json").write_text(
        json.dumps({"dataset": "chaos", "setting": 1, "method": "crapnet", "profile": "lite", "per_fold": per_fold})
    )
    fam = dec.Family(
        "t",
        "test",
        "?",
        (
            dec.Comparison("chaos_setting1_crapnet-blocks7_lite", "chaos_setting1_crapnet_lite", (0,)),
            dec.Comparison("chaos_setting1_crapnet-blocks9_lite", "chaos_setting1_crapnet_lite", (0,)),
        ),
    )
    # the study workflow makes a table's seed and run folders when a job starts: still "not run yet"
    (tmp_path / "chaos_setting1_crapnet-blocks9_lite" / "seed0" / "chaos_s1_all_f4_crapnet_lite_0").mkdir(parents=True)
    ev = dec.evaluate_family(fam, tmp_path)
    done, missing = ev["comparisons"]
    assert missing["status"] == "not run yet" and missing["call"] is None
    mean = next(r for r in done["result"]["rows"] if r["organ"] == "mean")
    assert mean["excludes_zero"] and done["p_holm"] < 0.05 and band["band"] > 0.01
    assert done["one_seed"] and done["call"] == "weak" and "seed band" in done["reason"]


def test_per_run_layout_merges_test_groups_and_refuses_duplicates(tmp_path):
    folder = tmp_path / "chaos_setting1_alpnet_sup_converged" / "seed0"
    for name, organs in (("run_k", ("left_kidney",)), ("run_l", ("liver",))):
        (folder / name).mkdir(parents=True)
        per_scan = {o: {"1": {"dice": 0.5}, "2": {"dice": 0.6}} for o in organs}
        (folder / name / "metrics.json").write_text(
            json.dumps(
                {
                    "dataset": "chaos",
                    "setting": 1,
                    "method": "alpnet_sup",
                    "profile": "converged",
                    "fold": 0,
                    "per_scan": per_scan,
                }
            )
        )
    t = load_table(tmp_path / "chaos_setting1_alpnet_sup_converged")
    assert sorted(t["seeds"][0]) == ["left_kidney", "liver"] and t["fold_of"] == {"1": 0, "2": 0}
    assert t["dataset"] == "chaos" and t["profile"] == "converged"
    # a seed folder with run folders is read from them, not from a summary.json beside them (migrated tables)
    (folder / "summary.json").write_text(
        json.dumps({"dataset": "chaos", "setting": 1, "per_fold": {"0": {"per_scan": {"liver": {"1": 0.9, "2": 0.9}}}}})
    )
    assert load_table(tmp_path / "chaos_setting1_alpnet_sup_converged")["seeds"][0]["liver"] == {"1": 0.5, "2": 0.6}
    (folder / "run_x").mkdir()
    (folder / "run_x" / "metrics.json").write_text(json.dumps({"fold": 0, "per_scan": {"liver": {"1": {"dice": 0.1}}}}))
    with pytest.raises(ValueError, match="also scored by another run"):
        load_table(tmp_path / "chaos_setting1_alpnet_sup_converged")


def test_tables_whose_committed_folds_do_not_overlap_yet_say_so():
    from crapnet_core.report.stats_tables import family_table

    def entry(status):
        return {
            "a": "sabs_setting1_crapnet_converged",
            "b": "sabs_setting1_alpnet_converged",
            "status": status,
            "result": None,
        }

    fam = {
        "family": "f",
        "title": "t",
        "question": "?",
        "comparisons": [
            entry("not comparable: results/x and results/y: no (organ, scan) pair in common"),
            entry("not comparable: results/x: two seeds put scan 3 in different folds"),
            entry("not run yet"),
        ],
    }
    rows = [line for line in family_table(fam).splitlines() if line.startswith("| CRAPNet")]
    assert ["no fold in common yet" in rows[0], "not comparable" in rows[1], "not run yet" in rows[2]] == [True] * 3


def test_an_organ_both_score_on_different_folds_so_far_is_no_row(tmp_path):
    """Supervised ALPNet scores one test group per run: while its folds land, it may score the liver on
    fold 1 only while SSL-ALPNet has fold 0 only. That organ has no pair: no row (once, a NaN mean)."""
    from crapnet_core.engine.comparisons import paired_rows

    def run(table, name, fold, per_scan):
        folder = tmp_path / table / "seed0" / name
        folder.mkdir(parents=True)
        meta = {"dataset": "sabs", "setting": 1, "method": table.split("_")[2], "profile": "converged"}
        scans = {o: {s: {"dice": v} for s, v in d.items()} for o, d in per_scan.items()}
        (folder / "metrics.json").write_text(json.dumps({**meta, "fold": fold, "per_scan": scans}))

    run("sabs_setting1_alpnet_converged", "f0", 0, {"liver": {"1": 0.8, "2": 0.7}, "left_kidney": {"1": 0.6, "2": 0.5}})
    run("sabs_setting1_alpnet_sup_converged", "f0_k", 0, {"left_kidney": {"1": 0.3, "2": 0.4}})
    run("sabs_setting1_alpnet_sup_converged", "f1_l", 1, {"liver": {"3": 0.5, "4": 0.6}})
    a = load_table(tmp_path / "sabs_setting1_alpnet_converged")
    b = load_table(tmp_path / "sabs_setting1_alpnet_sup_converged")
    rows = paired_rows(a, b, [0], [0])
    assert [r["organ"] for r in rows] == ["left_kidney", "mean"] and all(r["a"] and r["b"] for r in rows)
    assert rows[-1]["a"] == [0.6, 0.5] and rows[-1]["b"] == [0.3, 0.4]
