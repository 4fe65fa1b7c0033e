"""Model inputs from model-grid arrays: one slice as a 3-channel float tensor, one mask as an int64 tensor."""

from __future__ import annotations

import numpy as np

from .geometry import MODEL_SIZE, downsample_mask

#: In-plane size of every slice (paper Sec. 4.3: images are scaled to 3 x 256 x 256).
SLICE_SIZE = MODEL_SIZE


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
