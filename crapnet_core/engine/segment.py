"""Segment an organ in a new scan from one annotated example, or k of them (``crapnet segment``).

The same code path as the evaluation (:mod:`crapnet_core.engine.evaluation`): the support
slices are taken at ``floor(f_p * n)`` of the support's organ slices (f_p = 1/6, 1/2, 5/6),
the query's slice range (``query_range``, default every slice, since a new scan has no
label to give the organ's range) is split into 3 equal chunks, chunk p is segmented with
support slice p by :func:`~crapnet_core.engine.evaluation.predict_chunks`. With k annotated
examples (repeated ``--support-image`` / ``--support-label``), chunk p is segmented from the k
supports' slice p together (k-shot; prototypes pooled over the shots by the model).

Input conventions: the same loading mechanism as the dataset folders
(:func:`crapnet_core.data.volumes.make_volume`, rules in :mod:`crapnet_core.data.geometry`): support
and query are reoriented to the canonical orientation using their affines (any axis order
or flips give the same result in world space), brought to the 256 x 256 in-plane grid
(resampled unless 256 x 256; the SABS preset's crop when the run was trained on SABS and
the file is 257 x 257), then resized to the model's input size. The prediction goes back
to the query file's own grid, axis order and affine (1 = organ, 0 = elsewhere, uint8).
``--query-range z0:z1`` counts axial slices inferior -> superior from 0 (the canonical
order; for files stored with the third axis running to superior, as CHAOS and SABS, that
is the file's third index); both ends are included (``10:20`` is 11 slices).

The support label goes through the dataset loader's checks
(:mod:`crapnet_core.data.labels`): the pair rule (a label in another axis order or with
flips, on the support image's world grid, is reoriented; another grid is refused saying what
differs) and the one label check (finite integer ids; a soft mask with 0.5 borders is refused).

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``,
``.mhd``) and DICOM series (a folder holding one series), read by
:func:`crapnet_core.data.scans.read_scan`; the output is NIfTI.

Intensities are normalised as in training: MR per-volume z-score (any scale works); CT
``(x - mean) / std`` with the training statistics stored in the checkpoint, so a CT scan
must be in the training data's intensity convention. The checkpoint records the training
scans' intensity profile; a CT query in another convention is mapped when the mapping is
known (raw HU -> the SABS copy's 0..255: SSL-ALPNet's window [-125, 275] HU) and refused
otherwise, with one line naming the file and both ranges. NaN/infinite voxels are refused
(``replace_nonfinite=True``: set to the scan's lowest value). A support annotation smaller
than half a model input cell is kept as its best-covered cell(s), with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .prediction import chunk_assignment, predict_chunks, support_slices, support_tensors


def _preset_of(cfg) -> str | None:
    """The preset whose in-plane rule applies to new scans of a run (its training data's preset)."""
    from ..data.spec import PRESETS

    for key in (cfg.data.labels, cfg.data.dataset):
        if key is not None and str(key).lower() in PRESETS:
            return str(key).lower()
    return None


_NONFINITE_HINT = "fix the file, or pass --replace-nonfinite to set them to the scan's lowest value"


def _load_support(image: Path, label: Path, preset: str | None, replace_nonfinite: bool = False):
    """The support volume and its label on the image's array, by the dataset loader's rules:
    the pair rule (another axis order/flips on the same world grid: reoriented) and the one
    label check (finite integer ids: a soft or interpolated mask is refused)."""
    from ..data.labels import check_label_values, pair_label
    from ..data.scans import read_scan
    from ..data.validation import check_finite
    from ..data.volumes import make_volume

    img, aff, zooms = read_scan(image)
    lab, lab_aff, _ = read_scan(label)
    img = check_finite(img, image, "image", replace=replace_nonfinite, hint=_NONFINITE_HINT)
    lab = pair_label(img.shape, aff, lab, lab_aff, image, label)
    check_label_values(lab, label)
    return make_volume("support", img, aff, zooms, lab, image, label, preset=preset), lab


def _load_query(image: Path, preset: str | None, replace_nonfinite: bool = False):
    from ..data.scans import read_scan
    from ..data.validation import check_finite
    from ..data.volumes import make_volume

    img, aff, zooms = read_scan(image)
    img = check_finite(img, image, "image", replace=replace_nonfinite, hint=_NONFINITE_HINT)
    return make_volume("query", img, aff, zooms, None, image, None, preset=preset)


def match_intensities(vol, profile: dict | None, ct: bool, what: str) -> str:
    """Check (and where known, map in place) a scan's intensity convention against the training data's.

    ``profile``: the checkpoint's ``intensity_profile`` (None for runs that predate it: CT
    is then not checked, with a warning). MR: nothing to check (per-volume z-score).
    Returns a one-line note for the report; raises ``ValueError`` naming the file when the
    conventions differ and no mapping is known.
    """
    import warnings

    from ..data.intensities import ct_window, intensity_convention

    if not ct:
        return "MR: z-scored per volume (any intensity scale)"
    lo, hi = float(vol.image.min()), float(vol.image.max())
    conv = intensity_convention(lo, hi, "CT")
    if profile is None:
        warnings.warn(
            f"{vol.image_path}: the run records no training intensity profile (trained before it was "
            f"recorded); the CT intensity convention ({conv}, {lo:.4g}..{hi:.4g}) is not checked",
            stacklevel=2,
        )
        return f"CT {conv} (not checked: no training profile in the run)"
    train = profile.get("convention", "other")
    train_range = f"{profile['min']:.4g}..{profile['max']:.4g}"
    if conv == train:
        return f"CT {conv}, as the training data"
    if conv == "hu" and train == "0-255":
        vol.image = ct_window(vol.image)
        return "CT HU mapped to the training data's 0..255 (window [-125, 275] HU, SSL-ALPNet's preprocessing)"
    raise ValueError(
        f"{what}: {vol.image_path} has CT intensities {lo:.4g}..{hi:.4g} ({conv}) but the model was trained on "
        f"{train_range} ({train}); no mapping is known: give the scan in the training data's convention"
    )


def _normalized(vol, stats) -> np.ndarray:
    """MR (``stats`` None): per-volume z-score on the model grid; CT: the training statistics."""
    from ..data.errors import DatasetError
    from ..data.intensities import apply_normalization

    if stats is None:
        x = vol.image
        std = float(x.std(dtype=np.float64))
        if std == 0:
            raise DatasetError(f"{vol.image_path}: constant image; cannot z-score normalise")
        return apply_normalization(x, (float(x.mean(dtype=np.float64)), std))
    return apply_normalization(vol.image, (float(stats[0]), float(stats[1])))


def _parse_range(text: str | None, n: int, path: Path) -> tuple[int, int]:
    if not text:
        return 0, n - 1
    try:
        lo, hi = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise ValueError(f"--query-range: {text!r} is not z0:z1 (first and last slice, inclusive)") from None
    if not 0 <= lo <= hi < n:
        raise ValueError(f"--query-range: {lo}:{hi} is outside 0:{n - 1} ({path} has {n} slices)")
    return lo, hi


def _as_paths(value, name: str) -> list[Path]:
    """One path or a sequence of paths -> a non-empty list of Paths (ValueError naming the option)."""
    items = [value] if isinstance(value, (str, Path)) else list(value or [])
    if not items:
        raise ValueError(f"{name}: give at least one file")
    return [Path(v) for v in items]


def segment_files(
    support_image: str | Path | Sequence[str | Path],
    support_label: str | Path | Sequence[str | Path],
    query_image: str | Path,
    out: str | Path,
    organ_label: int = 1,
    run: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    query_range: str | None = None,
    force: bool = False,
    replace_nonfinite: bool = False,
) -> dict[str, Any]:
    """Segment the organ labelled ``organ_label`` in ``support_label`` in ``query_image``; write ``out``.

    Give either ``run`` (a trained run folder) or ``checkpoint``. k-shot: ``support_image`` and
    ``support_label`` may be lists of k files (pairs in the same order, ``crapnet segment`` with
    repeated ``--support-image`` / ``--support-label``); each support gives its slices at 1/6, 1/2,
    5/6 of its own organ range, chunk p of the query is segmented from the k supports' chunk-p slices,
    and the model pools its prototypes over the shots (:mod:`crapnet_core.models.prototypes`). One pair
    is exactly the 1-shot path. Returns a small report (support slices used, per support for k >= 2,
    query slice range, predicted voxels, output path).
    """
    from ..io import check_output_folder, save_nifti
    from .checkpoints import load_model, read_checkpoint, resolve_device, run_checkpoint, run_hashes
    from .experiment import ExperimentConfig
    from .prediction import SupportSet, stack_shots

    images = _as_paths(support_image, "--support-image")
    labels = _as_paths(support_label, "--support-label")
    if len(images) != len(labels):
        raise ValueError(
            f"--support-image / --support-label: {len(images)} image(s) but {len(labels)} label map(s); "
            "give one label map per support image, in the same order"
        )
    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"--out: {out} exists; pass --force to overwrite it")
    if not str(out).endswith((".nii", ".nii.gz")):
        raise ValueError(f"--out: {out} must end with .nii or .nii.gz")
    query_size = Path(query_image).stat().st_size if Path(query_image).is_file() else 0
    check_output_folder(out.parent, query_size + 2**20, what="--out folder")  # before the work
    belongs: tuple[str, ...] | None = None  # --checkpoint: its own config, nothing to compare
    if run is not None:
        run = Path(run)
        cfg_path = run / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"--run: {run} is not a run folder (no config.json)")
        cfg = ExperimentConfig.load(cfg_path)
        checkpoint, state = run_checkpoint(run, cfg)  # last.pt or its intact copy, of this run's config
        belongs = run_hashes(run, cfg)
    elif checkpoint is not None:
        state = read_checkpoint(checkpoint)
        if "config" not in state:
            raise ValueError(f"--checkpoint: {checkpoint} holds no config; use --run with its run folder")
        cfg = ExperimentConfig.from_dict(state["config"])
    else:
        raise ValueError("segment: give --run or --checkpoint")
    dev = resolve_device(device or cfg.train.device)
    model, state = load_model(cfg, checkpoint, dev, state=state, run_hashes=belongs)
    stats = state.get("norm_stats")

    preset = _preset_of(cfg)
    profile = state.get("intensity_profile")
    supports, s_notes = [], []
    for image, label in zip(images, labels):
        s_vol, s_lab = _load_support(image, label, preset, replace_nonfinite)
        if not (np.asarray(s_lab) == int(organ_label)).any():
            raise ValueError(f"--support-label: {label} holds no voxel with label {organ_label}")
        fg, _ = s_vol.geometry.mask_to_model(np.asarray(s_lab) == int(organ_label))  # small structures survive
        zs = np.flatnonzero(fg.any(axis=(0, 1)))
        chosen = support_slices(zs.tolist(), cfg.eval.n_parts)
        s_notes.append(match_intensities(s_vol, profile, stats is not None, "--support-image"))
        sup_images, sup_masks = support_tensors(
            _normalized(s_vol, stats), fg, chosen, cfg.data.input_size, source=str(label)
        )
        supports.append(SupportSet(str(image), tuple(int(z) for z in chosen), int(zs.size), sup_images, sup_masks))
    sup_images, sup_masks = stack_shots(supports)
    # after the supports' own checks (the pair rule, label values: those name the file first);
    # os.path.realpath, not Path.resolve: a symbolic link loop is left to the reader's ELOOP
    if os.path.realpath(query_image) in [os.path.realpath(p) for p in images]:
        raise ValueError(f"--query-image: {query_image} is also a --support-image; a scan cannot be its own support")

    q_vol = _load_query(Path(query_image), preset, replace_nonfinite)
    q_note = match_intensities(q_vol, profile, stats is not None, "--query-image")
    q_norm = _normalized(q_vol, stats)
    geom = q_vol.geometry
    z_min, z_max = _parse_range(query_range, q_vol.n_slices, Path(query_image))
    assignment = chunk_assignment(z_min, z_max, cfg.eval.n_parts)
    fg_q = predict_chunks(
        model,
        sup_images,
        sup_masks,
        q_norm,
        assignment,
        cfg.data.input_size,
        cfg.eval.batch_size,
        dev,
        amp=cfg.train.amp,
        channels_last=cfg.train.channels_last,
        geometry=geom,
    )
    pred = np.zeros(geom.canon_shape, dtype=np.uint8)
    for z, mask in fg_q.items():
        pred[:, :, z] = mask
    pred = geom.from_canonical(pred)
    save_nifti(out, pred, geom.file_affine)
    one = len(supports) == 1
    return {
        "out": str(out),
        "checkpoint": str(checkpoint),
        "shots": len(supports),
        "support_slices": list(supports[0].slices) if one else [list(s.slices) for s in supports],
        "query_range": [int(z_min), int(z_max)],
        "predicted_voxels": int(pred.sum()),
        "shape": list(pred.shape),
        "orientation": {"file": "".join(_axcodes(geom.file_affine)), "model": "".join(_canon())},
        "in_plane": geom.inplane,
        "intensity": {"support": s_notes[0] if one else s_notes, "query": q_note},
    }


def _axcodes(affine):
    from ..data.geometry import axcodes

    return axcodes(affine)


def _canon():
    from ..data.geometry import CANONICAL_AXCODES

    return CANONICAL_AXCODES


__all__ = ["segment_files"]
