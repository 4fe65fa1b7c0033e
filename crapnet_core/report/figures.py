"""The book's figure style, slice drawing and the data pages' figures and measurements.

- **Style and drawing** (:func:`set_style`, :func:`window`, :func:`organ_color`, :func:`show_overlay`):
  the one figure style and the one way a slice with its organs is drawn (used by
  :mod:`crapnet_core.report.plots` and :mod:`crapnet_core.report.viewer` too).
- **Data** (:func:`dataset_overview`, :func:`intensity_samples`, :func:`middle_slice`,
  :func:`example_slices`): what the scans and their labels look like.
- **Superpixels** (:func:`best_superpixel_dice`, :func:`superpixel_fit`, :func:`superpixel_counts`,
  :func:`superpixel_panel`): how well the self-supervision's pseudo-labels could stand for organs.

Tables are in :mod:`crapnet_core.report.tables`, plots of results in :mod:`crapnet_core.report.plots`,
provenance notes in :mod:`crapnet_core.report.provenance`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..facts import ORGANS  # study facts

#: Overlay colours (RGB 0..1) per organ; other organs get the tab20 palette.
ORGAN_COLORS = {
    "liver": (0.85, 0.37, 0.01),
    "spleen": (0.46, 0.44, 0.70),
    "left_kidney": (0.11, 0.62, 0.47),
    "right_kidney": (0.91, 0.16, 0.54),
}


def set_style(dpi: int = 90) -> None:
    """The book's one figure style (every notebook calls this once, first).

    seaborn's ``whitegrid`` theme with its colour-blind palette, font sizes that stay
    readable when a 11-inch-wide figure is scaled to the book's main column (~800 px), and
    no top/right spines. Axis labels carry units (``Dice (0-100)``, ``mm``, ``ml``, ``s``).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "figure.max_open_warning": 0,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "legend.fontsize": 9,
            "legend.title_fontsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


# --------------------------------------------------------------------------- drawing
def window(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Display range of an image: its ``low``/``high`` percentiles (inside the non-zero voxels)."""
    values = np.asarray(image, dtype=np.float64)
    nz = values[values > values.min()] if np.any(values > values.min()) else values.ravel()
    lo, hi = np.percentile(nz, [low, high])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def organ_color(organ: str, index: int = 0) -> tuple[float, float, float]:
    """RGB (0..1) of ``organ``: :data:`ORGAN_COLORS`, else colour ``index`` of matplotlib's tab20."""
    if organ in ORGAN_COLORS:
        return ORGAN_COLORS[organ]
    import matplotlib

    return tuple(matplotlib.colormaps["tab20"](index % 20)[:3])


def show_overlay(
    ax,
    image2d: np.ndarray,
    label2d: np.ndarray | None = None,
    labels: Mapping[str, int] | None = None,
    organs: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.35,
    contour_only: bool = False,
    vrange: tuple[float, float] | None = None,
):
    """Draw an axial slice (grey, percentile window) with organ masks as coloured fills + contours.

    ``image2d``/``label2d``: ``(H, W)`` arrays in crapnet's canonical layout (``image[:, :, z]``,
    rows posterior -> anterior, columns right -> left: :mod:`crapnet_core.data.geometry`); drawn with
    ``origin="lower"``: anterior up, patient's right on the left (radiological display).
    ``labels`` maps organ -> id.
    """
    lo, hi = vrange or window(image2d)
    ax.imshow(np.asarray(image2d), cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    handles = []
    if label2d is not None and labels:
        from matplotlib.patches import Patch

        for i, organ in enumerate(organs or list(labels)):
            if organ not in labels:
                continue
            mask = np.asarray(label2d) == labels[organ]
            if not mask.any():
                continue
            color = organ_color(organ, i)
            if not contour_only:
                rgba = np.zeros((*mask.shape, 4))
                rgba[mask] = (*color, alpha)
                ax.imshow(rgba, origin="lower", interpolation="nearest")
            ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.0, origin="lower")
            handles.append(Patch(color=color, label=organ.replace("_", " ")))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return handles


# --------------------------------------------------------------------------- data pages
def dataset_overview(spec, ids: Sequence[str] | None = None):
    """Per-scan table: slices, spacing, intensity percentiles, voxels and volume (ml) per organ.

    Builds on :func:`crapnet_core.data.datasets.summarize`; adds 1st/50th/99th intensity
    percentiles inside the body mask and organ volumes in millilitres.
    """
    import pandas as pd

    from ..data import datasets as ds

    ids = list(ids) if ids is not None else ds.scan_ids(spec)
    rows = ds.summarize(spec, ids)
    for row in rows:
        vol = ds.load_volume(spec, row["scan"])
        voxel_ml = float(np.prod(vol.spacing)) / 1000.0
        body = vol.image[vol.image > ds.body_threshold_for(spec, vol.image)]
        p1, p50, p99 = np.percentile(body, [1, 50, 99]) if body.size else (np.nan,) * 3
        row.update(
            spacing_x=float(vol.spacing[0]),
            spacing_y=float(vol.spacing[1]),
            spacing_z=float(vol.spacing[2]),
            p1=float(p1),
            median=float(p50),
            p99=float(p99),
        )
        for organ in ORGANS:
            if organ in spec.labels:
                row[f"{organ}_ml"] = row[organ] * voxel_ml
    return pd.DataFrame(rows)


def intensity_samples(spec, ids: Sequence[str], per_scan: int = 20000, seed: int = 0):
    """Long frame of sampled raw intensities per scan and region (body / organ names)."""
    import pandas as pd

    from ..data import datasets as ds

    rng = np.random.default_rng(seed)
    frames = []
    for sid in ids:
        vol = ds.load_volume(spec, sid)
        regions = {"body (unlabelled)": (vol.image > ds.body_threshold_for(spec, vol.image)) & (vol.label == 0)}
        for organ in ORGANS:
            if organ in spec.labels:
                regions[organ.replace("_", " ")] = vol.label == spec.labels[organ]
        for region, mask in regions.items():
            values = vol.image[mask]
            if values.size == 0:
                continue
            take = rng.choice(values.size, size=min(per_scan, values.size), replace=False)
            frames.append(pd.DataFrame({"scan": sid, "region": region, "intensity": values[take]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["scan", "region", "intensity"])


def middle_slice(volume, organ_id: int) -> int | None:
    """The slice in the middle of the organ's slice range (None when absent)."""
    zs = volume.slices_with_label(organ_id)
    return int(zs[len(zs) // 2]) if len(zs) else None


def example_slices(spec, ids: Sequence[str], organs: Sequence[str] = ORGANS, size: float = 2.6):
    """Figure: one row per scan, one column per organ, the organ's middle slice with all labels."""
    import matplotlib.pyplot as plt

    from ..data import datasets as ds

    organs = [o for o in organs if o in spec.labels]
    fig, axes = plt.subplots(len(ids), len(organs), figsize=(size * len(organs), size * len(ids)), squeeze=False)
    handles = []
    for r, sid in enumerate(ids):
        vol = ds.load_volume(spec, sid)
        for c, organ in enumerate(organs):
            ax = axes[r][c]
            z = middle_slice(vol, spec.labels[organ])
            if z is None:
                ax.set_axis_off()
                ax.set_title(f"scan {sid}: no {organ.replace('_', ' ')}", fontsize=9)
                continue
            h = show_overlay(
                ax,
                vol.image[:, :, z],
                vol.label[:, :, z],
                spec.labels,
                organs,
                title=f"scan {sid}, z={z} ({organ.replace('_', ' ')})",
            )
            if len(h) > len(handles):
                handles = h
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


# --------------------------------------------------------------------------- superpixels
def best_superpixel_dice(superpixels2d: np.ndarray, mask2d: np.ndarray) -> tuple[float, int]:
    """Dice (0..1) of the single superpixel that best matches ``mask2d``, and its label.

    Superpixel 0 (outside the body) is never chosen. Dice_k = 2|S_k ∩ M| / (|S_k| + |M|),
    computed for every k at once with ``np.bincount``. Returns (0.0, 0) for an empty mask
    or a slice without superpixels.
    """
    sp = np.asarray(superpixels2d).astype(np.int64).ravel()
    mask = np.asarray(mask2d).astype(bool).ravel()
    if sp.shape != mask.shape:
        raise ValueError(f"superpixels {np.shape(superpixels2d)} and mask {np.shape(mask2d)} differ in shape")
    m = int(mask.sum())
    if m == 0 or sp.max(initial=0) == 0:
        return 0.0, 0
    n = int(sp.max()) + 1
    sizes = np.bincount(sp, minlength=n).astype(np.float64)
    inter = np.bincount(sp[mask], minlength=n).astype(np.float64)
    dice = 2.0 * inter / (sizes + m)
    dice[0] = -1.0
    k = int(np.argmax(dice))
    return float(max(dice[k], 0.0)), k


def superpixel_fit(spec, ids: Sequence[str], organs: Sequence[str] = ORGANS):
    """Per (scan, organ, slice): the best single superpixel's Dice with the organ, and the organ's area.

    A measure of how well the pseudo-labels of the self-supervision could stand for organs:
    1.0 would mean some superpixel is exactly the organ's cross-section.
    """
    import pandas as pd

    from ..data import datasets as ds
    from ..data.superpixels import load_superpixels

    rows = []
    for sid in ids:
        vol = ds.load_volume(spec, sid)
        sp = load_superpixels(spec, sid)
        for organ in organs:
            if organ not in spec.labels:
                continue
            lid = spec.labels[organ]
            for z in vol.slices_with_label(lid):
                mask = vol.label[:, :, z] == lid
                dice, _ = best_superpixel_dice(sp[:, :, z], mask)
                rows.append(dict(scan=sid, organ=organ, z=int(z), dice=100.0 * dice, area_px=int(mask.sum())))
    return pd.DataFrame(rows)


def superpixel_counts(spec, ids: Sequence[str]):
    """Per (scan, slice): number of superpixels and body area (pixels)."""
    import pandas as pd

    from ..data import datasets as ds
    from ..data.superpixels import load_superpixels

    rows = []
    for sid in ids:
        vol = ds.load_volume(spec, sid)
        sp = load_superpixels(spec, sid)
        for z in range(vol.n_slices):
            s = sp[:, :, z]
            rows.append(dict(scan=sid, z=z, superpixels=int(len(np.unique(s[s > 0]))), body_px=int((s > 0).sum())))
    return pd.DataFrame(rows)


def superpixel_panel(spec, sid: str, z: int, size: float = 3.2):
    """Figure: the slice, its body mask, its superpixels (boundaries) and the organs on top."""
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from ..data import datasets as ds
    from ..data.superpixels import body_mask, load_superpixels

    vol = ds.load_volume(spec, sid)
    sp = load_superpixels(spec, sid)[:, :, z]
    img = vol.image[:, :, z]
    lo, hi = window(img)
    fig, axes = plt.subplots(1, 4, figsize=(4 * size, size))
    show_overlay(axes[0], img, title=f"scan {sid}, slice {z}", vrange=(lo, hi))
    thr = ds.body_threshold_for(spec, vol.image)
    show_overlay(axes[1], img, title=f"body mask (> {thr:.4g})", vrange=(lo, hi))
    body = body_mask(img, thr)
    rgba = np.zeros((*body.shape, 4))
    rgba[body] = (0.2, 0.6, 1.0, 0.35)
    axes[1].imshow(rgba, origin="lower")
    rng = np.random.default_rng(0)
    palette = rng.random((int(sp.max()) + 1, 3))
    palette[0] = 0
    axes[2].imshow(palette[sp], origin="lower", interpolation="nearest")
    axes[2].set_title(f"{len(np.unique(sp[sp > 0]))} superpixels", fontsize=9)
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    show_overlay(
        axes[3],
        img,
        vol.label[:, :, z],
        spec.labels,
        ORGANS,
        title="boundaries + organs",
        contour_only=True,
        vrange=(lo, hi),
    )
    edges = find_boundaries(sp, mode="inner") & (sp > 0)
    rgba = np.zeros((*edges.shape, 4))
    rgba[edges] = (1.0, 1.0, 0.0, 0.8)
    axes[3].imshow(rgba, origin="lower", interpolation="nearest")
    fig.tight_layout()
    return fig


__all__ = [
    "ORGAN_COLORS",
    "set_style",
    "window",
    "organ_color",
    "show_overlay",
    "dataset_overview",
    "intensity_samples",
    "middle_slice",
    "example_slices",
    "best_superpixel_dice",
    "superpixel_fit",
    "superpixel_counts",
    "superpixel_panel",
]
