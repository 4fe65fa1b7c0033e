"""What a dataset holds: the slices of each organ per scan, organs no scan contains, one summary row per scan."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..facts import ORGANS  # study facts: the benchmark organs
from .body import body_report, body_threshold_for, body_warning
from .scans import scan_ids
from .spec import DatasetSpec
from .volumes import Volume, load_volume


def organ_slices(volume: Volume, organ: str, spec: DatasetSpec, warn: bool = True) -> np.ndarray:
    """Sorted z (int64) of the axial slices of ``volume`` that contain ``organ``.

    An organ absent from the scan gives an empty array and a warning naming the file.
    """
    lid = spec.label_id(organ)
    zs = volume.slices_with_label(lid)
    if zs.size == 0 and warn:
        warnings.warn(
            f"{volume.label_path}: organ {organ!r} (label {lid}) is absent from scan {volume.scan_id}; "
            f"it is skipped for this scan",
            stacklevel=2,
        )
    return zs


def organs_in_no_scan(spec: DatasetSpec, ids: Iterable[str] | None = None) -> list[str]:
    """Organs of the label map that no label file of ``ids`` (default: every scan) contains.

    Counted on the label files' own values (:attr:`Volume.file_label_values`), so an organ
    too small to survive the model grid is not reported absent.
    """
    present: set[int] = set()
    for sid in ids if ids is not None else scan_ids(spec):
        present.update(load_volume(spec, sid).file_label_values)
    return [organ for organ, lid in spec.labels.items() if int(lid) not in present]


def organ_index(
    spec: DatasetSpec, ids: Iterable[str] | None = None, organs: Iterable[str] | None = None
) -> dict[str, dict[str, list[int]]]:
    """Per-organ index: ``{organ: {scan_id: [z, ...]}}`` of slices that contain the organ.

    ``ids`` defaults to every scan, ``organs`` to the benchmark organs the dataset labels.
    An organ absent from a scan maps to an empty list (with a warning).
    """
    ids = list(ids) if ids is not None else scan_ids(spec)
    organs = list(organs) if organs is not None else [o for o in ORGANS if o in spec.labels]
    out: dict[str, dict[str, list[int]]] = {o: {} for o in organs}
    for sid in ids:
        vol = load_volume(spec, sid)
        for organ in organs:
            out[organ][str(sid)] = organ_slices(vol, organ, spec).tolist()
    return out


def summarize(spec: DatasetSpec, ids: Iterable[str] | None = None, body: bool = True) -> list[dict[str, Any]]:
    """One row per scan: shape, slices, spacing, intensity range, body-mask shares, voxels per organ.

    ``body``: add ``body_%`` (share of the model grid in the body mask) and
    ``organs_in_body_%`` (share of the labelled voxels in it), warning when the mask drops
    most of the organs (:func:`body_warning`).
    """
    rows = []
    for sid in ids if ids is not None else scan_ids(spec):
        vol = load_volume(spec, sid)
        counts = np.bincount(vol.label.ravel().astype(np.int64), minlength=max(spec.labels.values()) + 1)
        row: dict[str, Any] = {
            "scan": vol.scan_id,
            "shape": "x".join(str(n) for n in vol.original_shape),
            "slices": vol.n_slices,
            "spacing_mm": "x".join(f"{s:.3g}" for s in vol.geometry.file_zooms),
            "min": float(vol.image.min()),
            "max": float(vol.image.max()),
        }
        if body:
            rep = body_report(vol.image, vol.label, body_threshold_for(spec, vol.image))
            row["body_%"] = round(100 * rep["image_share"], 1)
            row["organs_in_body_%"] = None if rep["organ_share"] is None else round(100 * rep["organ_share"], 1)
            msg = body_warning(rep, vol.image_path)
            if msg:
                warnings.warn(msg, stacklevel=2)
        for organ, lid in spec.labels.items():
            row[organ] = int(counts[lid])
        rows.append(row)
    return rows
