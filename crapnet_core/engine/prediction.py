"""The 1-shot protocol's slice rules and the prediction core, shared by the evaluation and ``crapnet segment``.

Pure rules (the protocol of :mod:`crapnet_core.engine.evaluation`, steps 2-3): the support slice
of each of the ``n_parts`` chunks (:func:`support_positions`, :func:`support_slices`) and the
chunk of each query slice in the organ range (:func:`chunk_index`, :func:`chunk_assignment`).
Prediction: support tensors of the chosen slices (:func:`support_tensors`, :class:`SupportSet`,
:func:`stack_shots` for K shots) and the query slices of each chunk segmented with its support
slice (:func:`predict_chunks`), mapped back to the file's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.geometry import MODEL_SIZE


# ---------------------------------------------------------------------- protocol (pure)
def support_positions(n: int, n_parts: int = 3) -> list[int]:
    """Positions ``floor(f_p * n)``, ``f_p = (2p + 1) / (2 n_parts)``, in a list of ``n`` support slices.

    Exact integer arithmetic (``((2p + 1) * n) // (2 n_parts)``), so no float round-off.
    ``n_parts = 3`` gives f_p = 1/6, 1/2, 5/6 (SSL-ALPNet's ``get_support`` percentages).
    """
    if n < 1:
        raise ValueError("support_positions: the support scan has no slice with the organ")
    if n_parts < 1:
        raise ValueError(f"support_positions: n_parts={n_parts} must be at least 1")
    return [((2 * p + 1) * n) // (2 * n_parts) for p in range(n_parts)]


def support_slices(organ_slices: Sequence[int], n_parts: int = 3) -> list[int]:
    """The support slice index (z) used for each chunk, from the sorted slices containing the organ."""
    zs = sorted(int(z) for z in organ_slices)
    return [zs[i] for i in support_positions(len(zs), n_parts)]


def chunk_index(z: int, z_min: int, z_max: int, n_parts: int = 3) -> int:
    """Chunk (0..n_parts-1) of query slice ``z`` in the organ range ``[z_min, z_max]``.

    ``floor((z - z_min) / ((z_max - z_min) / n_parts))`` clipped to ``[0, n_parts - 1]``, as
    SSL-ALPNet's ``ValidationDataset``; computed as ``((z - z_min) * n_parts) // (z_max - z_min)``
    in integers. A one-slice range is chunk 0.
    """
    if z_max < z_min:
        raise ValueError(f"chunk_index: empty organ range [{z_min}, {z_max}]")
    span = z_max - z_min
    if span == 0:
        return 0
    part = ((int(z) - z_min) * n_parts) // span
    return int(min(max(part, 0), n_parts - 1))


def chunk_assignment(z_min: int, z_max: int, n_parts: int = 3) -> list[tuple[int, int]]:
    """``[(z, chunk), ...]`` for every slice of the organ range ``[z_min, z_max]`` (the scored slices)."""
    return [(z, chunk_index(z, z_min, z_max, n_parts)) for z in range(int(z_min), int(z_max) + 1)]


def organ_range(organ_slices: Sequence[int]) -> tuple[int, int] | None:
    """``(z_min, z_max)`` of the slices containing the organ; None when it is absent."""
    zs = [int(z) for z in organ_slices]
    return (min(zs), max(zs)) if zs else None


# ---------------------------------------------------------------------- prediction core
def _autocast(device, enabled: bool):
    import torch

    if enabled and getattr(device, "type", str(device)) == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def predict_chunks(
    model,
    support_images,
    support_masks,
    query_volume: np.ndarray,
    assignment: Sequence[tuple[int, int]],
    size: int,
    batch_size: int = 8,
    device=None,
    amp: bool = True,
    channels_last: bool = False,
    geometry=None,
) -> dict[int, np.ndarray]:
    """Segment the query slices of ``assignment`` with the support slice of their chunk.

    support_images: float32 ``(n_parts, 3, S, S)``; support_masks: ``(n_parts, S, S)`` {0,1}.
    query_volume: normalised ``(H, W, Z)`` model-grid array (slices are resized to S x S).
    ``assignment``: ``[(z, chunk)]``. Query slices of one chunk go through the model in
    batches of ``batch_size`` with the chunk's support broadcast (support batch 1, query
    batch B). Returns ``{z: bool (H', W')}`` on ``geometry``'s canonical FILE grid
    (:meth:`Geometry.prob_to_canonical`) when ``geometry`` is given, else on ``(H, W)``.

    Decision rule (SSL-ALPNet's reference): a model with ``predict_logits(support_image,
    support_mask, query_image, size)`` (``FewShotSegmenter``) gives its 2 class logits
    bilinearly upsampled in one step to the grid the model slice covers (the file slice, or
    the preset's crop, outside which every voxel is background), and the label is their
    argmax (ties: background). A model offering only ``predict`` (foreground probability at
    S x S, e.g. hand-made test models) is upsampled bilinearly and thresholded at 0.5.
    """
    import torch
    import torch.nn.functional as F

    from ..data.tensors import slice_tensor

    device = torch.device(device or "cpu")
    height, width = query_volume.shape[:2]
    out: dict[int, np.ndarray] = {}
    by_chunk: dict[int, list[int]] = {}
    for z, part in assignment:
        by_chunk.setdefault(int(part), []).append(int(z))
    memory_format = torch.channels_last if (channels_last and device.type == "cuda") else torch.contiguous_format
    for part, zs in sorted(by_chunk.items()):
        s_img = support_images[part : part + 1].to(device).contiguous(memory_format=memory_format)
        s_mask = support_masks[part : part + 1].to(device)
        for start in range(0, len(zs), batch_size):
            batch_z = zs[start : start + batch_size]
            q = torch.stack([slice_tensor(query_volume, z, size) for z in batch_z]).to(device)
            q = q.contiguous(memory_format=memory_format)
            if hasattr(model, "predict_logits"):
                crop = geometry is not None and geometry.inplane == "crop"
                if crop:
                    grid = (MODEL_SIZE, MODEL_SIZE)
                elif geometry is not None:
                    grid = tuple(int(n) for n in geometry.canon_shape[:2])
                else:
                    grid = (height, width)
                with torch.no_grad(), _autocast(device, amp):
                    logits = model.predict_logits(s_img, s_mask, q, size=grid)  # (B, 2, *grid)
                logits = logits.float()
                if crop:  # zero logits outside the crop: a tie, i.e. background
                    logits = geometry.prob_to_canonical(logits)
                fg = (logits.argmax(dim=1) == 1).cpu().numpy()
            else:
                with torch.no_grad(), _autocast(device, amp):
                    prob = model.predict(s_img, s_mask, q)  # (B, S, S) foreground probability
                prob = prob.float()[:, None]
                if geometry is not None:
                    prob = geometry.prob_to_canonical(prob)
                elif prob.shape[-2:] != (height, width):
                    prob = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)
                fg = (prob[:, 0] > 0.5).cpu().numpy()
            for i, z in enumerate(batch_z):
                out[z] = fg[i]
    return out


def support_tensors(
    norm_volume: np.ndarray, binary_mask: np.ndarray, zs: Sequence[int], size: int, source: str = "support"
):
    """Support images ``(len(zs), 3, S, S)`` and masks ``(len(zs), S, S)`` for the chosen slices.

    Masks are shrunk by area pooling (:func:`~crapnet_core.data.geometry.downsample_mask`): an
    annotation smaller than half an input cell keeps its best-covered cell(s) and a warning
    naming ``source`` and the slice says it is below the model's resolution. An empty
    support mask is an error.
    """
    import warnings

    import torch

    from ..data.errors import DatasetError
    from ..data.geometry import downsample_mask
    from ..data.tensors import slice_tensor

    images = torch.stack([slice_tensor(norm_volume, int(z), size) for z in zs])
    masks = []
    for z in zs:
        m2d = np.asarray(binary_mask[:, :, int(z)]) > 0
        if not m2d.any():
            raise DatasetError(f"{source}: the support mask of slice {int(z)} is empty")
        m, below = downsample_mask(m2d, (size, size))
        if below:
            warnings.warn(
                f"{source}: the structure on support slice {int(z)} ({int(m2d.sum())} voxels) is smaller than half "
                f"a model input cell ({size} x {size} input); kept as its best-covered cell(s) -- it is below "
                f"the model's resolution",
                stacklevel=2,
            )
        masks.append(m)
    return images, torch.stack(masks)


@dataclass(frozen=True)
class SupportSet:
    """One support scan prepared for one organ (the protocol's steps 1 and 3).

    scan_id; slices: the chosen support slice per chunk (z, canonical order); n_slices_with_organ;
    images float32 (n_parts, 3, S, S) and masks (n_parts, S, S) {0, 1} (:func:`support_tensors`).
    """

    scan_id: str
    slices: tuple[int, ...]
    n_slices_with_organ: int
    images: Any
    masks: Any


def stack_shots(supports: Sequence[SupportSet]):
    """Support tensors of K support scans for :func:`predict_chunks`.

    One support: its ``(n_parts, 3, S, S)`` images and ``(n_parts, S, S)`` masks as they are (the
    one-shot path). K >= 2: ``(n_parts, K, 3, S, S)`` and ``(n_parts, K, S, S)``, shot j of chunk p
    being support j's slice of chunk p (each support scan contributes its slice at the same relative
    position 1/6, 1/2, 5/6 of its own organ range).
    """
    import torch

    if not supports:
        raise ValueError("stack_shots: no support scan")
    if len(supports) == 1:
        return supports[0].images, supports[0].masks
    return (torch.stack([s.images for s in supports], dim=1), torch.stack([s.masks for s in supports], dim=1))


__all__ = [
    "support_positions",
    "support_slices",
    "chunk_index",
    "chunk_assignment",
    "organ_range",
    "predict_chunks",
    "support_tensors",
    "SupportSet",
    "stack_shots",
]
