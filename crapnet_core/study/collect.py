"""The generated tables of the book's pages and of results/README.md, from the committed results.

    crapnet study collect        # rewrite results/README.md's table block and the book's generated tables

(moved from ``results/collect.py``: what it printed and wrote is unchanged). Which tables exist, their
order, labels and comparisons come from the study declaration (``crapnet_core/study/study.yaml``);
method and dataset names from :mod:`crapnet_core.facts`.

Every Dice/HD95/ASD cell is mean ± sample standard deviation (ddof=1) over the folds,
computed from the per-fold values of summary.json (crapnet_core.engine.stats.fold_spread), so
summaries written before the standard deviation was stored render the same way.
:func:`rewrite_summaries` needs no rerun: it only re-renders summary.md (and refreshes the
derived ``mean.dice_std_over_folds`` of summary.json to the same ddof=1 values).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..engine.runs import summary_markdown
from ..engine.stats import fold_spread, format_pm
from ..facts import DATASET_SHORT, METHOD_LABELS
from ..io import write_json, write_text
from .declaration import load_declaration


#: The results folder the functions read when not given one (None: this checkout's ``results/``).
RESULTS: Path | None = None


def _here() -> Path:
    from ..paths import default_results_dir

    return Path(RESULTS) if RESULTS is not None else default_results_dir()


#: the lite tables with a summary, in declaration order: (dataset, setting, key), key = the name between
#: "<dataset>_setting<k>_" and "_lite" (a method, or a variant such as "alpnet-attention")
PROFILE = "lite"


def _lite_tables():
    return [t for t in load_declaration().select(profiles=[PROFILE]) if t.summary]


def _key(table) -> str:
    return table.name[len(f"{table.dataset}_setting{table.setting}_"):-len(f"_{PROFILE}")]


def _order() -> list[tuple[str, int, str]]:
    return [(t.dataset, t.setting, _key(t)) for t in _lite_tables()]


class _Names(dict):
    """key -> display name: the method labels of facts, the declared labels of the variant tables."""

    def __missing__(self, key):
        labels = {_key(t): t.label for t in _lite_tables()}
        self.update(METHOD_LABELS)
        self.update(labels)
        return dict.__getitem__(self, key)


NAMES = _Names()
DATASETS = {ds: DATASET_SHORT[ds] for ds in ("chaos", "sabs")}


def run_infos(folder: Path) -> list[dict]:
    """The run_info.json of a table folder: one per seed (``seed<k>/``), or the folder's own (older layout)."""
    paths = sorted(folder.glob("seed*/run_info.json")) or [p for p in [folder / "run_info.json"] if p.is_file()]
    return [json.loads(p.read_text()) for p in paths]


def _num(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def table() -> str:
    lines = ["| dataset | setting | method | LK | RK | Spleen | Liver | Mean | paper Mean | HD95 mm | ASD mm | folds | seeds | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds, setting, method in _order():
        folder = _here() / f"{ds}_setting{setting}_{method}_lite"
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
    for ds, setting, method in _order():
        name = f"{ds}_setting{setting}_{method}_lite"
        infos = run_infos(_here() / name)
        if infos:
            done = ", ".join(f"{i['started_utc']} ({i['wall_seconds']} s, {i['commit']})" for i in infos)
            out.append(f"- `{name}`: **done** ({len(infos)} seed(s)), started {done}")
        else:
            out.append(f"- `{name}`: **not run yet** when this table was written (declared; "
                       f"`crapnet study run --tables {name}`)")
    return "\n".join(out) + "\n"


def update_readme() -> None:
    path = _here() / "README.md"
    block = ("<!-- results-table: regenerate with `crapnet study collect` -->\n"
             "Dice in percent, mean ± standard deviation (ddof=1) over the 5 folds (each fold: mean over its\n"
             "test scans); HD95/ASD in mm (mean over organs, then mean ± std over folds, scans with an empty\n"
             "prediction left out); \"paper Mean\" is the\n"
             "paper's Table 1/2 value for the same method (SSL-ALPNet, SSL-PANet, CRAPNet rows); \"wall\" is\n"
             "the wall time of the cross-validate command (see the notes above).\n\n"
             + table() + "\nState of each run:\n\n" + status() + "<!-- /results-table -->\n")
    text = path.read_text()
    new, n = re.subn(r"<!-- results-table:.*?<!-- /results-table -->\n", lambda m: block, text, flags=re.S)
    if n != 1:
        raise ValueError(f"{path}: no results-table block to replace")
    path.write_text(new)


def _summary(name: str, root: Path | None = None) -> dict | None:
    root = Path(root) if root is not None else _here()
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


def _paired_cell(a: str, b: str, root: Path | None = None, reverse: bool = False) -> str:
    """Mean paired per-scan difference a − b with its CI from results/compare/<a>_vs_<b>.json;
    ``reverse``: the file is <b>_vs_<a> (the declared comparison's direction) and the cell shows a − b anyway."""
    root = Path(root) if root is not None else _here()
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
    here = _here()
    root = next((r for r in (here, *sorted(here.glob("variants/lite_v*"), reverse=True))
                 if len(commits(r)) == 1 and all(_summary(f"chaos_setting1_{m}", r) for m, *_ in rows)), here)
    where = "results/" + (str(root.relative_to(here)) + "/" if root != here else "")
    lines = [f"Run at commit {', '.join(sorted(commits(root)))}; training seed 0 for every row; tables and comparisons "
             f"in `{where}`.", "",
             "| model | attention | local prototypes | mean Dice (± over folds) | paired difference (vs.) |",
             "|---|---|---|---|---|"]
    for m, att, protos, ref in rows:
        s = _seed0(f"chaos_setting1_{m}", root)  # seed 0 of every row, as the paired tests (the declared comparisons)
        # the paired tests of seed 0 against seed 0 (the declared comparisons' _seed0 files)
        name = f"chaos_setting1_{m}"
        paired = "–" if ref is None else f"{_paired_cell(name, f'chaos_setting1_{ref}_seed0', root)} ({NAMES[ref]})"
        lines.append(f"| {NAMES[m]} | {att} | {protos} | {_dice_cell(s)} | {paired} |")
    blocks["decomposition"] = "\n".join(lines) + "\n"
    curves = {m: _budget_file(f"budget_chaos_setting1_f0_{m}") for m in ("crapnet", "alpnet")}
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


def _seed0(name: str, root: Path | None = None) -> dict | None:
    """Seed 0 of a table (``seed0/summary.json``; a one-folder table of the older layout: its summary)."""
    root = Path(root) if root is not None else _here()
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


def ablation_blocks(root: Path | None = None) -> dict[str, str]:
    """Tables 3-4 analogues over five folds (issue 10): each point seed 0, against the 5-block two-branch
    model's seed 0 (paired per-scan test from results/compare/, made by the declared comparisons)."""
    root = Path(root) if root is not None else _here()
    from ..published import PUBLISHED

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


def method_blocks(root: Path | None = None) -> dict[str, str]:
    """Every method of the registry on both datasets (one table per setting): mean Dice ± std over folds
    (the seed aggregate, with the spread over seeds, where a table has several seeds), the paper's mean
    where it has the row, and the paired per-scan difference from CRAPNet (results/compare/, made by
    the declared comparisons: on the seed aggregates when both tables have the same seeds, else on seed 0 of
    both, as the page says)."""
    root = Path(root) if root is not None else _here()
    # METHOD_LABELS: the paper's row names (facts)
    from ..published import PUBLISHED

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


def update_book(book: Path | None = None) -> None:
    """Replace each ``<!-- results:NAME -->...<!-- /results:NAME -->`` block of the pages in :data:`PAGES`."""
    book = Path(book) if book is not None else _here().parent / "book"
    blocks = book_blocks()
    for page, names in PAGES.items():
        path = book / page
        text = path.read_text()
        for name in names:
            marker = f"<!-- results:{name}: generated by `crapnet study collect` -->\n"
            text, n = re.subn(rf"<!-- results:{name}[:\s].*?<!-- /results:{name} -->\n",
                              lambda m: marker + "\n" + blocks[name] + "\n" + f"<!-- /results:{name} -->\n",
                              text, flags=re.S)
            if n != 1:
                raise ValueError(f"{path}: block {name} appears {n} times (expected once)")
        path.write_text(text)


def rewrite_summaries(root: Path | None = None) -> list[Path]:
    """Re-render every ``root/*/summary.md`` (and the variants') from its ``summary.json``; no rerun.

    Also refreshes the derived ``mean.dice_std_over_folds`` of the JSON to the sample standard
    deviation over folds (ddof=1) of every organ and of the organ mean. Returns the rewritten files.
    """
    root = Path(root) if root is not None else _here()
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


def _budget_file(table: str) -> Path:
    """The budget curve of a one-fold budget table: in its run folder (``<table>/seed0/<run>/budget.json``,
    the per-run layout), else at the table's top (the layout before it)."""
    found = sorted((_here() / table).glob("seed*/*/budget.json"))
    return found[0] if found else _here() / table / "budget.json"


def collect(results_dir: str | Path | None = None, book: str | Path | None = None) -> list[Path]:
    """``crapnet study collect``: rewrite the table block of ``results/README.md`` and every generated
    table of the book's pages (:data:`PAGES`) from the committed results; returns the files written."""
    global RESULTS
    previous, RESULTS = RESULTS, (Path(results_dir) if results_dir is not None else RESULTS)
    try:
        update_readme()
        update_book(book)
        book_dir = Path(book) if book is not None else _here().parent / "book"
        return [_here() / "README.md", *(book_dir / page for page in PAGES)]
    finally:
        RESULTS = previous
