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
  change along a branch), and the whole stack, both branches and all blocks, one autograd node
  (:class:`TwoBranchStackFunction`) taking the parameters as they are: no autograd node per
  block, per stacked weight or per layout change (issue 21's operator count);
* the output projection once per used column: y_j = w_j P_i*(j) has only |I| distinct
  directions, so W_z y_j = w_j (P W_z^T)_i*(j): Q = P W_z^T is (|I|, D) instead of (N_u, D), and
  its backward goes through G_i = sum_{j: i*(j) = i} w_j dz_j (dP = G W_z, dW_z = G^T P,
  dw_j = dz_j . Q_i*(j)): the same sums in another order;
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
Y_j = w_j P_{i*(j)}; Z = Y W_z^T + b_z + X (Eq. 7-8), computed as Z_j = X_j + w_j Q_{i*(j)} + b_z with Q = P W_z^T.

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


#: The tensors :func:`block_forward` keeps for :func:`block_backward`, in this order.
SAVED = (
    "u",
    "e",
    "w_tg",
    "w_z",
    "at",
    "ex",
    "row_sum",
    "per_col",
    "q",
    "prob",
    "ub",
    "norm",
    "norm_b",
    "r",
    "idx_used",
    "idx_slot",
    "idx_back",
    "eo_used",
    "scale",
    "temperature",
)


def block_forward(u, eo, w_tg, b_tg, w_z, b_z, scale, temperature, compact):
    """One block's forward for P parameter groups (:class:`CycleBlockFunction`'s arguments, W_z and b_z apart).

    u (P, B, N_u, D), eo (P, B, N_o, d), w_tg (P, 2d, D), b_tg (P, 2d), w_z (P, D, d), b_z (P, D);
    scale: float or (P * B,) tensor; temperature: None or (P * B,) tensor. Runs without autograd.
    Returns z (P, B, N_u, D), the tensors named by :data:`SAVED` and a dict of non-tensor facts,
    both for :func:`block_backward`.
    """
    dev = u.device.type
    cdt = _compute_dtype(u)
    p_, b_, nu, dim = u.shape
    no, d = eo.shape[2], w_z.shape[2]
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
            at = torch.baddbmm(
                eu_f.new_empty(()).expand(g_, width, nu), eo_used, eu_f.transpose(1, 2), beta=0.0, alpha=float(scale)
            )
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
        # Eq. 7/8: z_j = x_j + W_z y_j + b_z with y_j = w_j P_i*(j): W_z applied once per used column,
        # Q = P W_z^T (|I| rows instead of N_u), then z_j = x_j + w_j Q_i*(j) + b_z
        q = torch.bmm(per_col.view(p_, b_ * width, d), _as(w_z, cdt).transpose(1, 2)).view(g_, width, dim)
        wq = _rows(q, idx_slot).mul_(_as((prob * nu).unsqueeze(2), cdt))  # w_j Q_i*(j) (G, N_u, D)
        wq.view(p_, b_ * nu, dim).add_(_as(b_z, cdt).unsqueeze(1))
        z = wq.add_(u.view(g_, nu, dim)) if cdt == u.dtype else wq.to(u.dtype).add_(u.view(g_, nu, dim))
    saved = (
        u,
        e,
        w_tg,
        w_z,
        at if learned_scale else None,
        ex,
        row_sum,
        per_col,
        q,
        prob,
        ub,
        norm,
        norm_b,
        r,
        idx_used,
        idx_slot,
        idx_back,
        eo_used,
        scale if learned_scale else None,
        temperature,
    )
    facts = {
        "cdt": cdt,
        "float_scale": None if learned_scale else float(scale),
        "eo_shape": eo.shape,
        "eo_dtype": eo.dtype,
    }
    return z.view(p_, b_, nu, dim), saved, facts


def block_backward(saved, facts, dz, need_eo=True, need_scale=True, need_temperature=True):
    """The backward of :func:`block_forward`: ``saved`` and ``facts`` as it returned them, dz (P, B, N_u, D).

    Returns (du (P, B, N_u, D), d_eo (P, B, N_o, d) or None, d_wtg (P, 2d, D), d_btg (P, 2d),
    d_wz (P, D, d), d_bz (P, D), d_scale (P * B,) or None, d_temperature (P * B,) or None), the
    parameter gradients in the compute dtype.
    """
    (
        u,
        e,
        w_tg,
        w_z,
        at,
        ex,
        row_sum,
        per_col,
        q,
        prob,
        ub,
        norm,
        norm_b,
        r,
        idx_used,
        idx_slot,
        idx_back,
        eo_used,
        scale_t,
        temperature,
    ) = saved
    cdt = facts["cdt"]
    p_, b_, nu, dim = u.shape
    no, d = facts["eo_shape"][2], w_z.shape[2]
    g_, width = p_ * b_, ex.shape[1]
    f32 = torch.float32
    with torch.autocast(u.device.type, enabled=False):
        dz = dz.contiguous()
        dz_c = _as(dz, cdt).view(g_, nu, dim)
        weights = (prob * nu).unsqueeze(2)
        # z_j = x_j + w_j Q_i*(j) + b_z with Q = P W_z^T: dw_j = dz_j . Q_i*(j); with G_i = sum_{j: i*(j) = i} w_j dz_j,
        # dP = G W_z, dW_z = G^T P, db_z = sum_j dz_j
        d_weights = torch.linalg.vecdot(_as(dz_c, f32), _as(_rows(q, idx_slot), f32), dim=2)
        g_acc = torch.zeros(g_ * width, dim, dtype=cdt, device=u.device)
        g_acc.index_add_(0, idx_slot, (dz_c * _as(weights, cdt)).view(g_ * nu, dim))
        g_acc = g_acc.view(p_, b_ * width, dim)
        w_zc = _as(w_z, cdt)
        d_wz = torch.bmm(g_acc.transpose(1, 2), per_col.view(p_, b_ * width, d))
        d_bz = dz_c.view(p_, b_ * nu, dim).sum(1)
        d_per_col = torch.bmm(g_acc, w_zc).view(g_, width, d)
        # column softmax backward: dA^T = S o (dP V^T - c), c_i = dP_i . P_i, S = X / rowsum
        c = torch.linalg.vecdot(_as(d_per_col, f32), _as(per_col, f32), dim=2).unsqueeze(2)
        g_s = d_per_col.div_(_as(row_sum, cdt))  # dP / rowsum (G, U, d)
        d_at = _as(torch.bmm(g_s, e[..., d:].transpose(1, 2)), f32).sub_(c / row_sum).mul_(ex)  # dL/dA^T
        dv = torch.bmm(_as(ex, cdt).transpose(1, 2), g_s)  # S^T dP (G, N_u, d)
        d_scale = None
        eu_f = _as(e[..., :d], f32)
        if scale_t is not None:
            s = scale_t.view(g_, 1, 1)
            if need_scale:
                d_scale = torch.linalg.vecdot(d_at.flatten(1), at.flatten(1), dim=1) / scale_t
            d_eo_used = torch.bmm(d_at, eu_f).mul_(s) if need_eo else None
            d_eu = torch.bmm(d_at.transpose(1, 2), eo_used).mul_(s)
        else:
            s = facts["float_scale"]
            d_eo_used = (
                torch.baddbmm(eu_f.new_empty(()).expand(g_, width, d), d_at, eu_f, beta=0.0, alpha=s)
                if need_eo
                else None
            )
            d_eu = torch.baddbmm(eu_f.new_empty(()).expand(g_, nu, d), d_at.transpose(1, 2), eo_used, beta=0.0, alpha=s)
        d_eo = None
        if d_eo_used is not None:
            if idx_used is None:
                d_eo = d_eo_used
            else:  # the unused columns have no gradient
                d_eo = torch.zeros(g_ * no, d, dtype=d_eo_used.dtype, device=u.device)
                d_eo.index_copy_(0, idx_used, d_eo_used.view(g_ * width, d))
            d_eo = _as(d_eo.view(facts["eo_shape"]), facts["eo_dtype"])
        d_e = torch.cat([_as(d_eu, cdt), dv], dim=2).view(p_, b_ * nu, 2 * d)
        d_wtg = torch.bmm(d_e.transpose(1, 2), _as(u, cdt).view(p_, b_ * nu, dim))
        d_btg = d_e.sum(1)
        # Eq. 13 backward: w = N softmax(r / tau)
        dp = d_weights * nu
        d_logits = prob * (dp - (prob * dp).sum(1, keepdim=True))
        d_temperature = None
        if temperature is not None:
            d_r = d_logits / temperature.view(g_, 1)
            if need_temperature:
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
        qr = d_r * r
        qr = qr + torch.zeros_like(qr).view(-1).index_add_(0, idx_back, qr.view(-1)).view(g_, nu)
        du.addcmul_(uf, (qr / norm.square()).unsqueeze(2), value=-1.0)
        du = du.view(p_, b_ * nu, dim)
        if cdt == du.dtype:
            du = torch.baddbmm(du, d_e, _as(w_tg, cdt))
        else:
            du = du + _as(torch.bmm(d_e, _as(w_tg, cdt)), f32)
        du = _as(du.view(p_, b_, nu, dim), u.dtype)
    return du, d_eo, d_wtg, d_btg, d_wz, d_bz, d_scale, d_temperature


class CycleBlockFunction(torch.autograd.Function):
    """One cycle-resemblance block (Eq. 1/2, 5-13, residual Eq. 7/8) for P parameter groups.

    forward(u (P, B, N_u, D), eo (P, B, N_o, d), w_tg (P, 2d, D), b_tg (P, 2d),
            wz (P, D, d + 1), scale, temperature, compact) -> z (P, B, N_u, D)

    u: the updated side's features, pixel-major; eo: phi of the other side (computed by the
    caller); w_tg/b_tg: theta's and g's 1 x 1 weights stacked (theta first); wz: the output
    projection's weight with its bias as the last column; scale: float, or a (P * B,) tensor
    (a learned affinity scale per group); temperature: None (Eq. 13 as published) or a
    (P * B,) tensor (learned tau); compact: the used-columns form (module docstring).
    Group p uses its own weights for its B episodes. Used block by block (one branch, or a
    support larger than the query); the two-branch stack runs as :class:`TwoBranchStackFunction`.

    The gradient of the cosine is that of rows with |x| >= 1e-8 (``COSINE_EPS``).
    """

    @staticmethod
    def forward(ctx, u, eo, w_tg, b_tg, wz, scale, temperature, compact):
        z, saved, facts = block_forward(u, eo, w_tg, b_tg, wz[..., :-1], wz[..., -1], scale, temperature, compact)
        ctx.facts, ctx.param_dtype = facts, wz.dtype
        ctx.save_for_backward(*saved)
        return z

    @staticmethod
    def backward(ctx, dz):
        need = ctx.needs_input_grad
        du, d_eo, d_wtg, d_btg, d_wz, d_bz, d_scale, d_temperature = block_backward(
            ctx.saved_tensors, ctx.facts, dz, need_eo=need[1], need_scale=need[5], need_temperature=need[6]
        )
        pdt = ctx.param_dtype
        d_wz = torch.cat([d_wz, d_bz.unsqueeze(2)], dim=2) if need[4] else None
        return (
            du,
            d_eo,
            _as(d_wtg, pdt) if need[2] else None,
            _as(d_btg, pdt) if need[3] else None,
            None if d_wz is None else _as(d_wz, pdt),
            d_scale,
            d_temperature,
            None,
        )


#: The parameters of one block, in the order :class:`TwoBranchStackFunction` takes them.
BLOCK_PARAMETERS = (
    "theta.weight",
    "theta.bias",
    "g.weight",
    "g.bias",
    "phi.weight",
    "phi.bias",
    "out.weight",
    "out.bias",
)
LEARNED_PARAMETERS = ("log_scale", "log_temperature")


class TwoBranchStackFunction(torch.autograd.Function):
    """The whole two-branch stack (Fig. 2) as one autograd node: both branches' K blocks, their phi.

    forward(x_s (B, D, H, W), x_q (B, D, H, W), n_blocks K, scale, compact, *params) -> (z_s, z_q)

    params: for the support branch's blocks 0..K-1, then the query branch's, each block's
    :data:`BLOCK_PARAMETERS` (conv weights (d, D, 1, 1) / (D, d, 1, 1), biases) followed, when
    ``scale`` is None (learned temperatures), by its :data:`LEARNED_PARAMETERS`; scale: the fixed
    affinity scale 1/sqrt(d), or None. The support branch updates x_s against x_q fixed, the query
    branch x_q against x_s (group axis 0: support branch, query branch): phi of the fixed side for
    every block in one product, the blocks by :func:`block_forward`, and in the backward the
    blocks in reverse by :func:`block_backward`, phi's gradients again in one product. No autograd
    node per block or per stacked weight: the parameter gradients are returned straight to the
    parameters (fewer dispatched operators, issue 21). z_s, z_q are laid out as x_s (contiguous
    or channels_last).
    """

    @staticmethod
    def forward(ctx, x_s, x_q, n_blocks, scale, compact, *params):
        k_ = int(n_blocks)
        per = len(params) // (2 * k_)
        b_, dim, h, w = x_s.shape
        n = h * w
        d = params[0].shape[0]
        cdt = _compute_dtype(x_s)

        def take(i: int, *shape: int) -> torch.Tensor:  # parameter i of every block, (2, K, *shape)
            return torch.stack([params[j * per + i] for j in range(2 * k_)]).view(2, k_, *shape)

        w_tg = torch.cat([take(0, d, dim), take(2, d, dim)], dim=2)  # (2, K, 2d, D): theta then g
        b_tg = torch.cat([take(1, d), take(3, d)], dim=2)
        w_phi, b_phi = take(4, d, dim).view(2, k_ * d, dim), take(5, d).view(2, k_ * d)
        w_z, b_z = take(6, dim, d), take(7, dim)
        learned = scale is None
        if learned:
            scales = take(8).exp().repeat_interleave(b_, dim=0).t().contiguous()  # (K, 2B): block k, group
            taus = take(9).exp().repeat_interleave(b_, dim=0).t().contiguous()
        with torch.autocast(x_s.device.type, enabled=False):
            xs_t, xq_t = x_s.flatten(2).transpose(1, 2), x_q.flatten(2).transpose(1, 2)  # (B, N, D)
            u = torch.stack([xs_t, xq_t])  # (2, B, N, D): updated sides
            other = torch.stack([xq_t, xs_t]).view(2, b_ * n, dim)  # the fixed side of each branch
            phi_all = torch.baddbmm(_as(b_phi, cdt).unsqueeze(1), _as(other, cdt), _as(w_phi, cdt).transpose(1, 2))
        saved, facts = [], []
        for k in range(k_):
            eo = phi_all[..., k * d : (k + 1) * d].view(2, b_, n, d)
            sc, tau = (scales[k], taus[k]) if learned else (scale, None)
            u, sv, fc = block_forward(u, eo, w_tg[:, k], b_tg[:, k], w_z[:, k], b_z[:, k], sc, tau, compact)
            saved.extend(sv)
            facts.append(fc)
        ctx.facts, ctx.k, ctx.per, ctx.learned, ctx.shape = facts, k_, per, learned, (b_, dim, h, w, n, d)
        ctx.param_shapes = [p.shape for p in params]
        ctx.param_dtype, ctx.cdt = params[0].dtype, cdt
        ctx.save_for_backward(other, w_phi, scales if learned else None, taus if learned else None, *saved)
        z = u.view(2, b_, h, w, dim).permute(0, 1, 4, 2, 3)  # (2, B, D, H, W) views
        fmt = memory_format_of(x_s)
        return z[0].contiguous(memory_format=fmt), z[1].contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx, dz_s, dz_q):
        other, w_phi, scales, taus, *saved = ctx.saved_tensors
        k_, learned = ctx.k, ctx.learned
        b_, dim, h, w, n, d = ctx.shape
        cdt, pdt = ctx.cdt, ctx.param_dtype
        ns = len(SAVED)
        du = torch.stack([dz_s.flatten(2).transpose(1, 2), dz_q.flatten(2).transpose(1, 2)])  # (2, B, N, D)
        grads = [None] * k_
        for k in reversed(range(k_)):
            du, *rest = block_backward(saved[k * ns : (k + 1) * ns], ctx.facts[k], du)
            grads[k] = rest
        with torch.autocast(other.device.type, enabled=False):
            d_phi = torch.cat([_as(g[0], cdt).view(2, b_ * n, d) for g in grads], dim=2)  # (2, B N, K d)
            d_other = torch.bmm(d_phi, _as(w_phi, cdt)).view(2, b_, n, dim)  # the fixed sides' gradients
            d_wphi = torch.bmm(d_phi.transpose(1, 2), _as(other, cdt)).view(2, k_, d, dim)
            d_bphi = d_phi.sum(1).view(2, k_, d)
        dx = [(du[0] + _as(d_other[1], du.dtype)), (du[1] + _as(d_other[0], du.dtype))]
        dx_s, dx_q = (t.transpose(1, 2).reshape(b_, dim, h, w) for t in dx)
        out = []
        for side in (0, 1):
            for k in range(k_):
                _, d_wtg, d_btg, d_wz, d_bz, d_scale, d_tau = grads[k]
                block = [
                    d_wtg[side, :d],
                    d_btg[side, :d],
                    d_wtg[side, d:],
                    d_btg[side, d:],
                    d_wphi[side, k],
                    d_bphi[side, k],
                    d_wz[side],
                    d_bz[side],
                ]
                if learned:  # d log s = s ds, summed over the branch's B episodes (likewise tau)
                    rows = slice(side * b_, (side + 1) * b_)
                    block += [(d_scale[rows] * scales[k, rows]).sum(), (d_tau[rows] * taus[k, rows]).sum()]
                out.extend(block)
        shapes, need = ctx.param_shapes, ctx.needs_input_grad[5:]
        params = [_as(g.reshape(s), pdt) if nd else None for g, s, nd in zip(out, shapes, need)]
        return (
            dx_s if ctx.needs_input_grad[0] else None,
            dx_q if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            *params,
        )


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is stored so (and not also contiguous), else contiguous."""
    return (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        else torch.contiguous_format
    )


__all__ = [
    "BLOCK_PARAMETERS",
    "COSINE_EPS",
    "LEARNED_PARAMETERS",
    "CycleBlockFunction",
    "TwoBranchStackFunction",
    "block_backward",
    "block_forward",
    "compact_by_default",
    "memory_format_of",
    "used_columns",
]
