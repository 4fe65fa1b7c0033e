"""The cycle-resemblance blocks (Eq. 1-2, 5-13) as one batched computation with a hand-written backward.

:class:`~crapnet_core.models.attention.CycleResemblanceBlock` is the literal reading of the
paper, one block at a time, differentiated by autograd. This module computes the same thing
for a whole stack (:class:`~crapnet_core.models.attention.SupportQueryAttention` calls it) with
fewer, larger and cheaper operations (issue 21):

* both branches at once: the support branch's block k and the query branch's block k share
  every operation, their weights stacked on a leading "branch" axis of size P = 2 (a support
  larger than the query, k shots' pixels: one call per branch, P = 1, N_u and N_o differing);
* pixel-major features (P, B, N, D): gathers and scatters over pixels (the cycle's j*, the
  column pick i*(j)) move whole rows, several times faster on CPU than gathers of columns of
  (D, N) (micro-benchmark at `lite` sizes);
* theta and g concatenated into one projection per block; in the two-branch design, the phi
  embeddings of the fixed side for all blocks in one matrix product (the fixed side does not
  change along a branch);
* only the columns that are used: Eq. 1 reads the column softmax of A at the columns
  i*(j) only, and few columns are anyone's best match (a third or less of them in the `lite`
  CRAPNet models we inspected, trained or not; benchmarks/attention_figures.md gives the
  fraction on its episode). The full affinity is computed once for Eq. 11's argmax; its
  softmax, the value product and all their gradients only for the used columns (``compact``;
  on CPU outside ``torch.compile``: elsewhere every column, so that shapes stay static for
  CUDA graphs);
* :class:`CycleBlockFunction`: forward and backward of one block written out (the backward
  of Eq. 1 and Eq. 13 needs about half the passes over the N x N and N x D tensors that
  autograd's op-by-op backward makes): the column softmax is kept unnormalised,
  X = exp(A^T - max), and normalised after the value product (P = X V / rowsum: a division
  of (|I| x d) values instead of (|I| x N)); its backward uses c_i = sum_j S_ij dS_ij =
  dP_i . P_i (a reduction over d instead of N); the cosine's backward uses
  x_j . x_m / (|x_j| |x_m|) = r_m for every m with j*(m) = j (a scatter over N values instead
  of a pass over N x D); the output projection takes its bias as an extra column
  ([Y, 1] [W_z, b_z]^T) and the residual as the product's addend;
* Eq. 11-12's argmaxes from ``torch.max`` (its indices are the first maximum, as ``argmax``'s,
  and it is faster than ``argmax`` on CPU; the row maxima serve the softmax too).

Notation (per group g = (branch, episode); ``u`` the updated side, ``o`` the other side):
X (N_u, D) the block's input, E_o (N_o, d) = phi(x_o), E_u = theta(X), V = g(X) (N_u, d);
M = E_u E_o^T (N_u, N_o), A = s M the affinity of Eq. 9-10 (s = 1/sqrt(d) or learned);
i*(j) = argmax_i M[j, i] (Eq. 11; s > 0 does not move it); the used columns I = {i*(j)};
A_I^T = s E_o[I] E_u^T (|I|, N_u); j*(j) = argmax_j' A[j', i*(j)] (Eq. 12);
r_j = cos(X_j, X_{j*(j)}), w = N_u softmax(r / tau) (Eq. 13; no tau in the paper);
S = softmax over j of A_I^T (the column softmax of A, 1/C(x) of Eq. 1), P = S V (|I|, d);
Y_j = w_j P_{i*(j)}; Z = Y W_z^T + b_z + X (Eq. 7-8).

Precision follows the reference: the projections and the value aggregation in the ambient
autocast dtype, the affinity, argmaxes, softmaxes and cosines in float32. The results equal
the reference's up to float32 rounding (tests/test_attention_fused.py).
"""

from __future__ import annotations

import torch

#: eps of the cosine (as ``F.cosine_similarity(..., eps=1e-8)`` in the reference).
COSINE_EPS = 1e-8


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the reference's 1 x 1 projections run in: autocast's, else the input's."""
    dev = t.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return t.dtype


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``, without a dispatch when it already is (most calls: float32 on CPU)."""
    return t if t.dtype == dtype else t.to(dtype)


def _rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (flat, from :func:`_flat`) of ``t`` (G, N, C) -> (G, M, C)."""
    g, n, c = t.shape
    return t.reshape(g * n, c).index_select(0, index).view(g, -1, c)


def _flat(index: torch.Tensor, group: torch.Tensor, n: int) -> torch.Tensor:
    """Per-group row indices (G, M) into (G, n, C) -> indices into the flattened (G * n, C);
    ``group`` is ``arange(G)`` as a (G, 1) column."""
    return (index + group * n).view(-1)


def compact_by_default(t: torch.Tensor) -> bool:
    """Whether the used-columns form runs: on CPU, outside ``torch.compile`` (data-dependent sizes)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def used_columns(best_other: torch.Tensor, n_other: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns that are some pixel's best match, per group, and each pixel's slot among them.

    best_other: (G, N_u) i*(j). Returns ``used`` (G, U) column indices, ascending, the first
    count_g of each row being group g's used columns and the rest other columns (padding; U is
    the largest count), and ``slot`` (G, N_u): used[g, slot[g, j]] == best_other[g, j].
    """
    mark = torch.zeros(best_other.shape[0], n_other, dtype=torch.uint8, device=best_other.device)
    mark.scatter_(1, best_other, 1)
    width = int(mark.sum(1).max())
    used = torch.argsort(mark, dim=1, descending=True, stable=True)[:, :width]  # used columns first, ascending
    return used, torch.gather(mark.cumsum(1), 1, best_other).sub_(1)


class CycleBlockFunction(torch.autograd.Function):
    """One cycle-resemblance block (Eq. 1/2, 5-13, residual Eq. 7/8) for P parameter groups.

    forward(u (P, B, N_u, D), eo (P, B, N_o, d), w_tg (P, 2d, D), b_tg (P, 2d),
            wz (P, D, d + 1), scale, temperature, compact) -> z (P, B, N_u, D)

    u: the updated side's features, pixel-major; eo: phi of the other side (computed by the
    caller); w_tg/b_tg: theta's and g's 1 x 1 weights stacked (theta first); wz: the output
    projection's weight with its bias as the last column; scale: float, or a (P * B,) tensor
    (a learned affinity scale per group); temperature: None (Eq. 13 as published) or a
    (P * B,) tensor (learned tau); compact: the used-columns form (module docstring).
    Group p uses its own weights for its B episodes.

    The gradient of the cosine is that of rows with |x| >= 1e-8 (``COSINE_EPS``).
    """

    @staticmethod
    def forward(ctx, u, eo, w_tg, b_tg, wz, scale, temperature, compact):
        dev = u.device.type
        cdt = _compute_dtype(u)
        p_, b_, nu, dim = u.shape
        no, d = eo.shape[2], wz.shape[2] - 1
        g_ = p_ * b_
        learned_scale = torch.is_tensor(scale)
        group = torch.arange(g_, device=u.device).unsqueeze(1)
        with torch.autocast(dev, enabled=False):
            uc = _as(u, cdt).view(p_, b_ * nu, dim)
            # [theta(x), g(x)] for every pixel of every episode of a branch: one product per branch
            e = torch.baddbmm(_as(b_tg, cdt).unsqueeze(1), uc, _as(w_tg, cdt).transpose(1, 2)).view(g_, nu, 2 * d)
            eu_f = _as(e[..., :d], torch.float32)
            eo_f = _as(eo.reshape(g_, no, d), torch.float32)
            # Eq. 11: i*(j) = argmax_i M[j, i] (the scale s > 0 does not move an argmax)
            best_other = torch.bmm(eu_f, eo_f.transpose(1, 2)).max(dim=2).indices  # (G, N_u)
            if compact:
                used, slot = used_columns(best_other, no)
                idx_used = _flat(used, group, no)
                eo_used = _rows(eo_f, idx_used)  # (G, U, d)
            else:
                slot, idx_used, eo_used = best_other, None, eo_f
            width = eo_used.shape[1]
            # A^T at the used columns (G, U, N_u): row i holds column i of A (Eq. 9/10)
            if learned_scale:
                at = torch.bmm(eo_used, eu_f.transpose(1, 2)).mul_(scale.view(g_, 1, 1))
            else:
                at = torch.baddbmm(eu_f.new_empty(()).expand(g_, width, nu), eo_used, eu_f.transpose(1, 2),
                                   beta=0.0, alpha=float(scale))
            row_max, best_back = at.max(dim=2, keepdim=True)  # argmax_j A[j, i] for the used columns i
            idx_slot = _flat(slot, group, width)
            idx_back = _flat(best_back.view(-1).index_select(0, idx_slot).view(g_, nu), group, nu)  # j*(j), Eq. 12
            # Eq. 1: the column softmax kept unnormalised, X = exp(A^T - max), normalised after the product
            ex = (at - row_max).exp_() if learned_scale else at.sub_(row_max).exp_()
            row_sum = ex.sum(2, keepdim=True)
            per_col = torch.bmm(_as(ex, cdt), e[..., d:]).div_(_as(row_sum, cdt))  # (G, U, d): sum_j S_ij g(x_j)
            # Eq. 13: r_j = cos(x_j, x_j*)
            uf = _as(u, torch.float32).view(g_, nu, dim)
            norm = torch.linalg.vector_norm(uf, dim=2).clamp_min_(COSINE_EPS)  # (G, N_u)
            ub = _rows(uf, idx_back)  # x_j* (G, N_u, D)
            norm_b = norm.view(-1).index_select(0, idx_back).view(g_, nu)
            r = torch.linalg.vecdot(uf, ub, dim=2).div_(norm * norm_b)
            prob = torch.softmax(r / temperature.view(g_, 1) if temperature is not None else r, dim=1)
            picked = _rows(per_col, idx_slot)  # (G, N_u, d): P_i*(j)
            y = picked * _as((prob * nu).unsqueeze(2), cdt)  # y_j = w_j P_i*(j)
            y_aug = torch.cat([y, y.new_ones(g_, nu, 1)], dim=2)  # [y_j, 1]: the bias column
            if cdt == u.dtype:  # Eq. 7/8: z = x + W_z y + b_z in one product
                z = torch.baddbmm(u.view(p_, b_ * nu, dim), y_aug.view(p_, b_ * nu, d + 1), _as(wz, cdt).transpose(1, 2))
            else:
                z = torch.bmm(y_aug.view(p_, b_ * nu, d + 1), _as(wz, cdt).transpose(1, 2)).to(u.dtype)
                z.add_(u.view(p_, b_ * nu, dim))
        ctx.cdt, ctx.learned_scale, ctx.param_dtype = cdt, learned_scale, wz.dtype
        ctx.float_scale = None if learned_scale else float(scale)
        ctx.has_temperature = temperature is not None
        ctx.save_for_backward(u, e, eo, w_tg, wz, at if learned_scale else None, ex, row_sum, per_col, picked, y_aug,
                              prob, ub, norm, norm_b, r, idx_used, idx_slot, idx_back, eo_used,
                              scale if learned_scale else None, temperature)
        return z.view(p_, b_, nu, dim)

    @staticmethod
    def backward(ctx, dz):
        (u, e, eo, w_tg, wz, at, ex, row_sum, per_col, picked, y_aug, prob, ub, norm, norm_b, r,
         idx_used, idx_slot, idx_back, eo_used, scale_t, temperature) = ctx.saved_tensors
        need = ctx.needs_input_grad
        cdt = ctx.cdt
        p_, b_, nu, dim = u.shape
        no, d = eo.shape[2], wz.shape[2] - 1
        g_, width = p_ * b_, ex.shape[1]
        f32 = torch.float32
        with torch.autocast(u.device.type, enabled=False):
            dz = dz.contiguous()
            dz_c = _as(dz, cdt).view(p_, b_ * nu, dim)
            d_wz = torch.bmm(dz_c.transpose(1, 2), y_aug.view(p_, b_ * nu, d + 1)) if need[4] else None
            dy = torch.bmm(dz_c, _as(wz, cdt)[..., :d]).view(g_, nu, d)
            weights = (prob * nu).unsqueeze(2)
            d_weights = torch.linalg.vecdot(_as(dy, f32), _as(picked, f32), dim=2)  # y_j = w_j P_i*(j)
            d_per_col = torch.zeros(g_ * width, d, dtype=cdt, device=u.device)
            d_per_col.index_add_(0, idx_slot, (dy * _as(weights, cdt)).view(g_ * nu, d))
            d_per_col = d_per_col.view(g_, width, d)
            # column softmax backward: dA^T = S o (dP V^T - c), c_i = dP_i . P_i, S = X / rowsum
            c = torch.linalg.vecdot(_as(d_per_col, f32), _as(per_col, f32), dim=2).unsqueeze(2)
            g_s = d_per_col.div_(_as(row_sum, cdt))  # dP / rowsum (G, U, d)
            d_at = _as(torch.bmm(g_s, e[..., d:].transpose(1, 2)), f32).sub_(c / row_sum).mul_(ex)  # dL/dA^T
            dv = torch.bmm(_as(ex, cdt).transpose(1, 2), g_s)  # S^T dP (G, N_u, d)
            d_scale = None
            eu_f = _as(e[..., :d], f32)
            if ctx.learned_scale:
                s = scale_t.view(g_, 1, 1)
                if need[5]:
                    d_scale = torch.linalg.vecdot(d_at.flatten(1), at.flatten(1), dim=1) / scale_t
                d_eo_used = torch.bmm(d_at, eu_f).mul_(s) if need[1] else None
                d_eu = torch.bmm(d_at.transpose(1, 2), eo_used).mul_(s)
            else:
                s = ctx.float_scale
                d_eo_used = (torch.baddbmm(eu_f.new_empty(()).expand(g_, width, d), d_at, eu_f, beta=0.0, alpha=s)
                             if need[1] else None)
                d_eu = torch.baddbmm(eu_f.new_empty(()).expand(g_, nu, d), d_at.transpose(1, 2), eo_used, beta=0.0,
                                     alpha=s)
            d_eo = None
            if d_eo_used is not None:
                if idx_used is None:
                    d_eo = d_eo_used
                else:  # the unused columns have no gradient
                    d_eo = torch.zeros(g_ * no, d, dtype=d_eo_used.dtype, device=u.device)
                    d_eo.index_copy_(0, idx_used, d_eo_used.view(g_ * width, d))
                d_eo = _as(d_eo.view(eo.shape), eo.dtype)
            d_e = torch.cat([_as(d_eu, cdt), dv], dim=2).view(p_, b_ * nu, 2 * d)
            d_wtg = torch.bmm(d_e.transpose(1, 2), _as(u, cdt).view(p_, b_ * nu, dim)) if need[2] else None
            d_btg = d_e.sum(1) if need[3] else None
            # Eq. 13 backward: w = N softmax(r / tau)
            dp = d_weights * nu
            d_logits = prob * (dp - (prob * dp).sum(1, keepdim=True))
            d_temperature = None
            if ctx.has_temperature:
                d_r = d_logits / temperature.view(g_, 1)
                if need[6]:
                    d_temperature = -(d_logits * r).sum(1) / temperature.square()
            else:
                d_r = d_logits
            # cosine backward, r_j = x_j . x_j* / (n_j n_j*):
            # dx_j = a_j x_j* + sum_{m: j*(m) = j} a_m x_m - x_j q_j / n_j^2, with a_j = d_r_j / (n_j n_j*)
            # and q_j = d_r_j r_j + sum_{m: j*(m) = j} d_r_m r_m
            uf = _as(u, f32).view(g_, nu, dim)
            a = (d_r / (norm * norm_b)).unsqueeze(2)
            du = torch.addcmul(_as(dz, f32).view(g_, nu, dim), ub, a)  # the residual (Eq. 7/8) + first term
            du.view(g_ * nu, dim).index_add_(0, idx_back, (uf * a).view(g_ * nu, dim))
            q = d_r * r
            q = q + torch.zeros_like(q).view(-1).index_add_(0, idx_back, q.view(-1)).view(g_, nu)
            du.addcmul_(uf, (q / norm.square()).unsqueeze(2), value=-1.0)
            du = du.view(p_, b_ * nu, dim)
            if cdt == du.dtype:
                du = torch.baddbmm(du, d_e, _as(w_tg, cdt))
            else:
                du = du + _as(torch.bmm(d_e, _as(w_tg, cdt)), f32)
            du = _as(du.view(p_, b_, nu, dim), u.dtype)
        pdt = ctx.param_dtype
        return (du, d_eo, None if d_wtg is None else _as(d_wtg, pdt), None if d_btg is None else _as(d_btg, pdt),
                None if d_wz is None else _as(d_wz, pdt), d_scale, d_temperature, None)


__all__ = ["CycleBlockFunction", "COSINE_EPS", "compact_by_default", "used_columns"]
