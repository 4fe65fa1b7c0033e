"""The findings at the top of the book's opening page, written at build time from ``results/``.

:func:`findings_md` reads the cross-validation summaries committed under ``results/`` (via
:func:`crapnet_core.report.tables.load_summaries`) and the fold-level comparisons of the declared
families (:func:`crapnet_core.report.collect.analysis`) and writes a few sentences: what the study
shows (the main comparison, the decomposition, supervision against self-supervision, the distance
to the paper's Tables 1-2) and how sure it is (the unit, the correction, the seed band), each
difference with its fold-level interval and its call under the declared rule. Numbers link to the
results page; nothing is typed by hand. :func:`findings_figure` draws the one figure
(:func:`crapnet_core.report.plots.comparison_figure`) into a PNG without pyplot.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..facts import METHOD_LABELS
from . import figures, plots, tables

#: Which committed summaries the opening page summarises (those of ``make book``'s profile).
RESULTS_PROFILE = "lite"


def findings_frame(results_dir: str | os.PathLike, profile: str = RESULTS_PROFILE):
    """Long frame of the committed summaries of ``profile`` (:func:`tables.summary_frame`), or None."""
    summaries = tables.load_summaries(results_dir, profile=profile)
    if not summaries:
        return None, []
    return tables.summary_frame(summaries), summaries


def _diff(e, link) -> str:
    """``−0.55 [−5.54, +4.45]`` (Dice points, fold-level 95 % interval), linked."""
    from .stats_tables import ci, pts

    r = next(x for x in e["result"]["rows"] if x["organ"] == "mean")
    return link(f"{pts(r['mean_diff'])} {ci(r['ci_low'], r['ci_high'])}")


def _entry(an, family: str, a: str, b: str):
    for e in (an or {}).get("families", {}).get(family, {}).get("comparisons", []):
        if e["a"] == a and e["b"] == b and e.get("result"):
            return e
    return None


def _verdict(calls: list[str]) -> str:
    if all(c == "not resolved" for c in calls):
        return "not resolved under the declared rule"
    return "under the declared rule: " + ", ".join(calls)


def findings_sentences(results_dir: str | os.PathLike, frame, link, profile: str = RESULTS_PROFILE) -> list[str]:
    """The findings as a few sentences: what the study shows and how sure it is (every number generated).

    Reads the committed summaries (``frame``: :func:`findings_frame`'s) and the fold-level comparisons of
    the declared families (:func:`crapnet_core.report.collect.analysis`); a sentence whose comparisons
    are not committed is left out.
    """
    from ..published import PUBLISHED
    from .collect import analysis
    from .stats_tables import DATASET_SHORT, call_md, minus

    try:
        an = analysis(results_dir)
    except (ValueError, FileNotFoundError, KeyError):
        an = None
    out = []
    main = [
        (ds, _entry(an, "main", f"{ds}_setting1_crapnet_{profile}", f"{ds}_setting1_alpnet_{profile}"))
        for ds in ("chaos", "sabs")
    ]
    main = [(ds, e) for ds, e in main if e]
    if main:
        calls = [e["call"] for _, e in main]
        head = (
            "CRAPNet and SSL-ALPNet cannot be told apart"
            if set(calls) == {"not resolved"}
            else "CRAPNet against SSL-ALPNet"
        )
        seeds = ", ".join(sorted({str(len(e["result"]["a"]["seeds"])) for _, e in main}))
        out.append(
            f"**At the `{profile}` budget {head}**: CRAPNet − SSL-ALPNet is "
            + " and ".join(f"{_diff(e, link)} Dice points on {DATASET_SHORT[ds]}" for ds, e in main)
            + f" (setting 1, {seeds} training seeds, fold-level 95 % intervals), {_verdict(calls)}."
        )
    att = _entry(an, "decomposition", f"chaos_setting1_alpnet-attention_{profile}", f"chaos_setting1_alpnet_{profile}")
    car = _entry(an, "decomposition", f"chaos_setting1_alpnet-carafe_{profile}", f"chaos_setting1_alpnet_{profile}")
    if att and car:
        out.append(
            f"Of its two halves, the attention blocks change SSL-ALPNet's Dice by {_diff(att, link)} "
            f"({call_md(att['call'])}) and the CARAFE++ prototypes by {_diff(car, link)} ({call_md(car['call'])}) "
            "on CHAOS MRI: the attention has not learned a selective correspondence at this budget "
            "([the equal-budget study](equal_budget.md))."
        )
    sup = [
        (ds, st, _entry(an, "methods", f"{ds}_setting{st}_alpnet_sup_{profile}", f"{ds}_setting{st}_crapnet_{profile}"))
        for ds in ("chaos", "sabs")
        for st in (1, 2)
    ]
    sup = [x for x in sup if x[2]]
    if sup:
        beaten = any(
            e["call"] == "resolved" and next(r for r in e["result"]["rows"] if r["organ"] == "mean")["mean_diff"] < 0
            for *_, e in sup
        )
        out.append(
            (
                "At `lite`, self-supervision beats supervision from other organs' labels in part: supervised "
                if beaten
                else "At `lite`, supervision from other organs' labels is not beaten by self-supervision: supervised "
            )
            + "ALPNet − CRAPNet is "
            + "; ".join(
                f"{_diff(e, link)} ({call_md(e['call'])}) on {DATASET_SHORT[ds]} setting {st}" for ds, st, e in sup
            )
            + "."
        )
    if frame is not None:
        means = frame[frame["organ"] == "mean"]
        ssl, other = [], []
        for _, r in means.iterrows():
            label = METHOD_LABELS.get(r["method_key"], "")
            paper = PUBLISHED[f"table{r['setting']}"].get(r["dataset"], {}).get(label)
            if paper is None:
                continue
            gap = paper[-1] - r["dice"]
            (other if r["method_key"] in ("alpnet_sup", "alpnet_init") else ssl).append(gap)
        if ssl:
            text = (
                f"Every self-supervised row of ours is {minus(f'{min(ssl):.1f}')}–{minus(f'{max(ssl):.1f}')} Dice "
                "points below the paper's Tables 1–2: these runs start from random weights and train a small encoder "
                "for a small fraction of the paper's steps on a CPU (see [Limitations](limitations.md)), so they "
                "compare the methods under one budget and do not reproduce the paper's absolute numbers"
            )
            if other:
                text += (
                    f"; the supervised ALPNet and the untrained network, which need no long self-supervised "
                    f"training, are {minus(f'{min(other):+.2f}')} to {minus(f'{max(other):+.2f}')} points from the "
                    "paper's rows (paper minus ours)"
                )
            out.append(text + ".")
    bands = {k.split("/")[0]: v for k, v in (an or {}).get("bands", {}).items() if k.endswith(f"/{profile}") and v}
    n_fold = sum(p["excludes_zero"] for b in bands.values() for p in b["pairs"])
    n_pairs = sum(len(b["pairs"]) for b in bands.values())
    if bands:
        out.append(
            "**How sure:** every comparison treats the fold, whose scans share one trained model, as the unit; "
            "p-values are Holm-corrected within declared families; and a one-seed difference must exceed the seed "
            "band ("
            + ", ".join(f"± {100 * b['band']:.2f} on {DATASET_SHORT[d]}" for d, b in bands.items())
            + f"; {n_fold} of {n_pairs} comparisons of a method with itself across seeds are resolved at the fold "
            "level) to be called resolved. Five folds make fold-level intervals wide: most differences of a "
            "few points are not resolved, which says the study cannot tell, not that the methods are equal."
        )
    conv = _entry(an, "converged", "chaos_setting1_crapnet_converged", "chaos_setting1_alpnet_converged")
    if conv:
        from .converged import budget_change_sentences

        first = [
            f"**At the converged budget** (the same models trained to the budget chosen on validation scans; "
            f"partial while its folds are trained), CRAPNet − SSL-ALPNet on CHAOS MRI is {_diff(conv, link)} "
            "Dice points."
        ]
        out = first + budget_change_sentences(Path(results_dir), an) + out  # the converged answer leads
    return out


def findings_md(
    results_dir: str | os.PathLike,
    results_link: str | None,
    figure: str | None = None,
    profile: str = RESULTS_PROFILE,
    folder_label: str = "results/",
) -> str:
    """Markdown of the findings: a few generated sentences (what the study shows, how sure), then the figure.

    ``results_link``: the results page (a document path for a MyST link, e.g.
    ``../notebooks/06_results__lite.ipynb``) that the numbers link to; ``figure``: the figure's file
    name relative to the including page (None: no figure). Differences in Dice points (0-100) with
    their fold-level 95 % intervals and calls under the declared rule
    (:mod:`crapnet_core.engine.decision`).
    """
    frame, summaries = findings_frame(results_dir, profile)

    def link(text: str) -> str:
        return f"[{text}]({results_link})" if results_link else text

    lines = ["## Findings", ""]
    if frame is None:
        lines += [
            f"No cross-validated `{profile}` results are committed under `{folder_label}` in this checkout, so "
            "this page has no findings of its own to report; the numbers this build produced are on the "
            + (link("results page") if results_link else "results page")
            + ". The figure shows the paper's "
            "published mean Dice for scale.",
            "",
        ]
    else:
        sentences = findings_sentences(results_dir, frame, link, profile)
        lines += [
            " ".join(sentences)
            if sentences
            else f"{len(summaries)} cross-validated `{profile}` summaries are committed under `{folder_label}`; "
            "the tables are on the " + link("results page") + ".",
            "",
        ]
    if figure:
        lines += [
            "```{figure} " + figure,
            ":name: fig-findings",
            ":width: 100%",
            "",
            "Mean Dice (0–100) per method: the paper's published numbers and ours"
            + (f" (`{profile}` profile, error bars: standard deviation over folds)." if frame is not None else "."),
            "```",
            "",
        ]
    return "\n".join(lines)


def findings_figure(results_dir: str | os.PathLike, path: str | os.PathLike, profile: str = RESULTS_PROFILE) -> Path:
    """Write the findings figure (PNG) to ``path``; drawn on a ``matplotlib.figure.Figure`` (no pyplot state)."""
    from matplotlib.figure import Figure

    figures.set_style()
    frame, _ = findings_frame(results_dir, profile)
    fig = plots.comparison_figure(frame, fig=Figure())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


__all__ = ["findings_md", "findings_sentences", "findings_figure", "findings_frame", "RESULTS_PROFILE"]
