"""Segment an organ in a new scan from one annotated example (``crapnet segment``).

The same code path as the evaluation (:mod:`crapnet_core.evaluation`): the support
slices are taken at ``floor(f_p * n)`` of the support's organ slices (f_p = 1/6, 1/2, 5/6),
the query's slice range (``query_range``, default every slice, since a new scan has no
label to give the organ's range) is split into 3 equal chunks, chunk p is segmented with
support slice p by :func:`~crapnet_core.evaluation.predict_chunks`.

Input conventions (those of the training data, SSL-ALPNet's preprocessing): axial slices
along the third array axis (``image[:, :, z]``), any in-plane size (slices are resized to
the model's input size and the prediction back). Intensities are normalised as in
training: MR per-volume z-score; CT ``(x - mean) / std`` with the training statistics
stored in the checkpoint, so a CT scan must be in the training data's intensity units.
The output has the query file's shape and affine, 1 = organ, 0 = elsewhere (uint8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import chunk_assignment, predict_chunks, support_slices, support_tensors


def _normalize(array: np.ndarray, stats, path: Path) -> np.ndarray:
    x = np.asarray(array, dtype=np.float32)
    if stats is None:  # MR: per-volume z-score
        std = float(x.std(dtype=np.float64))
        if std == 0:
            raise ValueError(f"{path}: constant image; cannot z-score normalise")
        return (x - np.float32(x.mean(dtype=np.float64))) / np.float32(std)
    return (x - np.float32(stats[0])) / np.float32(stats[1])


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


def segment_files(
    support_image: str | Path,
    support_label: str | Path,
    query_image: str | Path,
    out: str | Path,
    organ_label: int = 1,
    run: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    query_range: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Segment the organ labelled ``organ_label`` in ``support_label`` in ``query_image``; write ``out``.

    Give either ``run`` (a trained run folder) or ``checkpoint``. Returns a small report
    (support slices used, query slice range, predicted voxels, output path).
    """
    from .datasets import read_nifti
    from .experiment import ExperimentConfig
    from .io import save_nifti
    from .training import load_model, read_checkpoint, resolve_device

    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"--out: {out} exists; pass --force to overwrite it")
    if not str(out).endswith((".nii", ".nii.gz")):
        raise ValueError(f"--out: {out} must end with .nii or .nii.gz")
    if run is not None:
        run = Path(run)
        cfg_path = run / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"--run: {run} is not a run folder (no config.json)")
        cfg = ExperimentConfig.load(cfg_path)
        checkpoint = run / "checkpoints" / "last.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--run: {checkpoint} not found; train the run first")
    elif checkpoint is not None:
        state = read_checkpoint(checkpoint)
        if "config" not in state:
            raise ValueError(f"--checkpoint: {checkpoint} holds no config; use --run with its run folder")
        cfg = ExperimentConfig.from_dict(state["config"])
    else:
        raise ValueError("segment: give --run or --checkpoint")
    dev = resolve_device(device or cfg.train.device)
    model, state = load_model(cfg, checkpoint, dev)
    stats = state.get("norm_stats")

    s_img, _, _ = read_nifti(support_image)
    s_lab, _, _ = read_nifti(support_label)
    if s_img.shape != s_lab.shape:
        raise ValueError(f"--support-label: shape {s_lab.shape} differs from --support-image shape {s_img.shape}")
    fg = np.asarray(s_lab) == int(organ_label)
    zs = np.flatnonzero(fg.any(axis=(0, 1)))
    if zs.size == 0:
        raise ValueError(f"--support-label: {support_label} holds no voxel with label {organ_label}")
    chosen = support_slices(zs.tolist(), cfg.eval.n_parts)
    sup_images, sup_masks = support_tensors(_normalize(s_img, stats, Path(support_image)), fg, chosen,
                                            cfg.data.input_size)

    q_img, q_affine, _ = read_nifti(query_image)
    q_norm = _normalize(q_img, stats, Path(query_image))
    z_min, z_max = _parse_range(query_range, q_img.shape[2], Path(query_image))
    assignment = chunk_assignment(z_min, z_max, cfg.eval.n_parts)
    fg_q = predict_chunks(model, sup_images, sup_masks, q_norm, assignment, cfg.data.input_size,
                          cfg.eval.batch_size, dev, amp=cfg.train.amp, channels_last=cfg.train.channels_last)
    pred = np.zeros(q_img.shape, dtype=np.uint8)
    for z, mask in fg_q.items():
        pred[:, :, z] = mask
    save_nifti(out, pred, q_affine)
    return {
        "out": str(out),
        "checkpoint": str(checkpoint),
        "support_slices": [int(z) for z in chosen],
        "query_range": [int(z_min), int(z_max)],
        "predicted_voxels": int(pred.sum()),
        "shape": list(pred.shape),
    }


__all__ = ["segment_files"]
