"""One scan on the model grid (:class:`Volume`): loading, validating, caching, mapping back.

:func:`load_volume` reads a pair (:mod:`~crapnet_core.data.scans`), validates it
(:mod:`~crapnet_core.data.validation`) and brings it to the canonical orientation and the
256 x 256 in-plane grid (:mod:`~crapnet_core.data.geometry`); the result is kept in an
in-process LRU bounded in bytes (``CRAPNET_VOLUME_CACHE_GB``, default 4) while the files are
unchanged. :func:`restore_shape` maps a model-grid prediction back to the file's grid.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import why_missing
from .errors import DatasetError
from .geometry import Geometry, GeometryError, make_geometry
from .labels import pair_label
from .scans import image_path, label_path, read_nifti
from .spec import DatasetSpec
from .validation import validate_pair


@dataclass
class Volume:
    """One scan on the model grid: canonical orientation, 256 x 256 in-plane (array convention: :mod:`crapnet_core.data.datasets`).

    - ``image``: float32 ``(256, 256, Z)`` raw (un-normalised) intensities; axial slice ``z``
      is ``image[:, :, z]`` (rows posterior -> anterior, columns right -> left);
    - ``label``: int16 ``(256, 256, Z)`` integer organ ids (0 background);
    - ``affine``: the FILE's 4 x 4 voxel-to-world matrix (predictions are saved with it, on
      the file's grid, via :func:`restore_shape`); ``spacing``: mm per voxel of the model grid;
    - ``original_shape``: the file's array shape; ``geometry``: the full mapping
      (:class:`~crapnet_core.data.geometry.Geometry`).
    """

    scan_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    image_path: Path
    label_path: Path
    original_shape: tuple[int, int, int]
    geometry: Geometry
    file_label_values: tuple[int, ...] = ()  # label ids present in the label FILE (before any resampling)
    _organ_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[2])

    def slices_with_label(self, label_id: int) -> np.ndarray:
        """Sorted z (int64) whose slice holds at least one voxel of ``label_id`` (memoised)."""
        if label_id not in self._organ_cache:
            present = (self.label == label_id).any(axis=(0, 1))
            self._organ_cache[label_id] = np.flatnonzero(present).astype(np.int64)
        return self._organ_cache[label_id]

    def label_on_image_axes(self) -> np.ndarray:
        """The label file's volume on the IMAGE file's array (its axis order; the pair rule applied).

        Read from the file again (not cached).
        """
        lab, lab_aff, _ = read_nifti(self.label_path)
        return pair_label(
            self.geometry.file_shape, self.geometry.file_affine, lab, lab_aff, self.image_path, self.label_path
        )

    def file_label(self) -> np.ndarray:
        """The label volume at the file's own resolution, in canonical orientation (``geometry.canon_shape``).

        Read from the file again (not cached): evaluation scores on this grid.
        """
        return np.ascontiguousarray(self.geometry.to_canonical(self.label_on_image_axes())).astype(np.int16)


class _VolumeCache:
    """In-process LRU of loaded volumes, bounded in bytes (``CRAPNET_VOLUME_CACHE_GB``, default 4)."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, Volume] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        return int(float(os.environ.get("CRAPNET_VOLUME_CACHE_GB", "4")) * 2**30)

    def get(self, key: tuple) -> Volume | None:
        with self._lock:
            vol = self._items.get(key)
            if vol is not None:
                self._items.move_to_end(key)
            return vol

    def put(self, key: tuple, vol: Volume) -> None:
        with self._lock:
            self._items[key] = vol
            self._items.move_to_end(key)
            total = sum(v.image.nbytes + v.label.nbytes for v in self._items.values())
            while total > self.budget and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                total -= old.image.nbytes + old.label.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_VOLUMES = _VolumeCache()


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        raise DatasetError(f"{path}: {why_missing(path)}") from None
    return (st.st_mtime_ns, st.st_size)


def load_volume(spec: DatasetSpec, scan_id: str | int) -> Volume:
    """Load, validate and bring one scan to the model grid; cached in-process (a file loads once while unchanged).

    Raises :class:`DatasetError` naming the file for: a missing pair, an unreadable or
    truncated file, image/label shape or affine mismatch, NaN voxels, non-integer or
    unknown label values, an affine that gives no orientation.
    """
    scan_id = str(scan_id)
    ip, lp = image_path(spec, scan_id), label_path(spec, scan_id)
    if not ip.is_file():
        why = why_missing(ip, "image file")
        raise DatasetError(f"{ip}: {why}" + (" (missing pair)" if lp.is_file() and why.endswith("not found") else ""))
    if not lp.is_file():
        why = why_missing(lp, "label file")
        raise DatasetError(f"{lp}: {why}" + (f" (missing pair for {ip.name})" if why.endswith("not found") else ""))
    key = (spec.key, scan_id, _file_stamp(ip), _file_stamp(lp))
    vol = _VOLUMES.get(key)
    if vol is not None:
        return vol
    img, img_aff, zooms = read_nifti(ip)
    lab, lab_aff, _ = read_nifti(lp)
    lab, present = validate_pair(spec, scan_id, img, img_aff, lab, lab_aff)
    vol = make_volume(scan_id, img, img_aff, zooms, lab, ip, lp, preset=spec.preset)
    vol.file_label_values = tuple(present)
    _VOLUMES.put(key, vol)
    return vol


def make_volume(
    scan_id: str,
    img: np.ndarray,
    affine: np.ndarray,
    zooms,
    lab: np.ndarray | None,
    image_file: Path,
    label_file: Path | None,
    preset: str | None = None,
) -> Volume:
    """A :class:`Volume` from file arrays (file axis order): reorient + in-plane grid (geometry module).

    ``lab`` None gives an all-zero label (a query scan without annotation).
    """
    try:
        geom = make_geometry(img.shape, affine, zooms, preset=preset, source=str(image_file))
    except GeometryError as err:
        raise DatasetError(str(err)) from None
    image = geom.image_to_model(img)
    if lab is None:
        label = np.zeros(geom.model_shape, dtype=np.int16)
    else:
        label = geom.label_to_model(lab).astype(np.int16)
    return Volume(
        scan_id=str(scan_id),
        image=image,
        label=label,
        affine=np.asarray(affine, dtype=np.float64),
        spacing=geom.model_spacing,
        image_path=Path(image_file),
        label_path=Path(label_file) if label_file is not None else Path(""),
        original_shape=tuple(int(n) for n in img.shape),
        geometry=geom,
    )


def restore_shape(pred: np.ndarray, volume: Volume, fill: Any = 0) -> np.ndarray:
    """Map a label-like model-grid array ``(256, 256, Z)`` back to the FILE's grid and axis order.

    Undoes the in-plane step (crop: ``fill`` outside; resample: nearest neighbour) and the
    reorientation; the result has ``volume.original_shape`` and pairs with
    ``volume.affine`` for saving as NIfTI.
    """
    pred = np.asarray(pred)
    if pred.shape != volume.geometry.model_shape:
        raise ValueError(
            f"restore_shape: pred has shape {pred.shape}, expected {volume.geometry.model_shape} for scan {volume.scan_id}"
        )
    return volume.geometry.from_canonical(volume.geometry.model_label_to_canonical(pred, fill))
