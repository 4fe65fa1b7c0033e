"""The body mask of the superpixel step: threshold (fixed or Otsu), mask, and the check that it keeps the organs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .spec import DatasetSpec

#: Share of the labelled organ voxels the body mask must keep (else a warning names the scan).
BODY_MIN_ORGAN_SHARE = 0.5
#: Share of the image the body mask must keep (else a warning: the threshold is above the body).
BODY_MIN_IMAGE_SHARE = 0.05


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
        return (
            f"{path}: the body mask (intensity > {thr:.4g}) keeps only {100 * report['organ_share']:.0f}% of the "
            f"labelled organ voxels; set 'body_threshold' in the label map (a number, or \"otsu\")"
        )
    if report["image_share"] < BODY_MIN_IMAGE_SHARE:
        return (
            f"{path}: the body mask (intensity > {thr:.4g}) keeps only {100 * report['image_share']:.1f}% of the "
            f"image; the threshold is above the body's intensities; set 'body_threshold' in the label map "
            f'(a number, or "otsu")'
        )
    return None
