"""Support-query attention with cycle resemblance (Eq. 1-13)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crapnet_core.models.attention import CycleResemblanceBlock, SupportQueryAttention, cycle_resemblance

# A[j, i]: support pixel j (rows) vs query pixel i (columns)
A = torch.tensor(
    [
        [1.0, 5.0, 0.0, 0.5],
        [0.0, 4.0, 3.0, 0.0],
        [4.0, 0.0, 1.0, 0.0],
    ]
)
# i*(j) = argmax over row j; j*(j) = argmax over column i*(j)
I_STAR = [1, 1, 0]
J_STAR = [0, 0, 2]


def _randomise_outputs(module, scale=0.1):
    for m in module.modules():
        if isinstance(m, CycleResemblanceBlock):
            torch.nn.init.normal_(m.out.weight, std=scale)
            torch.nn.init.normal_(m.out.bias, std=scale)


def test_argmax_cycle_on_known_example():
    emb_u = torch.eye(3).unsqueeze(0)  # (1, d=3, N_u=3): identity, so A = emb_u^T emb_o = emb_o
    emb_o = A.unsqueeze(0)  # (1, d=3, N_o=4)
    x = torch.randn(1, 5, 3)
    cyc = cycle_resemblance(emb_u, emb_o, x)
    assert torch.equal(cyc.affinity[0], A)
    assert cyc.best_other[0].tolist() == I_STAR
    assert cyc.cycle_back[0].tolist() == J_STAR


def test_resemblance_and_attention_match_direct_computation():
    torch.manual_seed(0)
    b, d, c, nu, no = 2, 6, 5, 7, 9
    emb_u, emb_o, x = torch.randn(b, d, nu), torch.randn(b, d, no), torch.randn(b, c, nu)
    scale = 0.37
    cyc = cycle_resemblance(emb_u, emb_o, x, scale)
    for n in range(b):
        a = [[scale * float(emb_u[n, :, j] @ emb_o[n, :, i]) for i in range(no)] for j in range(nu)]
        res = []
        for j in range(nu):
            i_star = max(range(no), key=lambda i: a[j][i])
            j_star = max(range(nu), key=lambda jj: a[jj][i_star])
            assert cyc.best_other[n, j] == i_star and cyc.cycle_back[n, j] == j_star
            u, v = x[n, :, j], x[n, :, j_star]
            res.append(float(u @ v) / (float(u.norm()) * float(v.norm())))
            col = [a[jj][i_star] for jj in range(nu)]
            z = sum(math.exp(t) for t in col)
            assert cyc.attention[n, j].tolist() == pytest.approx([math.exp(t) / z for t in col], rel=1e-5)
        assert cyc.resemblance[n].tolist() == pytest.approx(res, rel=1e-5, abs=1e-6)
        zr = sum(math.exp(r) for r in res)
        weights = [nu * math.exp(r) / zr for r in res]  # Eq. 13 softmax, scaled to mean one
        assert cyc.weights[n].tolist() == pytest.approx(weights, rel=1e-5)
        assert float(cyc.weights[n].mean()) == pytest.approx(1.0, rel=1e-6)


def test_block_output_matches_direct_formula():
    torch.manual_seed(1)
    block = CycleResemblanceBlock(channels=6, inner_channels=4)
    _randomise_outputs(block, 0.5)
    xs, xq = torch.randn(1, 6, 2, 3), torch.randn(1, 6, 3, 2)
    z = block(xs, xq)
    cyc = block.cycle(xs, xq)
    g = block.g(xs).flatten(2)[0]  # (d, N)
    n = xs.shape[2] * xs.shape[3]
    y = torch.zeros(4, n)
    for j in range(n):
        for jp in range(n):
            y[:, j] += cyc.weights[0, j] * cyc.attention[0, j, jp] * g[:, jp]
    expected = F.conv2d(y.view(1, 4, 2, 3), block.out.weight, block.out.bias) + xs
    assert torch.allclose(z, expected, atol=1e-5)


def test_block_is_identity_at_init():
    torch.manual_seed(2)
    block = CycleResemblanceBlock(16, 8)
    xs, xq = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    assert torch.equal(block(xs, xq), xs)


@pytest.mark.parametrize("branches", [1, 2])
def test_stack_is_identity_at_init(branches):
    torch.manual_seed(3)
    att = SupportQueryAttention(16, 8, n_blocks=5, branches=branches)
    xs, xq = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
    zs, zq = att(xs, xq)
    assert torch.equal(zs, xs) and torch.equal(zq, xq)


def test_two_branch_keeps_the_other_side_fixed():
    torch.manual_seed(4)
    att = SupportQueryAttention(8, 4, n_blocks=3, branches=2)
    _randomise_outputs(att)
    xs, xq = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    zs, zq = att(xs, xq)
    s, q = xs, xq
    for blk in att.support_blocks:
        s = blk(s, xq)  # query fixed at the encoder output
    for blk in att.query_blocks:
        q = blk(q, xs)  # support fixed at the encoder output
    assert torch.allclose(zs, s) and torch.allclose(zq, q)
    assert not torch.allclose(zs, xs)


def test_one_branch_updates_both_at_once():
    torch.manual_seed(5)
    att = SupportQueryAttention(8, 4, n_blocks=3, branches=1)
    _randomise_outputs(att)
    xs, xq = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    zs, zq = att(xs, xq)
    s, q = xs, xq
    for sb, qb in zip(att.support_blocks, att.query_blocks):
        s, q = sb(s, q), qb(q, s)
    assert torch.allclose(zs, s) and torch.allclose(zq, q)
    two = SupportQueryAttention(8, 4, n_blocks=3, branches=2)
    two.load_state_dict(att.state_dict())
    assert not torch.allclose(two(xs, xq)[0], zs)  # the designs differ once blocks are non-trivial


@pytest.mark.parametrize("n", list(range(1, 16)))
def test_any_number_of_blocks(n):
    att = SupportQueryAttention(8, 4, n_blocks=n, branches=2)
    assert len(att.support_blocks) == n and len(att.query_blocks) == n
    zs, zq = att(torch.randn(1, 8, 2, 2), torch.randn(1, 8, 2, 2))
    assert zs.shape == zq.shape == (1, 8, 2, 2)


@pytest.mark.parametrize("n", [0, 16])
def test_block_count_out_of_range(n):
    with pytest.raises(ValueError, match="n_blocks"):
        SupportQueryAttention(8, 4, n_blocks=n)


def test_gradients_reach_embeddings():
    torch.manual_seed(6)
    block = CycleResemblanceBlock(8, 4)
    _randomise_outputs(block)
    xs = torch.randn(1, 8, 3, 3, requires_grad=True)
    xq = torch.randn(1, 8, 3, 3, requires_grad=True)
    block(xs, xq).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert xq.grad.abs().sum() > 0  # the fixed side still receives gradient through phi


def test_bfloat16_autocast_keeps_argmax_in_float32():
    torch.manual_seed(7)
    block = CycleResemblanceBlock(8, 4)
    _randomise_outputs(block)
    xs, xq = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cyc = block.cycle(xs, xq)
        z = block(xs, xq)
    assert cyc.affinity.dtype == torch.float32 and cyc.weights.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert torch.allclose(z.float(), block(xs, xq), atol=0.1)
