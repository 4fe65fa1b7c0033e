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

from ..data.protocol import N_FOLDS
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


def fold_means(results: Path, table: str, seed: int = 0, tab: Mapping | None = None) -> dict[int, float] | None:
    """Mean Dice (0-1) of each committed fold of ``results/<table>`` at ``seed``: per organ the mean over
    the fold's test scans, then the mean over organs (as ``metrics.json``'s ``mean``; a fold whose
    organs were scored by two runs, setting-2-style test groups, is pooled). None when the table
    has no run of that seed. ``tab``: the table as :func:`crapnet_core.engine.comparisons.load_table`
    returned it, when the caller has loaded it already."""
    from ..engine.comparisons import load_table

    if tab is None:
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


def seed_means(results: Path, table: str) -> tuple[dict[int, float], dict[int, list[int]]]:
    """({seed: mean Dice 0-1 over its folds} for the complete seeds of ``results/<table>``, the seeds still
    in training with the folds they have so far), complete as
    :func:`crapnet_core.engine.comparisons.complete_seeds` says (every scan and organ any seed scored);
    ({}, {}) when the table has no result."""
    from ..engine.comparisons import complete_seeds, load_table

    try:
        tab = load_table(results / table)
    except (FileNotFoundError, ValueError):
        return {}, {}
    complete, partial = complete_seeds(tab, folds=range(N_FOLDS))
    means = {}
    for k in complete:
        fm = fold_means(results, table, k, tab)
        if fm:
            means[k] = float(np.mean(list(fm.values())))
    so_far = {k: sorted(fold_means(results, table, k, tab) or {}) for k in sorted(partial)}
    return means, so_far


def _seeds_cell(means: Mapping[int, float], partial: Mapping[int, list[int]]) -> str:
    """The last column of the converged table: the mean over complete seeds with their spread, then the
    seeds still in training with the folds they have."""
    parts = []
    if len(means) > 1:
        v = np.array(list(means.values()))
        seeds = ", ".join(map(str, means))
        parts.append(f"{100 * v.mean():.2f} (seeds {seeds}: ± {100 * v.std(ddof=1):.2f} over seeds)")
    elif means:
        parts.append(f"seed {next(iter(means))} only")
    elif partial:
        parts.append("no seed complete yet")
    parts += [
        f"seed {k}: fold{'s' if len(f) != 1 else ''} {', '.join(map(str, f)) or 'none'} so far"
        for k, f in partial.items()
    ]
    return "; ".join(parts) or "–"


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
        f"{'–' if vfold is None else vfold} (validation scans) | every complete training seed |",
        "|---|---|---|---|---|---|",
    ]
    for ds, m in CONVERGED_ROWS:
        fm = fold_means(results, table_name(ds, 1, m, "converged"))
        if not fm:
            lines.append(
                f"| {DATASET_SHORT[ds]} | {table_label(table_name(ds, 1, m, 'converged'))} | 0 of {N_FOLDS} | not run yet | – | – |"
            )
            continue
        # only CHAOS scans chose the budget: a Synapse row has no fold to leave out
        rest = _pm([v for f, v in fm.items() if f != vfold]) if ds == "chaos" else "– (none chose the budget)"
        lines.append(
            f"| {DATASET_SHORT[ds]} | {table_label(table_name(ds, 1, m, 'converged'))} | {len(fm)} of {N_FOLDS} "
            f"({', '.join(str(f) for f in fm)}) | {_pm(fm.values())} | {rest} "
            f"| {_seeds_cell(*seed_means(results, table_name(ds, 1, m, 'converged')))} |"
        )
    note = (
        f"Dice 0–100, CHAOS MRI and Synapse CT setting 1, profile `converged`, training seed 0. The budget "
        f"was chosen on CHAOS scans {', '.join(scans)}, held out of fold 0's training"
        + (
            f"; they are fold {vfold}'s test scans, so the column *without fold {vfold}* leaves it out (no Synapse "
            "scan took part in the choice, so every Synapse fold is a clean test)"
            if vfold is not None
            else ""
        )
        + " (`results/select_converged/`). Each fold is committed as it finishes; a row with fewer "
        "than five folds is a partial result. The last column averages the 5-fold means of every training "
        "seed whose folds are all committed (the spread is their standard deviation); a seed still in "
        "training enters it only when its last fold lands."
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
    if e.get("call") == "weak" and e.get("reason"):  # say which half of the rule is missing
        return f"{diff_md(e)} ({e['reason']})"
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


def _steps(profile: str) -> int:
    """Training steps of ``profile`` (``crapnet_core/profiles.yaml``)."""
    from ..engine.experiment import make_config

    return int(make_config(profile, "chaos", 1, 0, "alpnet").train.steps)


def _folds(n: int) -> str:
    return f"{n} fold{'' if n == 1 else 's'}"


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> list[float]:
    """Per-fold differences a − b (Dice, 0-1) over the folds both have."""
    return [a[f] - b[f] for f in sorted(set(a) & set(b))]


def _fold_list(folds) -> str:
    return ", ".join(map(str, folds))


def _fold_means_reader(results: Path):
    """``get(dataset, method, profile)`` -> :func:`fold_means` of that setting-1 table at seed 0 (``{}`` when
    none), each table read once per call of the budget-change block."""
    from ..engine.decision import table_name

    cache: dict[tuple[str, str, str], dict[int, float]] = {}

    def get(ds: str, method: str, profile: str) -> dict[int, float]:
        key = (ds, method, profile)
        if key not in cache:
            cache[key] = fold_means(results, table_name(ds, 1, method, profile)) or {}
        return cache[key]

    return get


def _question(get, ds: str, a: str, b: str) -> tuple[list[int], dict[str, float]]:
    """The folds that ``a`` and ``b`` have at both budgets, and the mean over them of a − b (0-1) per budget."""
    common = sorted(set.intersection(*(set(get(ds, m, p)) for m in (a, b) for p in ("lite", "converged"))))
    if not common:
        return [], {}
    return common, {
        p: float(np.mean([get(ds, a, p)[f] - get(ds, b, p)[f] for f in common])) for p in ("lite", "converged")
    }


def _method_changes(get, ds: str) -> dict[str, tuple[list[int], dict, dict]]:
    """method -> (folds committed at both budgets, lite fold means, converged fold means), seed 0."""
    out = {}
    for m in ("crapnet", "alpnet", "panet", "alpnet_sup"):
        fl, fc = get(ds, m, "lite"), get(ds, m, "converged")
        common = sorted(set(fl) & set(fc))
        if common:
            out[m] = (common, fl, fc)
    return out


def budget_change(results: Path, an: Mapping) -> str:
    """What changed when the budget went from ``lite`` to ``converged`` (issue 18 §4), and what did not.

    Per method, the seed-0 mean Dice over the folds committed at both budgets (both columns average the
    same folds) and the per-fold change; then the study's two questions: the difference of seed-0 fold
    means over the folds all four tables have (descriptive, the same folds at both budgets) beside the
    declared comparison (its own seeds and every scored scan; ``main`` at ``lite``, ``converged`` at
    the converged budget). Dice points 0-100. Empty string while no converged fold is committed.
    """
    from ..engine.decision import table_name

    lite, conv = _steps("lite"), _steps("converged")
    get = _fold_means_reader(results)
    rows = []
    for ds in ("chaos", "sabs"):
        for m, (common, fl, fc) in _method_changes(get, ds).items():
            d = _paired(fc, fl)
            spread = f" ({pts(min(d), 1)} to {pts(max(d), 1)})" if len(d) > 1 else ""
            rows.append(
                f"| {DATASET_SHORT[ds]} | {table_label(table_name(ds, 1, m))} | {_fold_list(common)} | "
                f"{_pm(fl[f] for f in common)} | {_pm(fc[f] for f in common)} | {pts(float(np.mean(d)), 2)}{spread} |"
            )
    if not rows:
        return ""
    out = [
        f"**What changed with the budget** ({lite:,} → {conv:,} training steps; setting 1, training seed 0; "
        "each row averages the folds committed at both budgets):",
        "",
        f"| dataset | method | folds | `lite` ({lite:,} steps) | `converged` ({conv:,} steps) | change (per-fold range) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    qrows = []
    for a, b, lite_fam in (("crapnet", "alpnet", "main"), ("alpnet", "alpnet_sup", None)):
        name = f"{table_label(table_name('chaos', 1, a))} − {table_label(table_name('chaos', 1, b))}"
        for ds in ("chaos", "sabs"):
            common, diff = _question(get, ds, a, b)
            if not common:
                continue
            cells = [_fold_list(common)]
            for profile, fam in (("lite", lite_fam), ("converged", "converged")):
                e = (
                    find_comparison(an, fam, table_name(ds, 1, a, profile), table_name(ds, 1, b, profile))
                    if fam
                    else None
                )
                cells.append(pts(diff[profile], 2))
                cells.append(_diff(e) if e is not None else "not declared at this budget")
            qrows.append(f"| {name} | {DATASET_SHORT[ds]} | " + " | ".join(cells) + " |")
    if qrows:
        out += [
            "| question | dataset | folds | `lite`: seed 0, these folds | `lite`: declared comparison | "
            "`converged`: seed 0, these folds | `converged`: declared comparison |",
            "|---|---|---|---|---|---|---|",
            *qrows,
            "",
            "The seed-0 columns average the folds that all four tables have, so both budgets are read on the same "
            "folds. A declared comparison uses its own seeds (at `lite`: three for CRAPNet and SSL-ALPNet) and every "
            "committed scan, so it can include a fold the seed-0 columns leave out (a supervised fold with one of its "
            "two test groups scored so far). A comparison with one seed on a side cannot be called resolved without "
            "a seed band for it (the rule above).",
            "",
        ]
    text = budget_change_sentences(results, an, get)
    return "\n".join(out) + ("\n" + " ".join(text) + "\n" if text else "")


def budget_change_sentences(results: Path, an: Mapping, get=None) -> list[str]:
    """The plain sentences of :func:`budget_change`: how much each method moved with the budget on CHAOS
    MRI (seed 0, the folds committed at both budgets), and the declared calls of the study's two
    questions at both budgets. ``get``: :func:`budget_change`'s fold-mean reader (made here if None)."""
    from ..engine.decision import table_name

    get = get or _fold_means_reader(results)
    changes = _method_changes(get, "chaos")
    text = []
    ssl = [m for m in ("crapnet", "alpnet", "panet") if m in changes]
    if ssl:
        parts = [
            f"{table_label(table_name('chaos', 1, m))} {pts(float(np.mean(_paired(changes[m][2], changes[m][1]))), 1)} "
            f"({_folds(len(changes[m][0]))})"
            for m in ssl
        ]
        sup = changes.get("alpnet_sup")
        text.append(
            "On CHAOS MRI the longer training changed the seed-0 mean Dice by "
            + ", ".join(parts)
            + (
                f"; supervised ALPNet by {pts(float(np.mean(_paired(sup[2], sup[1]))), 1)} ({_folds(len(sup[0]))})."
                if sup
                else "; supervised ALPNet has no converged fold yet."
            )
        )
    e_c = find_comparison(
        an, "converged", table_name("chaos", 1, "crapnet", "converged"), table_name("chaos", 1, "alpnet", "converged")
    )
    e_l = find_comparison(an, "main", table_name("chaos", 1, "crapnet"), table_name("chaos", 1, "alpnet"))
    band = (an.get("bands") or {}).get("chaos/converged")
    if e_c is not None and e_l is not None:
        if e_c["call"] == e_l["call"] == "not resolved":
            text.append(
                "CRAPNet − SSL-ALPNet on CHAOS MRI is not resolved at either budget (converged: "
                + (
                    "seed 0 so far and no seed band yet, so at most *weak* under the rule"
                    if not band
                    else "with its seed band"
                )
                + "): neither budget lets this study tell the two apart, which is not evidence that they are equal."
            )
        else:
            text.append(
                f"CRAPNet − SSL-ALPNet on CHAOS MRI is {call_md(e_l['call'])} at `lite` and {call_md(e_c['call'])} "
                "at the converged budget."
            )
    e_s = find_comparison(
        an,
        "converged",
        table_name("chaos", 1, "alpnet", "converged"),
        table_name("chaos", 1, "alpnet_sup", "converged"),
    )
    common, d = _question(get, "chaos", "alpnet", "alpnet_sup")
    if e_s is not None and common:
        text.append(
            f"SSL-ALPNet − supervised ALPNet on CHAOS MRI, on the {_folds(len(common))} scored at both budgets "
            f"({_fold_list(common)}), went from {pts(d['lite'], 2)} points at `lite` to {pts(d['converged'], 2)} at the "
            f"converged budget; its declared comparison there is {_diff(e_s)}."
        )
    return text


def budget_curve_points(results: Path) -> dict[tuple[str, str], dict[int, dict[int, float]]]:
    """(dataset, method) -> step -> fold -> mean Dice (0-1) over the organs, from the ``budget.json`` of the
    committed converged runs (seed 0). A fold counts at a step once every organ of its table is scored
    there: supervised ALPNet trains one model per test group, so its fold needs both groups' curves."""
    from ..engine.decision import table_name

    curves = {}
    for ds, m in CONVERGED_ROWS + (("chaos", "alpnet-attention"), ("chaos", "alpnet-carafe")):
        folder = results / table_name(ds, 1, m, "converged") / "seed0"
        if not folder.is_dir():
            continue
        raw: dict[int, dict[int, dict[str, float]]] = {}  # step -> fold -> organ -> Dice
        organs: set[str] = set()
        for path in sorted(folder.glob("*/budget.json")):
            b = read_json(path)
            for p in b["points"]:
                dice = {o: float(v) for o, v in p["dice"].items() if o != "mean" and v is not None}
                organs |= set(dice)
                raw.setdefault(int(p["step"]), {}).setdefault(int(b["fold"]), {}).update(dice)
        points = {
            st: {f: float(np.mean(list(d.values()))) for f, d in folds.items() if set(d) == organs}
            for st, folds in raw.items()
        }
        if any(points.values()):
            curves[(ds, m)] = points
    return curves


def budget_curves(results: Path) -> str:
    """Test Dice against training steps of every committed converged fold (issue 18 §2.5): per table, the
    mean over its folds with a curve (:func:`budget_curve_points`; the checkpoints saved during
    training, evaluated on the fold's test scans, no extra training) at each declared step, with the
    folds counted. Dice 0-100; empty string when no curve is committed."""
    from ..engine.decision import table_name

    curves = budget_curve_points(results)
    if not curves:
        return ""
    steps = sorted({st for points in curves.values() for st in points})
    rows = []
    for (ds, m), points in curves.items():
        cells = []
        for st in steps:
            per_fold = list(points.get(st, {}).values())
            cells.append("–" if not per_fold else f"{100 * float(np.mean(per_fold)):.2f} ({len(per_fold)})")
        rows.append(
            f"| {DATASET_SHORT[ds]} | {table_label(table_name(ds, 1, m, 'converged'))} | " + " | ".join(cells) + " |"
        )
    return (
        "| dataset | method | "
        + " | ".join(f"{st:,} steps" for st in steps)
        + " |\n|---|---|"
        + "---|" * len(steps)
        + "\n"
        + "\n".join(rows)
        + "\n\nMean test Dice (0–100) over the folds with a saved curve (their number in brackets), training "
        "seed 0: each fold's checkpoints evaluated on that fold's test scans (`budget.json` in each run's "
        "result folder). A fold whose organs are scored by two models (supervised ALPNet: one per test "
        "group) counts once both curves are in. The last column is the trained model.\n"
    )


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
