"""The converged study's generated blocks (issue 18): its tables, its sentences, the learned-temperature
variant, and the rerun checks, for :mod:`crapnet_core.report.collect`.

Every number is read from ``results/``: the converged tables in the per-run layout
(``results/<dataset>_setting1_<method>_converged/seed<s>/<run_name>/metrics.json``, read with
:func:`crapnet_core.engine.comparisons.load_table`), the cached fold-level comparisons
(``analysis.json``: the declared families ``converged`` and ``temperature``), the budget rule's
trials (``results/select_converged/``), the diagnostics of the converged CRAPNet models and the
rerun checks. A table whose folds are not all committed yet is reported with the folds it has and
says so; the comparisons of an incomplete table carry the calls of the declared rule all the same
(the fold-level interval widens with fewer folds).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.stats import format_pm
from ..io import read_json
from .sentence_parts import diff_md, entry_mean_row, find_comparison
from .stats_tables import DATASET_SHORT, call_md, family_table, pts, table_label

#: rows of the converged table: (dataset, method), in the order the question is asked
CONVERGED_ROWS = (
    ("chaos", "crapnet"),
    ("chaos", "alpnet"),
    ("chaos", "panet"),
    ("chaos", "alpnet_sup"),
    ("sabs", "crapnet"),
    ("sabs", "alpnet"),
    ("sabs", "alpnet_sup"),
)
N_FOLDS = 5


def fold_means(results: Path, table: str, seed: int = 0) -> dict[int, float] | None:
    """Mean Dice (0-1) of each committed fold of ``results/<table>`` at ``seed``: per organ the mean over
    the fold's test scans, then the mean over organs (as ``metrics.json``'s ``mean``; a fold whose
    organs were scored by two runs, setting-2-style test groups, is pooled). None when the table
    has no run of that seed."""
    from ..engine.comparisons import load_table

    folder = results / table
    if not folder.is_dir():
        return None
    try:
        tab = load_table(folder)
    except (FileNotFoundError, ValueError):
        return None
    per_organ = tab["seeds"].get(seed)
    if not per_organ:
        return None
    out: dict[int, float] = {}
    for fold in sorted(set(tab["fold_of"].values())):
        organ_means = []
        for scans in per_organ.values():
            vals = [v for s, v in scans.items() if tab["fold_of"].get(s) == fold and v is not None]
            if vals:
                organ_means.append(float(np.mean(vals)))
        if len(organ_means) == len(per_organ):
            out[fold] = float(np.mean(organ_means))
    return out or None


def validation_fold(results: Path) -> tuple[list[str], int | None]:
    """The converged budget's validation scans (``results/select_converged/trials.json``) and the fold
    whose test set holds them (read from a committed 5-fold CHAOS table's fold assignment)."""
    from ..engine.comparisons import load_table

    path = results / "select_converged" / "trials.json"
    if not path.is_file():
        return [], None
    trials = read_json(path)["trials"]
    scans = sorted(
        {s for t in trials.values() for p in t["points"] for o in p["per_scan"].values() for s in o}, key=int
    )
    try:
        fold_of = load_table(results / "chaos_setting1_crapnet_lite")["fold_of"]
    except (FileNotFoundError, ValueError):
        return scans, None
    folds = {fold_of.get(s) for s in scans}
    return scans, (folds.pop() if len(folds) == 1 else None)


def _pm(values) -> str:
    """Mean ± sample std (ddof 1) over folds, 0-100; the mean alone for one value."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return "–"
    return format_pm(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None)


def converged_table(results: Path, an: Mapping) -> str:
    """Mean Dice over the committed folds of each converged table, also without the validation fold,
    then the ``converged`` family of the declared rule."""
    from ..engine.decision import table_name

    scans, vfold = validation_fold(results)
    lines = [
        "| dataset | method | folds committed | mean Dice (± over folds) | without fold "
        f"{'–' if vfold is None else vfold} (validation scans) |",
        "|---|---|---|---|---|",
    ]
    for ds, m in CONVERGED_ROWS:
        fm = fold_means(results, table_name(ds, 1, m, "converged"))
        if not fm:
            lines.append(
                f"| {DATASET_SHORT[ds]} | {table_label(table_name(ds, 1, m, 'converged'))} | 0 of {N_FOLDS} | not run yet | – |"
            )
            continue
        rest = [v for f, v in fm.items() if f != vfold] if ds == "chaos" else list(fm.values())
        lines.append(
            f"| {DATASET_SHORT[ds]} | {table_label(table_name(ds, 1, m, 'converged'))} | {len(fm)} of {N_FOLDS} "
            f"({', '.join(str(f) for f in fm)}) | {_pm(fm.values())} | {_pm(rest)} |"
        )
    note = (
        f"Dice 0–100, CHAOS MRI and Synapse CT setting 1, profile `converged`, training seed 0. The budget "
        f"was chosen on CHAOS scans {', '.join(scans)}, held out of fold 0's training"
        + (
            f"; they are fold {vfold}'s test scans, so the last column leaves fold {vfold} out"
            if vfold is not None
            else ""
        )
        + " (`results/select_converged/`). Each fold is committed as it finishes; a row with fewer "
        "than five folds is a partial result."
    )
    return "\n".join(lines) + "\n\n" + note + "\n\n" + family_table(an["families"]["converged"]) + "\n"


def _diff(e: Mapping) -> str:
    """:func:`crapnet_core.report.sentence_parts.diff_md`, saying why when the folds are too few for an interval."""
    r = entry_mean_row(e)
    if r.get("ci_low") is None or r.get("ci_high") is None:
        return (
            f"{pts(r['mean_diff'], 2)} points over the scans of the folds committed so far (too few folds for a "
            f"fold-level interval), {call_md(e['call'])}"
        )
    return diff_md(e)


def converged_text(results: Path, an: Mapping) -> str:
    """The converged study's answer in sentences, from the ``converged`` family's calls."""
    from ..engine.decision import table_name

    sel = results / "select_converged" / "trials.json"
    parts = []
    if sel.is_file():
        choice = read_json(sel)["choice"]
        parts.append(
            f"The budget is {choice['chosen']:,} steps. The rule ({choice['rule']})"
            + (
                " held for no candidate, so the largest budget trained was taken: by that rule training had "
                "not converged even there."
                if not choice["passed"]
                else " chose it."
            )
        )
    done = {m: fold_means(results, table_name("chaos", 1, m, "converged")) or {} for m in ("crapnet", "alpnet")}
    qs = [
        ("crapnet", "alpnet", "Does CRAPNet beat SSL-ALPNet?"),
        ("alpnet", "alpnet_sup", "Does self-supervision beat supervision from other organs?"),
    ]
    for a, b, question in qs:
        for ds in ("chaos", "sabs"):
            e = find_comparison(an, "converged", table_name(ds, 1, a, "converged"), table_name(ds, 1, b, "converged"))
            if e is not None:
                parts.append(
                    f"{question} {DATASET_SHORT[ds]}: {table_label(e['a'])} − {table_label(e['b'])} = {_diff(e)}."
                )
    if not any(len(v) == N_FOLDS for v in done.values()):
        parts.append(
            "The converged tables are still being trained fold by fold (one CPU core per training); until "
            "all five folds of a table are in, its row and its comparisons are partial, and a call on fewer "
            "folds is weaker evidence than the same call on five."
        )
    return " ".join(parts) + "\n"


def temperature_block(results: Path, an: Mapping) -> str:
    """The learned-temperature variant at ``lite`` against CRAPNet (the ``temperature`` family)."""
    from ..engine.decision import table_name

    fam = an["families"].get("temperature")
    if fam is None:
        return "Not declared.\n"
    rows = []
    for v in ("crapnet", "crapnet-temp"):
        fm = fold_means(results, table_name("chaos", 1, v))
        rows.append(
            f"| {'CRAPNet (Eq. 13 as published)' if v == 'crapnet' else 'CRAPNet, learned temperatures'} | "
            f"{'–' if not fm else _pm(fm.values())} |"
        )
    e = find_comparison(an, "temperature", table_name("chaos", 1, "crapnet-temp"), table_name("chaos", 1, "crapnet"))
    text = (
        "| model | mean Dice (± over folds), CHAOS setting 1, `lite`, seed 0 |\n|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + family_table(fam, show_where=False)
        + "\n"
    )
    if e is not None:
        lifted = e["call"] == "resolved"
        text += (
            f"\nLearned temperatures − CRAPNet: {_diff(e)}. "
            + (
                "Lifting the bound changes the Dice at this budget."
                if lifted
                else "At this budget lifting Eq. 13's bound does not change the Dice by more than the rule can see, so "
                "the variant was not trained at the converged budget (issue 18 §3: only if `lite` shows a "
                "difference)."
            )
            + "\n"
        )
    return text


def rerun_summary(results: Path, an: Mapping | None = None) -> str:
    """Every committed rerun check (``results/rerun_check*/rerun_check.json``): its folds, the spread of
    the fold-mean differences, and where it ran, next to the seed band."""
    paths = sorted(results.glob("rerun_check*/rerun_check.json"))
    if not paths:
        return "No rerun check has been committed yet (`crapnet rerun-check`).\n"
    largest = 0.0
    lines = [
        "| rerun check | commit | machine | folds | fold-mean difference, rerun − committed (points): "
        "mean, largest |·| | organ differences: largest |·| |",
        "|---|---|---|---|---|---|",
    ]
    for path in paths:
        check: dict[str, Any] = read_json(path)
        fold_d, organ_d = [], []
        for f in check.get("folds", []):
            dice = (f.get("comparison") or {}).get("dice") or {}
            for organ, d in dice.items():
                if d.get("committed") is None or d.get("rerun") is None:
                    continue
                (fold_d if organ == "mean" else organ_d).append(100 * (d["rerun"] - d["committed"]))
        if not fold_d:
            continue
        largest = max(largest, max(abs(x) for x in fold_d))
        lines.append(
            f"| `{path.parent.name}/` | `{check.get('commit', '?')}` | {check.get('machine', '?')} | "
            f"{len(fold_d)} | {pts(np.mean(fold_d) / 100, 2)}, {max(abs(x) for x in fold_d):.2f} | "
            f"{max(abs(x) for x in organ_d):.2f} |"
        )
    bands = [b for k, b in ((an or {}).get("bands") or {}).items() if k.endswith("/lite") and b]
    band = (
        (
            "; the `lite` seed bands (how far a method differs from itself between two training seeds, the rule's "
            "band) are "
            + ", ".join(f"{DATASET_SHORT.get(b['dataset'], b['dataset'])} ± {100 * b['band']:.2f}" for b in bands)
            + " points"
        )
        if bands
        else ""
    )
    return "\n".join(lines) + (
        "\n\nA rerun on other hardware, or after a change that only reorders float sums, moves "
        f"fold means by up to {largest:.2f} points (the table)" + band + "; organ Dice move further. A one-seed "
        "difference of that size says nothing about the methods, which is why the rule holds "
        "one-seed differences to the seed band.\n"
    )


__all__ = [
    "CONVERGED_ROWS",
    "fold_means",
    "validation_fold",
    "converged_table",
    "converged_text",
    "temperature_block",
    "rerun_summary",
]
