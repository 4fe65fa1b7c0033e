"""CARAFE++ content-aware reassembly for downsampling (Sec. 3.6, Eq. 14; Wang et al. 2019/2021).

Pure PyTorch (unfold + einsum); mmcv's compiled CARAFE op only implements upsampling and
is not available here, so the operator is written out (and tested against a naive loop).

Geometry (our reading of Eq. 14 for a downsampling factor sigma), two window placements
(``ModelConfig.carafe_window``):

``centred`` (default; the reading since config version 1): output location (h', w')
    reassembles the k x k neighbourhood of input location (sigma h' + c, sigma w' + c) with
    c = (sigma - 1) // 2, zero-padded at the border: window rows
    sigma h' + c - k//2 .. sigma h' + c - k//2 + k - 1 (4h'-1..4h'+3 for sigma = 4, k = 5), so
    for k > sigma some taps lie in the neighbouring cells (9 of 25 for sigma 4, k 5) while the
    0.95 rule of the prototypes thresholds the mask fraction of cell (h', w') only.
``aligned``: the window is the sigma x sigma cell itself (k = sigma, rows sigma h' ..
    sigma h' + sigma - 1): the prototype of a cell is a content-weighted average of that
    cell's features only, the learned counterpart of SSL-ALPNet's average pooling.

The location-wise kernel W_(h',w') is predicted from the content: channel compressor
(1 x 1 conv, C -> C_m), content encoder (k_enc x k_enc conv with stride sigma, centred as in
``centred``, C_m -> k^2) and a softmax over the k^2 kernel positions (Eq. 14's normalised
kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


WINDOWS = ("centred", "aligned")


def window_start(kernel: int, factor: int, window: str = "centred") -> int:
    """Offset of the first row (column) of the window of cell o from sigma * o.

    ``centred``: (sigma - 1) // 2 - k // 2; ``aligned``: 0 (needs k == sigma).
    """
    if window == "centred":
        return (factor - 1) // 2 - kernel // 2
    if window == "aligned":
        if kernel != factor:
            raise ValueError(f"CARAFE++ aligned window: kernel size {kernel} must equal the factor {factor}")
        return 0
    raise ValueError(f"CARAFE++ window: {window!r} is not one of {', '.join(WINDOWS)}")


def _crop_or_pad(x: torch.Tensor, kernel: int, factor: int, start: int | None = None) -> torch.Tensor:
    """Pad (or crop) ``x`` so that ``unfold(kernel, stride=factor)`` yields exactly the windows
    starting at factor*o + start (default start: the centred window, (factor-1)//2 - k//2),
    o in range(ceil(size/factor))."""
    h, w = x.shape[-2:]
    n_h, n_w = -(-h // factor), -(-w // factor)
    if start is None:
        start = window_start(kernel, factor, "centred")
    before = -start  # rows/cols of zeros before the first window
    if before < 0:  # kernel smaller than the cell: the first window starts inside the map
        x = x[..., -before:, -before:]
    # padded length needed: last window starts at factor*(n-1) and spans kernel
    after_h = factor * (n_h - 1) + kernel - (x.shape[-2] + max(before, 0))
    after_w = factor * (n_w - 1) + kernel - (x.shape[-1] + max(before, 0))
    b0 = max(before, 0)
    x = F.pad(x, (b0, max(after_w, 0), b0, max(after_h, 0)))
    return x[..., : factor * (n_h - 1) + kernel, : factor * (n_w - 1) + kernel]


def reassemble(
    x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, factor: int, window: str = "centred"
) -> torch.Tensor:
    """Eq. 14: p(h', w') = sum_{i,j < k} W_(h',w')(i, j) x(sigma h' + s + i, sigma w' + s + j).

    s = :func:`window_start` (``centred``: c - r with c = (sigma-1)//2, r = k//2; ``aligned``: 0).
    x: (B, C, H, W); kernels: (B, k*k, H', W') (already normalised), H' = ceil(H / sigma);
    taps outside the map count as zeros. Returns (B, C, H', W').
    """
    b, c, h, w = x.shape
    k = kernel_size
    ho, wo = kernels.shape[-2:]
    if kernels.shape[1] != k * k:
        raise ValueError(f"reassemble: kernels have {kernels.shape[1]} channels, expected {k}*{k}")
    xp = _crop_or_pad(x, k, factor, window_start(k, factor, window))
    cols = F.unfold(xp, kernel_size=k, stride=factor)  # (B, C*k*k, L)
    if cols.shape[-1] != ho * wo:
        raise ValueError(f"reassemble: {cols.shape[-1]} windows for a {ho}x{wo} kernel grid (input {h}x{w})")
    cols = cols.view(b, c, k * k, ho * wo)
    out = torch.einsum("bckl,bkl->bcl", cols, kernels.reshape(b, k * k, ho * wo).to(cols.dtype))
    return out.view(b, c, ho, wo)


class CARAFEDownsample(nn.Module):
    """CARAFE++ downsampling by ``factor`` (Eq. 14): (B, C, H, W) -> (B, C, H/sigma, W/sigma).

    channels: C; compressed: C_m of the channel compressor; kernel_size: k (k_up in CARAFE,
    reassembly window, r = k // 2); encoder_kernel: k_enc of the content encoder; window:
    ``centred`` or ``aligned`` (module docstring; ``aligned`` uses k = sigma and ignores
    ``kernel_size``).
    """

    def __init__(
        self, channels: int = 256, factor: int = 4, kernel_size: int = 5, encoder_kernel: int = 3, compressed: int = 64,
        window: str = "centred",
    ) -> None:
        super().__init__()
        if factor < 1 or kernel_size < 1 or encoder_kernel < 1:
            raise ValueError(
                f"CARAFEDownsample: factor, kernel_size, encoder_kernel must be >= 1, got "
                f"{factor}, {kernel_size}, {encoder_kernel}"
            )
        if window == "aligned":
            kernel_size = factor
        window_start(kernel_size, factor, window)  # validates the window name
        self.window = window
        self.factor = factor
        self.kernel_size = kernel_size
        self.encoder_kernel = encoder_kernel
        self.compressor = nn.Conv2d(channels, compressed, kernel_size=1)
        self.encoder = nn.Conv2d(compressed, kernel_size * kernel_size, kernel_size=encoder_kernel, stride=factor)

    def predict_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel prediction: compressor -> content encoder (stride sigma) -> softmax over k^2.

        Returns (B, k*k, ceil(H/sigma), ceil(W/sigma)).
        """
        c = self.compressor(x)
        c = _crop_or_pad(c, self.encoder_kernel, self.factor)
        logits = self.encoder(c)
        return torch.softmax(logits.float(), dim=1).to(logits.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reassemble(x, self.predict_kernels(x), self.kernel_size, self.factor, self.window)


def reassemble_naive(
    x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, factor: int, window: str = "centred"
) -> torch.Tensor:
    """Loop reference of :func:`reassemble` (Eq. 14 written literally; for tests only).

    ``centred``: window of cell (h', w') around (sigma h' + (sigma-1)//2, ...) with offsets
    -k//2 .. k-1-k//2; ``aligned``: rows/cols sigma h' .. sigma h' + sigma - 1 (k = sigma).
    """
    b, c, h, w = x.shape
    k = kernel_size
    if window == "centred":
        r, off = k // 2, (factor - 1) // 2
    elif window == "aligned":
        assert k == factor, "aligned window needs kernel_size == factor"
        r, off = 0, 0
    else:
        raise ValueError(window)
    ho, wo = kernels.shape[-2:]
    out = x.new_zeros(b, c, ho, wo)
    for n in range(b):
        for hp in range(ho):
            for wp in range(wo):
                ch, cw = factor * hp + off, factor * wp + off
                for i in range(-r, k - r):
                    for j in range(-r, k - r):
                        y, xx = ch + i, cw + j
                        if 0 <= y < h and 0 <= xx < w:
                            out[n, :, hp, wp] += kernels[n, (i + r) * k + (j + r), hp, wp] * x[n, :, y, xx]
    return out


__all__ = ["CARAFEDownsample", "WINDOWS", "window_start", "reassemble", "reassemble_naive"]
