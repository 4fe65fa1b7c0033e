"""``crapnet data prepare``: from the public downloads to a dataset folder crapnet reads.

Two raw layouts are understood (the layouts of the public downloads):

- ``synapse``: Synapse / BTCV "Multi-Atlas Labeling Beyond the Cranial Vault" abdominal CT,
  ``img/imgNNNN.nii.gz`` with ``label/labelNNNN.nii.gz`` (HU, 512 x 512 in-plane; labels in
  BTCV order, 0..13). ``RAW`` may be the folder holding ``img/`` and ``label/`` or a parent
  of it (``Training/``, ``RawData/Training/``). Scan id: the number, without leading zeros
  (``img0001`` -> ``1``).
- ``chaos``: CHAOS MR, T2-SPIR: ``<id>/T2SPIR/DICOM_anon/*.dcm`` (one DICOM series) with
  ``<id>/T2SPIR/Ground/*.png`` (one ground-truth slice per DICOM file, grey values 63 liver,
  126 right kidney, 189 left kidney, 252 spleen). ``RAW`` may be the folder holding the
  ``<id>/`` folders or a parent (``MR/``, ``Train_Sets/MR/``). Scan id: the folder name.
  A ground-truth PNG belongs to the DICOM file of the same name stem
  (``IMG-0002-00001.dcm`` <-> ``IMG-0002-00001.png``); when the stems differ, the two lists
  are paired in file-name order. Slices are stacked in the order of their position along the
  slice normal (SimpleITK / GDCM series order), labels following their DICOM slice.

Preprocessing (SSL-ALPNet's, Ouyang et al. 2020, as used by the paper):

- CT: HU clipped to the window [-125, 275] and mapped linearly to 0..255 (float32), the
  convention of the ``sabs`` preset copy (so the preset's body threshold and a model trained
  on it apply);
- MR: intensities clipped at the volume's 99.5th percentile (float32, not normalised: crapnet
  z-scores MR per volume at load time);
- in-plane resampling to ``size`` x ``size`` (256): linear for the image, nearest neighbour
  for the labels; the physical extent of the slice is kept (new spacing = old spacing x
  old size / size; the origin moves by half the spacing change), the slice axis untouched;
- labels: the ids of the preset (``facts.SABS_LABELS``, ``facts.CHAOS_LABELS``).

Output: ``OUT/image_<id>.nii.gz`` (float32), ``OUT/label_<id>.nii.gz`` (uint8), each with
the resampled geometry, ``OUT/labels.json`` (modality and label map of the preset) and
``OUT/prepare.json`` (what was read and written). Every file is written atomically; the raw
folder is only read. SSL-ALPNet also crops the CT volumes along the slice axis to a region
of interest; that step is not applied here (every slice is kept).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..facts import CHAOS_LABELS, SABS_LABELS  # study facts: label maps of the presets
from .errors import DatasetError
from .intensities import CT_WINDOW, ct_window  # the one CT window (SSL-ALPNet's)

log = logging.getLogger(__name__)

SOURCES = ("synapse", "chaos")
#: MR upper clip percentile of SSL-ALPNet's preprocessing.
MR_PERCENTILE = 99.5
#: CHAOS ground-truth grey value -> organ.
CHAOS_GREY = {63: "liver", 126: "right_kidney", 189: "left_kidney", 252: "spleen"}
#: largest distance of a PNG grey value from one of CHAOS_GREY (or 0) that is still accepted
#: (the four values are 63 apart; nnU-Net's CHAOS conversion accepts similar bands)
GREY_TOLERANCE = 12

_SYN_IMG = re.compile(r"^img(\d+)\.nii(\.gz)?$")
_SYN_LAB = re.compile(r"^label(\d+)\.nii(\.gz)?$")


class PrepareError(DatasetError):
    """A problem with a raw download; the message names the file or folder."""


@dataclass
class RawScan:
    """One scan of a raw download: its id, image source and label source."""

    scan_id: str
    image: Path | list[Path]  # a NIfTI file (synapse) or the DICOM files of the series (chaos)
    label: Path | list[Path]  # a NIfTI file (synapse) or the ground-truth PNGs (chaos)
    info: dict[str, Any] = field(default_factory=dict)


from ..io import keep_locale  # noqa: E402  (GDCM can leave the process locale at "C")


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - a dependency of the package
        raise PrepareError("crapnet data prepare needs SimpleITK: pip install 'SimpleITK>=2.3'") from None
    return sitk


# --------------------------------------------------------------------------- finding the scans


def _listing(folder: Path, limit: int = 6) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def find_synapse(raw: str | os.PathLike) -> list[RawScan]:
    """The scans of a Synapse/BTCV download (``img/imgNNNN.nii.gz`` + ``label/labelNNNN.nii.gz``)."""
    raw = Path(raw)
    bases = [raw, raw / "Training", raw / "RawData" / "Training", raw / "Abdomen" / "RawData" / "Training"]
    base = next((b for b in bases if (b / "img").is_dir()), None)
    if base is None:
        raise PrepareError(
            f"{raw}: not a Synapse/BTCV download: expected img/imgNNNN.nii.gz and label/labelNNNN.nii.gz "
            f"(in RAW, RAW/Training or RAW/RawData/Training); RAW holds {_listing(raw)}"
        )
    images = {str(int(m.group(1))): p for p in (base / "img").iterdir() if (m := _SYN_IMG.match(p.name))}
    if not images:
        raise PrepareError(
            f"{base / 'img'}: no imgNNNN.nii.gz files (expected e.g. img0001.nii.gz); it holds {_listing(base / 'img')}"
        )
    if not (base / "label").is_dir():
        raise PrepareError(f"{base}: no label/ folder next to img/ (expected label/labelNNNN.nii.gz)")
    labels = {str(int(m.group(1))): p for p in (base / "label").iterdir() if (m := _SYN_LAB.match(p.name))}
    missing = sorted(set(images) - set(labels), key=int)
    if missing:
        raise PrepareError(
            f"{images[missing[0]]}: no label file label{images[missing[0]].name[3:]} in {base / 'label'}"
            + (f" (also {len(missing) - 1} more images without a label)" if len(missing) > 1 else "")
        )
    return [RawScan(sid, images[sid], labels[sid]) for sid in sorted(images, key=int)]


def _chaos_case_dirs(raw: Path) -> list[Path]:
    for base in (raw, raw / "MR", raw / "Train_Sets" / "MR", raw / "CHAOS_Train_Sets" / "Train_Sets" / "MR"):
        if base.is_dir():
            cases = [d for d in base.iterdir() if (d / "T2SPIR" / "DICOM_anon").is_dir()]
            if cases:
                return cases
    if (raw / "T2SPIR" / "DICOM_anon").is_dir():
        return [raw]  # one case folder given directly
    return []


def _id_key(scan_id: str) -> tuple:
    return (0, int(scan_id), "") if scan_id.isdigit() else (1, 0, scan_id)


def find_chaos(raw: str | os.PathLike) -> list[RawScan]:
    """The T2-SPIR scans of a CHAOS MR download (``<id>/T2SPIR/DICOM_anon`` + ``<id>/T2SPIR/Ground``)."""
    raw = Path(raw)
    cases = _chaos_case_dirs(raw)
    if not cases:
        raise PrepareError(
            f"{raw}: not a CHAOS MR download: expected <id>/T2SPIR/DICOM_anon/*.dcm with "
            f"<id>/T2SPIR/Ground/*.png (in RAW, RAW/MR or RAW/Train_Sets/MR); RAW holds {_listing(raw)}"
        )
    scans = []
    for case in sorted(cases, key=lambda d: _id_key(d.name)):
        dicom_dir = case / "T2SPIR" / "DICOM_anon"
        ground = case / "T2SPIR" / "Ground"
        dcms = sorted(p for p in dicom_dir.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
        if not dcms:
            raise PrepareError(f"{dicom_dir}: no .dcm files; it holds {_listing(dicom_dir)}")
        if not ground.is_dir():
            raise PrepareError(
                f"{ground}: no ground-truth folder (CHAOS test cases have none; only annotated cases can be prepared)"
            )
        pngs = sorted(p for p in ground.iterdir() if p.is_file() and p.suffix.lower() == ".png")
        if len(pngs) != len(dcms):
            raise PrepareError(
                f"{ground}: {len(pngs)} ground-truth PNG files for {len(dcms)} DICOM files in {dicom_dir}; "
                f"expected one PNG per slice"
            )
        by_stem = {p.stem: p for p in pngs}
        if all(d.stem in by_stem for d in dcms):
            pairs = {d: by_stem[d.stem] for d in dcms}
            pairing = "file-name stem"
        else:
            pairs = dict(zip(dcms, pngs))
            pairing = "file-name order"
        scan_id = case.name if case != raw else raw.name
        scans.append(RawScan(scan_id, dcms, [pairs[d] for d in dcms], {"pairing": pairing}))
    return scans


def find_scans(source: str, raw: str | os.PathLike) -> list[RawScan]:
    """The scans of a raw download of ``source`` (``synapse`` or ``chaos``)."""
    raw = Path(raw).expanduser()
    if not raw.is_dir():
        raise PrepareError(f"--raw {raw}: folder not found")
    if source == "synapse":
        return find_synapse(raw)
    if source == "chaos":
        return find_chaos(raw)
    raise PrepareError(f"--source: {source!r} is not one of {', '.join(SOURCES)}")


# --------------------------------------------------------------------------- reading


def _read_synapse(scan: RawScan):
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(scan.image), sitk.sitkFloat32)
    except RuntimeError as err:
        raise PrepareError(f"{scan.image}: unreadable image ({str(err).strip().splitlines()[-1]})") from None
    try:
        label = sitk.ReadImage(str(scan.label))
    except RuntimeError as err:
        raise PrepareError(f"{scan.label}: unreadable label file ({str(err).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise PrepareError(
            f"{scan.image}: expected a 3D grey-level volume, got {image.GetDimension()}D "
            f"with {image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    if label.GetSize() != image.GetSize():
        raise PrepareError(
            f"{scan.label}: size {label.GetSize()} does not match the image {scan.image.name} {image.GetSize()}"
        )
    if not (
        np.allclose(label.GetSpacing(), image.GetSpacing(), atol=1e-3)
        and np.allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-2)
        and np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-4)
    ):
        raise PrepareError(
            f"{scan.label}: geometry (spacing/origin/direction) does not match the image {scan.image.name}"
        )
    arr = sitk.GetArrayFromImage(label)
    if not np.array_equal(arr, np.round(arr)):
        raise PrepareError(f"{scan.label}: non-integer label values")
    arr = arr.astype(np.int64)
    known = {0, *SABS_LABELS.values()}
    bad = sorted(set(np.unique(arr).tolist()) - known)
    if bad:
        raise PrepareError(f"{scan.label}: label value(s) {bad[:8]} are not BTCV organ ids 0..13")
    label_u8 = sitk.GetImageFromArray(arr.astype(np.uint8))
    label_u8.CopyInformation(label)
    return image, label_u8


def _chaos_grey_to_ids(grey: np.ndarray, path: Path) -> np.ndarray:
    """CHAOS ground-truth grey values -> CHAOS preset ids (0 background)."""
    values = np.array([0, *CHAOS_GREY], dtype=np.int64)
    ids = np.array([0, *(CHAOS_LABELS[o] for o in CHAOS_GREY.values())], dtype=np.uint8)
    g = grey.astype(np.int64)
    nearest = np.abs(g[..., None] - values).argmin(axis=-1)
    far = np.abs(g - values[nearest]) > GREY_TOLERANCE
    if far.any():
        bad = np.unique(g[far])[:6].tolist()
        raise PrepareError(
            f"{path}: grey value(s) {bad} are not CHAOS ground-truth values (0, 63 liver, 126 right kidney, "
            f"189 left kidney, 252 spleen)"
        )
    return ids[nearest]


def _read_png(path: Path) -> np.ndarray:
    sitk = _sitk()
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise PrepareError(f"{path}: unreadable PNG ({str(err).strip().splitlines()[-1]})") from None
    arr = sitk.GetArrayFromImage(img)  # (rows, cols) or (rows, cols, channels)
    if arr.ndim == 3:
        if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, min(arr.shape[-1], 3))):
            raise PrepareError(f"{path}: a colour PNG; CHAOS ground truth is grey-level")
        arr = arr[..., 0]
    return arr


def _read_chaos(scan: RawScan):
    sitk = _sitk()
    dcms: list[Path] = scan.image  # type: ignore[assignment]
    png_of = dict(zip(dcms, scan.label))  # type: ignore[arg-type]
    folder = dcms[0].parent
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(folder))
        if len(series) > 1:
            raise PrepareError(f"{folder}: {len(series)} DICOM series in one folder; expected the T2-SPIR series only")
        ordered = [Path(f) for f in reader.GetGDCMSeriesFileNames(str(folder), series[0] if series else "")]
        reader.SetFileNames([str(f) for f in ordered])
        image = reader.Execute()
    except RuntimeError as err:
        raise PrepareError(f"{folder}: unreadable DICOM series ({str(err).strip().splitlines()[-1]})") from None
    if {p.resolve() for p in ordered} != {p.resolve() for p in dcms}:
        raise PrepareError(f"{folder}: the DICOM series does not hold every .dcm file of the folder")
    image = sitk.Cast(image, sitk.sitkFloat32)
    by_resolved = {p.resolve(): png_of[p] for p in dcms}
    slices = [_chaos_grey_to_ids(_read_png(by_resolved[p.resolve()]), by_resolved[p.resolve()]) for p in ordered]
    shape = (image.GetSize()[1], image.GetSize()[0])
    for p, s in zip(ordered, slices):
        if s.shape != shape:
            raise PrepareError(
                f"{by_resolved[p.resolve()]}: size {s.shape[::-1]} does not match its DICOM slice "
                f"{p.name} {shape[::-1]}"
            )
    label = sitk.GetImageFromArray(np.stack(slices).astype(np.uint8))
    label.CopyInformation(image)
    return image, label


# --------------------------------------------------------------------------- preprocessing


def mr_clip(array: np.ndarray, percentile: float = MR_PERCENTILE) -> np.ndarray:
    """Clip an MR volume at its ``percentile``-th intensity percentile (SSL-ALPNet), float32."""
    a = np.asarray(array, dtype=np.float32)
    return np.minimum(a, np.float32(np.percentile(a, percentile))).astype(np.float32)


def resample_inplane(image, size: int, label: bool):
    """Resample a SimpleITK volume to ``size`` x ``size`` in-plane, keeping the slice's physical extent.

    New in-plane spacing = old spacing x old size / size; the origin (centre of the first
    voxel) moves by half the spacing change along the in-plane axes, so the slice covers the
    same field of view; the slice axis is unchanged. Linear interpolation for images,
    nearest neighbour for labels (SimpleITK's ``Resample``).
    """
    sitk = _sitk()
    old_size = np.array(image.GetSize(), dtype=np.float64)
    old_sp = np.array(image.GetSpacing(), dtype=np.float64)
    new_size = [int(size), int(size), int(old_size[2])]
    new_sp = old_sp.copy()
    new_sp[:2] = old_sp[:2] * old_size[:2] / size
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    shift = np.zeros(3)
    shift[:2] = (new_sp[:2] - old_sp[:2]) / 2.0
    new_origin = np.array(image.GetOrigin(), dtype=np.float64) + direction @ shift
    return sitk.Resample(
        image,
        new_size,
        sitk.Transform(),
        sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
        tuple(new_origin),
        tuple(new_sp),
        tuple(direction.ravel()),
        0,
        sitk.sitkUInt8 if label else sitk.sitkFloat32,
    )


# --------------------------------------------------------------------------- the command


def _check_out(out: Path, raw: Path, force: bool) -> None:
    out_r, raw_r = out.expanduser().resolve(), raw.expanduser().resolve()
    if out_r == raw_r or raw_r in out_r.parents:
        raise PrepareError(f"--out {out}: inside the raw folder {raw}; choose a folder outside the download")
    if out_r in raw_r.parents:
        raise PrepareError(f"--out {out}: holds the raw folder {raw}; choose a separate output folder")
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not force:
        ours = re.compile(r"^(image|label)_.+\.nii\.gz$|^labels\.json$|^prepare\.json$|^\.")
        others = [p.name for p in out.iterdir() if not ours.match(p.name)]
        if others:
            raise PrepareError(
                f"--out {out}: folder holds other files ({', '.join(sorted(others)[:4])}); "
                f"choose an empty or new folder"
            )
        if (out / "prepare.json").is_file():
            raise PrepareError(f"--out {out}: already holds a prepared dataset; pass --force to prepare it again")


def prepare_dataset(
    source: str,
    raw: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 256,
    scan_ids: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert a raw download into ``out`` (see the module docstring); returns the summary dict.

    ``scan_ids``: only these scans (default: every scan found). Raises :class:`PrepareError`
    (a ``ValueError``) naming the file for a layout or file problem. Nothing is written before
    the layout has been read and every scan's files found; ``out/prepare.json`` is written last.
    """
    from tqdm.auto import tqdm

    from ..io import atomic_path, write_json

    sitk = _sitk()
    if source not in SOURCES:
        raise PrepareError(f"--source: {source!r} is not one of {', '.join(SOURCES)}")
    if int(size) < 32 or int(size) % 8:
        raise PrepareError(f"--size: {size} must be a multiple of 8, at least 32")
    raw, out = Path(raw).expanduser(), Path(out).expanduser()
    scans = find_scans(source, raw)
    if scan_ids:
        wanted = [str(s) for s in scan_ids]
        known = {s.scan_id for s in scans}
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise PrepareError(
                f"--scans: {', '.join(unknown)} not in {raw} (found: {', '.join(sorted(known, key=_id_key))})"
            )
        scans = [s for s in scans if s.scan_id in wanted]
    _check_out(out, raw, force)
    modality = "CT" if source == "synapse" else "MR"
    labels = dict(SABS_LABELS if source == "synapse" else CHAOS_LABELS)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prepare.json").unlink(missing_ok=True)  # written again last: its absence marks an unfinished folder
    keep = {f"{kind}_{s.scan_id}.nii.gz" for s in scans for kind in ("image", "label")}
    for old in out.glob("*_*.nii.gz"):  # scans of an earlier prepare into this folder (ours only)
        if re.match(r"^(image|label)_.+\.nii\.gz$", old.name) and old.name not in keep:
            old.unlink()
    rows = []
    t0 = time.perf_counter()
    bar = tqdm(scans, desc=f"prepare {source}", unit="scan", disable=not progress)
    for scan in bar:
        with keep_locale():
            image, label = _read_synapse(scan) if source == "synapse" else _read_chaos(scan)
        arr = sitk.GetArrayFromImage(image)
        if not np.isfinite(arr).all():
            raise PrepareError(
                f"{scan.image if source == 'synapse' else Path(scan.image[0]).parent}: "
                f"{int((~np.isfinite(arr)).sum())} NaN/infinite voxel(s)"
            )
        arr = ct_window(arr) if modality == "CT" else mr_clip(arr)
        processed = sitk.GetImageFromArray(arr)
        processed.CopyInformation(image)
        img_out = resample_inplane(processed, size, label=False)
        lab_out = resample_inplane(label, size, label=True)
        for name, img in ((f"image_{scan.scan_id}.nii.gz", img_out), (f"label_{scan.scan_id}.nii.gz", lab_out)):
            with atomic_path(out / name, suffix=".nii.gz") as tmp:
                sitk.WriteImage(img, str(tmp), True)
        counts = np.bincount(sitk.GetArrayViewFromImage(lab_out).ravel(), minlength=max(labels.values()) + 1)
        rows.append(
            {
                "scan": scan.scan_id,
                "source_size": "x".join(str(n) for n in image.GetSize()),
                "source_spacing_mm": "x".join(f"{s:.3g}" for s in image.GetSpacing()),
                "size": "x".join(str(n) for n in img_out.GetSize()),
                "spacing_mm": "x".join(f"{s:.3g}" for s in img_out.GetSpacing()),
                "min": float(arr.min()),
                "max": float(arr.max()),
                **{organ: int(counts[lid]) for organ, lid in labels.items()},
                **scan.info,
            }
        )
    bar.close()
    write_json(out / "labels.json", {"modality": modality, "labels": labels, "source": source})
    summary = {
        "source": source,
        "raw": str(raw.resolve()),
        "out": str(out.resolve()),
        "modality": modality,
        "size": int(size),
        "preprocessing": (
            f"HU clipped to [{CT_WINDOW[0]:g}, {CT_WINDOW[1]:g}] and mapped to 0..255"
            if modality == "CT"
            else f"clipped at the {MR_PERCENTILE:g}th percentile per volume"
        )
        + f"; in-plane resampling to {size} x {size} (image linear, labels nearest), field of view kept",
        "labels": labels,
        "scans": rows,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(out / "prepare.json", summary)
    return summary


__all__ = [
    "SOURCES",
    "MR_PERCENTILE",
    "CHAOS_GREY",
    "PrepareError",
    "RawScan",
    "find_scans",
    "keep_locale",
    "find_synapse",
    "find_chaos",
    "mr_clip",
    "resample_inplane",
    "prepare_dataset",
]
