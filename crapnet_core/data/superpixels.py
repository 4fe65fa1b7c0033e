"""Superpixel pseudo-labels: the self-supervision of the paper (Sec. 3.7, ``Y^i(l^p) = F(I^i)``).

As SSL-ALPNet's default ("MIDDLE") pseudo-labels:

1. 2D Felzenszwalb-Huttenlocher segmentation of every axial slice of the *un-normalised*
   image (``skimage.segmentation.felzenszwalb``, ``scale=1``, ``sigma=1``, ``min_size=400``);
2. a body mask per slice: intensity above the dataset's body threshold (presets: 50 for
   the CHAOS MR volumes, 1e-4 for CT, SSL-ALPNet's values; other folders: Otsu's threshold
   of each volume, :func:`crapnet_core.data.body.body_threshold_for`), largest connected
   component, holes filled; a warning names the scan when the mask keeps less than half of
   its labelled organ voxels or almost none of the image;
   for such data-driven datasets Felzenszwalb also runs on the volume rescaled linearly so
   that its 0.5th..99.5th percentiles span 0..1000 (:func:`felzenszwalb_input`), because its
   ``scale`` is in intensity units: MR stored as 0-1, 0-90 or 0-1300 then gives the same
   superpixels (presets keep SSL-ALPNet's raw intensities);
3. superpixels are cut to the body (voxels outside it become 0) and the remaining ones
   are numbered ``1..K`` per slice (in the order of Felzenszwalb's own labels).

Superpixels are computed on the model grid of :class:`~crapnet_core.data.volumes.Volume`
(canonical orientation, 256 x 256 in-plane: :mod:`crapnet_core.data.geometry`), i.e. on the
slices the model sees. Two places hold them as ``superpix_<id>.nii.gz``:

- crapnet's cache (the training input, read by :func:`load_superpixels`): on that model grid,
  with its affine (``geometry.model_affine``), in a folder keyed on the dataset folder's
  resolved path and the parameters;
- an output folder the user names (``crapnet superpixels --out OUT``, ``grid="scan"``): on
  each scan's OWN grid, axis order and affine (the model grid mapped back as predictions are:
  :meth:`~crapnet_core.data.geometry.Geometry.model_label_to_canonical`, nearest neighbour,
  then :meth:`~crapnet_core.data.geometry.Geometry.from_canonical`), so ``superpix_<id>``
  overlays ``image_<id>`` index by index.

crapnet never writes into a data folder.
``crapnet superpixels --min-size/--sigma/--scale`` and training (config section
``superpixels``, :class:`~crapnet_core.engine.experiment.SuperpixelConfig`) name the cache with the
same key, so a training with the same values reads what the command computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .body import body_mask, body_report, body_threshold_for, body_warning
from .errors import DatasetError
from .scans import image_path, read_nifti
from .scans import scan_ids as dataset_scan_ids
from .spec import DatasetSpec
from .volumes import load_volume

log = logging.getLogger(__name__)

#: Bump when the algorithm changes so that old caches are not reused.
ALGORITHM_VERSION = 2  # 2: computed on the canonical model grid (geometry module)


@dataclass(frozen=True)
class SuperpixelParams:
    """Felzenszwalb parameters (SSL-ALPNet "MIDDLE": ``min_size=400, sigma=1``, default scale 1)."""

    min_size: int = 400
    sigma: float = 1.0
    scale: float = 1.0


def superpixels_slice(
    slice2d: np.ndarray, threshold: float, params: SuperpixelParams = SuperpixelParams()
) -> np.ndarray:
    """int32 superpixels of one un-normalised slice: 0 outside the body, ``1..K`` inside."""
    from skimage.segmentation import felzenszwalb

    img = np.asarray(slice2d, dtype=np.float64)
    body = body_mask(img, threshold)
    out = np.zeros(img.shape, dtype=np.int32)
    if not body.any():
        return out
    seg = felzenszwalb(img, scale=params.scale, sigma=params.sigma, min_size=params.min_size)
    inside = seg[body]
    # renumber the superpixels that touch the body 1..K, keeping Felzenszwalb's order
    _, inverse = np.unique(inside, return_inverse=True)
    out[body] = inverse.astype(np.int32).ravel() + 1
    return out


def superpixels_volume(
    image: np.ndarray, threshold: float, params: SuperpixelParams = SuperpixelParams()
) -> np.ndarray:
    """int32 superpixels of a ``(H, W, Z)`` un-normalised volume, slice by slice along ``z``."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"superpixels_volume: expected (H, W, Z), got shape {image.shape}")
    out = np.zeros(image.shape, dtype=np.int32)
    for z in range(image.shape[2]):
        out[:, :, z] = superpixels_slice(image[:, :, z], threshold, params)
    return out


def felzenszwalb_input(image: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """``(image, threshold)`` rescaled so that the volume's 0.5th..99.5th percentiles span 0..1000.

    Felzenszwalb's ``scale`` (and the body threshold) are in intensity units; on this common
    scale a volume stored as 0-1, 0-90 or 0-1300 gives the same superpixels. (The presets
    keep their raw intensities, as SSL-ALPNet.)
    """
    x = np.asarray(image, dtype=np.float64)
    flat = x.ravel()
    lo, hi = np.percentile(flat[:: max(1, flat.size // 2_000_000)], [0.5, 99.5])
    if hi <= lo:
        return x, float(threshold)
    factor = 1000.0 / (hi - lo)
    return (x - lo) * factor, (float(threshold) - lo) * factor


# --------------------------------------------------------------------------- files and cache


def superpixel_path(out_dir: str | os.PathLike, scan_id: str) -> Path:
    return Path(out_dir) / f"superpix_{scan_id}.nii.gz"


def cache_folder(spec: DatasetSpec, params: SuperpixelParams = SuperpixelParams()) -> Path:
    """crapnet's own superpixel folder for ``spec`` (key: resolved data folder + parameters)."""
    from ..paths import cache_dir

    ident = json.dumps(
        {
            "root": str(Path(spec.root).resolve()),
            "threshold": "otsu" if spec.body_threshold is None else float(spec.body_threshold),
            "params": asdict(params),
            "version": ALGORITHM_VERSION,
        },
        sort_keys=True,
    )
    digest = hashlib.sha1(ident.encode()).hexdigest()[:16]
    folder = cache_dir("superpixels", f"{Path(spec.root).name}-{digest}")
    info = folder / "params.json"
    if not info.exists():
        from ..io import write_text

        write_text(info, json.dumps(json.loads(ident), indent=2) + "\n")
    return folder


def _check_not_in_data(spec: DatasetSpec, out_dir: Path) -> None:
    root = Path(spec.root).resolve()
    out = out_dir.expanduser().resolve()
    if out == root or root in out.parents:
        raise ValueError(f"--out {out_dir}: refusing to write into the data folder {root}; choose another folder")


#: Grids a superpixel file can be written on: the model grid (the cache) or the scan's own.
GRIDS = ("model", "scan")


def _is_done(dest: Path, src: Path, grid: str = "model") -> bool:
    """A superpixel file counts as done when it exists, is not older than its image and, for
    ``grid="scan"``, lies on the image file's grid (shape and affine from the headers: a file
    written on another grid by an earlier version is redone)."""
    try:
        if not (dest.stat().st_size > 0 and dest.stat().st_mtime_ns >= src.stat().st_mtime_ns):
            return False
    except FileNotFoundError:
        return False
    if grid == "scan" and src.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            a, b = nib.load(str(dest)), nib.load(str(src))
            return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=1e-4)
        except Exception:  # noqa: BLE001 - an unreadable old file is simply redone
            return False
    return grid == "model"


def _compute_one(
    spec: DatasetSpec,
    scan_id: str,
    threshold: float | None,
    params: SuperpixelParams,
    out_dir: str,
    grid: str = "model",
) -> tuple[str, str, float]:
    """Worker: superpixels of one scan, saved atomically on ``grid``. Returns (id, path, seconds)."""
    from ..io import save_nifti

    t0 = time.perf_counter()
    vol = load_volume(spec, scan_id)  # validated (NaN/Inf refused), canonical, 256 x 256
    thr = body_threshold_for(threshold, vol.image)
    msg = body_warning(body_report(vol.image, vol.label, thr), vol.image_path)
    if msg:
        log.warning("%s", msg)
        import warnings

        warnings.warn(msg, stacklevel=2)
    image = vol.image
    if threshold is None:  # data-driven dataset: scale-free input (see the module doc)
        image, thr = felzenszwalb_input(image, thr)
    sp = superpixels_volume(image, thr, params)
    dest = superpixel_path(out_dir, scan_id)
    if grid == "scan":  # back to the scan's own grid, axis order and affine (as predictions)
        geom = vol.geometry
        save_nifti(dest, geom.from_canonical(geom.model_label_to_canonical(sp)), geom.file_affine)
    else:
        save_nifti(dest, sp, vol.geometry.model_affine)
    return scan_id, str(dest), time.perf_counter() - t0


def compute_superpixels(
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    scan_ids: Iterable[str] | None = None,
    jobs: int = 1,
    progress: bool = True,
    params: SuperpixelParams = SuperpixelParams(),
    timings: dict[str, float] | None = None,
    grid: str = "model",
) -> list[Path]:
    """Write ``out_dir/superpix_<id>.nii.gz`` for the scans (default: all), in parallel over scans.

    ``grid``: ``"model"`` (the model grid: the training cache) or ``"scan"`` (each scan's own
    grid, axis order and affine: what a user overlays on ``image_<id>``). Scans whose file
    already exists (not older than the image; on the scan's grid for ``"scan"``) are skipped.
    ``jobs`` processes work at once (``jobs <= 1``: in this process). Returns the paths in
    scan order. ``timings`` (optional dict) receives seconds per computed scan.
    Never writes into the data folder (``ValueError``); checks before the work that
    ``out_dir`` is writable and has room (``OSError`` naming it).
    """
    from tqdm.auto import tqdm

    from ..io import check_output_folder, why_missing

    if grid not in GRIDS:
        raise ValueError(f"grid: {grid!r} is not one of {', '.join(GRIDS)}")
    out = Path(out_dir)
    _check_not_in_data(spec, out)
    ids = [str(i) for i in (scan_ids if scan_ids is not None else dataset_scan_ids(spec))]
    todo = [sid for sid in ids if not _is_done(superpixel_path(out, sid), image_path(spec, sid), grid)]
    for sid in todo:
        if not image_path(spec, sid).is_file():
            raise DatasetError(f"{image_path(spec, sid)}: {why_missing(image_path(spec, sid), 'image file')}")
    if todo:  # int32 labels compress to about the image file's size or less
        check_output_folder(out, sum(image_path(spec, sid).stat().st_size for sid in todo) + 2**20, what="--out")
    out.mkdir(parents=True, exist_ok=True)
    if todo:
        log.info("superpixels: %d of %d scans to compute into %s", len(todo), len(ids), out)
        bar = tqdm(total=len(todo), desc="superpixels", unit="scan", disable=not progress)
        args = [(spec, sid, spec.body_threshold, params, str(out), grid) for sid in todo]
        try:
            if jobs <= 1 or len(todo) == 1:
                for a in args:
                    sid, _, sec = _compute_one(*a)
                    if timings is not None:
                        timings[sid] = sec
                    bar.update(1)
            else:
                # spawn: safe from processes that already run torch/OpenMP threads (notebooks, training)
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
                    futures = [pool.submit(_compute_one, *a) for a in args]
                    for fut in as_completed(futures):
                        sid, _, sec = fut.result()
                        if timings is not None:
                            timings[sid] = sec
                        bar.update(1)
        finally:
            bar.close()
    return [superpixel_path(out, sid) for sid in ids]


def load_superpixels(
    spec: DatasetSpec, scan_id: str | int, params: SuperpixelParams = SuperpixelParams()
) -> np.ndarray:
    """int32 ``(256, 256, Z)`` superpixels of a scan, aligned with ``load_volume(spec, scan_id)``.

    Read from crapnet's cache folder (:func:`cache_folder`), computed there on demand.
    Not memoised in memory (a scan reads in well under a second; callers keep what they need).
    """
    scan_id = str(scan_id)
    vol = load_volume(spec, scan_id)
    folder = cache_folder(spec, params)
    path = superpixel_path(folder, scan_id)
    if not _is_done(path, vol.image_path):
        compute_superpixels(spec, folder, [scan_id], jobs=1, progress=False, params=params)
    arr, _, _ = read_nifti(path)
    if tuple(arr.shape) != tuple(vol.image.shape):
        raise DatasetError(
            f"{path}: shape {arr.shape} does not match the model grid of {vol.image_path.name} {vol.image.shape}"
        )
    return np.ascontiguousarray(arr).astype(np.int32)


def ensure_superpixels(
    spec: DatasetSpec,
    ids: Iterable[str],
    jobs: int | None = None,
    progress: bool = True,
    params: SuperpixelParams = SuperpixelParams(),
) -> Path:
    """Compute the missing superpixels of ``ids`` into the cache (``jobs`` processes, default: all cores)."""
    folder = cache_folder(spec, params)
    if jobs is None:
        jobs = os.cpu_count() or 1
    compute_superpixels(spec, folder, list(ids), jobs=jobs, progress=progress, params=params)
    return folder
