"""The collector: every generated table and sentence of the book's pages and of ``results/README.md``.

    from crapnet_core.report.collect import collect
    changed = collect("results", ".")              # rewrite what differs; returns the files written
    stale = collect("results", ".", check=True)    # write nothing; returns the files that would change

Pages hold blocks ``<!-- results:NAME ... -->`` ... ``<!-- /results:NAME -->``; :data:`PAGES` says
which page holds which block, :func:`blocks` renders every block from the result files (tables:
here; sentences: :mod:`crapnet_core.report.prose`). Nothing between two markers is typed by hand,
and every result number of those pages sits between markers (a test checks both).

The fold-level comparisons of every declared family (:mod:`crapnet_core.engine.decision`) are kept in
``results/compare/analysis.json`` with the SHA-256 of their input files and of
:data:`ANALYSIS_VERSION`; they are recomputed only when an input changed (or the version was
raised because the analysis changed), and their Markdown is written beside them
(``results/compare/<family>.md``, ``seed_band.md``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..engine.decision import FAMILIES, SEED_BAND_TABLES, all_comparisons
from ..engine.stats import fold_spread, format_pm
from ..facts import METHOD_LABELS
from ..io import read_json
from .stats_tables import DATASET_SHORT, VARIANT_LABELS, call_md, ci, family_table, pts, rule_md, seed_band_md

#: Raise when the fold-level analysis changes (the cached comparisons are then recomputed).
ANALYSIS_VERSION = "issue18-3"
#: page (relative to the repository) -> the generated blocks it holds
PAGES: dict[str, tuple[str, ...]] = {
    "book/equal_budget.md": (
        "converged",
        "converged_text",
        "converged_change",
        "diagnostics_converged",
        "converged_budget",
        "selection",
        "choices",
        "setting1",
        "paired",
        "main_text",
        "setting2",
        "paired2",
        "setting2_text",
        "decomposition",
        "decomposition_text",
        "diagnostics",
        "explain",
        "budget",
        "budget_text",
    ),
    "book/ablations.md": ("table3", "table4", "ablations_text", "temperature"),
    "book/results.md": ("converged_change", "methods1", "methods2", "methods_family", "methods_text", "rpnet_text"),
    "book/limitations.md": ("limitations_study", "rerun_summary"),
    "book/method.md": ("choices",),
    "results/README.md": (
        "converged_change",
        "rule",
        "seed_band",
        "comparisons",
        "results-table",
        "selection_readme",
        "paper_gap",
        "rerun",
    ),
}
_DATASETS = ("chaos", "sabs")
MAIN = ("crapnet", "alpnet", "panet")
#: the rows of the all-methods tables, in the order of the paper's Tables 1-2, then later methods
ALL_METHODS = ("alpnet_init", "alpnet_sup", "panet", "alpnet", "rpnet", "crapnet", "adnet", "qnet")
#: the README's table of every committed table, in this order
README_ORDER = (
    [(ds, st, m) for ds in _DATASETS for st in (1, 2) for m in MAIN]
    + [("chaos", 1, v) for v in ("alpnet-attention", "alpnet-carafe", "crapnet-aligned")]
    + [("chaos", 1, f"crapnet-blocks{n}") for n in (1, 7, 9, 12, 15)]
    + [("chaos", 1, "crapnet-onebranch")]
    + [
        (ds, st, m)
        for m in ("alpnet_init", "alpnet_sup", "rpnet", "adnet", "qnet")
        for ds in _DATASETS
        for st in (1, 2)
    ]
)


def label(key: str) -> str:
    return VARIANT_LABELS.get(key, METHOD_LABELS.get(key, key))


# ---------------------------------------------------------------------- reading results/
def read_summary(results: Path, name: str, seed: int | None = None) -> dict | None:
    """``results/<name>/summary.json`` (``seed``: ``seed<k>/summary.json``; a one-folder table of the
    older layout: its summary), or None when absent."""
    folder = results / name
    if seed is not None and (folder / f"seed{seed}" / "summary.json").is_file():
        return read_json(folder / f"seed{seed}" / "summary.json")
    path = folder / "summary.json"
    return read_json(path) if path.is_file() else None


def run_infos(folder: Path) -> list[dict]:
    """The run_info.json of a table folder: one per seed (``seed<k>/``), or the folder's own (older layout)."""
    paths = sorted(folder.glob("seed*/run_info.json")) or [p for p in [folder / "run_info.json"] if p.is_file()]
    return [read_json(p) for p in paths]


def dice_cell(s: Mapping | None) -> str:
    """Mean Dice ± std over folds, and the std over seeds when there are several (0-100)."""
    if s is None:
        return "not run yet"
    d = fold_spread(s, "dice")["mean"]
    cell = format_pm(d["mean"], d["std"])
    seeds = s.get("seeds") or [0]
    if len(seeds) > 1:
        cell += f" (seeds ± {100 * s['mean']['dice_std_over_seeds']['mean']:.2f}, n = {len(seeds)})"
    return cell


def organ_cells(s: Mapping | None) -> list[str]:
    if s is None:
        return ["–"] * 5
    d = fold_spread(s, "dice")
    return [
        format_pm(d[k]["mean"], d[k]["std"]) if k in d else "–"
        for k in ("left_kidney", "right_kidney", "spleen", "liver", "mean")
    ]


def _input_files(results: Path) -> list[Path]:
    names = {c.a for f in FAMILIES for c in f.comparisons} | {c.b for f in FAMILIES for c in f.comparisons}
    names |= {n for v in SEED_BAND_TABLES.values() for n in v}
    files = []
    for name in sorted(names):
        files += sorted((results / name).glob("seed*/summary.json")) + sorted(
            (results / name).glob("seed*/*/metrics.json")
        )
        if not any((results / name).glob("seed*")):
            files += [p for p in [results / name / "summary.json"] if p.is_file()]
    return files


def inputs_sha256(results: Path) -> str:
    """SHA-256 over :data:`ANALYSIS_VERSION` and every input file of the declared comparisons."""
    h = hashlib.sha256(ANALYSIS_VERSION.encode())
    for path in _input_files(results):
        h.update(str(path.relative_to(results)).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def analysis(results: str | Path, recompute: bool = False) -> dict[str, Any]:
    """Every declared family and seed band (:func:`crapnet_core.engine.decision.all_comparisons`),
    from ``results/compare/analysis.json`` when its input hash is current, else computed (not written:
    :func:`collect` writes it)."""
    results = Path(results)
    digest = inputs_sha256(results)
    cached = results / "compare" / "analysis.json"
    if cached.is_file() and not recompute:
        data = read_json(cached)
        if data.get("inputs_sha256") == digest:
            return data
    data = _relative_paths(all_comparisons(results), results.resolve().parent)
    data["inputs_sha256"] = digest
    data["analysis_version"] = ANALYSIS_VERSION
    try:  # plain JSON types, as when read back; a NaN would be written as invalid JSON and read as a number
        text = json.dumps(data, default=float, allow_nan=False)
    except ValueError as err:
        raise ValueError(
            f"{results}: a comparison computed a NaN or infinite value ({err}); nothing was written"
        ) from err
    return json.loads(text)


def _relative_paths(obj: Any, base: Path) -> Any:
    """``obj`` with every ``path`` under ``base`` made relative to it (``results/<table>``): the
    committed analysis names no folder of the machine that computed it."""
    if isinstance(obj, dict):
        out = {k: _relative_paths(v, base) for k, v in obj.items()}
        if isinstance(out.get("path"), str) and Path(out["path"]).is_absolute():
            try:
                out["path"] = str(Path(out["path"]).resolve().relative_to(base))
            except ValueError:
                pass
        return out
    if isinstance(obj, list):
        return [_relative_paths(v, base) for v in obj]
    return obj


def entry(an: Mapping, family: str, a: str, b: str) -> dict | None:
    """The evaluated comparison ``a - b`` (table names) of ``family``, or None."""
    for e in an["families"][family]["comparisons"]:
        if e["a"] == a and e["b"] == b:
            return e
    return None


def paired_cell(e: Mapping | None) -> str:
    """``−6.39 [−9.80, −2.97]: **resolved**`` (mean row: difference, fold-level 95 % CI, call)."""
    if e is None or e.get("result") is None:
        return "not run yet"
    r = next(x for x in e["result"]["rows"] if x["organ"] == "mean")
    return f"{pts(r['mean_diff'])} {ci(r['ci_low'], r['ci_high'])}: {call_md(e['call'])}"


# ---------------------------------------------------------------------- table blocks
def table_blocks(results: Path, an: Mapping) -> dict[str, str]:
    """Every generated table (name -> Markdown)."""
    b: dict[str, str] = {}
    for setting in (1, 2):
        lines = ["| | " + " | ".join(label(m) for m in MAIN) + " |", "|---" * (len(MAIN) + 1) + "|"]
        for ds in _DATASETS:
            lines.append(
                f"| {DATASET_SHORT[ds]} | "
                + " | ".join(dice_cell(read_summary(results, f"{ds}_setting{setting}_{m}_lite")) for m in MAIN)
                + " |"
            )
        b[f"setting{setting}"] = "\n".join(lines) + "\n"
    b["paired"] = family_table(an["families"]["main"])
    b["paired2"] = family_table(an["families"]["setting2"])
    rows = [
        ("alpnet", "–", "average pooling", None),
        ("alpnet-attention", "5 blocks × 2 branches", "average pooling", "alpnet"),
        ("alpnet-carafe", "–", "CARAFE++", "alpnet"),
        ("crapnet", "5 blocks × 2 branches", "CARAFE++", "alpnet-carafe"),
        ("crapnet-aligned", "5 blocks × 2 branches", "CARAFE++ (window = cell)", "crapnet"),
    ]
    commits = sorted({i["commit"] for m, *_ in rows for i in run_infos(results / f"chaos_setting1_{m}_lite")})
    lines = [
        f"Run at commit {', '.join(commits) or '–'}; training seed 0 for every row.",
        "",
        "| model | attention | local prototypes | mean Dice (± over folds) | A − B [95 % CI, folds]: call | B |",
        "|---|---|---|---|---|---|",
    ]
    for m, att, protos, ref in rows:
        s = read_summary(results, f"chaos_setting1_{m}_lite", seed=0)
        e = (
            None
            if ref is None
            else entry(an, "decomposition", f"chaos_setting1_{m}_lite", f"chaos_setting1_{ref}_lite")
        )
        lines.append(
            f"| {label(m)} | {att} | {protos} | {dice_cell(s)} | {'–' if ref is None else paired_cell(e)} "
            f"| {'–' if ref is None else label(ref)} |"
        )
    lines += ["", family_table(an["families"]["decomposition"], show_where=False)]
    b["decomposition"] = "\n".join(lines)
    from .caveats import budget_file

    curves = {m: budget_file(results, f"budget_chaos_setting1_f0_{m}") for m in ("crapnet", "alpnet")}
    points = {
        m: {p["step"]: p["dice"]["mean"] for p in read_json(path)["points"]}
        for m, path in curves.items()
        if path.is_file()
    }
    lines = ["| steps | " + " | ".join(label(m) for m in curves) + " |", "|---|---|---|"]
    for step in sorted({k for v in points.values() for k in v}):
        lines.append(
            f"| {step:,} | "
            + " | ".join("–" if points.get(m, {}).get(step) is None else f"{100 * points[m][step]:.2f}" for m in curves)
            + " |"
        )
    b["budget"] = "\n".join(lines) + "\n"
    b.update(_ablation_blocks(results, an))
    b.update(_method_blocks(results, an))
    b["methods_family"] = family_table(an["families"]["methods"])
    b["rule"] = rule_md()
    b["seed_band"] = "\n".join(seed_band_md(band) for key, band in an["bands"].items() if key.endswith("/lite"))
    b["comparisons"] = "\n".join(
        f"**{f['title']}** ({f['question']} {f['m']} comparisons, Holm within the family; "
        f"`results/compare/{k}.md`)\n\n{family_table(f)}"
        for k, f in an["families"].items()
    )
    b["results-table"] = readme_table(results)
    from .converged import (
        budget_change,
        budget_curves,
        converged_table,
        converged_text,
        rerun_summary,
        temperature_block,
    )

    b["converged"] = converged_table(results, an)
    b["converged_text"] = converged_text(results, an)
    b["converged_change"] = budget_change(results, an) or "No converged fold is committed yet.\n"
    b["converged_budget"] = budget_curves(results) or "No converged fold is committed yet.\n"
    b["temperature"] = temperature_block(results, an)
    b["rerun_summary"] = rerun_summary(results, an)
    return b


def _ablation_blocks(results: Path, an: Mapping) -> dict[str, str]:
    from ..published import PUBLISHED

    base = read_summary(results, "chaos_setting1_crapnet_lite", seed=0)
    out = {}
    for key, axis, points in (("table3", "blocks", (1, 5, 7, 9, 12, 15)), ("table4", "branches", (2, 1))):
        head = "attention blocks per branch" if axis == "blocks" else "branches"
        lines = [
            f"| {head} | LK | RK | Spleen | Liver | Mean | paper Mean | A − 5 blocks, 2 branches [95 % CI, folds]: call |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v in points:
            default = v == (5 if axis == "blocks" else 2)
            name = (
                "chaos_setting1_crapnet"
                + ("" if default else f"-blocks{v}" if axis == "blocks" else "-onebranch")
                + "_lite"
            )
            s = base if default else read_summary(results, name, seed=0)
            paired = (
                "reference" if default else paired_cell(entry(an, "ablations", name, "chaos_setting1_crapnet_lite"))
            )
            lines.append(
                f"| {v}{' (paper)' if default else ''} | "
                + " | ".join(organ_cells(s))
                + f" | {PUBLISHED[key][v][-1]:.2f} | {paired} |"
            )
        lines += [
            "",
            "Dice 0-100, mean ± standard deviation over the five folds of CHAOS MRI setting 1, `lite`, training "
            "seed 0 for every row; the paired comparison is seed 0 against seed 0, scan by scan, with the fold "
            f"as the unit (the *Ablations* family below: Holm over its {an['families']['ablations']['m']} comparisons, "
            "the CHAOS seed band).",
        ]
        out[key] = "\n".join(lines) + "\n"
    out["table4"] += "\n" + family_table(an["families"]["ablations"], show_where=False)
    return out


def _method_blocks(results: Path, an: Mapping) -> dict[str, str]:
    from ..published import PUBLISHED

    out = {}
    for setting in (1, 2):
        lines = [
            "| method | "
            + " | ".join(f"{DATASET_SHORT[ds]}: ours | paper | − CRAPNet [95 % CI, folds]: call" for ds in _DATASETS)
            + " |",
            "|---" * (1 + 3 * len(_DATASETS)) + "|",
        ]
        for m in ALL_METHODS:
            cells = []
            for ds in _DATASETS:
                s = read_summary(results, f"{ds}_setting{setting}_{m}_lite")
                paper = PUBLISHED[f"table{setting}"][ds].get(METHOD_LABELS[m])
                e = entry(
                    an,
                    "methods" if m not in MAIN else ("main" if setting == 1 else "setting2"),
                    f"{ds}_setting{setting}_{m}_lite",
                    f"{ds}_setting{setting}_crapnet_lite",
                )
                if m in MAIN and m != "crapnet":  # main families hold CRAPNet − m: shown as m − CRAPNet
                    e = entry(
                        an,
                        "main" if setting == 1 else "setting2",
                        f"{ds}_setting{setting}_crapnet_lite",
                        f"{ds}_setting{setting}_{m}_lite",
                    )
                    paired = _reversed_cell(e)
                else:
                    paired = "–" if m == "crapnet" else ("–" if s is None else paired_cell(e))
                cells += [dice_cell(s) if s is not None else "–", "–" if paper is None else f"{paper[-1]:.2f}", paired]
            lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
        out[f"methods{setting}"] = "\n".join(lines) + "\n"
    return out


def _reversed_cell(e: Mapping | None) -> str:
    if e is None or e.get("result") is None:
        return "not run yet"
    r = next(x for x in e["result"]["rows"] if x["organ"] == "mean")
    return f"{pts(-r['mean_diff'])} {ci(-r['ci_high'], -r['ci_low'])}: {call_md(e['call'])}"


def readme_table(results: Path) -> str:
    """The table of every committed `lite` table (results/README.md), with the state of each run."""
    lines = [
        "Dice in percent, mean ± standard deviation (ddof=1) over the 5 folds (each fold: mean over its test "
        "scans); HD95/ASD in mm (mean over organs, then mean ± std over folds, scans with an empty prediction "
        'left out); "paper Mean" is the paper\'s Table 1/2 value for the same method; "wall" is the wall time '
        "of the cross-validate command(s).",
        "",
        "| dataset | setting | method | LK | RK | Spleen | Liver | Mean | paper Mean | HD95 mm | ASD mm | folds | seeds | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    state = []
    for ds, setting, method in README_ORDER:
        name = f"{ds}_setting{setting}_{method}_lite"
        s = read_summary(results, name)
        infos = run_infos(results / name)
        if s is None:
            state.append(f"- `{name}`: **not run yet**")
            continue
        hd, asd = fold_spread(s, "hd95")["mean"], fold_spread(s, "asd")["mean"]
        paper = None if "-" in method else (s.get("paper_dice") or {}).get("Mean")
        wall = sum(i["wall_seconds"] for i in infos) if infos else None
        lines.append(
            f"| {DATASET_SHORT[ds]} | {setting} | {label(method)} | "
            + " | ".join(organ_cells(s))
            + f" | {'–' if paper is None else f'{paper:.2f}'} | {format_pm(hd['mean'], hd['std'], 1.0, 1)}"
            + f" | {format_pm(asd['mean'], asd['std'], 1.0, 1)} | {len(s['folds'])} | {len(s.get('seeds') or [0])}"
            + f" | {'–' if wall is None else f'{wall / 60:.0f} min'} |"
        )
        done = ", ".join(f"{i['started_utc']} ({i['wall_seconds']} s, {i['commit']})" for i in infos)
        state.append(f"- `{name}`: **done** ({len(infos)} seed(s)), started {done}")
    return "\n".join(lines) + "\n\nState of each run:\n\n" + "\n".join(state) + "\n"


# ---------------------------------------------------------------------- pages
def blocks(results: str | Path, an: Mapping | None = None, repo: str | Path | None = None) -> dict[str, str]:
    """Every generated block (tables and sentences), name -> Markdown."""
    from .prose import prose_blocks

    results = Path(results)
    an = analysis(results) if an is None else an
    out = table_blocks(results, an)
    out.update(prose_blocks(results, an, Path(repo) if repo else results.parent))
    return out


def fill(text: str, rendered: Mapping[str, str], names, where: str) -> str:
    """``text`` with each block of ``names`` replaced by its rendered Markdown (ValueError when a block
    is missing or appears twice)."""
    for name in names:
        marker = f"<!-- results:{name}: generated by crapnet_core.report.collect -->\n"
        text, n = re.subn(
            rf"<!-- results:{re.escape(name)}[:\s].*?<!-- /results:{re.escape(name)} -->\n",
            lambda m, marker=marker, name=name: (
                marker + "\n" + rendered[name].rstrip("\n") + "\n\n" + f"<!-- /results:{name} -->\n"
            ),
            text,
            flags=re.S,
        )
        if n != 1:
            raise ValueError(f"{where}: block {name} appears {n} times (expected once)")
    return text


def comparison_files(results: Path, an: Mapping) -> dict[Path, str]:
    """The files of the fold-level comparisons: ``results/compare/analysis.json``, ``<family>.md``,
    ``seed_band.md`` (path -> text)."""
    outputs: dict[Path, str] = {results / "compare" / "analysis.json": json.dumps(an, indent=2) + "\n"}
    for key, fam in an["families"].items():
        outputs[results / "compare" / f"{key}.md"] = (
            f"# {fam['title']}\n\n{fam['question']}\n\n"
            "Generated by `crapnet_core.report.collect` (rule: "
            "`results/README.md`).\n\n" + family_table(fam)
        )
    outputs[results / "compare" / "seed_band.md"] = "# Seed bands\n\n" + "\n".join(
        seed_band_md(b) for b in an["bands"].values()
    )
    return outputs


def write_comparisons(results_dir: str | Path) -> list[Path]:
    """Write the comparison files of :func:`comparison_files` that changed (the study workflow's last
    step; the pages are :func:`collect`'s); returns them."""
    from ..io import write_text

    results = Path(results_dir)
    changed = []
    for path, text in comparison_files(results, analysis(results)).items():
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
            changed.append(path)
    return changed


def collect(
    results_dir: str | Path, repo_root: str | Path, check: bool = False, progress: Callable[[str], None] | None = None
) -> list[Path]:
    """Regenerate every generated file: the cached comparisons, their Markdown and the page blocks.

    results_dir: the results folder (``results/``); repo_root: the repository (pages of :data:`PAGES`
    relative to it). ``check``: write nothing, return the files that would change. Returns the
    changed (or, with ``check``, stale) files. Raises ValueError when a page lacks a block.
    """
    from ..io import write_text

    results, repo = Path(results_dir), Path(repo_root)
    an = analysis(results)
    outputs = comparison_files(results, an)
    rendered = blocks(results, an, repo)
    for page, names in PAGES.items():
        path = repo / page
        if progress:
            progress(page)
        outputs[path] = fill(path.read_text(), rendered, names, str(path))
    changed = []
    for path, text in outputs.items():
        old = path.read_text() if path.is_file() else None
        if old == text:
            continue
        changed.append(path)
        if not check:
            write_text(path, text)
    return changed


__all__ = [
    "ANALYSIS_VERSION",
    "PAGES",
    "comparison_files",
    "write_comparisons",
    "NUMBER_CHECKED",
    "ALLOWED_NUMBERS",
    "hand_typed_numbers",
    "collect",
    "rewrite_summaries",
    "analysis",
    "blocks",
    "table_blocks",
    "fill",
    "read_summary",
    "dice_cell",
    "paired_cell",
    "readme_table",
    "inputs_sha256",
    "entry",
    "label",
]


def rewrite_summaries(results: str | Path) -> list[Path]:
    """Re-render every ``results/*/summary.md`` (and the variants') from its ``summary.json``; no rerun.

    Also refreshes the derived ``mean.dice_std_over_folds`` of a one-seed summary to the sample
    standard deviation over folds (ddof=1). Returns the rewritten files.
    """
    from ..engine.runs import summary_markdown
    from ..io import write_json, write_text

    done = []
    for path in sorted(Path(results).rglob("summary.json")):
        s = read_json(path)
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


#: Pages whose prose must carry no result number outside the generated blocks (README included).
NUMBER_CHECKED = (
    "book/equal_budget.md",
    "book/ablations.md",
    "book/results.md",
    "book/limitations.md",
    "book/intro.md",
    "results/README.md",
)
#: Numbers that may appear in hand-written prose of those pages: constants of the method or the code,
#: not results (each with where it comes from).
ALLOWED_NUMBERS = {
    "0.95": "SSL-ALPNet's foreground-fraction rule for local prototypes (Ouyang et al. 2020)",
    "1.5": "the prototype-grid rule's tolerance (crapnet_core.models.prototype_grid.TOLERANCE)",
    "0.05": "the decision rule's alpha (crapnet_core.engine.decision.ALPHA)",
    "95 %": "the level of the intervals (1 - ALPHA)",
    "× 0.95": "the paper's learning-rate schedule",
}
_NUMBER = re.compile(r"(?<![\w.])(?:[+−-]\d[\d,]*(?:\.\d+)?|\d[\d,]*\.\d+|\d+(?:\.\d+)? ?%)(?![\w])")


def hand_typed_numbers(text: str) -> list[str]:
    """Result-like numbers (decimals, signed numbers, percentages) in ``text`` outside the generated
    blocks, code, links, comments and math, minus :data:`ALLOWED_NUMBERS`: what a page must not carry."""
    text = re.sub(r"<!-- results:(\S+?)[:\s].*?<!-- /results:\1 -->", " ", text, flags=re.S)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"\{[a-z:]+\}`[^`]*`", " ", text)
    for allowed in sorted(ALLOWED_NUMBERS, key=len, reverse=True):
        text = text.replace(allowed, " ")
    return _NUMBER.findall(text)
