"""The findings at the top of the book's opening page, written at build time from ``results/``.

:func:`findings_md` reads the cross-validation summaries committed under ``results/``
(``*/summary.json`` of ``crapnet cross-validate``, via
:func:`crapnet_core.report.figures.load_summaries`) and writes a few sentences: per dataset and
setting, each method's mean Dice over the five folds (with the standard deviation over folds
when the summary gives it) next to the paper's Tables 1-2, the ranking of CRAPNet, and the
gap to the published numbers. Every number of ours links to the results page that shows it
in a table; nothing is typed by hand. :func:`findings_figure` draws the one figure
(:func:`crapnet_core.report.figures.comparison_figure`) into a PNG without pyplot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from . import figures

#: Which committed summaries the opening page summarises (those of ``make book``'s profile).
RESULTS_PROFILE = "lite"


def findings_frame(results_dir: str | os.PathLike, profile: str = RESULTS_PROFILE):
    """Long frame of the committed summaries of ``profile`` (:func:`figures.summary_frame`), or None."""
    summaries = figures.load_summaries(results_dir, profile=profile)
    if not summaries:
        return None, []
    return figures.summary_frame(summaries), summaries


def _fmt(value: float, std: float | None) -> str:
    return f"{value:.1f} ± {std:.1f}" if std is not None and std == std else f"{value:.1f}"


def findings_md(results_dir: str | os.PathLike, results_link: str | None, figure: str | None = None,
                profile: str = RESULTS_PROFILE, folder_label: str = "results/") -> str:
    """Markdown of the findings: sentences per (dataset, setting), ranking, gap to the paper, figure.

    ``results_link``: the results page (a document path for a MyST link, e.g.
    ``../notebooks/07_results__lite.ipynb``) that every number links to; ``figure``: the
    figure's file name relative to the including page (None: no figure). Mean Dice 0-100
    over the four organs; "±" is the standard deviation over folds (as in the summary).
    """
    frame, summaries = findings_frame(results_dir, profile)

    def link(text: str) -> str:
        return f"[{text}]({results_link})" if results_link else text

    lines = ["## Findings", ""]
    if frame is None:
        lines += [
            f"No cross-validated `{profile}` results are committed under `{folder_label}` in this checkout, so "
            "this page has no findings of its own to report; the numbers this build produced are on the "
            + (link("results page") if results_link else "results page") + ". The figure shows the paper's "
            "published mean Dice for scale.",
            "",
        ]
    else:
        means = frame[frame["organ"] == "mean"]
        pub = figures.PUBLISHED
        wins, cells, gaps = 0, 0, []
        sentences = []
        for (dataset, setting), sub in means.groupby(["dataset", "setting"], sort=True):
            sub = sub.set_index("method_key")
            ranked = sub["dice"].sort_values(ascending=False)
            folds = sorted({int(f) for fs in sub["folds"] for f in str(fs).split(",") if f != ""})
            parts = []
            for key in ranked.index:
                std = sub.loc[key, "dice_std"] if "dice_std" in sub else None
                paper = pub[f"table{setting}"].get(dataset, {}).get(figures.METHOD_LABELS.get(key, ""), None)
                text = f"{figures.METHOD_LABELS.get(key, key)} {link(_fmt(sub.loc[key, 'dice'], std))}"
                if paper is not None:
                    text += f" (paper {paper[-1]:.2f})"
                    gaps.append(paper[-1] - sub.loc[key, "dice"])
                parts.append(text)
            top = ranked.index[0]
            cells += 1
            wins += top == "crapnet"
            name = figures.DATASET_LABELS.get(dataset, dataset)
            sentences.append(f"- **{name}, setting {setting}** ({len(folds)} folds): " + "; ".join(parts) + ".")
        lines += [
            f"Mean Dice (0–100) over the four organs, cross-validated with the `{profile}` profile "
            f"({len(summaries)} summaries under `{folder_label}`; ± is the standard deviation over folds; each "
            "number links to its table), best method first, with the paper's Tables 1–2 in brackets:",
            "",
            *sentences,
            "",
            f"CRAPNet has the highest mean Dice in {wins} of {cells} dataset–setting combinations; which of "
            "these differences the paired per-scan tests resolve, and why, is on "
            "[the equal-budget study](equal_budget.md) page."
            + (f" Every number of ours is {min(gaps):.0f}–{max(gaps):.0f} Dice points below the paper's: these "
               "runs start from random weights on a CPU with a small encoder and a small fraction of the paper's "
               "training steps (see [Limitations](limitations.md)), so they compare the methods under one equal "
               "budget and do not reproduce the paper's absolute numbers." if gaps else ""),
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
    fig = figures.comparison_figure(frame, fig=Figure())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


__all__ = ["findings_md", "findings_figure", "findings_frame", "RESULTS_PROFILE"]
