"""The batched attention (crapnet_core.models.attention_fused) against the block-by-block reference.

Issue 21's acceptance: the restructured computation gives the same outputs, gradients and
training losses as the reference (float32 rounding apart), and the unchanged models keep
their config hashes.
"""

from __future__ import annotations

import math

import pytest
import torch

from crapnet_core.engine.experiment import make_config
from crapnet_core.models.attention import CycleResemblanceBlock, SupportQueryAttention, cycle_resemblance
from crapnet_core.models.config import LossConfig, ModelConfig
from crapnet_core.models.losses import episode_loss
from crapnet_core.models.segmenter import FewShotSegmenter


def _stack(branches: int, temperature: str, channels: int = 24, inner: int = 6, blocks: int = 3, seed: int = 0):
    """A stack whose blocks are not the identity (W_z, b_z random; learned scalars moved off their init)."""
    torch.manual_seed(seed)
    att = SupportQueryAttention(channels, inner, blocks, branches, temperature)
    for m in att.modules():
        if isinstance(m, CycleResemblanceBlock):
            torch.nn.init.normal_(m.out.weight, std=0.3)
            torch.nn.init.normal_(m.out.bias, std=0.1)
            if temperature == "learned":
                with torch.no_grad():
                    m.log_temperature.fill_(-0.7)
                    m.log_scale.add_(0.4)
    return att


def _outputs_and_grads(att, xs, xq, fused: bool):
    att.fused = fused
    att.zero_grad(set_to_none=True)
    xs, xq = xs.detach().requires_grad_(True), xq.detach().requires_grad_(True)
    zs, zq = att(xs, xq)
    assert att.uses_fused(xs, xq) == fused
    g = torch.Generator().manual_seed(1)
    loss = (zs * torch.randn(zs.shape, generator=g)).sum() + (zq * torch.randn(zq.shape, generator=g)).sum()
    loss.backward()
    out = {"z_s": zs.detach(), "z_q": zq.detach(), "x_s.grad": xs.grad, "x_q.grad": xq.grad}
    out.update({f"{n}.grad": p.grad for n, p in att.named_parameters()})
    return out


def _assert_close(ref: dict, new: dict, rtol: float) -> None:
    scale = {
        "z": max(float(v.abs().max()) for k, v in ref.items() if k.startswith("z_")),
        "grad": max(float(v.abs().max()) for k, v in ref.items() if k.endswith(".grad")),
    }
    for key, a in ref.items():
        b = new[key]
        assert b is not None and a.shape == b.shape, key
        # theta's bias has a zero gradient in exact arithmetic (Eq. 1's column softmax is invariant
        # to a constant per column): both sides hold rounding noise, compared on the global scale
        s = scale["z"] if key.startswith("z_") else scale["grad"]
        if "theta.bias" not in key:
            s = max(float(a.abs().max()), 1e-3 * s)
        err = float((a - b).abs().max()) / s
        assert err < rtol, f"{key}: relative difference {err:.2e}"


@pytest.mark.parametrize("branches", [2, 1])
@pytest.mark.parametrize("temperature", ["fixed", "learned"])
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_matches_reference(branches, temperature, batch):
    att = _stack(branches, temperature)
    torch.manual_seed(5)
    xs, xq = torch.randn(batch, 24, 4, 5), torch.randn(batch, 24, 4, 5)  # non-square: rows and columns differ
    ref = _outputs_and_grads(att, xs, xq, fused=False)
    new = _outputs_and_grads(att, xs, xq, fused=True)
    _assert_close(ref, new, rtol=1e-4)


def test_fused_matches_reference_at_lite_size():
    """The `lite` geometry: 256 channels, d = 64, 16 x 16 pixels, 2 x 5 blocks."""
    att = _stack(2, "fixed", channels=256, inner=64, blocks=5, seed=3)
    torch.manual_seed(6)
    xs, xq = torch.randn(1, 256, 16, 16), torch.randn(1, 256, 16, 16)
    _assert_close(_outputs_and_grads(att, xs, xq, False), _outputs_and_grads(att, xs, xq, True), rtol=1e-4)


def test_fused_under_bfloat16_autocast_stays_close():
    """Under bfloat16 autocast both paths round the projections (differently: an argmax near a tie
    may flip in either); the fused output is as close to the float32 result as the reference's."""
    att = _stack(2, "fixed")
    torch.manual_seed(7)
    xs, xq = torch.randn(2, 24, 4, 4), torch.randn(2, 24, 4, 4)
    with torch.no_grad():
        exact = torch.cat(att(xs, xq))
    err = {}
    for fused in (False, True):
        att.fused = fused
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            zs, zq = att(xs, xq)
        assert zs.dtype == torch.float32 and torch.isfinite(zs).all() and torch.isfinite(zq).all()
        err[fused] = float((torch.cat([zs, zq]) - exact).abs().mean())
    assert err[True] < 0.01 * float(exact.abs().max())
    assert err[True] <= 2 * err[False] + 1e-3


def test_identity_at_initialisation_is_exact():
    torch.manual_seed(8)
    att = SupportQueryAttention(16, 4, n_blocks=5, branches=2)
    xs, xq = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    assert att.uses_fused(xs, xq)
    zs, zq = att(xs, xq)
    assert torch.equal(zs, xs) and torch.equal(zq, xq)


@pytest.mark.parametrize("branches", [2, 1])
@pytest.mark.parametrize("temperature", ["fixed", "learned"])
@pytest.mark.parametrize("compact", [None, False])
def test_fused_matches_reference_for_a_larger_support(branches, temperature, compact):
    """k shots: the support holds the pixels of K shots ((K h) x w, models.segmenter.attend_shots),
    the query h x w; the fused path runs each branch as its own group and agrees with the reference."""
    att = _stack(branches, temperature)
    att.compact = compact
    # the learned scalars' gradients are sums over pixels that can cancel: with seed 9 one of them is
    # 0.065 from terms of order 1, and float32 rounding moves it by 4e-5 (reference) and 3e-4 (fused)
    # of its value against float64; seed 10 has no such cancellation (both within 3e-6)
    torch.manual_seed(10)
    xs, xq = torch.randn(2, 24, 3 * 4, 5), torch.randn(2, 24, 4, 5)  # K = 3 shots of 4 x 5 against a 4 x 5 query
    ref = _outputs_and_grads(att, xs, xq, fused=False)
    new = _outputs_and_grads(att, xs, xq, fused=True)
    _assert_close(ref, new, rtol=1e-4)


def test_kshot_segmenter_takes_the_fused_path():
    """A k-shot forward of the learned-temperature CRAPNet: the same logits and gradients through the
    fused blocks as block by block, and K = 1 in the k-shot layout is the one-shot model bit for bit."""
    model = FewShotSegmenter(_small_crapnet("learned")).train()
    for m in model.modules():
        if isinstance(m, CycleResemblanceBlock):
            torch.nn.init.normal_(m.out.weight, std=0.2)
    ep = _episode()
    g = torch.Generator().manual_seed(4)
    other = torch.randn(ep["support_image"].shape, generator=g)
    images = torch.stack([ep["support_image"], other], dim=1)  # (1, K = 2, 3, H, W)
    masks = torch.stack([ep["support_mask"], ep["support_mask"].roll(5, -1)], dim=1)
    grads = {}
    for fused in (True, False):
        model.attention.fused = fused
        model.zero_grad(set_to_none=True)
        out = model(images, masks, ep["query_image"])
        out.logits.square().mean().backward()
        grads[fused] = (
            out.logits.detach(),
            model.attention.query_blocks[1].log_temperature.grad,
            model.attention.support_blocks[0].theta.weight.grad,
        )
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    model.attention.fused = True
    with torch.no_grad():
        one = model(ep["support_image"], ep["support_mask"], ep["query_image"]).logits
        k1 = model(ep["support_image"][:, None], ep["support_mask"][:, None], ep["query_image"]).logits
    assert torch.equal(one, k1)


def test_reference_path_for_other_batches_and_hooks():
    att = _stack(2, "fixed")
    xs, xq = torch.randn(1, 24, 4, 4), torch.randn(1, 24, 3, 5)
    assert att.uses_fused(xs, xq)  # support and query of different sizes (k shots): fused, branch by branch
    zs, zq = att(xs, xq)
    assert zs.shape == xs.shape and zq.shape == xq.shape
    assert not att.uses_fused(torch.randn(2, 24, 4, 4), xq)  # batches differ: the blocks' own error
    xq = torch.randn(1, 24, 4, 4)
    calls = []
    handle = att.support_blocks[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        assert not att.uses_fused(xs, xq)  # a hooked block must see its calls
        att(xs, xq)
    finally:
        handle.remove()
    assert calls == [1] and att.uses_fused(xs, xq)


def _small_crapnet(temperature: str = "fixed") -> ModelConfig:
    return ModelConfig(
        method="crapnet",
        encoder="resnet18_l2",
        n_blocks=2,
        attention_dim=16,
        carafe_factor=2,
        alpnet_pool_train=2,
        alpnet_pool_test=1,
        free_geometry=True,
        attention_temperature=temperature,
    )


def _episode(size: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(1, 3, size, size, generator=g)
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[:, 16:40, 20:44] = 1
    return {
        "support_image": img,
        "support_mask": mask,
        "query_image": img.roll(3, -1) + 0.1 * torch.randn(img.shape, generator=g),
        "query_mask": mask.roll(3, -1),
    }


def test_training_steps_give_the_same_losses():
    """Fixed seed, same episodes: SGD steps with the fused attention and with the reference."""
    losses = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = FewShotSegmenter(_small_crapnet()).train()
        model.attention.fused = fused
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
        losses[fused] = []
        for step in range(4):
            loss = episode_loss(model, _episode(seed=step), LossConfig())["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[fused].append(float(loss.detach()))
        if fused:
            assert model.attention.support_blocks[0].out.weight.abs().sum() > 0  # the attention was trained
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_config_hashes_of_the_unchanged_models():
    """Committed results are keyed by these hashes (issue 21: unchanged by the restructuring)."""
    known = {
        ("lite", "crapnet"): "7804db2a7044",
        ("lite", "alpnet"): "e1c92a55b9d0",
        ("lite", "panet"): "954516724463",
        ("paper", "crapnet"): "8b3710c5e23d",
        ("smoke", "crapnet"): "b5bfafb6323b",
    }
    for (profile, method), digest in known.items():
        assert make_config(profile, "chaos", 1, 0, method, ["train.threads=1"]).config_hash() == digest
    fixed = make_config("lite", "chaos", 1, 0, "crapnet", ["model.attention_temperature=fixed"])
    assert fixed.config_hash() == "7804db2a7044"


# ---------------------------------------------------------------------------- the temperature variant
def test_learned_temperature_is_its_own_variant():
    cfg = make_config("lite", "chaos", 1, 0, "crapnet", ["model.attention_temperature=learned"])
    assert cfg.model.variant_name() == "crapnet-temp"
    assert cfg.config_hash() != "7804db2a7044" and "crapnet-temp" in cfg.run_name()
    att = make_config("lite", "chaos", 1, 0, "alpnet", ["model.attention=on", "model.attention_temperature=learned"])
    assert att.model.variant_name() == "alpnet-att-temp"
    with pytest.raises(ValueError, match="attention_temperature.*needs the attention"):
        make_config("lite", "chaos", 1, 0, "alpnet", ["model.attention_temperature=learned"])
    with pytest.raises(ValueError, match="attention_temperature"):
        ModelConfig(attention_temperature="hot")


def test_learned_temperature_starts_as_the_fixed_model():
    fixed, learned = FewShotSegmenter(_small_crapnet("fixed")), FewShotSegmenter(_small_crapnet("learned"))
    extra = set(learned.state_dict()) - set(fixed.state_dict())
    assert extra and all(k.endswith(("log_temperature", "log_scale")) for k in extra)
    assert not any("log_" in k for k in fixed.state_dict())  # fixed checkpoints are unchanged
    learned.load_state_dict(fixed.state_dict(), strict=False)
    for m in learned.modules():
        if isinstance(m, CycleResemblanceBlock):
            torch.nn.init.normal_(m.out.weight, std=0.2)
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items() if k not in extra})
    ep = _episode()
    with torch.no_grad():
        a = fixed(ep["support_image"], ep["support_mask"], ep["query_image"]).scores
        b = learned(ep["support_image"], ep["support_mask"], ep["query_image"]).scores
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def _resemblance_case(n: int = 256, dim: int = 8):
    """x (1, dim, n) whose cycles all return to pixel 0's neighbourhood, pixel 0 resembling best."""
    torch.manual_seed(9)
    x = torch.randn(1, dim, n)
    emb = torch.zeros(1, 2, n)
    emb[0, 0] = 1.0  # every updated pixel's best match is other pixel 0 ...
    other = torch.zeros(1, 2, n)
    other[0, 0, 0] = 1.0
    return x, emb, other


def test_fixed_eq13_cannot_single_out_a_pixel():
    """With cosines in [-1, 1] and no temperature, the largest weight is at most e^2 / (e^2 + N - 1) of the total."""
    n = 256
    bound = math.exp(2) / (math.exp(2) + n - 1)
    x, emb, other = _resemblance_case(n)
    x[0, :, 1] = x[0, :, 0]  # pixel 1 resembles its cycle's end (pixel 0) perfectly: r = 1
    w = cycle_resemblance(emb, other, x).weights / n
    assert float(w.max()) <= bound + 1e-6 and bound < 0.03


def test_learned_temperature_reaches_a_near_one_hot_weight():
    """Optimising tau alone on a toy target drives Eq. 13's largest weight above 0.99 of the total."""
    n = 256
    x, emb, other = _resemblance_case(n)
    r = cycle_resemblance(emb, other, x).resemblance.detach()  # the cycle's cosines (fixed)
    target = int(r.argmax())
    log_tau = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([log_tau], lr=0.1)
    for _ in range(300):
        w = cycle_resemblance(emb, other, x, temperature=log_tau.exp()).weights / n  # fractions of the total
        loss = -torch.log(w[0, target])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        w = cycle_resemblance(emb, other, x, temperature=log_tau.exp()).weights / n
        assert float(w[0, target]) > 0.99 and float(log_tau.exp()) < 0.2


def test_learned_scale_sharpens_the_column_softmax():
    """A learned affinity scale (instead of 1/sqrt(d)) lets Eq. 1's column softmax approach its argmax."""
    torch.manual_seed(10)
    block = CycleResemblanceBlock(8, 4, temperature="learned")
    xs, xq = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    opt = torch.optim.Adam([block.log_scale], lr=0.2)
    for _ in range(200):
        cs = block.cycle(xs, xq).column_softmax
        loss = -cs.max(dim=1).values.log().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        cs = block.cycle(xs, xq).column_softmax
        assert float(cs.max(dim=1).values.min()) > 0.99
        assert float(block.log_scale.exp()) > 2 / math.sqrt(4)


def test_learned_temperature_parameters_receive_gradients_in_the_fused_path():
    model = FewShotSegmenter(_small_crapnet("learned")).train()
    for m in model.modules():
        if isinstance(m, CycleResemblanceBlock):
            torch.nn.init.normal_(m.out.weight, std=0.2)
    episode_loss(model, _episode(), LossConfig())["total"].backward()
    blk = model.attention.query_blocks[1]
    assert blk.log_temperature.grad is not None and float(blk.log_temperature.grad.abs()) > 0
    assert blk.log_scale.grad is not None and float(blk.log_scale.grad.abs()) > 0


def test_fused_stack_traces_as_one_graph_for_torch_compile():
    """The GPU path: the whole stack (both branches, forward and backward) is one graph for
    torch.compile (no graph break), as CUDA graphs (mode="reduce-overhead") need; checked with
    dynamo's eager backend (no code generation) on CPU."""
    att = _stack(2, "learned", channels=8, inner=4, blocks=2)
    torch.manual_seed(11)
    xs, xq = torch.randn(1, 8, 3, 3), torch.randn(1, 8, 3, 3)
    ref = _outputs_and_grads(att, xs, xq, fused=True)
    torch._dynamo.reset()
    compiled = torch.compile(att, backend="eager", fullgraph=True)
    xs_, xq_ = xs.clone().requires_grad_(True), xq.clone().requires_grad_(True)
    att.zero_grad(set_to_none=True)
    zs, zq = compiled(xs_, xq_)
    g = torch.Generator().manual_seed(1)
    ((zs * torch.randn(zs.shape, generator=g)).sum() + (zq * torch.randn(zq.shape, generator=g)).sum()).backward()
    assert torch.allclose(zs, ref["z_s"], atol=1e-5) and torch.allclose(zq, ref["z_q"], atol=1e-5)
    assert torch.allclose(xs_.grad, ref["x_s.grad"], atol=1e-5)
    assert torch.allclose(att.query_blocks[1].g.weight.grad, ref["query_blocks.1.g.weight.grad"], atol=1e-5)
    torch._dynamo.reset()


# ---------------------------------------------------------------------------- the two-branch stack as one node
def test_two_branch_stack_is_one_autograd_node():
    """Both branches' blocks run as one TwoBranchStackFunction node whose inputs are the parameters
    themselves (no per-block or weight-stacking nodes in the graph), with the reference's values."""
    att = _stack(2, "fixed", blocks=2)
    torch.manual_seed(12)
    xs, xq = torch.randn(1, 24, 3, 4, requires_grad=True), torch.randn(1, 24, 3, 4, requires_grad=True)
    zs, zq = att(xs, xq)
    assert type(zs.grad_fn).__name__ == "TwoBranchStackFunctionBackward" and zs.grad_fn is zq.grad_fn
    leaves = {id(f.variable) for f, _ in zs.grad_fn.next_functions if f is not None and hasattr(f, "variable")}
    assert leaves == {id(p) for p in att.parameters()} | {id(xs), id(xq)}


def test_two_branch_stack_channels_last_and_frozen_parameters():
    """channels_last features keep their layout; frozen parameters get no gradient while the
    features' gradients stay the reference's."""
    att = _stack(2, "learned", blocks=2)
    torch.manual_seed(13)
    xs, xq = torch.randn(2, 24, 4, 3), torch.randn(2, 24, 4, 3)
    ref = _outputs_and_grads(att, xs, xq, fused=False)
    att.fused = True
    for p in att.parameters():
        p.requires_grad_(False)
    att.zero_grad(set_to_none=True)
    xs_ = xs.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    xq_ = xq.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    zs, zq = att(xs_, xq_)
    assert type(zs.grad_fn).__name__ == "TwoBranchStackFunctionBackward"
    assert zs.is_contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    ((zs * torch.randn(zs.shape, generator=g)).sum() + (zq * torch.randn(zq.shape, generator=g)).sum()).backward()
    assert all(p.grad is None for p in att.parameters())
    _assert_close(
        {k: ref[k] for k in ("z_s", "z_q", "x_s.grad", "x_q.grad")},
        {"z_s": zs.detach(), "z_q": zq.detach(), "x_s.grad": xs_.grad, "x_q.grad": xq_.grad},
        rtol=1e-4,
    )
