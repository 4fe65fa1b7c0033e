"""The scan files of a dataset folder and reading one scan in any supported format.

A dataset folder holds ``image_<id>.nii.gz`` / ``label_<id>.nii.gz`` pairs (``.nii`` read as
well): :func:`scan_ids`, :func:`image_path`, :func:`label_path`. :func:`read_scan` reads NIfTI
with nibabel and NRRD, MetaImage and DICOM series folders with SimpleITK, always in nibabel's
convention ``(array (i, j, k), affine voxel -> RAS+ mm, zooms)``. Errors:
:class:`~crapnet_core.data.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..io import why_missing
from .errors import DatasetError
from .spec import DatasetSpec

_ID_RE = re.compile(r"^(image|label)_(.+?)(\.nii\.gz|\.nii)$")

#: File kinds a single scan may come in (``segment``, ``data summary --scan``): NIfTI through
#: nibabel; NRRD, MetaImage and DICOM series (a folder) through SimpleITK.
SCAN_FORMATS = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, or a folder holding one DICOM series"
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def id_sort_key(scan_id: str) -> tuple:
    """Sort key of scan ids: numeric ids as integers first, then the others by name."""
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
    missing_label = sorted(images - labels, key=id_sort_key)
    if missing_label:
        raise DatasetError(
            f"{root / f'image_{missing_label[0]}.nii.gz'}: missing pair: no label_{missing_label[0]}.nii.gz"
            + (f" (also {len(missing_label) - 1} more)" if len(missing_label) > 1 else "")
        )
    missing_image = sorted(labels - images, key=id_sort_key)
    if missing_image:
        raise DatasetError(
            f"{root / f'label_{missing_image[0]}.nii.gz'}: missing pair: no image_{missing_image[0]}.nii.gz"
            + (f" (also {len(missing_image) - 1} more)" if len(missing_image) > 1 else "")
        )
    return sorted(images, key=id_sort_key)


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
