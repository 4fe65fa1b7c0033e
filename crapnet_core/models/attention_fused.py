"""The cycle-resemblance blocks (Eq. 1-2, 5-13) as one batched computation with a hand-written backward.

:class:`~crapnet_core.models.attention.CycleResemblanceBlock` is the literal reading of the
paper, one block at a time, differentiated by autograd. This module computes the same thing
for a whole stack (:class:`~crapnet_core.models.attention.SupportQueryAttention` calls it) with
fewer and larger operations (issue 21):

* both branches at once: the support branch's block k and the query branch's block k share
  every operation, their weights stacked on a leading "branch" axis of size P = 2;
* pixel-major features (P, B, N, D): gathers and scatters over pixels (the cycle's j*, the
  column pick i*(j)) move whole rows, measured 3-6x faster than column gathers on (D, N);
* theta and g concatenated into one projection per block; in the two-branch design, the phi
  embeddings of the fixed side for all blocks in one matrix product (the fixed side does not
  change along a branch);
* :class:`CycleBlockFunction`: forward and backward of one block written out (the backward
  of Eq. 1 and Eq. 13 needs about half the passes over the N x N and N x D tensors that
  autograd's op-by-op backward makes; e.g. the column softmax's backward uses
  c_i = sum_j S[j, i] dS[j, i] = dP_i . P_i, a (d x N) reduction instead of an (N x N) one);
* Eq. 11-12's argmaxes from ``torch.max`` (its indices: the first maximum, as ``argmax``, at
  2-3x the speed on CPU; the row maxima serve the softmax too).

Notation (per group g = (branch, episode); ``u`` the updated side, ``o`` the other side):
X (N_u, D) the block's input, E_o (N_o, d) = phi(x_o), E_u = theta(X), V = g(X) (N_u, d);
A^T = s E_o E_u^T (N_o, N_u), the transposed affinity of Eq. 9-10 (row i = column i of A),
s = 1/sqrt(d) or a learned scale; i*(j), j*(j) from the argmaxes (Eq. 11-12);
r_j = cos(X_j, X_{j*(j)}), w = N_u softmax(r / tau) (Eq. 13; tau = 1 in the paper);
S = softmax over j of A^T (the column softmax of A, 1/C(x) of Eq. 1), P = S V (N_o, d);
Y_j = w_j P_{i*(j)}; Z = Y W_z^T + b_z + X (Eq. 7-8).

Precision follows the reference: the projections and the value aggregation in the ambient
autocast dtype, the affinity, argmaxes, softmaxes and cosines in float32.
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


def _rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (G, M) of ``t`` (G, N, C) per group -> (G, M, C) (one flat index_select)."""
    g, n, c = t.shape
    return t.reshape(g * n, c).index_select(0, index.reshape(-1)).view(g, -1, c)


def _flat_index(index: torch.Tensor, n: int) -> torch.Tensor:
    """Per-group row indices (G, M) into (G, n, C) -> indices into the flattened (G * n, C)."""
    offsets = torch.arange(index.shape[0], device=index.device).mul_(n).unsqueeze(1)
    return (index + offsets).reshape(-1)


class CycleBlockFunction(torch.autograd.Function):
    """One cycle-resemblance block (Eq. 1/2, 5-13, residual Eq. 7/8) for P parameter groups.

    forward(u (P, B, N_u, D), eo (P, B, N_o, d), w_tg (P, 2d, D), b_tg (P, 2d),
            w_z (P, D, d), b_z (P, D), scale, temperature) -> z (P, B, N_u, D)

    u: the updated side's features, pixel-major; eo: phi of the other side (computed by the
    caller); w_tg/b_tg: theta's and g's 1 x 1 weights stacked (theta first); w_z/b_z: the
    output projection; scale: float, or a (P * B,) tensor (a learned affinity scale per group);
    temperature: None (Eq. 13 as published, tau = 1) or a (P * B,) tensor (learned tau).
    Group p uses its own weights for its B episodes.

    The column softmax is kept unnormalised, X = exp(A^T - max), with its row sums taken by
    the value product itself (an extra column of ones: [V, 1]); the output projection takes
    its bias the same way ([Y, 1] [W_z, b_z]^T) and the residual as the product's addend.
    The cosine's backward uses x^_j . x^_m = r_m for every m with j*(m) = j, so its
    normalisation term is a scatter over N values instead of a pass over N x D.
    The gradient of the normalisation x / |x| is that of a row with |x| >= 1e-8 (COSINE_EPS).
    """

    @staticmethod
    def forward(ctx, u, eo, w_tg, b_tg, w_z, b_z, scale, temperature):
        dev = u.device.type
        cdt = _compute_dtype(u)
        p_, b_, nu, dim = u.shape
        no, d = eo.shape[2], w_z.shape[2]
        g_ = p_ * b_
        learned_scale = torch.is_tensor(scale)
        with torch.autocast(dev, enabled=False):
            uc = u.to(cdt).reshape(p_, b_ * nu, dim)
            # theta and g of every pixel of every episode of a branch: one product per branch
            e = torch.baddbmm(b_tg.to(cdt).unsqueeze(1), uc, w_tg.to(cdt).transpose(1, 2)).view(g_, nu, 2 * d)
            eu = e[..., :d]
            eo_f = eo.reshape(g_, no, d).float()
            eu_f = eu.float()
            # A^T (G, N_o, N_u), Eq. 9/10 transposed: row i holds column i of A
            if learned_scale:
                at = torch.bmm(eo_f, eu_f.transpose(1, 2)).mul_(scale.view(g_, 1, 1))
            else:
                at = torch.baddbmm(eo_f.new_empty(()).expand(g_, no, nu), eo_f, eu_f.transpose(1, 2),
                                   beta=0.0, alpha=float(scale))
            # first index of the maximum, as argmax (torch.max's indices: 2-3x faster than argmax on CPU)
            row_max, best_back = at.max(dim=2, keepdim=True)  # (G, N_o, 1): argmax_j A[j, i] for column i
            best_other = at.max(dim=1).indices  # (G, N_u): i*(j) = argmax_i A[j, i], Eq. 11
            cycle_back = torch.gather(best_back.squeeze(2), 1, best_other)  # j*(j), Eq. 12
            idx_back = _flat_index(cycle_back, nu)
            idx_other = _flat_index(best_other, no)
            # Eq. 1: unnormalised column softmax; the ones column of [V, 1] gives its sums
            ex = (at - row_max).exp_() if learned_scale else at.sub_(row_max).exp_()
            v_aug = torch.ones(g_, nu, d + 1, dtype=cdt, device=u.device)
            v_aug[..., :d] = e[..., d:]
            pe = torch.bmm(ex.to(cdt), v_aug)  # (G, N_o, d + 1)
            row_sum = pe[..., d:].float() if cdt == torch.float32 else ex.sum(2, keepdim=True)
            per_col = pe[..., :d] / row_sum.to(cdt)  # (G, N_o, d): softmax_j(A[j, i]) g(x_j) summed
            # Eq. 13: r_j = cos(x_j, x_j*) from the normalised rows
            uf = u.reshape(g_, nu, dim).float()
            norm = torch.linalg.vector_norm(uf, dim=2, keepdim=True).clamp_min_(COSINE_EPS)
            xh = uf / norm
            xb = _rows(xh, idx_back)
            r = torch.linalg.vecdot(xh, xb, dim=2)
            logits = r / temperature.view(g_, 1) if temperature is not None else r
            prob = torch.softmax(logits, dim=1)
            picked = _rows(per_col, idx_other)  # (G, N_u, d): column i*(j) for every j
            y_aug = torch.ones(g_, nu, d + 1, dtype=cdt, device=u.device)
            torch.mul(picked, (prob * nu).to(cdt).unsqueeze(2), out=y_aug[..., :d])  # y = w_j P_i*(j)
            wz_aug = torch.cat([w_z.to(cdt), b_z.to(cdt).unsqueeze(2)], dim=2)  # (P, D, d + 1)
            if cdt == u.dtype:  # Eq. 7/8: z = x + W_z y + b_z in one product
                z = torch.baddbmm(u.reshape(p_, b_ * nu, dim), y_aug.view(p_, b_ * nu, d + 1), wz_aug.transpose(1, 2))
            else:
                z = torch.bmm(y_aug.view(p_, b_ * nu, d + 1), wz_aug.transpose(1, 2)).to(u.dtype).add_(
                    u.reshape(p_, b_ * nu, dim))
            z = z.view(p_, b_, nu, dim)
        ctx.cdt, ctx.learned_scale, ctx.param_dtype = cdt, learned_scale, w_z.dtype
        ctx.float_scale = None if learned_scale else float(scale)
        ctx.has_temperature = temperature is not None
        ctx.save_for_backward(u, e, eo, w_tg, wz_aug, at if learned_scale else None, ex, row_sum, v_aug, per_col,
                              picked, y_aug, prob, xh, xb, norm, r, cycle_back, idx_back, idx_other,
                              scale if learned_scale else None, temperature)
        return z

    @staticmethod
    def backward(ctx, dz):
        (u, e, eo, w_tg, wz_aug, at, ex, row_sum, v_aug, per_col, picked, y_aug, prob, xh, xb, norm, r,
         cycle_back, idx_back, idx_other, scale_t, temperature) = ctx.saved_tensors
        need = ctx.needs_input_grad
        cdt = ctx.cdt
        p_, b_, nu, dim = u.shape
        no = eo.shape[2]
        d = wz_aug.shape[2] - 1
        g_ = p_ * b_
        with torch.autocast(u.device.type, enabled=False):
            dz = dz.contiguous()
            dz_c = dz.to(cdt).view(p_, b_ * nu, dim)
            d_wz_aug = torch.bmm(dz_c.transpose(1, 2), y_aug.view(p_, b_ * nu, d + 1)) if need[4] or need[5] else None
            dy = torch.bmm(dz_c, wz_aug[..., :d]).view(g_, nu, d)
            d_weights = torch.linalg.vecdot(dy.float(), picked.float(), dim=2)  # (G, N_u)
            d_picked = dy * (prob * nu).to(cdt).unsqueeze(2)
            d_per_col = torch.zeros(g_ * no, d, dtype=cdt, device=u.device)
            d_per_col.index_add_(0, idx_other, d_picked.reshape(g_ * nu, d))
            d_per_col = d_per_col.view(g_, no, d)
            # column softmax backward: dA^T = S o (dP V^T - c), c_i = dP_i . P_i, S = X / rowsum
            c = torch.linalg.vecdot(d_per_col.float(), per_col.float(), dim=2).unsqueeze(2)
            g_aug = torch.cat([d_per_col.float(), -c], dim=2).div_(row_sum).to(cdt)  # (G, N_o, d + 1)
            d_at = torch.bmm(g_aug, v_aug.transpose(1, 2)).float().mul_(ex)  # dL/dA^T (G, N_o, N_u)
            dv = torch.bmm(ex.to(cdt).transpose(1, 2), g_aug[..., :d])  # S^T dP (G, N_u, d)
            d_scale = None
            eo_f = eo.reshape(g_, no, d).float()
            eu_f = e[..., :d].float()
            if ctx.learned_scale:
                s = scale_t.view(g_, 1, 1)
                if need[6]:
                    d_scale = torch.linalg.vecdot(d_at.flatten(1), at.flatten(1), dim=1) / scale_t
                d_eo = torch.bmm(d_at, eu_f).mul_(s) if need[1] else None
                d_eu = torch.bmm(d_at.transpose(1, 2), eo_f).mul_(s)
            else:
                s = ctx.float_scale
                d_eo = (torch.baddbmm(eu_f.new_empty(()).expand(g_, no, d), d_at, eu_f, beta=0.0, alpha=s)
                        if need[1] else None)
                d_eu = torch.baddbmm(eu_f.new_empty(()).expand(g_, nu, d), d_at.transpose(1, 2), eo_f, beta=0.0,
                                     alpha=s)
            d_e = torch.cat([d_eu.to(cdt), dv], dim=2).view(p_, b_ * nu, 2 * d)
            d_wtg = torch.bmm(d_e.transpose(1, 2), u.to(cdt).reshape(p_, b_ * nu, dim)) if need[2] else None
            d_btg = d_e.sum(1) if need[3] else None
            # Eq. 13 backward: w = N softmax(r / tau)
            dp = d_weights * nu
            d_logits = prob * (dp - (prob * dp).sum(1, keepdim=True))
            d_temperature = None
            if ctx.has_temperature:
                d_r = d_logits / temperature.view(g_, 1)
                if need[7]:
                    d_temperature = -(d_logits * r).sum(1) / temperature.square()
            else:
                d_r = d_logits
            # cosine backward, r_j = x^_j . x^_j*, x^ = x / |x|:
            # dx^_j = d_r_j x^_j* + sum_{m: j*(m) = j} d_r_m x^_m;  dx = (dx^ - x^ (x^ . dx^)) / |x|
            # with x^_j . dx^_j = d_r_j r_j + sum_{m: j*(m) = j} d_r_m r_m (x^_j . x^_m = r_m there)
            d_r3 = d_r.unsqueeze(2)
            d_xh = xb * d_r3
            d_xh.view(g_ * nu, dim).index_add_(0, idx_back, (xh * d_r3).view(g_ * nu, dim))
            dr_r = d_r * r
            along = dr_r.clone().view(-1).index_add_(0, idx_back, dr_r.view(-1)).view(g_, nu, 1)
            d_xh.addcmul_(xh, along, value=-1.0)
            du = torch.addcdiv(dz.view(g_, nu, dim).float(), d_xh, norm).view(p_, b_ * nu, dim)  # + residual
            if cdt == du.dtype:
                du = torch.baddbmm(du, d_e, w_tg.to(cdt))
            else:
                du = du + torch.bmm(d_e, w_tg.to(cdt)).float()
            du = du.view(p_, b_, nu, dim).to(u.dtype)
        pdt = ctx.param_dtype
        d_wz = None if d_wz_aug is None or not need[4] else d_wz_aug[..., :d].to(pdt)
        d_bz = None if d_wz_aug is None or not need[5] else d_wz_aug[..., d].to(pdt)
        return (du, None if d_eo is None else d_eo.view(eo.shape).to(eo.dtype),
                None if d_wtg is None else d_wtg.to(pdt), None if d_btg is None else d_btg.to(pdt),
                d_wz, d_bz, d_scale, d_temperature)


__all__ = ["CycleBlockFunction", "COSINE_EPS"]
