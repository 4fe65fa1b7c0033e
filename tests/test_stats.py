"""Spreads over folds and seeds, paired per-scan comparisons, the budget curve (issue 8 §5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crapnet_core.cli import main
from crapnet_core.engine import stats
from crapnet_core.engine.runs import summary_markdown


def _summary(method: str, per_fold_dice: dict[int, dict[str, float]], per_scan=None, seeds=None):
    organs = ["liver", "spleen"]
    per_fold = {}
    for f, d in per_fold_dice.items():
        d = dict(d, mean=float(np.mean([d[o] for o in organs])))
        per_fold[str(f)] = {
            "dice": d,
            "hd95": {o: 10.0 for o in [*organs, "mean"]},
            "asd": {o: 2.0 for o in [*organs, "mean"]},
            "runs": [],
        }
    s = {
        "dataset": "phantom",
        "setting": 1,
        "method": method,
        "profile": "smoke",
        "organs": organs,
        "folds": sorted(per_fold_dice),
        "per_fold": per_fold,
        "mean": {
            "dice": {o: float(np.mean([d[o] for d in per_fold_dice.values()])) for o in organs},
            "hd95": {"mean": 10.0},
            "asd": {"mean": 2.0},
        },
        "train_seconds_total": 1.0,
        "eval_seconds_total": 1.0,
    }
    s["mean"]["dice"]["mean"] = float(np.mean([s["mean"]["dice"][o] for o in organs]))
    if per_scan is not None:
        s["per_scan"] = per_scan
    return s


def test_mean_std_is_sample_std_and_format():
    m, s, n = stats.mean_std([0.1, 0.2, None, 0.3, float("nan")])
    assert (m, n) == (pytest.approx(0.2), 3)
    assert s == pytest.approx(0.1)  # ddof=1: sqrt((0.01 + 0 + 0.01) / 2)
    assert stats.mean_std([0.5])[1] is None and stats.mean_std([]) == (None, None, 0)
    assert stats.format_pm(0.4001, 0.0486) == "40.01 ± 4.86"
    assert stats.format_pm(None, 0.1) == "–" and stats.format_pm(0.5, None) == "50.00"


def test_fold_spread_and_summary_markdown_show_mean_pm_std():
    s = _summary("crapnet", {0: {"liver": 0.6, "spleen": 0.2}, 1: {"liver": 0.8, "spleen": 0.4}})
    spread = stats.fold_spread(s)
    assert spread["liver"]["mean"] == pytest.approx(0.7)
    assert spread["liver"]["std"] == pytest.approx(math.sqrt(0.02))  # two folds, ddof=1
    assert spread["mean"]["mean"] == pytest.approx(0.5) and spread["mean"]["std"] == pytest.approx(math.sqrt(0.02))
    md = summary_markdown(s)
    assert f"| 70.00 ± {100 * math.sqrt(0.02):.2f} |" in md
    assert "| std over folds | 14.14 | 14.14 | 14.14 |" in md  # spleen, liver, mean (organ order of the summary)
    with pytest.raises(ValueError, match="no per_fold"):
        stats.fold_spread({"mean": {}})


def test_paired_test_known_values():
    # ten identical positive differences: zero-width CI at 0.1, exact two-sided p = 2 / 2**10
    r = stats.paired_test([0.1] * 10)
    assert r["mean_diff"] == pytest.approx(0.1) and r["ci_low"] == r["ci_high"] == pytest.approx(0.1)
    assert r["p_wilcoxon"] == pytest.approx(2 / 2**10) and r["resolved"]
    # symmetric differences: mean 0, the CI contains 0, p = 1, not resolved
    r = stats.paired_test([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3])
    assert r["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert r["ci_low"] < 0 < r["ci_high"] and r["p_wilcoxon"] == pytest.approx(1.0) and not r["resolved"]
    # large normal sample: the bootstrap CI is close to mean ± 1.96 sd / sqrt(n)
    d = np.random.default_rng(1).normal(0.05, 0.1, 400)
    r = stats.paired_test(d, n_resamples=2000)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert r["ci_low"] == pytest.approx(d.mean() - half, abs=0.003)
    assert r["ci_high"] == pytest.approx(d.mean() + half, abs=0.003)
    assert stats.paired_test([0.2])["ci_low"] is None and stats.paired_test([0.0, 0.0])["p_wilcoxon"] == 1.0
    # a CI that excludes 0 on too few scans is reported but not called resolved
    r = stats.paired_test([0.1] * 4)
    assert r["ci_low"] == pytest.approx(0.1) and r["p_wilcoxon"] == pytest.approx(0.125) and not r["resolved"]


def test_paired_comparison_pairs_by_scan_and_averages_organs_per_scan():
    a = {"liver": {"1": 0.9, "2": 0.8, "3": 0.7}, "spleen": {"1": 0.5, "2": 0.6}}
    b = {"liver": {"1": 0.8, "2": 0.7, "3": 0.6, "9": 0.1}, "spleen": {"1": 0.5, "2": 0.4}}
    res = stats.paired_comparison(a, b, n_resamples=500)
    rows = {r["organ"]: r for r in res["rows"]}
    assert list(rows) == ["spleen", "liver", "mean"]  # organ order of ORGAN_ORDER, then the mean
    assert rows["liver"]["n"] == 3 and rows["liver"]["mean_diff"] == pytest.approx(0.1)  # scan 9 unpaired
    assert rows["spleen"]["n"] == 2 and rows["spleen"]["mean_diff"] == pytest.approx(0.1)
    # mean row: one value per scan, the mean over the organs both scored there
    assert rows["mean"]["n"] == 3
    assert rows["mean"]["mean_a"] == pytest.approx(np.mean([0.7, 0.7, 0.7]))
    assert rows["mean"]["mean_diff"] == pytest.approx(np.mean([0.05, 0.15, 0.1]))
    with pytest.raises(ValueError, match="share no"):
        stats.paired_comparison({"liver": {"1": 0.5}}, {"liver": {"2": 0.5}})


def test_aggregate_seeds_averages_per_scan_and_spreads():
    s0 = _summary(
        "crapnet",
        {0: {"liver": 0.6, "spleen": 0.2}, 1: {"liver": 0.8, "spleen": 0.4}},
        per_scan={"liver": {"1": 0.6, "2": 0.8}, "spleen": {"1": 0.2, "2": 0.4}},
    )
    s1 = _summary(
        "crapnet",
        {0: {"liver": 0.7, "spleen": 0.3}, 1: {"liver": 0.9, "spleen": 0.5}},
        per_scan={"liver": {"1": 0.7, "2": 0.9}, "spleen": {"1": 0.3, "2": 0.5}},
    )
    agg = stats.aggregate_seeds({0: s0, 1: s1})
    assert agg["seeds"] == [0, 1]
    assert agg["per_scan"]["liver"] == {"1": pytest.approx(0.65), "2": pytest.approx(0.85)}
    assert agg["per_scan_seeds"]["spleen"]["2"] == [0.4, 0.5]
    assert agg["mean"]["dice"]["liver"] == pytest.approx(0.75)
    assert agg["mean"]["dice_std_over_seeds"]["liver"] == pytest.approx(math.sqrt(0.005))  # 0.7 vs 0.8
    assert agg["per_fold"]["1"]["dice"]["spleen"] == pytest.approx(0.45)
    md = summary_markdown(agg)
    assert "mean ± std over seeds" in md and "Training seeds 0, 1" in md
    with pytest.raises(ValueError, match="differ in method"):
        stats.aggregate_seeds({0: s0, 1: dict(s1, method="alpnet")})


def test_per_scan_dice_needs_per_scan_values(tmp_path):
    s = _summary("crapnet", {0: {"liver": 0.6, "spleen": 0.2}})
    s["per_fold"]["0"]["runs"] = ["run_a"]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(s))
    with pytest.raises(ValueError, match="no per-scan Dice"):
        stats.per_scan_dice(stats.load_summary(tmp_path))
    # fallback: the run folder's metrics.json next to the summary
    (tmp_path / "run_a").mkdir()
    (tmp_path / "run_a" / "metrics.json").write_text(
        json.dumps({"per_scan": {"liver": {"3": {"dice": 0.5}, "4": {"absent": True}}}})
    )
    assert stats.per_scan_dice(stats.load_summary(tmp_path)) == {"liver": {"3": 0.5}}


def _fold_summary(method: str, per_fold_scans: dict[int, dict[str, dict[str, float]]], setting: int = 1):
    """A one-seed summary whose folds hold per-scan Dice ({fold: {organ: {scan: Dice}}})."""
    s = _summary(
        method,
        {f: {o: float(np.mean(list(v.values()))) for o, v in scans.items()} for f, scans in per_fold_scans.items()},
    )
    for f, scans in per_fold_scans.items():
        s["per_fold"][str(f)]["per_scan"] = scans
    s["setting"] = setting
    return s


def test_compare_cli_writes_table_and_rejects_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fa, fb = {}, {}
    for f in range(5):  # 5 folds x 4 scans; A is 10 points better on the liver in every scan
        ids = [str(4 * f + i) for i in range(4)]
        base = {sid: float(rng.uniform(0.4, 0.6)) for sid in ids}
        fa[f] = {"liver": {sid: v + 0.1 for sid, v in base.items()}, "spleen": {sid: 0.3 for sid in ids}}
        fb[f] = {"liver": base, "spleen": {sid: 0.3 + float(rng.normal(0, 0.01)) for sid in ids}}
    for name, s in (("a", _fold_summary("crapnet", fa)), ("b", _fold_summary("alpnet", fb))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    rc = main(
        [
            "compare",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--out",
            str(tmp_path / "cmp"),
            "--resamples",
            "2000",
            "--results",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = json.loads((tmp_path / "cmp.json").read_text())
    (entry,) = out["comparisons"]
    liver = next(r for r in entry["result"]["rows"] if r["organ"] == "liver")
    assert liver["mean_diff"] == pytest.approx(0.1) and liver["ci_low"] == pytest.approx(0.1)
    assert liver["n_folds"] == 5 and liver["p_wilcoxon"] < 1e-4
    # one seed on each side and no seed band measured under --results: at most weak
    assert liver["call"] == "weak" and "no seed band" in liver["reason"]
    md = (tmp_path / "cmp.md").read_text()
    assert "| Liver | 20 | 5 |" in md and "95 % CI, folds" in md and "Wilcoxon p" in md
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "summary.json" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "summary.json").write_text(json.dumps(_fold_summary("alpnet", fb, setting=2)))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "different setting" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a")]) == 2
    assert "in pairs" in capsys.readouterr().err
    assert main(["compare", "--family", "main", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "not both" in capsys.readouterr().err


def test_cross_validate_seeds_and_budget_curve(tmp_path, capsys):
    """Phantom smoke: 2 seeds x 1 fold, per-scan Dice in the summaries, compare, then the budget curve."""
    out = tmp_path / "cv"
    rc = main(
        [
            "cross-validate",
            "--dataset",
            "phantom",
            "--profile",
            "smoke",
            "--method",
            "panet",
            "--folds",
            "0",
            "--seeds",
            "0,1",
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "train.keep_checkpoints=10",
        ]
    )
    assert rc == 0
    s0 = json.loads((out / "seed0" / "summary.json").read_text())
    s1 = json.loads((out / "seed1" / "summary.json").read_text())
    agg = json.loads((out / "summary.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["folds"] == [0]
    runs = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("seed"))
    assert len(runs) == 2  # 2 seeds x 1 fold, all in OUT (hash-keyed)
    # per-scan Dice in the summary equals the run's metrics.json; the aggregate is the seed mean
    m = json.loads((out / s0["per_fold"]["0"]["runs"][0] / "metrics.json").read_text())
    sid = m["test_scans"][0]
    assert s0["per_scan"]["liver"][sid] == m["per_scan"]["liver"][sid]["dice"]
    assert agg["per_scan"]["liver"][sid] == pytest.approx(
        (s0["per_scan"]["liver"][sid] + s1["per_scan"]["liver"][sid]) / 2
    )
    assert "mean ± std over seeds" in (out / "summary.md").read_text()
    capsys.readouterr()
    assert main(["compare", str(out / "seed0"), str(out / "seed1"), "--resamples", "1000"]) == 0
    assert "| Liver |" in capsys.readouterr().out

    # budget curve: every kept checkpoint of one run; the last point equals the run's metrics.json
    run = out / s0["per_fold"]["0"]["runs"][0]
    assert main(["evaluate", str(run), "--checkpoints", "all", "--no-progress"]) == 0
    budget = json.loads((run / "budget.json").read_text())
    steps = [p["step"] for p in budget["points"]]
    assert steps == [2, 3]  # smoke: checkpoint every 2 steps and at the end (3)
    assert budget["points"][-1]["dice"]["mean"] == pytest.approx(m["mean"]["dice"], abs=1e-6)
    assert json.loads((run / "metrics.json").read_text()) == m  # metrics.json left alone
    capsys.readouterr()
    assert main(["evaluate", str(run), "--checkpoints", "5000"]) == 2
    assert "no checkpoint for step(s) [5000]" in capsys.readouterr().err
    assert (
        main(
            [
                "cross-validate",
                "--profile",
                "smoke",
                "--seeds",
                "0,1",
                "--set",
                "train.seed=3",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "already sets train.seed" in capsys.readouterr().err
    assert main(["cross-validate", "--profile", "smoke", "--seeds", "0,a", "--out", str(tmp_path / "x")]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_book_tables_show_mean_pm_std_over_folds():
    from crapnet_core import facts
    from crapnet_core.report import tables

    organs = list(facts.ORGANS)
    s = _summary("crapnet", {0: {"liver": 0.6, "spleen": 0.2}, 1: {"liver": 0.8, "spleen": 0.4}})
    s.update(dataset="chaos", organs=organs)
    for f, (lk, rk) in {"0": (0.3, 0.5), "1": (0.5, 0.7)}.items():
        d = s["per_fold"][f]["dice"]
        d.update(left_kidney=lk, right_kidney=rk)
        d["mean"] = float(np.mean([d[o] for o in organs]))
    s["mean"]["dice"].update(left_kidney=0.4, right_kidney=0.6)
    s["mean"]["dice"]["mean"] = float(np.mean([s["mean"]["dice"][o] for o in organs]))
    frame = tables.summary_frame([s])
    assert frame.set_index("organ").loc["mean", "dice_std"] == pytest.approx(
        100 * np.std([np.mean([0.3, 0.5, 0.2, 0.6]), np.mean([0.5, 0.7, 0.4, 0.8])], ddof=1)
    )
    table = tables.comparison_table(frame, 1, "chaos", spread=True)
    assert table.loc[("CRAPNet", "ours"), "Liver"] == "70.00 ± 14.14"
    assert table.loc[("CRAPNet", "published"), "RK"] == "86.42"  # published rows: no spread
    assert table.loc[("SSL-RPNet", "published"), "Liver"] != ""
    numeric = tables.comparison_table(frame, 1, "chaos")
    assert numeric.loc[("CRAPNet", "ours"), "Liver"] == pytest.approx(70.0)


def test_budget_files_load_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from crapnet_core.engine import budget

    b = {
        "run": "r",
        "method": "crapnet",
        "dataset": "chaos",
        "setting": 1,
        "fold": 0,
        "organs": ["liver"],
        "points": [
            {"step": 1000, "dice": {"liver": 0.5, "mean": 0.5}},
            {"step": 3000, "dice": {"liver": 0.6, "mean": 0.6}},
        ],
    }
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "budget.json").write_text(json.dumps(b))
    loaded = budget.load_budgets(tmp_path)
    assert len(loaded) == 1 and loaded[0]["points"][1]["step"] == 3000
    fig = budget.plot_budget(loaded)
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [1000, 3000] and list(line.get_ydata()) == pytest.approx([50.0, 60.0])
    assert "| 3000 | 60.00 | 60.00 |" in budget.budget_markdown(b)
    assert budget.parse_checkpoints("all", [3000, 1000]) == [1000, 3000]
    with pytest.raises(ValueError, match="not 'all'"):
        budget.parse_checkpoints("1k", [1000])


def test_ablation_table_mean_pm_std_over_folds():
    from crapnet_core.report import tables

    runs = []
    for fold, d in ((0, 0.4), (1, 0.6)):
        m = {
            "dataset": "chaos",
            "setting": 1,
            "fold": fold,
            "method": "crapnet",
            "profile": "lite",
            "organs": ["liver"],
            "per_organ": {"liver": {"dice_mean": d, "dice_std": 0.0, "hd95_mean": 1.0, "asd_mean": 1.0, "n_scans": 4}},
            "mean": {"dice": d, "hd95": 1.0, "asd": 1.0},
        }
        runs.append(tables.run_frame(m, variant=5))
    import pandas as pd

    ours = tables.fold_mean(pd.concat(runs, ignore_index=True))
    row = ours[(ours.variant == 5) & (ours.organ == "liver")].iloc[0]
    assert row.dice == pytest.approx(50.0) and row.dice_std == pytest.approx(100 * math.sqrt(0.02)) and row.n_folds == 2
    t3 = tables.ablation_table(ours, 3, spread=True)
    assert t3.loc[(5, "ours"), "Liver"] == "50.00 ± 14.14"
    assert t3.loc[(15, "published"), "Mean"] == "78.31"
    one = tables.fold_mean(runs[0])  # one fold: no spread, the mean alone
    assert tables.ablation_table(one, 3, spread=True).loc[(5, "ours"), "Liver"] == "40.00"


def test_validation_budget_curve_with_several_held_out_scans(tmp_path, capsys):
    """data.validation_scans=k holds the last k training scans out; --checkpoints ... --split validation
    scores exactly those scans into budget_validation.json (the converged budget's selection)."""
    from crapnet_core.data.protocol import make_fold

    fold = make_fold([str(i) for i in range(1, 21)], 0, 5, validation=4)
    assert fold.validation_ids == ("17", "18", "19", "20") and not set(fold.validation_ids) & set(fold.train_ids)
    assert make_fold(range(1, 21), 0, 5, validation=True).validation_ids == ("20",)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "phantom",
                "--profile",
                "smoke",
                "--method",
                "panet",
                "--out",
                str(run),
                "--no-progress",
                "--set",
                "data.validation=true",
                "--set",
                "data.validation_scans=2",
                "--set",
                "train.keep_checkpoints=10",
            ]
        )
        == 0
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["validation_scans"] == 2
    capsys.readouterr()
    assert main(["evaluate", str(run), "--checkpoints", "all", "--split", "validation", "--no-progress"]) == 0
    assert "Validation Dice" in capsys.readouterr().out
    budget = json.loads((run / "budget_validation.json").read_text())
    assert budget["split"] == "validation" and len(budget["scans"]) == 2
    assert [p["step"] for p in budget["points"]] == [2, 3]
    assert not (run / "budget.json").exists()
