"""Plots of results for the book's pages: losses, Dice per organ, comparisons, predictions.

- **Training** (:func:`plot_losses`): the loss curves of one run's ``metrics.csv``.
- **Dice** (:func:`plot_per_organ`, :func:`plot_organ_panels`, :func:`comparison_figure`,
  :func:`decomposition_figure`): our numbers (frames of :mod:`crapnet_core.report.tables`) next to
  the paper's, Dice 0..100.
- **Predictions** (:func:`load_prediction`, :func:`prediction_figure`, :func:`qualitative_figure`):
  a run's saved prediction volumes drawn over the scan, with the slice's Dice
  (:func:`crapnet_core.engine.metrics.dice`).

Slices are drawn with :func:`crapnet_core.report.figures.show_overlay` (the book's one slice style).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.metrics import dice as mask_dice
from ..facts import DATASET_LABELS, METHOD_LABELS, ORGAN_SHORT, ORGANS  # study facts
from .figures import middle_slice, organ_color, show_overlay
from .tables import METHOD_ORDER, published_frame, summary_variant

_LOSS_NAMES = {"loss": "total", "total": "total", "seg": "segmentation (CE)", "align": "alignment (PAR)"}


def plot_losses(rows: Sequence[Mapping[str, float]], ax=None, smooth: int = 0, title: str | None = None):
    """Loss curves (total, segmentation, alignment) against the step; optional moving average."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.4))
    if not rows:
        ax.text(0.5, 0.5, "no metrics logged", ha="center", va="center", transform=ax.transAxes)
        return ax
    steps = np.array([r["step"] for r in rows])
    n = len(rows)
    k = smooth or max(1, n // 25)
    # training.CSV_COLUMNS: step, loss (the total of Eq. 20), seg, align, lr, seconds
    for key, style in (("loss", "-"), ("total", "-"), ("seg", "--"), ("align", ":")):
        if key not in rows[0]:
            continue
        y = np.array([r[key] for r in rows], dtype=float)
        if k > 1 and n >= k:
            y_s = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], y_s, style, label=f"{_LOSS_NAMES.get(key, key)} (mean of {k})")
        else:
            ax.plot(steps, y, style, label=_LOSS_NAMES.get(key, key))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_per_organ(frame, hue: str = "label", ax=None, title: str | None = None):
    """Grouped bars: Dice per organ (LK, RK, Spleen, Liver, Mean), one bar per ``hue`` value."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6))
    df = frame.assign(organ=frame["organ"].map(lambda o: ORGAN_SHORT.get(o, "Mean" if o == "mean" else o)))
    order = [o for o in [*ORGAN_SHORT.values(), "Mean"] if o in set(df["organ"])]
    sns.barplot(data=df, x="organ", y="dice", hue=hue, order=order, ax=ax, errorbar=None)
    ax.set_ylabel("Dice (0-100)")
    ax.set_xlabel("")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_organ_panels(
    frame, x: str = "method", hue: str = "source", title: str | None = None, size: tuple[float, float] = (2.3, 3.1)
):
    """One panel per organ (LK, RK, Spleen, Liver) plus the mean: Dice bars per ``x``, coloured by ``hue``.

    ``frame`` is a long frame with columns organ, dice (0..100), ``x`` and ``hue`` (e.g. our
    rows and the published rows of :func:`published_frame`).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    organs = [o for o in (*ORGANS, "mean") if o in set(frame["organ"])]
    if not organs:
        raise ValueError("plot_organ_panels: the frame has no rows for LK, RK, Spleen, Liver or the mean")
    fig, axes = plt.subplots(1, len(organs), figsize=(size[0] * len(organs), size[1]), sharey=True, squeeze=False)
    x_order = list(dict.fromkeys(frame[x]))
    hue_order = list(dict.fromkeys(frame[hue]))
    palette = dict(zip(hue_order, sns.color_palette("deep", len(hue_order))))
    for i, (ax, organ) in enumerate(zip(axes[0], organs)):
        sub = frame[frame["organ"] == organ]
        sns.barplot(
            data=sub, x=x, y="dice", hue=hue, order=x_order, hue_order=hue_order, palette=palette, ax=ax, errorbar=None
        )
        ax.set_title(ORGAN_SHORT.get(organ, "Mean"), fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("Dice (0-100)" if i == 0 else "")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", rotation=40, labelsize=8)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.12 + 0.04 * ((len(labels) - 1) // 3), 1, 1))
    return fig


#: The component decomposition (issue 8 section 4): model variant -> its row label, in the order of the
#: book's table (SSL-ALPNet, + attention, + CARAFE++ prototypes, both = CRAPNet, CRAPNet aligned window).
DECOMPOSITION = {
    "alpnet": "SSL-ALPNet",
    "alpnet-att": "SSL-ALPNet\n+ attention",
    "alpnet-carafe": "SSL-ALPNet\n+ CARAFE++",
    "crapnet": "CRAPNet",
    "crapnet-aligned": "CRAPNet,\naligned window",
}


def _decomposition_points(summaries: Iterable[Mapping[str, Any]], dataset: str, setting: int):
    """(variant, fold, mean Dice 0-100) of every fold of the summaries of ``dataset`` / ``setting`` whose
    variant is a row of :data:`DECOMPOSITION`."""
    for s in summaries:
        variant = s.get("variant") or summary_variant(s)
        if s.get("dataset") != dataset or int(s.get("setting", 0)) != setting or variant not in DECOMPOSITION:
            continue
        for fold, entry in (s.get("per_fold") or {}).items():
            value = (entry.get("dice") or {}).get("mean")
            if value is not None:
                yield variant, str(fold), 100 * float(value)


def has_decomposition(summaries: Iterable[Mapping[str, Any]], dataset: str = "chaos", setting: int = 1) -> bool:
    """Whether ``summaries`` hold a component row of :data:`DECOMPOSITION` (one beyond the two end points,
    SSL-ALPNet and CRAPNet, which every results folder has) for ``dataset`` / ``setting``: when False,
    :func:`decomposition_figure` would only repeat the main comparison."""
    return any(
        variant not in ("alpnet", "crapnet") for variant, *_ in _decomposition_points(summaries, dataset, setting)
    )


def decomposition_figure(
    summaries: Iterable[Mapping[str, Any]],
    dataset: str = "chaos",
    setting: int = 1,
    fig=None,
    size: tuple[float, float] = (7.0, 3.6),
):
    """Mean Dice over organs of each decomposition row, one point per fold joined across the rows.

    ``summaries``: e.g. :func:`load_summaries` ``(results, "lite", variants=True, seed=0)``; those of
    ``dataset`` / ``setting`` whose variant is in :data:`DECOMPOSITION` are drawn (bars: mean over
    folds, error bars: standard deviation over folds, ddof=1; Dice 0-100). ValueError when none is.
    Returns the figure.
    """
    import pandas as pd
    import seaborn as sns

    rows = [
        {"row": DECOMPOSITION[variant], "fold": fold, "dice": dice}
        for variant, fold, dice in _decomposition_points(summaries, dataset, setting)
    ]
    if not rows:
        raise ValueError(f"decomposition_figure: no decomposition summary for {dataset} setting {setting}")
    frame = pd.DataFrame(rows)
    order = [label for label in DECOMPOSITION.values() if label in set(frame["row"])]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure()
    fig.set_size_inches(*size)
    ax = fig.subplots()
    sns.barplot(
        data=frame,
        x="row",
        y="dice",
        order=order,
        errorbar=("sd", 1),
        color="0.85",
        edgecolor="0.4",
        capsize=0.15,
        ax=ax,
    )
    sns.pointplot(
        data=frame,
        x="row",
        y="dice",
        order=order,
        hue="fold",
        palette="colorblind",
        errorbar=None,
        markersize=4,
        linewidth=0.8,
        ax=ax,
    )
    ax.set_xlabel("")
    ax.set_ylabel("mean Dice over organs (0-100)")
    ax.set_title(
        f"{DATASET_LABELS.get(dataset, dataset)}, setting {setting}: bars mean ± std over folds, lines one fold",
        fontsize=9,
    )
    ax.legend(title="fold", fontsize=8, title_fontsize=8, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def comparison_figure(ours, fig=None, size: tuple[float, float] = (3.0, 3.4)):
    """Mean Dice over the four organs per method, ours next to the published (Tables 1-2), one panel per
    (dataset, setting) of ``ours``; every panel of the paper when ``ours`` is empty or None.

    ``ours``: long frame (:func:`summary_frame` / :func:`run_frame`) with dataset, setting,
    method_key, method, organ, dice (0..100) and source. Our bars carry the standard
    deviation over folds as error bars when ``dice_std`` is present. ``fig``: an existing
    ``matplotlib.figure.Figure`` to draw into (the book builder draws without pyplot);
    default a new pyplot figure. Returns the figure.
    """
    import pandas as pd
    import seaborn as sns

    pub = pd.concat([published_frame(1), published_frame(2)], ignore_index=True)
    pub = pub[(pub["organ"] == "mean") & pub["method_key"].notna()]
    if ours is not None and len(ours):
        mine = ours[ours["organ"] == "mean"]
        panels = list(dict.fromkeys(zip(mine["dataset"], mine["setting"])))
    else:
        mine = None
        panels = [(d, s) for s in (1, 2) for d in ("chaos", "sabs")]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure()
    fig.set_size_inches(size[0] * len(panels) + 0.6, size[1])
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for i, (ax, (dataset, setting)) in enumerate(zip(axes, panels)):
        ref = dataset if dataset in ("chaos", "sabs") else "chaos"
        p = pub[(pub["dataset"] == ref) & (pub["setting"] == setting)].assign(source="published")
        frames = [p]
        if mine is not None:
            frames.append(mine[(mine["dataset"] == dataset) & (mine["setting"] == setting)])
        both = pd.concat(frames, ignore_index=True)
        both["label"] = both["method_key"].map(METHOD_LABELS)
        order = [k for k in METHOD_ORDER if k in set(both["method_key"])]  # this panel's methods
        sources = list(dict.fromkeys(both["source"]))
        colors = dict(zip(sources, sns.color_palette("colorblind", len(sources))))
        sns.barplot(
            data=both,
            x="label",
            y="dice",
            hue="source",
            order=[METHOD_LABELS[k] for k in order],
            hue_order=sources,
            palette=colors,
            errorbar=None,
            ax=ax,
        )
        if "dice_std" in both:  # spread over folds, where the summary gives it
            for j, src in enumerate(sources):
                rows = both[(both["source"] == src) & both["dice_std"].notna()]
                for _, r in rows.iterrows():
                    x = order.index(r["method_key"]) + (j - (len(sources) - 1) / 2) * 0.8 / len(sources)
                    ax.errorbar(x, r["dice"], yerr=r["dice_std"], color="black", capsize=2, lw=0.8)
        name = DATASET_LABELS.get(dataset, dataset)
        ax.set_title(f"{name}\nsetting {setting}" + (" (published: MRI)" if ref != dataset else ""), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("mean Dice over organs (0-100)" if i == 0 else "")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        legend = ax.get_legend()
        if legend is not None:
            if i == len(panels) - 1:
                legend.set_title(None)
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=8)
            else:
                legend.remove()
    fig.tight_layout()
    return fig


def load_prediction(run_dir: str | os.PathLike, volume, organ: str) -> np.ndarray | None:
    """A run's saved prediction ``predictions/<scan>_<organ>.nii.gz`` on the model grid of ``volume`` (None if absent).

    Saved predictions are on the file's grid and axis order (:func:`crapnet_core.engine.evaluation.evaluate`
    writes them); they are read like a scan (:func:`crapnet_core.data.datasets.read_scan`: an unreadable
    file is a ``DatasetError`` naming it) and mapped to the model grid like the label. Returns a bool
    ``(256, 256, Z)`` array.
    """
    from ..data.datasets import read_scan
    from ..engine.evaluation import prediction_file_name

    path = Path(run_dir) / "predictions" / prediction_file_name(volume.scan_id, organ)
    if not path.is_file():
        return None
    arr, _, _ = read_scan(path)
    return volume.geometry.label_to_model(arr) > 0


def prediction_figure(
    spec, run_dir: str | os.PathLike, metrics: Mapping[str, Any], max_scans: int = 2, size: float = 2.6
):
    """Figure: for each organ (rows) and a few test scans (columns), GT contour + prediction at mid slice."""
    import matplotlib.pyplot as plt

    from ..data import datasets as ds

    organs = list(metrics.get("organs", []))
    scans = list(metrics.get("test_scans", []))[:max_scans]
    fig, axes = plt.subplots(
        len(organs), len(scans), figsize=(size * len(scans) * 1.0, size * len(organs)), squeeze=False
    )
    for r, organ in enumerate(organs):
        for c, sid in enumerate(scans):
            ax = axes[r][c]
            vol = ds.load_volume(spec, sid)
            z = middle_slice(vol, spec.labels[organ])
            pred = load_prediction(run_dir, vol, organ)
            if z is None or pred is None:
                ax.set_axis_off()
                ax.set_title(f"{organ.replace('_', ' ')}, scan {sid}: n/a", fontsize=8)
                continue
            gt = vol.label[:, :, z] == spec.labels[organ]
            d = 100 * mask_dice(pred[:, :, z], gt)
            _pred_panel(
                ax,
                vol.image[:, :, z],
                gt,
                pred[:, :, z],
                organ,
                f"{organ.replace('_', ' ')}, scan {sid}, z={z}\nslice Dice {d:.1f}",
            )
    fig.tight_layout()
    return fig


def _pred_panel(ax, image2d, gt, pred, organ, title, show_gt: bool = True):
    show_overlay(ax, image2d, title=title)
    color = organ_color(organ)
    if pred is not None and pred.any():
        rgba = np.zeros((*pred.shape, 4))
        rgba[pred] = (*color, 0.45)
        ax.imshow(rgba, origin="lower", interpolation="nearest")
    if show_gt and gt is not None and gt.any():
        ax.contour(gt.astype(float), levels=[0.5], colors=["yellow"], linewidths=0.9, origin="lower")


def qualitative_figure(
    spec,
    runs: Mapping[str, str | os.PathLike],
    metrics: Mapping[str, Mapping[str, Any]],
    organs: Sequence[str] = ORGANS,
    size: float = 2.4,
):
    """The analogue of the paper's Fig. 3: rows = organs; columns = image, ground truth, each method.

    ``runs``/``metrics`` map a method key to its run folder / ``metrics.json`` (same fold and
    setting). Each row shows the middle slice of the organ in the first test scan where every
    method has a prediction; each method panel prints that slice's Dice.
    """
    import matplotlib.pyplot as plt

    from ..data import datasets as ds

    methods = list(runs)
    organs = [o for o in organs if o in spec.labels]
    ncol = 2 + len(methods)
    fig, axes = plt.subplots(len(organs), ncol, figsize=(size * ncol, size * len(organs)), squeeze=False)
    for r, organ in enumerate(organs):
        lid = spec.labels[organ]
        chosen = None
        scans = next(iter(metrics.values())).get("test_scans", []) if metrics else []
        for sid in scans:
            vol = ds.load_volume(spec, sid)
            z = middle_slice(vol, lid)
            preds = {m: load_prediction(runs[m], vol, organ) for m in methods}
            if z is not None and all(p is not None for p in preds.values()):
                chosen = (vol, z, preds)
                break
        if chosen is None:
            for ax in axes[r]:
                ax.set_axis_off()
            axes[r][0].set_title(f"{organ.replace('_', ' ')}: no prediction", fontsize=8)
            continue
        vol, z, preds = chosen
        img = vol.image[:, :, z]
        gt = vol.label[:, :, z] == lid
        show_overlay(
            axes[r][0], img, title=f"{ORGAN_SHORT[organ] if organ in ORGAN_SHORT else organ}: scan {vol.scan_id}, z={z}"
        )
        _pred_panel(axes[r][1], img, None, gt, organ, "ground truth", show_gt=False)
        for c, m in enumerate(methods):
            p = preds[m][:, :, z]
            _pred_panel(
                axes[r][2 + c], img, gt, p, organ, f"{METHOD_LABELS.get(m, m)}  (Dice {100 * mask_dice(p, gt):.1f})"
            )
    fig.tight_layout()
    return fig


__all__ = [
    "plot_losses",
    "plot_per_organ",
    "plot_organ_panels",
    "DECOMPOSITION",
    "has_decomposition",
    "decomposition_figure",
    "comparison_figure",
    "load_prediction",
    "prediction_figure",
    "qualitative_figure",
]
