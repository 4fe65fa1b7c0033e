"""CARAFE++ content-aware reassembly for downsampling (Sec. 3.6, Eq. 14; Wang et al. 2019/2021).

Pure PyTorch (a sum over the window's taps; mmcv's compiled CARAFE op only implements
upsampling and is not available here), tested against a naive loop.

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


class _TapReassembly(torch.autograd.Function):
    """Eq. 14 as a sum over the k x k taps of strided views of the padded map (CPU path of
    :func:`reassemble`): out = sum_t W_t * xp[:, i_t::sigma, j_t::sigma, :], backward likewise
    tap by tap, channels last (so that every tap's product runs along contiguous channels).
    No (C k^2 x L) unfolded copy of the map and no per-location matrix-vector products, which
    is what ``unfold`` + ``einsum`` cost on CPU (benchmarks/bench_attention.py times the whole
    step, this included, against the former form).

    forward(xp (B, C, Hp, Wp) padded map, kernels (B, k*k, ho, wo), k, sigma) -> (B, C, ho, wo)
    """

    @staticmethod
    def forward(ctx, xp, kernels, kernel_size, factor):
        k, (ho, wo) = kernel_size, kernels.shape[-2:]
        ctx.kernel_dtype = kernels.dtype
        xl = xp.permute(0, 2, 3, 1).contiguous()  # (B, Hp, Wp, C)
        kl = kernels.to(xp.dtype).permute(0, 2, 3, 1)  # (B, ho, wo, k*k)
        out = None
        for t in range(k * k):
            tap = _tap(xl, t, k, factor, ho, wo)
            w = kl[..., t : t + 1]
            out = tap * w if out is None else out.addcmul_(tap, w)
        ctx.save_for_backward(xl, kl)
        ctx.k, ctx.factor = k, factor
        return out.permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad):
        xl, kl = ctx.saved_tensors
        k, factor = ctx.k, ctx.factor
        ho, wo = kl.shape[1:3]
        gl = grad.permute(0, 2, 3, 1).contiguous()  # (B, ho, wo, C)
        d_xl = torch.zeros_like(xl) if ctx.needs_input_grad[0] else None
        d_kl = torch.empty_like(kl) if ctx.needs_input_grad[1] else None
        for t in range(k * k):
            if d_xl is not None:
                _tap(d_xl, t, k, factor, ho, wo).addcmul_(gl, kl[..., t : t + 1])
            if d_kl is not None:
                d_kl[..., t] = torch.linalg.vecdot(gl, _tap(xl, t, k, factor, ho, wo), dim=-1)
        d_xp = None if d_xl is None else d_xl.permute(0, 3, 1, 2)
        d_kernels = None if d_kl is None else d_kl.permute(0, 3, 1, 2).to(ctx.kernel_dtype)
        return d_xp, d_kernels, None, None


def _tap(xl: torch.Tensor, t: int, k: int, factor: int, ho: int, wo: int) -> torch.Tensor:
    """The (B, ho, wo, C) view of tap t = (i, j) of every window: xl[:, i + sigma h', j + sigma w', :]."""
    i, j = divmod(t, k)
    return xl[:, i : i + factor * (ho - 1) + 1 : factor, j : j + factor * (wo - 1) + 1 : factor]


def reassemble(
    x: torch.Tensor,
    kernels: torch.Tensor,
    kernel_size: int,
    factor: int,
    window: str = "centred",
    by_taps: bool | None = None,
) -> torch.Tensor:
    """Eq. 14: p(h', w') = sum_{i,j < k} W_(h',w')(i, j) x(sigma h' + s + i, sigma w' + s + j).

    s = :func:`window_start` (``centred``: c - r with c = (sigma-1)//2, r = k//2; ``aligned``: 0).
    x: (B, C, H, W); kernels: (B, k*k, H', W') (already normalised), H' = ceil(H / sigma);
    taps outside the map count as zeros. Returns (B, C, H', W').

    ``by_taps`` (default: on CPU) sums the k x k taps one by one (:class:`_TapReassembly`);
    otherwise the unfolded windows are weighted in one ``einsum`` (fewer kernel launches, for
    GPUs; the only form before issue 21). Same values up to float rounding.
    """
    b, c, h, w = x.shape
    k = kernel_size
    ho, wo = kernels.shape[-2:]
    if kernels.shape[1] != k * k:
        raise ValueError(f"reassemble: kernels have {kernels.shape[1]} channels, expected {k}*{k}")
    xp = _crop_or_pad(x, k, factor, window_start(k, factor, window))
    n_h, n_w = (xp.shape[-2] - k) // factor + 1, (xp.shape[-1] - k) // factor + 1
    if (n_h, n_w) != (ho, wo):
        raise ValueError(f"reassemble: {n_h * n_w} windows for a {ho}x{wo} kernel grid (input {h}x{w})")
    if by_taps if by_taps is not None else x.device.type == "cpu":
        return _TapReassembly.apply(xp, kernels, k, factor)
    cols = F.unfold(xp, kernel_size=k, stride=factor).view(b, c, k * k, ho * wo)  # (B, C, k*k, L)
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
        self,
        channels: int = 256,
        factor: int = 4,
        kernel_size: int = 5,
        encoder_kernel: int = 3,
        compressed: int = 64,
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
        self.by_taps: bool | None = None  # reassemble's form (None: by taps on CPU); runtime only
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
        return reassemble(x, self.predict_kernels(x), self.kernel_size, self.factor, self.window, self.by_taps)


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
