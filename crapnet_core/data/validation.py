"""Checks of one scan's arrays: finite voxels, and an image/label pair (grid, data type, label values).

Each failure is one :class:`~crapnet_core.data.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .labels import check_label_values, pair_label
from .scans import image_path, label_path
from .spec import DatasetSpec


def check_finite(
    array: np.ndarray, path: Path | str, what: str = "image", replace: bool = False, hint: str = ""
) -> np.ndarray:
    """Refuse NaN/infinite voxels with one clear error naming the file and the count.

    ``replace=True`` (the explicit option, e.g. ``segment --replace-nonfinite``) returns a
    copy where they are set to the lowest finite value of the volume (background), with a
    warning saying how many were replaced. Integer arrays are returned as they are.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return array
    bad = ~np.isfinite(array)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return array
    if not replace:
        raise DatasetError(f"{path}: {n_bad} NaN/infinite voxel(s) in the {what}" + (f"; {hint}" if hint else ""))
    if n_bad == array.size:
        raise DatasetError(f"{path}: every voxel of the {what} is NaN/infinite")
    fill = float(np.min(array[~bad]))
    warnings.warn(
        f"{path}: replaced {n_bad} NaN/infinite voxel(s) of the {what} with {fill:g} (its lowest value)", stacklevel=2
    )
    out = array.copy()
    out[bad] = fill
    return out


def validate_pair(
    spec: DatasetSpec, scan_id: str, img: np.ndarray, img_aff: np.ndarray, lab: np.ndarray, lab_aff: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """Check an image/label pair; returns the label on the image's array (the pair rule) and its ids.

    The label may differ from the image in axis order and flips on the same world grid
    (reoriented, no resampling); its values go through the one label check
    (:func:`crapnet_core.data.labels.check_label_values`).
    """
    ip, lp = image_path(spec, scan_id), label_path(spec, scan_id)
    lab = pair_label(img.shape, img_aff, lab, lab_aff, ip, lp)
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise DatasetError(f"{ip}: image data type {img.dtype} is not a real number type")
    check_finite(img, ip, "image")
    present = check_label_values(lab, lp, known=spec.labels.values(), map_name=spec.name)
    return lab, present
