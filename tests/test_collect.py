"""results/collect.py: the book's generated tables read the right summaries and comparisons."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collect():
    spec = importlib.util.spec_from_file_location("collect_script", REPO / "results" / "collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(folder: Path, method: str, fold_means, overrides=(), seeds=None):
    folder.mkdir(parents=True, exist_ok=True)
    per_fold = {str(f): {"dice": {o: m for o in ("left_kidney", "right_kidney", "spleen", "liver", "mean")}}
                for f, m in enumerate(fold_means)}
    s = {"dataset": "chaos", "setting": 1, "method": method, "profile": "lite", "folds": list(range(len(fold_means))),
         "organs": ["left_kidney", "right_kidney", "spleen", "liver"], "per_fold": per_fold,
         "overrides": list(overrides), "mean": {"dice": {"mean": sum(fold_means) / len(fold_means)}}}
    if seeds:
        s["seeds"] = seeds
        s["mean"]["dice_std_over_seeds"] = {"mean": 0.005}
    (folder / "summary.json").write_text(json.dumps(s))


def _compare(root: Path, name: str, diff: float, lo: float, hi: float, resolved: bool):
    (root / "compare").mkdir(exist_ok=True)
    row = {"organ": "mean", "mean_diff": diff, "ci_low": lo, "ci_high": hi, "resolved": resolved,
           "p_wilcoxon": 0.01, "n": 20}
    (root / "compare" / f"{name}.json").write_text(json.dumps({"rows": [row]}))


def test_ablation_rows_use_seed0_of_the_reference_and_their_own_runs(collect, tmp_path):
    _summary(tmp_path / "chaos_setting1_crapnet_lite", "crapnet", [0.40, 0.50], seeds=[0, 1, 2])  # aggregate
    _summary(tmp_path / "chaos_setting1_crapnet_lite" / "seed0", "crapnet", [0.42, 0.52])
    _summary(tmp_path / "chaos_setting1_crapnet-blocks7_lite", "crapnet", [0.30, 0.34], ["model.n_blocks=7"])
    _compare(tmp_path, "chaos_setting1_crapnet-blocks7_vs_crapnet_seed0", -0.15, -0.2, -0.1, True)
    t3 = collect.ablation_blocks(tmp_path)["table3"]
    rows = {line.split(" | ")[0].strip("| "): line for line in t3.splitlines() if line.startswith("| ")}
    assert "47.00 ± 7.07" in rows["5 (paper)"]  # seed 0 (0.42, 0.52), not the seed aggregate (0.45)
    assert "32.00 ± 2.83" in rows["7"] and "-15.00 [-20.00, -10.00]" in rows["7"] and "**resolved**" in rows["7"]
    assert "not run yet" in rows["9"] and "78.02" in rows["9"]  # the paper's mean stays, our cells are "–"
    assert "± 0.50 (std) over its 3 training seeds" in t3


def test_method_table_shows_each_method_minus_crapnet(collect, tmp_path):
    _summary(tmp_path / "chaos_setting1_crapnet_lite", "crapnet", [0.40, 0.50])
    _summary(tmp_path / "chaos_setting1_adnet_lite", "adnet", [0.20, 0.30])
    _compare(tmp_path, "chaos_setting1_crapnet_vs_adnet", 0.20, 0.15, 0.25, True)  # compare_all.sh: crapnet − adnet
    table = collect.method_blocks(tmp_path)["methods1"]
    adnet = next(line for line in table.splitlines() if line.startswith("| ADNet"))
    assert "25.00 ± 7.07" in adnet and "-20.00 [-25.00, -15.00]" in adnet
    alpnet_sup = next(line for line in table.splitlines() if line.startswith("| ALPNet (supervised)"))
    assert "51.28" in alpnet_sup  # the paper's supervised ALPNet row (Table 1, CHAOS)


def test_update_book_needs_every_block_once(collect, tmp_path, monkeypatch):
    monkeypatch.setattr(collect, "book_blocks", lambda: {n: f"table {n}\n" for names in collect.PAGES.values()
                                                         for n in names})
    for page, names in collect.PAGES.items():
        (tmp_path / page).write_text("".join(f"<!-- results:{n} -->\nold\n<!-- /results:{n} -->\n" for n in names))
    collect.update_book(tmp_path)
    assert "table table3" in (tmp_path / "ablations.md").read_text()
    assert "old" not in (tmp_path / "results.md").read_text()
    (tmp_path / "ablations.md").write_text("no blocks here\n")
    with pytest.raises(SystemExit, match="table3 appears 0 times"):
        collect.update_book(tmp_path)
