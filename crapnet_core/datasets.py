"""Abdominal few-shot segmentation datasets: folders of ``image_<id>.nii.gz`` / ``label_<id>.nii.gz``.

A dataset is described by a :class:`DatasetSpec` (folder, organ label map, modality, body
threshold for the superpixel body mask). Presets:

- ``chaos`` -> ``$CRAPNET_DATA_ROOT/CHAOST2``: CHAOS T2-SPIR MRI (liver 1, right kidney 2,
  left kidney 3, spleen 4);
- ``sabs``  -> ``$CRAPNET_DATA_ROOT/SABS``: Synapse/BTCV CT (spleen 1, right kidney 2,
  left kidney 3, ..., liver 6, ...; the 13 BTCV organs);
- ``phantom`` -> the synthetic stand-in generated once into crapnet's cache
  (:mod:`crapnet_core.phantom`); ``DatasetSpec.is_phantom`` is True for it;
- any other folder in the same layout, with a label-map file (JSON or YAML)::

      {"modality": "MR", "labels": {"liver": 1, "spleen": 2}, "body_threshold": 50}

  passed with ``labels=`` or found as ``labels.json`` / ``labels.yaml`` in the folder.

Array convention (read this before indexing)
---------------------------------------------
Every volume is brought to ONE canonical orientation and one in-plane grid for the model
by :mod:`crapnet_core.geometry` (the single documented place of the rule): nibabel's
orientation tools reorient the file's array to axis codes ``("A", "L", "S")`` -- rows run
posterior -> anterior, columns patient right -> left, slices inferior -> superior -- so an
axial slice is ``image[:, :, z]`` of shape ``(256, 256)`` and is exactly the slice
SSL-ALPNet's SimpleITK loader feeds its encoder for the CHAOS files (see the geometry
module for SABS). The in-plane grid is 256 x 256: 256 x 256 files are kept, the SABS
preset's 257 x 257 copy is cropped as SSL-ALPNet crops it (``img[:256, :256]`` on the
distributed files), any other size is resampled (never centre-cropped, never refused).
:attr:`Volume.geometry` records the mapping; predictions are mapped back to the file's own
grid, axis order and affine (:func:`restore_shape`, :meth:`Geometry.prob_to_canonical`)
and metrics are computed there.

Normalisation (SSL-ALPNet): MR per volume (z-score), CT with the mean and standard
deviation over the voxels of the fold's training scans (:func:`normalization_stats`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .geometry import MODEL_SIZE, Geometry, GeometryError, make_geometry

log = logging.getLogger(__name__)

#: Organs of the few-shot benchmark, in the column order of the paper's tables.
ORGANS = ("left_kidney", "right_kidney", "spleen", "liver")

#: In-plane size of every slice (paper Sec. 4.3: images are scaled to 3 x 256 x 256).
SLICE_SIZE = MODEL_SIZE

CHAOS_LABELS: dict[str, int] = {"liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
SABS_LABELS: dict[str, int] = {
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_splenic_vein": 10,
    "pancreas": 11,
    "right_adrenal_gland": 12,
    "left_adrenal_gland": 13,
}

#: Body-mask thresholds of SSL-ALPNet's pseudo-label generation (on un-normalised intensities).
BODY_THRESHOLD = {"MR": 50.0, "CT": 1e-4}

#: name -> (sub-folder of the data root, labels, modality)
PRESETS: dict[str, tuple[str, dict[str, int], str]] = {
    "chaos": ("CHAOST2", CHAOS_LABELS, "MR"),
    "sabs": ("SABS", SABS_LABELS, "CT"),
}

LABEL_FILE_NAMES = ("labels.json", "labels.yaml", "labels.yml")

_ID_RE = re.compile(r"^(image|label)_(.+)\.nii\.gz$")


class DatasetError(ValueError):
    """A problem with a dataset's files; the message names the file and the problem."""


@dataclass(frozen=True)
class DatasetSpec:
    """What crapnet needs to know about a dataset folder.

    ``labels`` maps organ names (lower_snake, e.g. ``"left_kidney"``) to the integer ids
    used in the label volumes; ``body_threshold`` is the intensity above which a voxel
    belongs to the body (superpixel body mask, on un-normalised intensities).
    """

    name: str
    root: Path
    labels: dict[str, int]
    modality: str
    body_threshold: float
    is_phantom: bool = False
    preset: str | None = None  # "chaos"/"sabs" when a preset's rules apply (in-plane crop of SABS)

    def __hash__(self) -> int:  # dict field: hash a canonical tuple instead
        return hash(self.key)

    @property
    def key(self) -> tuple:
        """A hashable identity of the spec (used for in-process caches)."""
        return (
            self.name,
            str(self.root),
            tuple(sorted(self.labels.items())),
            self.modality,
            float(self.body_threshold),
            self.is_phantom,
            self.preset,
        )

    def label_id(self, organ: str) -> int:
        """The integer id of ``organ``; a clear error when the dataset does not label it."""
        try:
            return int(self.labels[organ])
        except KeyError:
            raise DatasetError(
                f"organ {organ!r} is not labelled in dataset {self.name!r} ({self.root}); "
                f"known organs: {', '.join(sorted(self.labels))}"
            ) from None


# --------------------------------------------------------------------------- resolving


def _parse_label_map(obj: Any, source: str) -> tuple[dict[str, int], str, float | None, dict]:
    if not isinstance(obj, dict):
        raise DatasetError(f"{source}: expected a mapping with 'modality' and 'labels'")
    modality = str(obj.get("modality", "")).upper()
    if modality not in ("MR", "CT"):
        raise DatasetError(f"{source}: 'modality' must be MR or CT, got {obj.get('modality')!r}")
    raw = obj.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{source}: 'labels' must be a non-empty mapping organ name -> integer id")
    labels: dict[str, int] = {}
    for organ, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value <= 0:
            raise DatasetError(f"{source}: label id of {organ!r} must be a positive integer, got {value!r}")
        labels[str(organ)] = int(value)
    if len(set(labels.values())) != len(labels):
        raise DatasetError(f"{source}: two organs share one label id: {labels}")
    threshold = obj.get("body_threshold")
    if threshold is not None:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: 'body_threshold' must be a number, got {threshold!r}") from None
    return labels, modality, threshold, obj


def read_label_map(path: str | os.PathLike) -> tuple[dict[str, int], str, float | None, dict]:
    """Read a label-map file (JSON or YAML): ``(labels, modality, body_threshold|None, raw)``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: label-map file not found")
    try:
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            obj = yaml.safe_load(text)
        else:
            obj = json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parse error becomes one clear message
        raise DatasetError(f"{path}: cannot parse label-map file ({err})") from None
    return _parse_label_map(obj, str(path))


def resolve_dataset(
    name_or_path: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
) -> DatasetSpec:
    """Turn a dataset name or folder into a :class:`DatasetSpec`.

    ``"chaos"`` / ``"sabs"`` -> the presets under the data root (``data_root`` or
    ``$CRAPNET_DATA_ROOT``); ``"phantom"`` -> the synthetic phantom (generated into the
    cache on first use); anything else is a folder. For a folder, ``labels`` is a label-map
    file (JSON/YAML) or a preset name (``"chaos"``/``"sabs"``) whose labels and modality
    apply; without it the folder must hold ``labels.json``/``labels.yaml``.
    """
    from .paths import DataRootNotSet, data_root as _data_root

    key = str(name_or_path)
    if key.lower() in PRESETS and labels is None and not Path(key).is_dir():
        sub, lab, modality = PRESETS[key.lower()]
        try:
            root = _data_root(data_root) / sub
        except DataRootNotSet as err:
            raise DatasetError(str(err)) from None
        if not root.is_dir():
            raise DatasetError(f"{root}: preset dataset {key!r} not found (is the data root right?)")
        return DatasetSpec(key.lower(), root, dict(lab), modality, BODY_THRESHOLD[modality], preset=key.lower())
    if key.lower() == "phantom" and not Path(key).is_dir():
        from .phantom import phantom_root

        return resolve_dataset(phantom_root())

    root = Path(key).expanduser()
    if not root.exists():
        raise DatasetError(
            f"{root}: dataset folder not found (use a folder, or one of chaos, sabs, phantom)"
        )
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    root = root.resolve()
    raw: dict = {}
    threshold = None
    preset = None
    if labels is not None and str(labels).lower() in PRESETS and not Path(str(labels)).is_file():
        _, lab, modality = PRESETS[str(labels).lower()]
        lab = dict(lab)
        name = root.name
        preset = str(labels).lower()
    else:
        label_file = Path(labels) if labels is not None else None
        if label_file is None:
            for cand in LABEL_FILE_NAMES:
                if (root / cand).is_file():
                    label_file = root / cand
                    break
        if label_file is None:
            raise DatasetError(
                f"{root}: no label map: pass a labels file (JSON/YAML with 'modality' and 'labels') "
                f"or a preset (chaos, sabs), or put labels.json in the folder"
            )
        lab, modality, threshold, raw = read_label_map(label_file)
        name = str(raw.get("name") or root.name)
    is_phantom = bool(raw.get("synthetic", False))
    if threshold is None:
        threshold = BODY_THRESHOLD[modality]
    return DatasetSpec(name, root, lab, modality, float(threshold), is_phantom=is_phantom, preset=preset)


# --------------------------------------------------------------------------- files


def _id_sort_key(scan_id: str) -> tuple:
    return (0, int(scan_id), "") if scan_id.isdigit() else (1, 0, scan_id)


def image_path(spec: DatasetSpec, scan_id: str) -> Path:
    return Path(spec.root) / f"image_{scan_id}.nii.gz"


def label_path(spec: DatasetSpec, scan_id: str) -> Path:
    return Path(spec.root) / f"label_{scan_id}.nii.gz"


def scan_ids(spec: DatasetSpec) -> list[str]:
    """Ids of the scans in ``spec.root``, sorted as integers (non-numeric ids last, by name).

    Every ``image_<id>.nii.gz`` must have its ``label_<id>.nii.gz`` and vice versa.
    """
    root = Path(spec.root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    images, labels = set(), set()
    for entry in root.iterdir():
        m = _ID_RE.match(entry.name)
        if m:
            (images if m.group(1) == "image" else labels).add(m.group(2))
    if not images and not labels:
        raise DatasetError(f"{root}: no image_<id>.nii.gz / label_<id>.nii.gz files (empty dataset folder)")
    missing_label = sorted(images - labels, key=_id_sort_key)
    if missing_label:
        raise DatasetError(
            f"{root / f'image_{missing_label[0]}.nii.gz'}: missing pair: no label_{missing_label[0]}.nii.gz"
            + (f" (also {len(missing_label) - 1} more)" if len(missing_label) > 1 else "")
        )
    missing_image = sorted(labels - images, key=_id_sort_key)
    if missing_image:
        raise DatasetError(
            f"{root / f'label_{missing_image[0]}.nii.gz'}: missing pair: no image_{missing_image[0]}.nii.gz"
            + (f" (also {len(missing_image) - 1} more)" if len(missing_image) > 1 else "")
        )
    return sorted(images, key=_id_sort_key)


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file fully: ``(array, affine, zooms)``; unreadable/truncated -> DatasetError."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        array = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as err:  # noqa: BLE001 - gzip/zlib/EOF/ImageFileError: all "unreadable"
        raise DatasetError(f"{path}: unreadable or truncated NIfTI file ({type(err).__name__}: {err})") from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D volume, got shape {array.shape}")
    return array, affine, zooms


# --------------------------------------------------------------------------- volumes


@dataclass
class Volume:
    """One scan on the model grid: canonical orientation, 256 x 256 in-plane (see the module doc).

    - ``image``: float32 ``(256, 256, Z)`` raw (un-normalised) intensities; axial slice ``z``
      is ``image[:, :, z]`` (rows posterior -> anterior, columns right -> left);
    - ``label``: int16 ``(256, 256, Z)`` integer organ ids (0 background);
    - ``affine``: the FILE's 4 x 4 voxel-to-world matrix (predictions are saved with it, on
      the file's grid, via :func:`restore_shape`); ``spacing``: mm per voxel of the model grid;
    - ``original_shape``: the file's array shape; ``geometry``: the full mapping
      (:class:`~crapnet_core.geometry.Geometry`).
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

    def file_label(self) -> np.ndarray:
        """The label volume at the file's own resolution, in canonical orientation (``geometry.canon_shape``).

        Read from the file again (not cached): evaluation scores on this grid.
        """
        lab, _, _ = read_nifti(self.label_path)
        return np.ascontiguousarray(self.geometry.to_canonical(lab)).astype(np.int16)


_AFFINE_ATOL = 1e-3  # mm: header round-off tolerance when comparing image/label affines


def _validate_pair(
    spec: DatasetSpec, scan_id: str, img: np.ndarray, img_aff: np.ndarray, lab: np.ndarray, lab_aff: np.ndarray
) -> None:
    ip, lp = image_path(spec, scan_id), label_path(spec, scan_id)
    if img.shape != lab.shape:
        raise DatasetError(f"{lp}: shape {lab.shape} does not match the image {ip.name} shape {img.shape}")
    if not np.allclose(img_aff, lab_aff, atol=_AFFINE_ATOL):
        raise DatasetError(
            f"{lp}: affine does not match the image {ip.name} "
            f"(max difference {np.abs(img_aff - lab_aff).max():.4g} mm)"
        )
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise DatasetError(f"{ip}: image data type {img.dtype} is not a real number type")
    if np.issubdtype(img.dtype, np.floating):
        n_bad = int(np.count_nonzero(~np.isfinite(img)))
        if n_bad:
            raise DatasetError(f"{ip}: {n_bad} NaN/infinite voxel(s) in the image")
    if np.issubdtype(lab.dtype, np.floating):
        finite = np.isfinite(lab)
        if not finite.all():
            raise DatasetError(f"{lp}: {int((~finite).sum())} NaN/infinite voxel(s) in the label volume")
        frac = lab != np.round(lab)
        if frac.any():
            bad = np.unique(lab[frac])[:5]
            raise DatasetError(
                f"{lp}: label volume holds non-integer values ({', '.join(f'{v:g}' for v in bad)}); "
                f"labels must be integer organ ids"
            )
    elif not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
        raise DatasetError(f"{lp}: label data type {lab.dtype} is not numeric")
    known = {0, *spec.labels.values()}
    lab_min, lab_max = lab.min(), lab.max()
    if lab_min >= 0 and lab_max <= 4096:  # bincount: much faster than np.unique on 10^7 voxels
        counts = np.bincount(lab.ravel().astype(np.int64, copy=False), minlength=1)
        values = np.flatnonzero(counts)
    else:
        values = np.unique(lab)
    unknown = [v for v in values.tolist() if int(v) not in known]
    if unknown:
        raise DatasetError(
            f"{lp}: unknown label value(s) {', '.join(str(int(v)) for v in unknown[:8])}; "
            f"the label map of {spec.name!r} knows {sorted(known)}"
        )


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


def clear_cache() -> None:
    """Forget every volume loaded in this process."""
    _VOLUMES.clear()
    _STATS.clear()


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found (missing pair?)") from None
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
        raise DatasetError(f"{ip}: image file not found" + (" (missing pair)" if lp.is_file() else ""))
    if not lp.is_file():
        raise DatasetError(f"{lp}: label file not found (missing pair for {ip.name})")
    key = (spec.key, scan_id, _file_stamp(ip), _file_stamp(lp))
    vol = _VOLUMES.get(key)
    if vol is not None:
        return vol
    img, img_aff, zooms = read_nifti(ip)
    lab, lab_aff, _ = read_nifti(lp)
    _validate_pair(spec, scan_id, img, img_aff, lab, lab_aff)
    vol = make_volume(scan_id, img, img_aff, zooms, lab, ip, lp, preset=spec.preset)
    _VOLUMES.put(key, vol)
    return vol


def make_volume(
    scan_id: str, img: np.ndarray, affine: np.ndarray, zooms, lab: np.ndarray | None,
    image_file: Path, label_file: Path | None, preset: str | None = None,
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


# --------------------------------------------------------------------------- normalisation

_STATS: dict[tuple, tuple[float, float]] = {}


def normalization_stats(spec: DatasetSpec, train_ids: Iterable[str]) -> tuple[float, float] | None:
    """CT: ``(mean, std)`` over every voxel of the training scans (256-grid); MR: ``None``.

    As SSL-ALPNet (which uses the statistics of the fold's training scans for CT and a
    per-volume z-score for MR). Computed in float64; memoised per (dataset, ids).
    """
    if spec.modality != "CT":
        return None
    ids = tuple(str(i) for i in train_ids)
    if not ids:
        raise ValueError("normalization_stats: train_ids is empty")
    key = (spec.key, ids)
    if key in _STATS:
        return _STATS[key]
    total = 0.0
    total_sq = 0.0
    count = 0
    for sid in ids:
        img = load_volume(spec, sid).image.astype(np.float64)
        total += float(img.sum())
        total_sq += float(np.square(img).sum())
        count += img.size
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    std = float(np.sqrt(var))
    if std == 0:
        raise DatasetError(f"{spec.root}: training scans {ids} have constant intensity; cannot normalise")
    _STATS[key] = (float(mean), std)
    return _STATS[key]


def normalization_params(volume: Volume, spec: DatasetSpec, stats: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(mean, std)`` that :func:`normalize` uses for ``volume``: its own (MR) or ``stats`` (CT)."""
    if spec.modality == "MR":
        x = volume.image
        mean = float(x.mean(dtype=np.float64))
        std = float(x.std(dtype=np.float64))
        if std == 0:
            raise DatasetError(f"{volume.image_path}: constant image; cannot z-score normalise")
        return mean, std
    if stats is None:
        raise ValueError(f"normalize: CT dataset {spec.name!r} needs stats=normalization_stats(spec, train_ids)")
    return float(stats[0]), float(stats[1])


def apply_normalization(x: np.ndarray, params: tuple[float, float]) -> np.ndarray:
    """``(x - mean) / std`` in float32 (a whole volume or one slice: the same values either way)."""
    mean, std = params
    return ((np.asarray(x, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32, copy=False)


def normalize(volume: Volume, spec: DatasetSpec, stats: tuple[float, float] | None = None) -> np.ndarray:
    """Normalised float32 ``(256, 256, Z)`` image: MR z-score per volume, CT ``(x - mean) / std``."""
    return apply_normalization(volume.image, normalization_params(volume, spec, stats))


# --------------------------------------------------------------------------- organs


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


# --------------------------------------------------------------------------- tensors


def slice_tensor(norm_volume: np.ndarray, z: int, size: int = SLICE_SIZE):
    """Slice ``z`` of a normalised ``(256, 256, Z)`` volume as torch float32 ``(3, size, size)``.

    The grey slice is repeated on 3 channels for RGB encoders (paper Sec. 4.3); resized
    bilinearly (``align_corners=False``) when ``size != 256``.
    """
    import torch
    import torch.nn.functional as F

    sl = np.asarray(norm_volume[:, :, z] if np.ndim(norm_volume) == 3 else norm_volume, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(sl))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t[0].expand(3, size, size).contiguous()


def mask_tensor(mask: np.ndarray, z: int | None = None, size: int = SLICE_SIZE):
    """A binary/int mask (a ``(256, 256, Z)`` volume with ``z``, or a 2D slice) as int64 ``(size, size)``.

    Resized with nearest neighbour when ``size != 256``.
    """
    import torch
    import torch.nn.functional as F

    m = np.asarray(mask)
    if m.ndim == 3:
        if z is None:
            raise ValueError("mask_tensor: z is required for a 3D mask")
        m = m[:, :, z]
    t = torch.from_numpy(np.ascontiguousarray(m.astype(np.int64)))
    if t.shape != (size, size):
        t = F.interpolate(t[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return t


# --------------------------------------------------------------------------- summary


def summarize(spec: DatasetSpec, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per scan: shape, slices, spacing, intensity range and voxels per labelled organ."""
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
        for organ, lid in spec.labels.items():
            row[organ] = int(counts[lid])
        rows.append(row)
    return rows
