"""Table of every cross-validation summary under results/ (for results/README.md).

    .venv/bin/python results/collect.py                      # print the Markdown table
    .venv/bin/python results/collect.py --update-readme      # rewrite the table block of results/README.md
    .venv/bin/python results/collect.py --rewrite-summaries  # re-render every summary.md from its summary.json
    .venv/bin/python results/collect.py --update-book        # rewrite the generated tables of the book pages (PAGES)

Every Dice/HD95/ASD cell is mean ± sample standard deviation (ddof=1) over the folds,
computed from the per-fold values of summary.json (crapnet_core.engine.stats.fold_spread), so
summaries written before the standard deviation was stored render the same way.
``--rewrite-summaries`` needs no rerun: it only re-renders summary.md (and refreshes the
derived ``mean.dice_std_over_folds`` of summary.json to the same ddof=1 values).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from a checkout: use its crapnet_core

from crapnet_core.io import write_json, write_text  # noqa: E402
from crapnet_core.engine.runs import summary_markdown  # noqa: E402
from crapnet_core.engine.stats import fold_spread, format_pm  # noqa: E402

ORDER = [("chaos", 1, "crapnet"), ("chaos", 1, "alpnet"), ("chaos", 1, "panet"),
         ("chaos", 2, "crapnet"), ("chaos", 2, "alpnet"), ("chaos", 2, "panet"),
         ("sabs", 1, "crapnet"), ("sabs", 1, "alpnet"), ("sabs", 1, "panet"),
         ("sabs", 2, "crapnet"), ("sabs", 2, "alpnet"), ("sabs", 2, "panet"),
         # issue 8 §4: the component decomposition (CHAOS setting 1)
         ("chaos", 1, "alpnet-attention"), ("chaos", 1, "alpnet-carafe"), ("chaos", 1, "crapnet-aligned"),
         # issue 10: Tables 3-4 over 5 folds (CHAOS setting 1), then the paper's other rows and later methods
         *[("chaos", 1, f"crapnet-blocks{n}") for n in (1, 7, 9, 12, 15)], ("chaos", 1, "crapnet-onebranch"),
         *[(ds, st, m) for m in ("alpnet_init", "alpnet_sup", "rpnet", "adnet", "qnet")
           for ds in ("chaos", "sabs") for st in (1, 2)]]
NAMES = {"crapnet": "CRAPNet", "alpnet": "SSL-ALPNet", "panet": "SSL-PANet",
         "alpnet-attention": "SSL-ALPNet + attention", "alpnet-carafe": "SSL-ALPNet + CARAFE++ prototypes",
         "crapnet-aligned": "CRAPNet, aligned CARAFE++ window",
         **{f"crapnet-blocks{n}": f"CRAPNet, {n} block{'s' * (n > 1)}" for n in (1, 7, 9, 12, 15)},
         "crapnet-onebranch": "CRAPNet, one branch", "alpnet_init": "ALPNet-init", "alpnet_sup": "ALPNet (supervised)",
         "rpnet": "SSL-RPNet", "adnet": "ADNet", "qnet": "Q-Net"}
DATASETS = {"chaos": "CHAOS MRI", "sabs": "Synapse CT"}


def run_infos(folder: Path) -> list[dict]:
    """The run_info.json of a table folder: one per seed (``seed<k>/``), or the folder's own (older layout)."""
    paths = sorted(folder.glob("seed*/run_info.json")) or [p for p in [folder / "run_info.json"] if p.is_file()]
    return [json.loads(p.read_text()) for p in paths]


def _num(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def table() -> str:
    lines = ["| dataset | setting | method | LK | RK | Spleen | Liver | Mean | paper Mean | HD95 mm | ASD mm | folds | seeds | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds, setting, method in ORDER:
        folder = HERE / f"{ds}_setting{setting}_{method}_lite"
        if not (folder / "summary.json").is_file():
            continue
        s = json.loads((folder / "summary.json").read_text())
        infos = run_infos(folder)
        d = fold_spread(s, "dice")
        keys = ("left_kidney", "right_kidney", "spleen", "liver", "mean")
        cells = [format_pm(d[k]["mean"], d[k]["std"]) if k in d else "–" for k in keys]
        hd, asd = fold_spread(s, "hd95")["mean"], fold_spread(s, "asd")["mean"]
        paper = None if "-" in method else (s.get("paper_dice") or {}).get("Mean")  # no paper row for variants
        wall = sum(i["wall_seconds"] for i in infos) if infos else None
        seeds = len(s.get("seeds") or [0])
        lines.append(f"| {DATASETS[ds]} | {setting} | {NAMES[method]} | " + " | ".join(cells)
                     + f" | {_num(paper, '.2f')} | {format_pm(hd['mean'], hd['std'], 1.0, 1)}"
                     + f" | {format_pm(asd['mean'], asd['std'], 1.0, 1)} | {len(s['folds'])} | {seeds}"
                     + f" | {'–' if wall is None else f'{wall / 60:.0f} min'} |")
    return "\n".join(lines) + "\n"


def status() -> str:
    out = []
    for ds, setting, method in ORDER:
        name = f"{ds}_setting{setting}_{method}_lite"
        infos = run_infos(HERE / name)
        if infos:
            done = ", ".join(f"{i['started_utc']} ({i['wall_seconds']} s, {i['commit']})" for i in infos)
            out.append(f"- `{name}`: **done** ({len(infos)} seed(s)), started {done}")
        else:
            out.append(f"- `{name}`: **not run yet** when this table was written (queued in `results/run_study.sh`)")
    return "\n".join(out) + "\n"


def update_readme() -> None:
    path = HERE / "README.md"
    block = ("<!-- results-table: regenerate with `.venv/bin/python results/collect.py --update-readme` -->\n"
             "Dice in percent, mean ± standard deviation (ddof=1) over the 5 folds (each fold: mean over its\n"
             "test scans); HD95/ASD in mm (mean over organs, then mean ± std over folds, scans with an empty\n"
             "prediction left out); \"paper Mean\" is the\n"
             "paper's Table 1/2 value for the same method (SSL-ALPNet, SSL-PANet, CRAPNet rows); \"wall\" is\n"
             "the wall time of the cross-validate command (see the notes above).\n\n"
             + table() + "\nState of each run:\n\n" + status() + "<!-- /results-table -->\n")
    text = path.read_text()
    new, n = re.subn(r"<!-- results-table:.*?<!-- /results-table -->\n", lambda m: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: no results-table block to replace")
    path.write_text(new)


def _summary(name: str, root: Path = HERE) -> dict | None:
    path = root / f"{name}_lite" / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _dice_cell(s: dict | None) -> str:
    """Mean Dice ± std over folds, and over seeds when there are several (0-100)."""
    if s is None:
        return "not run yet"
    d = fold_spread(s, "dice")["mean"]
    cell = format_pm(d["mean"], d["std"])
    seeds = s.get("seeds") or [0]
    if len(seeds) > 1:
        std_seeds = s["mean"]["dice_std_over_seeds"]["mean"]
        cell += f" (seeds ± {100 * std_seeds:.2f}, n = {len(seeds)})"
    return cell


def _paired_cell(a: str, b: str, root: Path = HERE, reverse: bool = False) -> str:
    """Mean paired per-scan difference a − b with its CI from results/compare/<a>_vs_<b>.json;
    ``reverse``: the file is <b>_vs_<a> (compare_all.sh's direction) and the cell shows a − b anyway."""
    first, second = (b, a) if reverse else (a, b)
    path = root / "compare" / f"{first}_vs_{second.split('_', 2)[2]}.json"
    if not path.is_file():
        return "not run yet"
    row = next(r for r in json.loads(path.read_text())["rows"] if r["organ"] == "mean")
    sign = -1 if reverse else 1
    lo, hi = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    verdict = "**resolved**" if row["resolved"] else "not resolved"
    return (f"{100 * sign * row['mean_diff']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}], "
            f"p = {row['p_wilcoxon']:.2g}, n = {row['n']}: {verdict}")


MAIN = ("crapnet", "alpnet", "panet")


def book_blocks() -> dict[str, str]:
    """The generated tables of book/equal_budget.md (name -> Markdown), all read from results/."""
    blocks = {}
    for setting in (1, 2):
        lines = ["| | " + " | ".join(NAMES[m] for m in MAIN) + " |", "|---" * (len(MAIN) + 1) + "|"]
        for ds in ("chaos", "sabs"):
            lines.append(f"| {DATASETS[ds]} | " + " | ".join(_dice_cell(_summary(f"{ds}_setting{setting}_{m}"))
                                                          for m in MAIN) + " |")
        blocks[f"setting{setting}"] = "\n".join(lines) + "\n"
    for setting, key in ((1, "paired"), (2, "paired2")):
        lines = ["| A − B | " + " | ".join(DATASETS.values()) + " |", "|---|---|---|"]
        for a, b in (("crapnet", "alpnet"), ("crapnet", "panet"), ("alpnet", "panet")):
            lines.append(f"| {NAMES[a]} − {NAMES[b]} | " + " | ".join(
                _paired_cell(f"{ds}_setting{setting}_{a}", f"{ds}_setting{setting}_{b}") for ds in DATASETS) + " |")
        blocks[key] = "\n".join(lines) + "\n"
    rows = [("alpnet", "–", "average pooling", None), ("alpnet-attention", "5 blocks × 2 branches", "average pooling", "alpnet"),
            ("alpnet-carafe", "–", "CARAFE++", "alpnet"), ("crapnet", "5 blocks × 2 branches", "CARAFE++", "alpnet"),
            ("crapnet-aligned", "5 blocks × 2 branches", "CARAFE++ (window = cell)", "crapnet")]
    # one code version for the whole decomposition: the current tables when its five rows were run at
    # one commit, else the newest complete set kept under variants/ (never rows of two versions)
    def commits(root: Path) -> set[str]:
        return {i["commit"] for m, *_ in rows for i in run_infos(root / f"chaos_setting1_{m}_lite")}
    root = next((r for r in (HERE, *sorted(HERE.glob("variants/lite_v*"), reverse=True))
                 if len(commits(r)) == 1 and all(_summary(f"chaos_setting1_{m}", r) for m, *_ in rows)), HERE)
    where = "results/" + (str(root.relative_to(HERE)) + "/" if root != HERE else "")
    lines = [f"Run at commit {', '.join(sorted(commits(root)))}; training seed 0 for every row; tables and comparisons "
             f"in `{where}`.", "",
             "| model | attention | local prototypes | mean Dice (± over folds) | paired difference (vs.) |",
             "|---|---|---|---|---|"]
    for m, att, protos, ref in rows:
        s = _seed0(f"chaos_setting1_{m}", root)  # seed 0 of every row, as the paired tests (compare_all.sh)
        # the paired tests of seed 0 against seed 0 (compare_all.sh: the _seed0 files)
        name = f"chaos_setting1_{m}"
        paired = "–" if ref is None else f"{_paired_cell(name, f'chaos_setting1_{ref}_seed0', root)} ({NAMES[ref]})"
        lines.append(f"| {NAMES[m]} | {att} | {protos} | {_dice_cell(s)} | {paired} |")
    blocks["decomposition"] = "\n".join(lines) + "\n"
    curves = {m: HERE / f"budget_chaos_setting1_f0_{m}" / "budget.json" for m in ("crapnet", "alpnet")}
    points = {m: {p["step"]: p["dice"]["mean"] for p in json.loads(path.read_text())["points"]}
              for m, path in curves.items() if path.is_file()}
    steps = sorted({k for v in points.values() for k in v})
    lines = ["| steps | " + " | ".join(NAMES[m] for m in curves) + " |", "|---|---|---|"]
    for step in steps:
        lines.append(f"| {step:,} | " + " | ".join(_num(None if points.get(m, {}).get(step) is None
                                                         else 100 * points[m][step], ".2f") for m in curves) + " |")
    blocks["budget"] = "\n".join(lines) + "\n"
    blocks.update(ablation_blocks())
    blocks.update(method_blocks())
    return blocks


def _seed0(name: str, root: Path = HERE) -> dict | None:
    """Seed 0 of a table (``seed0/summary.json``; a one-folder table of the older layout: its summary)."""
    folder = root / f"{name}_lite"
    path = folder / "seed0" / "summary.json"
    if not path.is_file():
        return _summary(name, root)
    return json.loads(path.read_text())


def _organ_cells(s: dict | None) -> list[str]:
    """LK, RK, Spleen, Liver and mean Dice, each mean ± std over folds (0-100); "–" when not run."""
    if s is None:
        return ["–"] * 5
    d = fold_spread(s, "dice")
    return [format_pm(d[k]["mean"], d[k]["std"]) if k in d else "–"
            for k in ("left_kidney", "right_kidney", "spleen", "liver", "mean")]


def ablation_blocks(root: Path = HERE) -> dict[str, str]:
    """Tables 3-4 analogues over five folds (issue 10): each point seed 0, against the 5-block two-branch
    model's seed 0 (paired per-scan test from results/compare/, made by compare_all.sh)."""
    from crapnet_core.published import PUBLISHED

    base = _seed0("chaos_setting1_crapnet", root)
    agg = _summary("chaos_setting1_crapnet", root)
    seeds = (agg or {}).get("seeds") or []
    out = {}
    for key, axis, points in (("table3", "blocks", (1, 5, 7, 9, 12, 15)), ("table4", "branches", (2, 1))):
        head = "attention blocks per branch" if axis == "blocks" else "branches"
        lines = [f"| {head} | LK | RK | Spleen | Liver | Mean | paper Mean | A − 5 blocks, 2 branches: mean [95 % CI], p |",
                 "|---|---|---|---|---|---|---|---|"]
        for v in points:
            default = v == (5 if axis == "blocks" else 2)
            name = "chaos_setting1_crapnet" + ("" if default else f"-blocks{v}" if axis == "blocks" else "-onebranch")
            s = base if default else _seed0(name, root)
            paper = PUBLISHED[key][v][-1]
            paired = "reference" if default else _paired_cell(name, "chaos_setting1_crapnet_seed0", root)
            lines.append(f"| {v}{' (paper)' if default else ''} | " + " | ".join(_organ_cells(s))
                         + f" | {paper:.2f} | {paired} |")
        lines += ["", f"Dice 0-100, mean ± standard deviation over the five folds of CHAOS MRI setting 1, `lite`, "
                  "training seed 0 for every row (the paired test compares seed 0 with seed 0, scan by scan). "
                  + (f"For scale: the 5-block model's fold-mean Dice moves by ± "
                     f"{100 * agg['mean']['dice_std_over_seeds']['mean']:.2f} (std) over its {len(seeds)} training seeds "
                     f"({_dice_cell(agg)})." if len(seeds) > 1 else "")]
        out[key] = "\n".join(lines) + "\n"
    return out


#: the rows of the all-methods tables of book/results.md, in the order of the paper's Tables 1-2, then later methods
ALL_METHODS = ("alpnet_init", "alpnet_sup", "panet", "alpnet", "rpnet", "crapnet", "adnet", "qnet")


def method_blocks(root: Path = HERE) -> dict[str, str]:
    """Every method of the registry on both datasets (one table per setting): mean Dice ± std over folds
    (the seed aggregate, with the spread over seeds, where a table has several seeds), the paper's mean
    where it has the row, and the paired per-scan difference from CRAPNet (results/compare/, made by
    compare_all.sh: on the seed aggregates when both tables have the same seeds, else on seed 0 of
    both, as the page says)."""
    from crapnet_core.facts import METHOD_LABELS  # the paper's row names
    from crapnet_core.published import PUBLISHED

    out = {}
    for setting in (1, 2):
        lines = ["| method | " + " | ".join(f"{DATASETS[ds]}: ours | paper | − CRAPNet [95 % CI], p" for ds in DATASETS) + " |",
                 "|---" * (1 + 3 * len(DATASETS)) + "|"]
        for m in ALL_METHODS:
            cells = []
            for ds in DATASETS:
                s = _summary(f"{ds}_setting{setting}_{m}", root)
                paper = PUBLISHED[f"table{setting}"][ds].get(METHOD_LABELS[m])
                paired = "–" if m == "crapnet" or s is None else \
                    _paired_cell(f"{ds}_setting{setting}_{m}", f"{ds}_setting{setting}_crapnet", root, reverse=True)
                cells += [_dice_cell(s) if s is not None else "–", "–" if paper is None else f"{paper[-1]:.2f}", paired]
            lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
        out[f"methods{setting}"] = "\n".join(lines) + "\n"
    return out


#: book page -> the generated blocks it holds (names of book_blocks())
PAGES = {"equal_budget.md": ("setting1", "paired", "setting2", "paired2", "decomposition", "budget"),
         "ablations.md": ("table3", "table4"),
         "results.md": ("methods1", "methods2")}


def update_book(book: Path = HERE.parent / "book") -> None:
    """Replace each ``<!-- results:NAME -->...<!-- /results:NAME -->`` block of the pages in :data:`PAGES`."""
    blocks = book_blocks()
    for page, names in PAGES.items():
        path = book / page
        text = path.read_text()
        for name in names:
            marker = f"<!-- results:{name}: generated by `.venv/bin/python results/collect.py --update-book` -->\n"
            text, n = re.subn(rf"<!-- results:{name}[:\s].*?<!-- /results:{name} -->\n",
                              lambda m: marker + "\n" + blocks[name] + "\n" + f"<!-- /results:{name} -->\n",
                              text, flags=re.S)
            if n != 1:
                raise SystemExit(f"{path}: block {name} appears {n} times (expected once)")
        path.write_text(text)


def rewrite_summaries(root: Path = HERE) -> list[Path]:
    """Re-render every ``root/*/summary.md`` (and the variants') from its ``summary.json``; no rerun.

    Also refreshes the derived ``mean.dice_std_over_folds`` of the JSON to the sample standard
    deviation over folds (ddof=1) of every organ and of the organ mean. Returns the rewritten files.
    """
    done = []
    for path in sorted(root.rglob("summary.json")):
        s = json.loads(path.read_text())
        if "per_fold" not in s:
            continue
        spread = fold_spread(s, "dice")
        std = {k: (None if v["std"] is None else round(v["std"], 6)) for k, v in spread.items()}
        if s.get("mean", {}).get("dice_std_over_folds") != std and not s.get("seeds"):
            s["mean"]["dice_std_over_folds"] = std
            s["std_ddof"] = 1
            write_json(path, s)
        write_text(path.with_suffix(".md"), summary_markdown(s))
        done.append(path.with_suffix(".md"))
    return done


if __name__ == "__main__":
    if "--rewrite-summaries" in sys.argv[1:]:
        for p in rewrite_summaries():
            print(p)
    elif "--update-readme" in sys.argv[1:]:
        update_readme()
    elif "--update-book" in sys.argv[1:]:
        update_book()
    else:
        print(table(), end="")
