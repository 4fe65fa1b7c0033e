"""Slice browser for the notebooks: a scan with its labels, superpixels and predictions.

In JupyterLab (``interactive=True``) :func:`slice_browser` returns an ipywidgets box: a
slider over the axial slices and one checkbox per layer; moving the slider redraws one
matplotlib figure (one panel per layer) in an ``Output`` widget. In a batch/book run
(``interactive=False``, set by ``crapnet book``) widgets would leave an empty box in the
HTML, so the same function returns a static figure of a few slices instead (rows = slices,
columns = the same panels).

Layout convention: crapnet's arrays, axial slice ``z`` = ``array[:, :, z]`` (see
:class:`crapnet_core.data.datasets.Volume`), drawn like :func:`crapnet_core.report.figures.show_overlay`
(transposed, ``origin="lower"``).

ipywidgets' ``interact`` would do the slider, but not the static fallback nor a shared
figure redrawn in place; the few lines of widget wiring below give both.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Layer kinds: integer organ labels, superpixel ids (random colours + boundaries), binary masks.
KINDS = ("labels", "superpixels", "mask")


@dataclass
class Layer:
    """One overlay of the browser.

    ``array``: ``(H, W, Z)`` like the image; ``kind``: one of :data:`KINDS`; ``labels``:
    organ -> id for ``kind="labels"``; ``organ``: the organ of a ``mask`` (its colour);
    ``reference``: optional ``(H, W, Z)`` boolean ground truth drawn as a yellow contour
    on a ``mask`` panel (with the slice's Dice in the title).
    """

    name: str
    array: np.ndarray
    kind: str = "mask"
    labels: Mapping[str, int] | None = None
    organ: str | None = None
    reference: np.ndarray | None = None


def _check(image: np.ndarray, layers: Sequence[Layer]) -> None:
    if image.ndim != 3:
        raise ValueError(f"slice_browser: image must be (H, W, Z), got shape {image.shape}")
    for layer in layers:
        if layer.kind not in KINDS:
            raise ValueError(f"slice_browser: layer {layer.name!r} has kind {layer.kind!r}, not one of {KINDS}")
        if layer.array.shape != image.shape:
            raise ValueError(
                f"slice_browser: layer {layer.name!r} has shape {layer.array.shape}, the image {image.shape}"
            )
        if layer.reference is not None and layer.reference.shape != image.shape:
            raise ValueError(
                f"slice_browser: reference of {layer.name!r} has shape {layer.reference.shape}, the image {image.shape}"
            )
        if layer.kind == "labels" and not layer.labels:
            raise ValueError(f"slice_browser: layer {layer.name!r} of kind 'labels' needs labels={{organ: id}}")


def interesting_slices(layers: Sequence[Layer], n: int, n_slices: int) -> list[int]:
    """``n`` slices evenly spread over the range where any non-superpixel layer is non-zero.

    Falls back to the whole scan when every layer is empty (or there are only superpixels).
    """
    zs = np.zeros(n_slices, dtype=bool)
    for layer in layers:
        if layer.kind != "superpixels":
            zs |= np.asarray(layer.array != 0).any(axis=(0, 1))
            if layer.reference is not None:
                zs |= np.asarray(layer.reference).any(axis=(0, 1))
    nz = np.flatnonzero(zs)
    lo, hi = (int(nz[0]), int(nz[-1])) if nz.size else (0, n_slices - 1)
    n = max(1, min(n, hi - lo + 1))
    # positions (i + 1) / (n + 1) of the range: never the first/last slice, where organs are tiny
    return sorted({int(round(lo + (hi - lo) * (i + 1) / (n + 1))) for i in range(n)})


def draw_panels(
    axes,
    image: np.ndarray,
    layers: Sequence[Layer],
    z: int,
    vrange: tuple[float, float],
    shown: Sequence[str] | None = None,
) -> None:
    """Draw slice ``z``: the scan alone, then one panel per layer in ``shown`` (default all)."""
    from skimage.segmentation import find_boundaries

    from ..engine.metrics import dice
    from .figures import organ_color, show_overlay

    img = image[:, :, z]
    show_overlay(axes[0], img, title=f"scan, slice {z}", vrange=vrange)
    visible = [ly for ly in layers if shown is None or ly.name in shown]
    for ax, layer in zip(axes[1:], visible):
        a = np.asarray(layer.array[:, :, z])
        if layer.kind == "labels":
            show_overlay(ax, img, a, dict(layer.labels), title=layer.name, vrange=vrange)
        elif layer.kind == "superpixels":
            show_overlay(ax, img, vrange=vrange)
            ids = a.astype(np.int64)
            palette = np.random.default_rng(0).random((int(ids.max()) + 1, 3))
            rgba = np.zeros((*ids.T.shape, 4))
            rgba[..., :3] = palette[ids.T]
            rgba[..., 3] = np.where(ids.T > 0, 0.35, 0.0)
            edges = find_boundaries(ids, mode="inner") & (ids > 0)
            rgba[edges.T] = (1.0, 1.0, 0.0, 0.9)
            ax.imshow(rgba, origin="lower", interpolation="nearest")
            ax.set_title(f"{layer.name}: {len(np.unique(ids[ids > 0]))}", fontsize=9)
        else:
            mask = a > 0
            show_overlay(ax, img, vrange=vrange)
            color = organ_color(layer.organ or "", 0)
            if mask.any():
                rgba = np.zeros((*mask.T.shape, 4))
                rgba[mask.T] = (*color, 0.45)
                ax.imshow(rgba, origin="lower", interpolation="nearest")
            title = layer.name
            if layer.reference is not None:
                ref = np.asarray(layer.reference[:, :, z]) > 0
                if ref.any():
                    ax.contour(ref.T.astype(float), levels=[0.5], colors=["yellow"], linewidths=0.9, origin="lower")
                if ref.any() or mask.any():
                    title += f" (slice Dice {100 * dice(mask, ref):.1f})"
            ax.set_title(title, fontsize=9)
    for ax in axes[1 + len(visible) :]:
        ax.set_axis_off()


def static_figure(
    image: np.ndarray, layers: Sequence[Layer], slices: Sequence[int], size: float = 2.6, title: str | None = None
):
    """Rows = ``slices``, columns = the scan and each layer; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    from .figures import window

    _check(image, layers)
    vrange = window(image)
    ncol = 1 + len(layers)
    fig, axes = plt.subplots(len(slices), ncol, figsize=(size * ncol, size * len(slices)), squeeze=False)
    for row, z in zip(axes, slices):
        draw_panels(row, image, layers, int(z), vrange)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def slice_browser(
    image: np.ndarray,
    layers: Sequence[Layer] = (),
    interactive: bool = True,
    z: int | None = None,
    n_static: int = 3,
    size: float = 2.8,
    title: str | None = None,
):
    """A slice browser over ``image`` ``(H, W, Z)`` and its ``layers`` (:class:`Layer`).

    ``interactive=True``: an ``ipywidgets.VBox`` (slice slider, layer checkboxes, figure),
    starting at slice ``z`` (default: the middle of the labelled range). ``interactive=False``:
    a static figure of ``n_static`` slices spread over the labelled range (batch/book runs).
    Raises ``ValueError`` when a layer's shape differs from the image's.
    """
    image = np.asarray(image)
    layers = list(layers)
    _check(image, layers)
    n = image.shape[2]
    if not interactive:
        return static_figure(image, layers, interesting_slices(layers, n_static, n), size=size, title=title)

    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .figures import window

    vrange = window(image)
    start = interesting_slices(layers, 1, n)[0] if z is None else int(z)
    slider = w.IntSlider(
        value=start,
        min=0,
        max=n - 1,
        step=1,
        description="slice z",
        continuous_update=False,
        layout=w.Layout(width="60%"),
    )
    boxes = [w.Checkbox(value=True, description=ly.name, indent=False, layout=w.Layout(width="auto")) for ly in layers]
    out = w.Output()

    def redraw(_=None) -> None:
        # what the cell printed so far must not end up inside the widget (and be cleared with it)
        sys.stdout.flush()
        sys.stderr.flush()
        shown = [b.description for b in boxes if b.value]
        fig, axes = plt.subplots(1, 1 + len(shown), figsize=(size * (1 + len(shown)), size), squeeze=False)
        draw_panels(axes[0], image, layers, slider.value, vrange, shown)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        out.clear_output(wait=True)
        with out:
            display(fig)
        plt.close(fig)

    slider.observe(redraw, names="value")
    for b in boxes:
        b.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([slider, *boxes]), out])


def show_slice_browser(*args, **kwargs) -> None:
    """Display :func:`slice_browser`'s widget or static figure in the notebook."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    view = slice_browser(*args, **kwargs)
    if hasattr(view, "savefig"):
        plt.show()
    else:
        display(view)


__all__ = [
    "Layer",
    "KINDS",
    "slice_browser",
    "show_slice_browser",
    "static_figure",
    "interesting_slices",
    "draw_panels",
]
