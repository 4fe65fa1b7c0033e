"""Support-query attention with cycle resemblance (Sec. 3.4-3.5, Eq. 1-2 and 5-13, Fig. 2/4).

Reading of the paper used here (each choice is also stated in book/method.md):

* Features are flattened to pixels, x_s, x_q in R^{D x HW} (Sec. 3.4) and embedded by 1 x 1
  convolutions theta (the updated side), phi (the other side) and g (values, Eq. 5-6).
* Affinity (Eq. 9, support branch): A[j, i] = theta(x_s)_j . phi(x_q)_i / sqrt(d) for support
  pixel j and query pixel i (batched matrix product). The 1/sqrt(d) scale (as in CyCTR's
  transformer attention) only changes the softmax temperature; the argmaxes of Eq. 11-12 are
  unaffected.
* Cycle (Eq. 11-12): i*(j) = argmax_i A[j, i] (best query pixel of support pixel j), then
  j*(j) = argmax_j' A[j', i*(j)] (best support pixel of that query pixel).
* Resemblance (Eq. 13): r_j = cos(x_s(j), x_s(j*(j))) on the block's input support features;
  w = softmax_j(r) over the support pixels, multiplied by HW so that the weights average one.
* Pairwise function f (Eq. 1): support pixel j gathers the values g(x_s) with the weights
  softmax_{j'}(A[j', i*(j)]): the support pixels that resemble j's best query match, i.e. a
  soft version of the cycle's end point j* (its argmax is exactly j*). The normalisation
  1/C(x) is that softmax. The result is scaled by w_j, so pixels whose cycle comes back to a
  resembling pixel count more: y_s(j) = w_j sum_{j'} softmax_{j'}(A[j', i*(j)]) g(x_s)(j').
* Residual block (Eq. 7): z_s = W_z y_s + x_s, with the 1 x 1 output projection W_z
  initialised to zero, so every block is the identity at initialisation (Wang et al. 2018).
* The query branch (Eq. 2, 10) mirrors all of this with the roles of support and query swapped.

The affinity, argmaxes, softmaxes and cosines run in float32 with autocast disabled (argmax
ties and the softmax over HW are sensitive to bfloat16); the 1 x 1 convolutions and the value
aggregation follow the ambient autocast dtype.

**A variant beyond the paper: learned temperatures** (``ModelConfig.attention_temperature``,
``temperature="learned"`` here; variant name ``crapnet-temp``). Eq. 13 as published is a
softmax over cosines r_j in [-1, 1] without a temperature, so two weights differ by at most a
factor e^2 and the largest weight is at most e^2 / (e^2 + N - 1) of the total (2.8 % at
N = 256 pixels): Eq. 13 cannot single out a pixel however well the cycle matches. The variant
gives every block two learned positive scalars, kept as logarithms:

* a temperature tau of Eq. 13: w = N softmax_j(r_j / tau), tau = exp(log_temperature),
  initialised to 1 (the published formula); tau -> 0 approaches a one-hot weight;
* the scale s of the affinity of Eq. 9/10: A = s theta(x)^T phi(x'), s = exp(log_scale),
  initialised to 1/sqrt(d); it sets the temperature of Eq. 1's column softmax (the argmaxes of
  Eq. 11-12 do not depend on it).

At initialisation the variant computes exactly what the fixed model computes. Both scalars
are trained with the other weights (the optimiser's weight decay applies to their
logarithms, i.e. pulls tau towards 1 and s towards 1, negligibly at lr 1e-3 and 5e-4).

**Two implementations of the same computation.** :class:`CycleResemblanceBlock` is the
reading above written block by block and differentiated by autograd: the reference, used by
the diagnostics (which hook the blocks) and by the tests. :class:`SupportQueryAttention` runs
the whole stack through :mod:`crapnet_core.models.attention_fused` (both branches batched,
pixel-major, a hand-written backward; issue 21) whenever the two sides have the same batch
and channels and no block carries a hook (a support of K shots, larger than the query: each
branch as its own group of the same batched blocks); otherwise, or with ``fused = False``,
block by block. Both give
the same outputs and gradients up to float32 rounding (tests/test_attention_fused.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crapnet_core.models.attention_fused import (
    BLOCK_PARAMETERS,
    LEARNED_PARAMETERS,
    CycleBlockFunction,
    TwoBranchStackFunction,
    compact_by_default,
    memory_format_of,
)
from crapnet_core.models.config import ATTENTION_TEMPERATURES as TEMPERATURES  # fixed, learned


@dataclass
class CycleResemblance:
    """Intermediate quantities of Eq. 9-13 for one direction (``updated`` <- ``other``).

    affinity: (B, N_u, N_o) float32, A[j, i] between updated pixel j and other pixel i (Eq. 9/10).
    best_other: (B, N_u) int64, i*(j) (Eq. 11).
    cycle_back: (B, N_u) int64, j*(j) (Eq. 12).
    resemblance: (B, N_u) float32, cos(x_u(j), x_u(j*)) (Eq. 13, before the softmax).
    weights: (B, N_u) float32, softmax_j(resemblance / tau) * N_u (mean one; tau = 1 as published).
    column_softmax: (B, N_u, N_o) float32, softmax over j' of A[j', i] for every column i.
    """

    affinity: torch.Tensor
    best_other: torch.Tensor
    cycle_back: torch.Tensor
    resemblance: torch.Tensor
    weights: torch.Tensor
    column_softmax: torch.Tensor

    @property
    def attention(self) -> torch.Tensor:
        """(B, N_u, N_u) pairwise weights softmax_{j'} A[j', i*(j)] (row j sums to one).

        For inspection and tests only: the blocks never build this N_u x N_u matrix (they
        aggregate per column of the other side first, then gather, see
        :meth:`CycleResemblanceBlock.forward`).
        """
        cs = self.column_softmax
        idx = self.best_other.unsqueeze(1).expand(-1, cs.shape[1], -1)
        return torch.gather(cs, 2, idx).transpose(1, 2)


def _no_autocast(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1 x 1 ``conv`` applied to flattened pixels x (B, C_in, N) -> (B, C_out, N).

    Same result as ``conv`` on the unflattened map, written as one matrix product: the blocks
    work on flattened pixels anyway, and on CPU this avoids PyTorch's im2col convolution path
    for small maps (measured 5-10 % faster for a 10-block stack at 16 x 16 and 32 x 32).
    """
    w = conv.weight.view(conv.out_channels, conv.in_channels)
    y = torch.matmul(w, x)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1).to(y.dtype)


def cycle_resemblance(
    emb_updated: torch.Tensor,
    emb_other: torch.Tensor,
    x_updated: torch.Tensor,
    scale: float | torch.Tensor = 1.0,
    temperature: torch.Tensor | float | None = None,
) -> CycleResemblance:
    """Eq. 9-13 for the pixels of the updated side.

    emb_updated: (B, d, N_u) theta-embedded features of the side being updated.
    emb_other: (B, d, N_o) phi-embedded features of the other (fixed) side.
    x_updated: (B, D, N_u) un-embedded input features of the updated side (for the cosine).
    scale: multiplier of the affinity (1/sqrt(d) in the blocks; a scalar tensor when learned).
    temperature: tau of Eq. 13's softmax (None: none, as published; a scalar tensor when learned).

    Cost: one (N_u x N_o) affinity, two argmaxes and one softmax over it; j* comes from a
    gather of the per-column argmax (no N_u x N_u tensor).
    """
    with _no_autocast(emb_updated.device.type):
        eu = emb_updated.float()
        eo = emb_other.float()
        affinity = torch.bmm(eu.transpose(1, 2), eo) * scale  # (B, N_u, N_o)  Eq. 9/10
        best_other = affinity.argmax(dim=2)  # i*(j), Eq. 11
        best_back = affinity.argmax(dim=1)  # (B, N_o): argmax_j' A[j', i] for every column i
        cycle_back = torch.gather(best_back, 1, best_other)  # j*(j) = best_back[i*(j)], Eq. 12
        xu = x_updated.float()
        x_back = torch.gather(xu, 2, cycle_back.unsqueeze(1).expand(-1, xu.shape[1], -1))
        resemblance = F.cosine_similarity(xu, x_back, dim=1, eps=1e-8)  # Eq. 13 (inside)
        logits = resemblance if temperature is None else resemblance / temperature
        weights = torch.softmax(logits, dim=1) * resemblance.shape[1]  # Eq. 13, mean one
        column_softmax = torch.softmax(affinity, dim=1)
    return CycleResemblance(affinity, best_other, cycle_back, resemblance, weights, column_softmax)


def _check_temperature(temperature: str) -> str:
    if temperature not in TEMPERATURES:
        raise ValueError(f"model.attention_temperature: {temperature!r} is not one of {', '.join(TEMPERATURES)}")
    return temperature


class CycleResemblanceBlock(nn.Module):
    """One support-query attention block (Eq. 1/2 + 5-13, residual Eq. 7/8) updating one side.

    forward(x_updated (B, D, H, W), x_other (B, D, H', W')) -> z (B, D, H, W)
    z = W_z(y) + x_updated with W_z zero-initialised (identity at initialisation).
    temperature: ``fixed`` (Eq. 13 as published, affinity scale 1/sqrt(d)) or ``learned``
    (parameters ``log_temperature`` and ``log_scale``; module docstring).
    """

    def __init__(self, channels: int = 256, inner_channels: int = 64, temperature: str = "fixed") -> None:
        super().__init__()
        self.channels = channels
        self.inner_channels = inner_channels
        self.temperature = _check_temperature(temperature)
        self.theta = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.g = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.out = nn.Conv2d(inner_channels, channels, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = 1.0 / math.sqrt(inner_channels)
        if self.temperature == "learned":
            self.log_temperature = nn.Parameter(torch.zeros(()))  # tau = 1: Eq. 13 as published
            self.log_scale = nn.Parameter(torch.tensor(math.log(self.scale)))  # s = 1/sqrt(d)

    def affinity_scale(self) -> float | torch.Tensor:
        """s of A = s theta^T phi: 1/sqrt(d), or exp(log_scale) (a scalar tensor) when learned."""
        return self.log_scale.exp() if self.temperature == "learned" else self.scale

    def resemblance_temperature(self) -> torch.Tensor | None:
        """tau of Eq. 13's softmax: None (none, as published), or exp(log_temperature) when learned."""
        return self.log_temperature.exp() if self.temperature == "learned" else None

    def cycle(self, x_updated: torch.Tensor, x_other: torch.Tensor) -> CycleResemblance:
        """The Eq. 9-13 quantities of this block (for inspection and tests)."""
        xu = x_updated.flatten(2)
        eu = pointwise(self.theta, xu)
        eo = pointwise(self.phi, x_other.flatten(2))
        return cycle_resemblance(eu, eo, xu, self.affinity_scale(), self.resemblance_temperature())

    def forward(self, x_updated: torch.Tensor, x_other: torch.Tensor) -> torch.Tensor:
        if x_updated.shape[:2] != x_other.shape[:2]:
            raise ValueError(
                f"CycleResemblanceBlock: batch/channels of the two sides differ: "
                f"{tuple(x_updated.shape)} vs {tuple(x_other.shape)}"
            )
        b, _, h, w = x_updated.shape
        cyc = self.cycle(x_updated, x_other)
        values = pointwise(self.g, x_updated.flatten(2))  # (B, d, N_u), Eq. 5/6
        # y(j) = w_j sum_j' softmax_j'(A[j', i*(j)]) g(j')  (Eq. 1, 1/C = the softmax):
        # aggregate once per column i of the other side, then pick column i*(j) for every j
        per_column = torch.bmm(values, cyc.column_softmax.to(values.dtype))  # (B, d, N_o)
        idx = cyc.best_other.unsqueeze(1).expand(-1, self.inner_channels, -1)
        y = torch.gather(per_column, 2, idx) * cyc.weights.unsqueeze(1).to(values.dtype)  # (B, d, N_u)
        z = pointwise(self.out, y).reshape(b, self.channels, h, w)
        return z.to(x_updated.dtype) + x_updated  # Eq. 7/8


class SupportQueryAttention(nn.Module):
    """Stack of cycle-resemblance blocks (Fig. 2 two-branch, Fig. 4 one-branch).

    branches=2: the support branch (n_blocks blocks) updates the support features with the
    query features fixed at the encoder output; the query branch (n_blocks blocks) updates the
    query features with the support features fixed at the encoder output. The branches are
    independent (they can run in parallel).
    branches=1: n_blocks steps, each updating both sides at once from the previous step's
    pair (the support and query sub-blocks of a step read the same inputs).
    temperature: ``fixed`` or ``learned`` for every block (:class:`CycleResemblanceBlock`).

    forward(x_s (B, D, H, W), x_q (B, D, H', W')) -> (z_s, z_q), the shapes of x_s and x_q.

    ``fused`` (default True): run the stack as one batched computation
    (:mod:`crapnet_core.models.attention_fused`) when x_s and x_q have the same batch and
    channels (sizes may differ: k shots) and no block has a forward hook; False: always block by
    block (the reference). ``compact``
    (default None: on CPU outside ``torch.compile``): the fused path's used-columns form.
    Runtime only: parameters and checkpoints are the same either way.
    """

    def __init__(
        self,
        channels: int = 256,
        inner_channels: int = 64,
        n_blocks: int = 5,
        branches: int = 2,
        temperature: str = "fixed",
    ) -> None:
        super().__init__()
        if not 1 <= int(n_blocks) <= 15:
            raise ValueError(f"model.n_blocks: {n_blocks} is outside 1..15")
        if branches not in (1, 2):
            raise ValueError(f"model.branches: {branches} must be 1 or 2")
        self.branches = branches
        self.n_blocks = int(n_blocks)
        self.channels, self.inner_channels = int(channels), int(inner_channels)
        self.temperature = _check_temperature(temperature)
        self.fused = True
        self.compact: bool | None = None
        self.support_blocks = nn.ModuleList(
            CycleResemblanceBlock(channels, inner_channels, temperature) for _ in range(n_blocks)
        )
        self.query_blocks = nn.ModuleList(
            CycleResemblanceBlock(channels, inner_channels, temperature) for _ in range(n_blocks)
        )

    def uses_fused(self, x_s: torch.Tensor, x_q: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the batched path for these inputs (see the class docstring)."""
        if (
            not self.fused
            or x_s.dim() != 4
            or x_q.dim() != 4
            or x_s.shape[:2] != x_q.shape[:2]
            or x_s.dtype != x_q.dtype
        ):
            return False
        # hooks on a block (the diagnostics' trace_attention) must see its calls: block by block then
        # (module-global hooks, e.g. FlopCounterMode's, only track nesting and see the stack's call)
        return not any(
            blk._forward_hooks or blk._forward_pre_hooks for blk in (*self.support_blocks, *self.query_blocks)
        )

    def forward(self, x_s: torch.Tensor, x_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.uses_fused(x_s, x_q):
            return self._forward_fused(x_s, x_q)
        if self.branches == 2:
            z_s = x_s
            for block in self.support_blocks:
                z_s = block(z_s, x_q)
            z_q = x_q
            for block in self.query_blocks:
                z_q = block(z_q, x_s)
            return z_s, z_q
        z_s, z_q = x_s, x_q
        for sb, qb in zip(self.support_blocks, self.query_blocks):
            z_s, z_q = sb(z_s, z_q), qb(z_q, z_s)
        return z_s, z_q

    def _stacked(self, get) -> torch.Tensor:
        """(2, K, ...) of ``get(block)`` over the support blocks then the query blocks (one stack op)."""
        t = torch.stack([get(blk) for blk in (*self.support_blocks, *self.query_blocks)])
        return t.view(2, self.n_blocks, *t.shape[1:])

    def _forward_fused(self, x_s: torch.Tensor, x_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both branches batched (group axis 0: support branch, query branch), pixel-major.

        Support and query of different sizes (k shots: the support holds the pixels of K shots,
        :func:`crapnet_core.models.segmenter.attend_shots`) cannot share one tensor: each branch
        then runs as its own group of the same batched blocks (:meth:`_forward_fused_apart`).
        """
        b, dim, h, w = x_s.shape
        if dim != self.channels:
            raise ValueError(f"SupportQueryAttention: features have {dim} channels, expected {self.channels}")
        if x_s.shape != x_q.shape:
            return self._forward_fused_apart(x_s, x_q)
        compact = compact_by_default(x_s) if self.compact is None else bool(self.compact)
        if self.branches == 2:
            # the whole stack as one autograd node, the parameters passed as they are (no stacking
            # in the autograd graph): TwoBranchStackFunction
            names = BLOCK_PARAMETERS + (LEARNED_PARAMETERS if self.temperature == "learned" else ())
            params = [blk.get_parameter(name) for blk in (*self.support_blocks, *self.query_blocks) for name in names]
            scale = None if self.temperature == "learned" else self.support_blocks[0].scale
            return TwoBranchStackFunction.apply(x_s, x_q, self.n_blocks, scale, compact, *params)
        n, k_, d = h * w, self.n_blocks, self.inner_channels
        xs_t, xq_t = x_s.flatten(2).transpose(1, 2), x_q.flatten(2).transpose(1, 2)  # (B, N, D)
        u = torch.stack([xs_t, xq_t])  # (2, B, N, D): updated sides
        # theta and g stacked (one projection per block)
        w_tg = torch.cat(
            [
                self._stacked(lambda m: m.theta.weight).view(2, k_, d, dim),
                self._stacked(lambda m: m.g.weight).view(2, k_, d, dim),
            ],
            dim=2,
        ).unbind(1)  # K x (2, 2d, D)
        b_tg = torch.cat([self._stacked(lambda m: m.theta.bias), self._stacked(lambda m: m.g.bias)], dim=2).unbind(1)
        # W_z with b_z as its last column
        w_z = torch.cat(
            [
                self._stacked(lambda m: m.out.weight).view(2, k_, dim, d),
                self._stacked(lambda m: m.out.bias).unsqueeze(3),
            ],
            dim=3,
        ).unbind(1)  # K x (2, D, d + 1)
        w_phi = self._stacked(lambda m: m.phi.weight).view(2, k_, d, dim)
        b_phi = self._stacked(lambda m: m.phi.bias)  # (2, K, d)
        if self.temperature == "learned":
            scales = self._stacked(lambda m: m.log_scale).exp().repeat_interleave(b, dim=0).unbind(1)  # K x (2B,)
            taus = self._stacked(lambda m: m.log_temperature).exp().repeat_interleave(b, dim=0).unbind(1)
        else:
            scales, taus = [self.support_blocks[0].scale] * k_, [None] * k_
        # one branch: each side's block k reads the other side's current features; phi of
        # the other side = the other group's rows of the product with the swapped weights
        w_phi_sw, b_phi_sw = w_phi.flip(0), b_phi.flip(0)
        for k in range(k_):
            f = torch.baddbmm(b_phi_sw[:, k].unsqueeze(1), u.view(2, b * n, dim), w_phi_sw[:, k].transpose(1, 2))
            eo = f.flip(0).view(2, b, n, d)
            u = CycleBlockFunction.apply(u, eo, w_tg[k], b_tg[k], w_z[k], scales[k], taus[k], compact)
        z = u.view(2, b, h, w, dim).permute(0, 1, 4, 2, 3)  # (2, B, D, H, W) views
        fmt = memory_format_of(x_s)
        return z[0].contiguous(memory_format=fmt), z[1].contiguous(memory_format=fmt)

    def _block_weights(self, k: int, side: int):
        """Block k of the support (``side`` 0) or query (1) branch as :class:`CycleBlockFunction` takes
        them for one group: (w_tg (1, 2d, D), b_tg (1, 2d), w_z (1, D, d + 1))."""
        blk = (self.support_blocks, self.query_blocks)[side][k]
        d, dim = self.inner_channels, self.channels
        w_tg = torch.cat([blk.theta.weight.view(d, dim), blk.g.weight.view(d, dim)]).unsqueeze(0)
        b_tg = torch.cat([blk.theta.bias, blk.g.bias]).unsqueeze(0)
        w_z = torch.cat([blk.out.weight.view(dim, d), blk.out.bias.unsqueeze(1)], dim=1).unsqueeze(0)
        return w_tg, b_tg, w_z

    def _scale_and_temperature(self, k: int, side: int, b: int):
        """Block k's affinity scale and Eq. 13 temperature for the B episodes of one group."""
        blk = (self.support_blocks, self.query_blocks)[side][k]
        if self.temperature != "learned":
            return blk.scale, None
        return blk.log_scale.exp().expand(b), blk.log_temperature.exp().expand(b)

    def _forward_fused_apart(self, x_s: torch.Tensor, x_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_forward_fused` for a support and a query of different sizes (same batch and
        channels): :class:`CycleBlockFunction` with one group per branch, updated side N_u pixels
        against the other side's N_o (the same block, forward and backward, as the batched path)."""
        b, dim = x_s.shape[:2]
        k_ = self.n_blocks
        flat = [x.flatten(2).transpose(1, 2).contiguous() for x in (x_s, x_q)]  # (B, N_s, D), (B, N_q, D)
        compact = compact_by_default(x_s) if self.compact is None else bool(self.compact)

        def phi(k: int, side: int, other: torch.Tensor) -> torch.Tensor:
            blk = (self.support_blocks, self.query_blocks)[side][k]
            return pointwise(blk.phi, other.transpose(1, 2)).transpose(1, 2).contiguous().unsqueeze(0)  # (1, B, N_o, d)

        def block(k: int, side: int, u: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
            scale, tau = self._scale_and_temperature(k, side, b)
            return CycleBlockFunction.apply(u, phi(k, side, other), *self._block_weights(k, side), scale, tau, compact)

        u = [flat[0].unsqueeze(0), flat[1].unsqueeze(0)]  # (1, B, N, D) per side
        if self.branches == 2:  # each branch against the other side's encoder features
            for side in (0, 1):
                for k in range(k_):
                    u[side] = block(k, side, u[side], flat[1 - side])
        else:  # one branch: step k updates both sides from the previous step's pair
            for k in range(k_):
                u = [block(k, 0, u[0], u[1][0]), block(k, 1, u[1], u[0][0])]
        fmt = memory_format_of(x_s)
        return tuple(z[0].transpose(1, 2).reshape(x.shape).contiguous(memory_format=fmt) for z, x in zip(u, (x_s, x_q)))


__all__ = ["CycleResemblance", "cycle_resemblance", "CycleResemblanceBlock", "SupportQueryAttention", "TEMPERATURES"]
