"""Segmentation metrics: Dice from summed counts, HD95 and ASD in millimetres.

Dice (Sec. 4.2 of the paper, in 0..100 there; 0..1 here, the tables multiply by 100) is
computed per scan and organ from true/false positives and negatives *summed over the scored
slices of the scan*, as SSL-ALPNet's evaluation does: ``2 TP / (2 TP + FP + FN)``.

The surface distances (95% Hausdorff distance and average symmetric surface distance, not
in the paper) come from MONAI's maintained implementation
(``monai.metrics.compute_hausdorff_distance`` / ``compute_average_surface_distance``), in
millimetres through the volume's voxel spacing.

Empty masks. A surface distance needs a surface on both sides. When the prediction is
empty and the ground truth is not (or the other way round), HD95 and ASD are undefined:
this module returns ``nan`` for them (MONAI would give ``inf`` or ``nan`` with a warning),
the evaluation records them as ``null`` in ``metrics.json``, leaves them out of the means
and reports how many scans were left out (``n_empty_pred``) next to each mean, so the
exclusion is visible. Dice is defined in that case (0), so it is never left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    """Pixel counts of a binary segmentation against the ground truth."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def dice(self) -> float:
        return dice_from_counts(self.tp, self.fp, self.fn)


def confusion_counts(pred: np.ndarray, target: np.ndarray) -> Counts:
    """TP, FP, FN of binary arrays ``pred`` and ``target`` of the same shape (any dims)."""
    pred = np.asarray(pred).astype(bool)
    target = np.asarray(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {target.shape}")
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    return Counts(tp, fp, fn)


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """Dice = 2TP / (2TP + FP + FN); 1.0 when both masks are empty (nothing to find, nothing found)."""
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two binary arrays (counts summed over every element)."""
    return confusion_counts(pred, target).dice


def _as_batch(mask: np.ndarray):
    import torch

    arr = np.asarray(mask).astype(bool)
    return torch.from_numpy(np.ascontiguousarray(arr))[None, None].float()  # (1, 1, *spatial)


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """HD95 and ASD (mm when ``spacing`` is given, else voxels) of binary arrays (2D or 3D).

    Returns ``{"hd95": ..., "asd": ...}``; both ``nan`` when either mask is empty (see the
    module docstring for how the evaluation treats that). ASD is the symmetric average
    surface distance (mean of the two directed averages, MONAI ``symmetric=True``).
    """
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    pred = np.asarray(pred).astype(bool)
    target = np.asarray(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {target.shape}")
    if not pred.any() or not target.any():
        return {"hd95": math.nan, "asd": math.nan}
    sp = None if spacing is None else [float(s) for s in spacing][: pred.ndim]
    y_pred, y = _as_batch(pred), _as_batch(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=sp)
        asd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=sp)
    return {"hd95": float(hd95.reshape(-1)[0]), "asd": float(asd.reshape(-1)[0])}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary array (any dims), as bool; empty stays empty.

    Connectivity: full (26-neighbourhood in 3-D), scipy.ndimage's ``label`` with the
    ``generate_binary_structure(ndim, ndim)`` structure (skimage.measure.label's default).
    Beyond the paper: the post-processing behind the ``dice_lcc`` row of the evaluation.
    Ties between equally large components go to the one scipy labels first.
    """
    from scipy import ndimage

    arr = np.asarray(mask).astype(bool)
    if not arr.any():
        return arr.copy()
    labels, n = ndimage.label(arr, structure=ndimage.generate_binary_structure(arr.ndim, arr.ndim))
    if n == 1:
        return arr.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def nanmean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (None when there is none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def nanstd(values: Sequence[float | None]) -> float | None:
    """Population standard deviation of the finite values (None when there is none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.std(finite)) if finite else None


def json_number(value: float | None, digits: int = 6) -> float | None:
    """A float for JSON: rounded, ``None`` for nan/inf (JSON has no nan)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


__all__ = [
    "Counts",
    "confusion_counts",
    "dice_from_counts",
    "dice",
    "surface_distances",
    "largest_component",
    "nanmean",
    "nanstd",
    "json_number",
]
