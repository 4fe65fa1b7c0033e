"""Abdominal few-shot segmentation datasets: folders of ``image_<id>.nii.gz`` / ``label_<id>.nii.gz``.

A dataset is described by a :class:`DatasetSpec` (folder, organ label map, modality, body
threshold for the superpixel body mask). Presets:

- ``chaos`` -> ``$CRAPNET_DATA_ROOT/CHAOST2``: CHAOS T2-SPIR MRI (liver 1, right kidney 2,
  left kidney 3, spleen 4);
- ``sabs``  -> ``$CRAPNET_DATA_ROOT/SABS``: Synapse/BTCV CT (spleen 1, right kidney 2,
  left kidney 3, ..., liver 6, ...; the 13 BTCV organs);
- ``phantom`` -> the synthetic stand-in generated once into crapnet's cache
  (:mod:`crapnet_core.data.phantom`); ``DatasetSpec.is_phantom`` is True for it;
- any other folder in the same layout, with a label-map file (JSON or YAML)::

      {"modality": "MR", "labels": {"liver": 1, "spleen": 2}, "body_threshold": 50}

  passed with ``labels=`` or found as ``labels.json`` / ``labels.yaml`` in the folder.

Array convention (read this before indexing)
---------------------------------------------
Every volume is brought to ONE canonical orientation and one in-plane grid for the model
by :mod:`crapnet_core.data.geometry` (the single documented place of the rule): nibabel's
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

from ..facts import CHAOS_LABELS, ORGANS, SABS_LABELS  # study facts: organs, label maps
from ..io import why_missing
from .errors import DatasetError  # noqa: F401 (re-exported: the data layer's error type)
from .geometry import MODEL_SIZE, Geometry, GeometryError, downsample_mask, make_geometry
from .labels import check_label_values, load_label_map_text, organ_names, pair_label

log = logging.getLogger(__name__)

#: In-plane size of every slice (paper Sec. 4.3: images are scaled to 3 x 256 x 256).
SLICE_SIZE = MODEL_SIZE

#: Body-mask thresholds of SSL-ALPNet's pseudo-label generation (on un-normalised intensities),
#: used by the presets (and by folders read with ``--preset``). Other folders default to a
#: data-driven threshold (Otsu per volume, :func:`body_threshold_for`), which works on any
#: intensity range (MR scaled 0-1 or 0-90, CT in HU or 0-255).
BODY_THRESHOLD = {"MR": 50.0, "CT": 1e-4}

#: Share of the labelled organ voxels the body mask must keep (else a warning names the scan).
BODY_MIN_ORGAN_SHARE = 0.5
#: Share of the image the body mask must keep (else a warning: the threshold is above the body).
BODY_MIN_IMAGE_SHARE = 0.05

#: name -> (sub-folder of the data root, labels, modality)
PRESETS: dict[str, tuple[str, dict[str, int], str]] = {
    "chaos": ("CHAOST2", CHAOS_LABELS, "MR"),
    "sabs": ("SABS", SABS_LABELS, "CT"),
}

LABEL_FILE_NAMES = ("labels.json", "labels.yaml", "labels.yml")

_ID_RE = re.compile(r"^(image|label)_(.+?)(\.nii\.gz|\.nii)$")

#: File kinds a single scan may come in (``segment``, ``data summary --scan``): NIfTI through
#: nibabel; NRRD, MetaImage and DICOM series (a folder) through SimpleITK.
SCAN_FORMATS = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, or a folder holding one DICOM series"
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")




@dataclass(frozen=True)
class DatasetSpec:
    """What crapnet needs to know about a dataset folder.

    ``labels`` maps organ names (lower_snake, e.g. ``"left_kidney"``) to the integer ids
    used in the label volumes; ``body_threshold`` is the intensity above which a voxel
    belongs to the body (superpixel body mask, on un-normalised intensities); ``None`` means
    data-driven: Otsu's threshold of each volume (:func:`body_threshold_for`).
    """

    name: str
    root: Path
    labels: dict[str, int]
    modality: str
    body_threshold: float | None
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
            None if self.body_threshold is None else float(self.body_threshold),
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


def _check_organ_names(labels: dict[str, int], source: str) -> None:
    """Organ names become parts of file names (``<scan>_<organ>.nii.gz``): two names that
    give the same file name, or a name with nothing usable in it, are refused here."""
    from ..paths import safe_name

    seen: dict[str, str] = {}
    for organ in labels:
        if not organ.strip():
            raise DatasetError(f"{source}: an organ name is empty")
        key = safe_name(organ)
        if key in seen:
            raise DatasetError(
                f"{source}: organ names {seen[key]!r} and {organ!r} give the same file name {key!r}; rename one"
            )
        seen[key] = organ


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
    names = organ_names(raw, source)  # NFC: the NFC and NFD spellings of a name are one organ
    for organ, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise DatasetError(f"{source}: label id of {organ!r} must be an integer, got {value!r}")
        if value == 0 and str(organ).strip().lower() == "background":
            continue  # 0 is always background; saying so in the map (nnU-Net's dataset.json style) is fine
        if value <= 0:
            raise DatasetError(
                f"{source}: label id of {organ!r} must be a positive integer, got {value!r} "
                f"(0 is the background; only an entry named 'background' may map to it)"
            )
        labels[names[organ]] = int(value)
    if not labels:
        raise DatasetError(f"{source}: 'labels' names no organ (only the background)")
    _check_organ_names(labels, source)
    if len(set(labels.values())) != len(labels):
        raise DatasetError(f"{source}: two organs share one label id: {labels}")
    threshold = obj.get("body_threshold")
    if isinstance(threshold, str) and threshold.strip().lower() == "otsu":
        threshold = None
    elif threshold is not None:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: 'body_threshold' must be a number or \"otsu\", got {threshold!r}") from None
    return labels, modality, threshold, obj


def read_label_map(path: str | os.PathLike) -> tuple[dict[str, int], str, float | None, dict]:
    """Read a label-map file (JSON or YAML): ``(labels, modality, body_threshold|None, raw)``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: label-map file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read label-map file ({err})") from None
    obj = load_label_map_text(text, path)  # a key given twice is refused, naming it
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
    from ..paths import DataRootNotSet, data_root as _data_root

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
    if threshold is None and preset is not None:
        threshold = BODY_THRESHOLD[modality]  # the preset's fixed value
    return DatasetSpec(name, root, lab, modality, None if threshold is None else float(threshold),
                       is_phantom=is_phantom, preset=preset)


# --------------------------------------------------------------------------- files


def _id_sort_key(scan_id: str) -> tuple:
    return (0, int(scan_id), "") if scan_id.isdigit() else (1, 0, scan_id)


def _pair_file(spec: DatasetSpec, kind: str, scan_id: str) -> Path:
    """``<kind>_<id>.nii.gz``, or ``.nii`` when only that exists (the .nii.gz name when neither does)."""
    gz = Path(spec.root) / f"{kind}_{scan_id}.nii.gz"
    if os.path.lexists(gz):  # lexists: a broken link or a link loop is reported as such, not as missing
        return gz
    plain = Path(spec.root) / f"{kind}_{scan_id}.nii"
    return plain if os.path.lexists(plain) else gz


def image_path(spec: DatasetSpec, scan_id: str) -> Path:
    """The image file of ``scan_id`` (``image_<id>.nii.gz`` or ``image_<id>.nii``)."""
    return _pair_file(spec, "image", scan_id)


def label_path(spec: DatasetSpec, scan_id: str) -> Path:
    """The label file of ``scan_id`` (``label_<id>.nii.gz`` or ``label_<id>.nii``)."""
    return _pair_file(spec, "label", scan_id)


def scan_ids(spec: DatasetSpec) -> list[str]:
    """Ids of the scans in ``spec.root``, sorted as integers (non-numeric ids last, by name).

    Every ``image_<id>.nii.gz`` must have its ``label_<id>.nii.gz`` and vice versa (``.nii``
    is read as well; one id in both forms is an error).
    """
    root = Path(spec.root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    images, labels = set(), set()
    for entry in root.iterdir():
        m = _ID_RE.match(entry.name)
        if m:
            bucket = images if m.group(1) == "image" else labels
            if m.group(2) in bucket:
                raise DatasetError(
                    f"{root / entry.name}: {m.group(1)}_{m.group(2)} exists both as .nii and as .nii.gz; keep one"
                )
            bucket.add(m.group(2))
    if not images and not labels:
        raise DatasetError(_no_pairs_message(root))
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


def _no_pairs_message(root: Path) -> str:
    """Why a folder holds no dataset: empty, or which files it holds instead of the expected names."""
    suffixes = (".nii", ".nii.gz", ".dcm", ".nrrd", ".mha", ".mhd", ".png")
    scans: list[str] = []
    for folder, dirs, files in os.walk(root):  # up to 3 levels down (CHAOS: <id>/T2SPIR/DICOM_anon)
        if len(Path(folder).relative_to(root).parts) >= 3:
            dirs[:] = []
        rel = Path(folder).relative_to(root)
        scans += [str(rel / f) if rel.parts else f for f in files if f.lower().endswith(suffixes)]
        if len(scans) > 10_000:
            break
    scans.sort()
    expected = "expected image_<id>.nii.gz with label_<id>.nii.gz (e.g. image_1.nii.gz, label_1.nii.gz)"
    if not scans:
        return f"{root}: no image_<id>.nii.gz / label_<id>.nii.gz files (empty dataset folder; {expected})"
    shown = ", ".join(scans[:4]) + (f", ... ({len(scans)} files)" if len(scans) > 4 else "")
    return (
        f"{root}: no image_<id>.nii.gz / label_<id>.nii.gz pairs, but it holds {shown}; {expected}. "
        f"Rename the files, or convert a raw download with `crapnet data prepare` "
        f"(Synapse img/imgNNNN.nii.gz + label/labelNNNN.nii.gz, CHAOS <id>/T2SPIR/DICOM_anon + Ground)"
    )


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read one scan fully: ``(array, affine, zooms)`` in nibabel's convention (see :func:`read_scan`).

    The name is historical: NIfTI (``.nii``/``.nii.gz``) is read with nibabel, and NRRD,
    MetaImage (``.mha``/``.mhd``) and DICOM series folders with SimpleITK. Unreadable or
    truncated files, colour (RGB) or vector images and non-3D arrays -> :class:`DatasetError`
    naming the file.
    """
    path = Path(path)
    if path.is_dir() or path.name.lower().endswith(_SITK_SUFFIXES):
        return _read_sitk(path)
    import nibabel as nib

    if not path.is_file():
        raise DatasetError(f"{path}: {why_missing(path)}")
    try:
        img = nib.load(str(path))
        array = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as err:  # noqa: BLE001 - gzip/zlib/EOF/ImageFileError: all "unreadable"
        raise DatasetError(f"{path}: unreadable or truncated NIfTI file ({type(err).__name__}: {err})") from None
    if array.dtype.names is not None:  # RGB24 / RGBA32 NIfTI: a structured (R, G, B) dtype
        raise DatasetError(
            f"{path}: colour (RGB) NIfTI (data type {img.get_data_dtype()}) is not supported; "
            f"convert it to a single-channel greyscale volume"
        )
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim in (4, 5) and array.shape[-1] in (3, 4):
        raise DatasetError(
            f"{path}: shape {array.shape} looks like a colour (RGB) or vector image; "
            f"convert it to a single-channel greyscale 3D volume"
        )
    if array.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D volume, got shape {array.shape}")
    return array, affine, zooms


read_scan = read_nifti  # the name to use for "a scan in any supported format"



def _sitk_read(sitk, path: Path):
    """One SimpleITK image from a file or a DICOM series folder (DatasetError when ambiguous)."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path)) or ()
        if not series:
            raise DatasetError(f"{path}: no DICOM series in this folder (supported: {SCAN_FORMATS})")
        if len(series) > 1:
            raise DatasetError(
                f"{path}: {len(series)} DICOM series in this folder ({', '.join(series[:4])}); "
                f"give a folder holding one series"
            )
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """NRRD / MetaImage file or DICOM series folder via SimpleITK, in nibabel's convention.

    SimpleITK's array is ``(k, j, i)`` and its geometry LPS+ (origin, spacing, direction); the
    returned array is ``(i, j, k)`` and the affine maps voxels to RAS+ mm like nibabel's.
    """
    import SimpleITK as sitk

    if not path.exists():
        raise DatasetError(f"{path}: {why_missing(path)}")
    from ..io import keep_locale

    try:
        with keep_locale():
            img = _sitk_read(sitk, path)
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - any ITK read failure is "unreadable"
        msg = str(err).strip().splitlines()
        raise DatasetError(f"{path}: unreadable scan ({msg[-1] if msg else type(err).__name__})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetError(
            f"{path}: colour (RGB) or vector image ({img.GetNumberOfComponentsPerPixel()} components per voxel) "
            f"is not supported; convert it to a single-channel greyscale volume"
        )
    if img.GetDimension() != 3:
        raise DatasetError(f"{path}: expected a 3D volume, got a {img.GetDimension()}D image of size {img.GetSize()}")
    array = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)))
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = img.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS+ -> RAS+
    return array, affine, tuple(float(v) for v in spacing)


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
        raise DatasetError(
            f"{path}: {n_bad} NaN/infinite voxel(s) in the {what}" + (f"; {hint}" if hint else "")
        )
    if n_bad == array.size:
        raise DatasetError(f"{path}: every voxel of the {what} is NaN/infinite")
    fill = float(np.min(array[~bad]))
    warnings.warn(f"{path}: replaced {n_bad} NaN/infinite voxel(s) of the {what} with {fill:g} (its lowest value)",
                  stacklevel=2)
    out = array.copy()
    out[bad] = fill
    return out


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
        return pair_label(self.geometry.file_shape, self.geometry.file_affine, lab, lab_aff, self.image_path,
                          self.label_path)

    def file_label(self) -> np.ndarray:
        """The label volume at the file's own resolution, in canonical orientation (``geometry.canon_shape``).

        Read from the file again (not cached): evaluation scores on this grid.
        """
        return np.ascontiguousarray(self.geometry.to_canonical(self.label_on_image_axes())).astype(np.int16)


def _validate_pair(
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
    _PROFILES.clear()


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
    lab, present = _validate_pair(spec, scan_id, img, img_aff, lab, lab_aff)
    vol = make_volume(scan_id, img, img_aff, zooms, lab, ip, lp, preset=spec.preset)
    vol.file_label_values = tuple(present)
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

_PROFILES: dict[tuple, dict] = {}


def intensity_profile(spec: DatasetSpec, train_ids: Iterable[str]) -> dict[str, Any]:
    """Raw intensity statistics of the training scans (model grid): recorded in every checkpoint.

    ``{"modality", "min", "p0.5", "p50", "p99.5", "max", "convention"}`` over a regular
    subsample of the voxels (at most ~4 million); ``convention`` is
    :func:`intensity_convention`. ``crapnet segment`` checks a query scan against it.
    """
    ids = tuple(str(i) for i in train_ids)
    key = (spec.key, ids)
    if key not in _PROFILES:
        parts = []
        for sid in ids:
            img = load_volume(spec, sid).image.ravel()
            parts.append(img[:: max(1, (img.size * len(ids)) // 4_000_000)])
        x = np.concatenate(parts).astype(np.float64)
        prof = {"modality": spec.modality, "min": float(x.min()), "max": float(x.max())}
        for q, name in ((0.5, "p0.5"), (50, "p50"), (99.5, "p99.5")):
            prof[name] = float(np.percentile(x, q))
        prof["convention"] = intensity_convention(prof["min"], prof["max"], spec.modality)
        _PROFILES[key] = prof
    return dict(_PROFILES[key])


def intensity_convention(lo: float, hi: float, modality: str) -> str:
    """Name the intensity convention of a scan from its range: ``hu``, ``0-255``, ``0-1`` or ``other``.

    CT: ``hu`` when air is below -300 (raw Hounsfield units; air is about -1000);
    ``0-255`` for an 8-bit window (the SABS copy: HU clipped to [-125, 275], scaled to 0..255);
    ``0-1`` for a unit range. MR has no absolute scale (``other``; z-scored per volume).
    """
    if modality != "CT":
        return "other"
    if lo < -300:
        return "hu"
    if lo >= -1e-6 and hi <= 1.0 + 1e-6:
        return "0-1"
    if lo >= -1e-6 and hi <= 255.5:
        return "0-255"
    return "other"


#: SSL-ALPNet's CT window (HU), the SABS copy's preprocessing: clip to it, scale to 0..255.
CT_HU_WINDOW = (-125.0, 275.0)


def hu_to_uint8_window(x: np.ndarray) -> np.ndarray:
    """Map HU to the SABS copy's 0..255 scale: clip to :data:`CT_HU_WINDOW`, scale linearly (float32)."""
    lo, hi = CT_HU_WINDOW
    return ((np.clip(np.asarray(x, dtype=np.float32), lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.float32)



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


# --------------------------------------------------------------------------- body mask


def body_threshold_for(spec_or_threshold, image: np.ndarray) -> float:
    """The body-mask threshold for one volume: the dataset's fixed value, or Otsu's (None).

    Otsu's threshold (``skimage.filters.threshold_otsu``) of the volume's intensities
    separates air from the body on any intensity scale. Computed on at most ~2 million
    voxels (a regular subsample) so that it takes milliseconds.
    """
    value = spec_or_threshold.body_threshold if isinstance(spec_or_threshold, DatasetSpec) else spec_or_threshold
    if value is not None:
        return float(value)
    from skimage.filters import threshold_otsu

    x = np.asarray(image, dtype=np.float32).ravel()
    x = x[:: max(1, x.size // 2_000_000)]
    if float(x.min()) == float(x.max()):
        return float(x.min())
    return float(threshold_otsu(x))


def body_mask(slice2d: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean body mask of one slice: ``> threshold``, largest connected component, holes filled."""
    from scipy import ndimage as ndi

    mask = np.asarray(slice2d) > threshold
    if not mask.any():
        return mask
    labels, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return ndi.binary_fill_holes(mask)


def body_report(image: np.ndarray, label: np.ndarray | None, threshold: float) -> dict[str, float | None]:
    """Share of the image and of the labelled (non-zero) voxels inside the body mask.

    The body mask is the superpixel step's (:func:`body_mask`, slice by slice). Returns
    ``{"threshold", "image_share", "organ_share"}`` (fractions; ``organ_share`` None without
    labelled voxels).
    """
    image = np.asarray(image)
    body = np.zeros(image.shape, dtype=bool)
    for z in range(image.shape[2]):
        body[:, :, z] = body_mask(image[:, :, z], threshold)
    organ_share = None
    if label is not None:
        organs = np.asarray(label) > 0
        n = int(organs.sum())
        organ_share = float((body & organs).sum() / n) if n else None
    return {"threshold": float(threshold), "image_share": float(body.mean()), "organ_share": organ_share}


def body_warning(report: dict, path: Path | str) -> str | None:
    """A warning line when the body mask drops most of the organs or keeps almost none of the image."""
    thr = report["threshold"]
    if report["organ_share"] is not None and report["organ_share"] < BODY_MIN_ORGAN_SHARE:
        return (f"{path}: the body mask (intensity > {thr:.4g}) keeps only {100 * report['organ_share']:.0f}% of the "
                f"labelled organ voxels; set 'body_threshold' in the label map (a number, or \"otsu\")")
    if report["image_share"] < BODY_MIN_IMAGE_SHARE:
        return (f"{path}: the body mask (intensity > {thr:.4g}) keeps only {100 * report['image_share']:.1f}% of the "
                f"image; the threshold is above the body's intensities; set 'body_threshold' in the label map "
                f"(a number, or \"otsu\")")
    return None


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
    """A mask (a ``(256, 256, Z)`` volume with ``z``, or a 2D slice) as int64 ``(size, size)``.

    Binary masks are shrunk with :func:`downsample_mask` (area pooling, small structures
    survive); other integer masks and enlargements use nearest neighbour.
    """
    import torch
    import torch.nn.functional as F

    m = np.asarray(mask)
    if m.ndim == 3:
        if z is None:
            raise ValueError("mask_tensor: z is required for a 3D mask")
        m = m[:, :, z]
    if m.shape != (size, size) and (m.dtype == bool or (m.min(initial=0) >= 0 and m.max(initial=0) <= 1)):
        return downsample_mask(m, (size, size))[0]
    t = torch.from_numpy(np.ascontiguousarray(m.astype(np.int64)))
    if t.shape != (size, size):
        t = F.interpolate(t[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return t


# --------------------------------------------------------------------------- summary


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
