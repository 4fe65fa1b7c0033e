"""Intensities: the training scans' profile and convention, the CT window, normalisation (SSL-ALPNet).

MR is z-scored per volume; CT uses the mean and standard deviation over every voxel of the
fold's training scans (:func:`normalization_stats`). :func:`ct_window` is the one CT window
(SSL-ALPNet's preprocessing: HU clipped to [-125, 275], mapped to 0..255), used by data
preparation and by ``crapnet segment`` for a raw-HU query scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import DatasetError
from .spec import DatasetSpec
from .volumes import Volume, load_volume

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
CT_WINDOW = (-125.0, 275.0)


def ct_window(x: np.ndarray, window: tuple[float, float] = CT_WINDOW) -> np.ndarray:
    """HU -> 0..255 float32 (same shape): clip to ``window`` (HU, default :data:`CT_WINDOW`), map it linearly."""
    lo, hi = window
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


def normalization_params(
    volume: Volume, spec: DatasetSpec, stats: tuple[float, float] | None = None
) -> tuple[float, float]:
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
