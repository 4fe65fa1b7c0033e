"""Markdown of the fold-level comparisons: one comparison's organ rows, a family's table, the seed band.

Reads the dicts of :mod:`crapnet_core.engine.comparisons` and :mod:`crapnet_core.engine.decision`
(Dice fractions) and shows Dice points (0-100) with a true minus sign. The column order is the
same everywhere: the mean difference A − B, the fold-level interval (hierarchical bootstrap; the
primary analysis), the fold-level p (mixed model) and its Holm correction within the family, the
seed band where one side has one seed, the call under the declared rule, then the per-scan
interval and Wilcoxon p (secondary: they treat the scans of a fold as independent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine.comparisons import NO_COMMON_PAIR
from ..engine.decision import ALPHA, CORRECTION
from ..facts import DATASET_SHORT, DATASET_TITLES, METHOD_LABELS, ORGAN_SHORT  # noqa: F401 (DATASET_SHORT re-exported)

ORGAN_NAMES = {**ORGAN_SHORT, "mean": "Mean"}
#: Display names of the model variants of the decomposition and ablation tables (their method's
#: name otherwise).
VARIANT_LABELS = {
    "alpnet-attention": "SSL-ALPNet + attention",
    "alpnet-carafe": "SSL-ALPNet + CARAFE++ prototypes",
    "crapnet-aligned": "CRAPNet, aligned CARAFE++ window",
    "crapnet-onebranch": "CRAPNet, one branch",
    "alpnet_sup": "ALPNet (supervised)",
    "crapnet-temp": "CRAPNet, learned temperatures",
    **{f"crapnet-blocks{n}": f"CRAPNet, {n} block{'s' * (n > 1)}" for n in (1, 5, 7, 9, 12, 15)},
}


def minus(text: str) -> str:
    """``text`` with ASCII hyphen-minus signs of numbers as true minus signs."""
    out = []
    for i, ch in enumerate(text):
        nxt = text[i + 1] if i + 1 < len(text) else ""
        prev = text[i - 1] if i else " "
        out.append("−" if ch == "-" and nxt.isdigit() and not prev.isalnum() else ch)
    return "".join(out)


def pts(value: float | None, digits: int = 2, sign: bool = True) -> str:
    """A Dice fraction as signed points: ``+2.51``, ``−0.55``; ``–`` for None."""
    if value is None:
        return "–"
    return minus(f"{100 * value:{'+' if sign else ''}.{digits}f}")


def ci(low: float | None, high: float | None, digits: int = 2) -> str:
    """``[−5.54, +4.45]`` in points; ``–`` when undefined."""
    if low is None or high is None:
        return "–"
    return f"[{pts(low, digits)}, {pts(high, digits)}]"


def pval(p: float | None) -> str:
    """p to two significant digits (``< 0.001`` below); ``–`` for None."""
    if p is None:
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def call_md(call: str | None) -> str:
    return {"resolved": "**resolved**", "weak": "*weak*", "not resolved": "not resolved"}.get(call or "", "–")


def table_label(name: str) -> str:
    """Display name of a declared table (``chaos_setting1_alpnet-carafe_lite`` -> ``SSL-ALPNet + CARAFE++ prototypes``)."""
    body = name.split("_setting", 1)[-1]
    key = body.split("_", 1)[-1].rsplit("_", 1)[0] if "_" in body else body
    return VARIANT_LABELS.get(key, METHOD_LABELS.get(key, key))


def where(dataset: str | None, setting: Any) -> str:
    return f"{DATASET_SHORT.get(str(dataset), DATASET_TITLES.get(str(dataset), str(dataset)))}, setting {setting}"


def seeds_text(entry: Mapping[str, Any]) -> str:
    res = entry["result"]
    sa, sb = res["a"]["seeds"], res["b"]["seeds"]
    if sa == sb:
        return ",".join(map(str, sa))
    return f"{','.join(map(str, sa))} / {','.join(map(str, sb))}"


def band_text(entry: Mapping[str, Any]) -> str:
    if not entry.get("one_seed"):
        return "–"
    return "none measured" if entry.get("band") is None else f"± {100 * entry['band']:.2f}"


def family_table(fam: Mapping[str, Any], show_where: bool = True) -> str:
    """Markdown table of an evaluated family (:func:`crapnet_core.engine.decision.evaluate_family`):
    one row per declared comparison (organ-mean row), "not run yet" rows included."""
    head = [
        "A − B",
        *(["where"] if show_where else []),
        "seeds",
        "A − B (Dice points)",
        "95 % CI, folds",
        "p, folds",
        f"p, {CORRECTION}",
        "seed band",
        "call",
        "95 % CI, per scan",
        "Wilcoxon p",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in fam["comparisons"]:
        name = f"{table_label(e['a'])} − {table_label(e['b'])}"
        if e["result"] is None:
            status = (
                "not run yet"
                if e["status"] == "not run yet"
                # tables still in training whose committed folds do not overlap yet
                else "no fold in common yet"
                if e["status"].endswith(NO_COMMON_PAIR)
                else "not comparable"
            )
            dataset, _, rest = e["a"].partition("_setting")
            cells = [name, *([where(dataset, rest[:1])] if show_where else []), "–", status] + ["–"] * (len(head) - 4)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        res = e["result"]
        r = next(x for x in res["rows"] if x["organ"] == "mean")
        cells = [
            name,
            *([where(res["dataset"], res["setting"])] if show_where else []),
            seeds_text(e),
            pts(r["mean_diff"]),
            ci(r["ci_low"], r["ci_high"]),
            pval(r["p"]),
            pval(e["p_holm"]),
            band_text(e),
            call_md(e["call"]),
            ci(r["scan_ci_low"], r["scan_ci_high"]),
            pval(r["p_wilcoxon"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(entry: Mapping[str, Any], family_size: int = 1) -> str:
    """Markdown of one evaluated comparison (an entry of ``evaluate_family``): the per-organ rows and
    the organ mean, with the rule's call; organ rows are Holm-corrected over the organs."""
    res = entry["result"]
    conf = int(round(100 * res["confidence"]))
    mean = next(r for r in res["rows"] if r["organ"] == "mean")
    lines = [
        f"**A** = {res['a']['label']}; **B** = {res['b']['label']}.",
        "",
        f"| Organ | scans | folds | A | B | A − B | {conf} % CI, folds | p, folds | p, {CORRECTION} | call "
        f"| {conf} % CI, per scan | Wilcoxon p |",
        "|" + "---|" * 12,
    ]
    for r in res["rows"]:
        lines.append(
            f"| {ORGAN_NAMES.get(r['organ'], r['organ'])} | {r['n']} | {r['n_folds']} | {pts(r['mean_a'], sign=False)} "
            f"| {pts(r['mean_b'], sign=False)} | {pts(r['mean_diff'])} | {ci(r['ci_low'], r['ci_high'])} "
            f"| {pval(r['p'])} | {pval(r.get('p_holm'))} | {call_md(r.get('call'))} "
            f"| {ci(r['scan_ci_low'], r['scan_ci_high'])} | {pval(r['p_wilcoxon'])} |"
        )
    band = (
        ""
        if not entry.get("one_seed")
        else " One side has one training seed: the seed band of this dataset and profile is "
        + (
            "not measured, so the call is at most weak."
            if entry.get("band") is None
            else f"± {100 * entry['band']:.2f} Dice points."
        )
    )
    lines += [
        "",
        f"Mean row: {call_md(entry['call'])} ({entry['reason']}; {CORRECTION} over "
        f"{family_size} comparison{'s' * (family_size != 1)}).{band} Organ rows: {CORRECTION} over the organs. "
        f"Fold-level interval: mean ± t({mean['df']}) × hierarchical-bootstrap SE ({mean['n_resamples']} "
        f"resamples, seed {res['seed']}, Monte-Carlo error of the end points {pts(mean['mc_error'], 3, False)}); "
        f"p, folds: {mean['p_source']} Wald test, t({mean['df']}). Per scan: BCa bootstrap and Wilcoxon "
        "signed-rank test, which treat the scans of a fold as independent (secondary).",
    ]
    return "\n".join(lines) + "\n"


def rule_md() -> str:
    """The declared decision rule in words (results/README.md and the book), from the library's constants."""
    from ..engine.inference import MC_MARGIN, N_RESAMPLES

    conf = int(round(100 * (1 - ALPHA)))
    return (
        f"- **Fold-level interval** ({conf} %): the scans of a fold share one trained model, so folds, then scans "
        "within the resampled folds, are resampled (hierarchical bootstrap, with Davison & Hinkley's adjustment so "
        "that the scan-level variance is not counted twice); the interval is the mean paired difference ± "
        f"t(F − 1) × the bootstrap standard error (F folds; {N_RESAMPLES} resamples, more while an end point lies "
        f"within {MC_MARGIN:g} Monte-Carlo errors of 0).\n"
        "- **Fold-level p**: a linear mixed model with the fold as a random intercept (REML, statsmodels), its "
        "Wald statistic referred to t(F − 1).\n"
        f"- **Families and correction**: every comparison belongs to one declared family; p-values are "
        f"{CORRECTION}-corrected within the family, counting comparisons not yet run as p = 1. {CORRECTION}, not "
        "Benjamini–Hochberg, because *resolved* is a claim about each difference: Holm bounds the chance of any "
        "false *resolved* in a family at 5 %.\n"
        f"- **Calls**: *resolved* when the interval excludes 0 **and** the corrected p < {ALPHA:g}; *weak* when only "
        "one of the two holds; *not resolved* otherwise.\n"
        "- **Seeds**: with several training seeds a scan's Dice is its mean over the seeds. A comparison with one "
        "seed on either side is never *resolved* when its difference lies inside the **seed band** (the 95 % range "
        "of the difference between two one-seed runs of the same method, from the three-seed tables of its "
        "dataset and profile), nor when no band was measured for them: it is then at most *weak*.\n"
        "- **Secondary columns**: the per-scan BCa interval and Wilcoxon p, which treat the scans of a fold as "
        "independent, are shown but decide nothing.\n"
    )


def seed_band_md(band: Mapping[str, Any] | None) -> str:
    """Markdown of a :func:`crapnet_core.engine.decision.seed_band` dict: the band and every seed pair."""
    if band is None:
        return (
            "No table of this dataset and profile has two or more complete training seeds (a seed counts once "
            "every fold of it is scored): no seed band.\n"
        )
    n_excl = sum(p["excludes_zero"] for p in band["pairs"])
    n_scan = sum((p["scan_ci_low"] or 0) > 0 or (p["scan_ci_high"] or 0) < 0 for p in band["pairs"])
    lines = [
        f"Seed band of {DATASET_SHORT.get(band['dataset'], band['dataset'])} (`{band['profile']}`): "
        f"**± {100 * band['band']:.2f}** Dice points (pooled seed standard deviation of a one-seed 5-fold mean "
        f"{100 * band['sd_seed']:.2f}, {band['df']} degrees of freedom; largest observed |seed − seed| "
        f"{100 * band['max_abs_diff']:.2f}). Of its {len(band['pairs'])} seed-against-seed comparisons of a "
        f"method with itself, the fold-level interval excludes 0 in {n_excl}; the per-scan interval in {n_scan}.",
        "",
        "| table | seeds | A − B | 95 % CI, folds | p, folds | 95 % CI, per scan | Wilcoxon p |",
        "|---|---|---|---|---|---|---|",
    ]
    left = [
        f"{table_label(t)} seed {k} ({why})" for t, per in band.get("left_out", {}).items() for k, why in per.items()
    ]
    if left:  # a seed still in training: it enters the band once all its folds are scored
        lines[0] += " Left out until all their folds are scored: " + "; ".join(left) + "."
    for p in band["pairs"]:
        lines.append(
            f"| {table_label(p['table'])} | {p['seeds'][0]} − {p['seeds'][1]} | {pts(p['mean_diff'])} "
            f"| {ci(p['ci_low'], p['ci_high'])} | {pval(p['p'])} | {ci(p['scan_ci_low'], p['scan_ci_high'])} "
            f"| {pval(p['p_wilcoxon'])} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "VARIANT_LABELS",
    "minus",
    "pts",
    "ci",
    "pval",
    "call_md",
    "table_label",
    "family_table",
    "comparison_markdown",
    "rule_md",
    "seed_band_md",
]
