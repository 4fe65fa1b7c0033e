"""Inside the attention (issue 8 §3): each quantity on a constructed case with a known value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crapnet_core.engine import diagnostics as dg
from crapnet_core.models.attention import CycleResemblanceBlock, cycle_resemblance
from crapnet_core.models.base import fg_bg
from crapnet_core.models.config import ModelConfig
from crapnet_core.models.prototypes import PrototypeClassifier
from crapnet_core.models.segmenter import FewShotSegmenter, literal_scores


def _onehot(n: int, d: int | None = None) -> torch.Tensor:
    d = d or n
    return torch.eye(d)[:, :n].unsqueeze(0)  # (1, d, n): pixel j = basis vector e_j


def test_cycle_consistency_perfect_and_degenerate():
    x = _onehot(6)
    # identical orthonormal sides: i*(j) = j, j*(j) = j for every pixel -> 1
    cyc = cycle_resemblance(x, x, x, scale=10.0)
    assert dg.cycle_consistency(cyc).item() == pytest.approx(1.0)
    # every updated pixel resembles one other pixel most, and that pixel resembles updated pixel 0 most:
    # the cycle of every j ends at j* = 0, so only j = 0 comes back -> 1 / N
    eu = torch.ones(1, 2, 5)
    eu[0, 0, 0] = 2.0  # pixel 0 has the largest affinity with everything
    eo = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    cyc = cycle_resemblance(eu, eo, torch.randn(1, 4, 5))
    assert torch.all(cyc.cycle_back == 0)
    assert dg.cycle_consistency(cyc).item() == pytest.approx(1 / 5)


def test_column_entropy_uniform_is_log_n_and_peaked_is_zero():
    n = 7
    cyc = cycle_resemblance(torch.zeros(2, 3, n), torch.zeros(2, 3, 4), torch.randn(2, 5, n))
    ent, log_n = dg.column_entropy(cyc)
    assert log_n == pytest.approx(math.log(n))
    assert torch.allclose(ent, torch.full((2,), math.log(n)), atol=1e-5)
    x = _onehot(n)
    ent, _ = dg.column_entropy(cycle_resemblance(x, x, x, scale=1e4))
    assert ent.item() == pytest.approx(0.0, abs=1e-4)
    # two equal maxima per column: entropy log 2
    e = torch.tensor([[[1.0, 1.0, 0.0]]])  # (1, d=1, N_u=3)
    ent, _ = dg.column_entropy(cycle_resemblance(e, torch.ones(1, 1, 2), torch.randn(1, 2, 3), scale=1e4))
    assert ent.item() == pytest.approx(math.log(2), abs=1e-4)


def test_residual_ratio_of_a_block_with_known_output():
    torch.manual_seed(0)
    block = CycleResemblanceBlock(channels=4, inner_channels=2)
    x, other = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    with dg.trace_attention_blocks([block]) as traces:
        z = block(x, other)
    assert dg.residual_ratio(x, z).tolist() == [0.0, 0.0]  # W_z = 0 at initialisation: identity
    # W_z y = c everywhere (weight 0, bias c): ||W_z y|| = |c| sqrt(C N)
    with torch.no_grad():
        block.out.bias.fill_(0.5)
    with dg.trace_attention_blocks([block]) as traces:
        z = block(x, other)
    expected = 0.5 * math.sqrt(4 * 9) / x.flatten(1).norm(dim=1)
    assert torch.allclose(dg.residual_ratio(x, z), expected, atol=1e-6)
    rows = dg.block_statistics(traces)
    assert [r["residual_ratio"] for r in rows] == pytest.approx(expected.tolist(), abs=1e-6)


def test_resemblance_weights_all_one_when_resemblance_is_uniform():
    x = _onehot(5)
    cyc = cycle_resemblance(x, x, x, scale=10.0)  # j* = j: cos(x_j, x_j) = 1 for every pixel -> w = 1
    s = dg.weight_summary(cyc.weights)
    assert s["mean"] == pytest.approx(1.0) and s["std"] == pytest.approx(0.0, abs=1e-6)
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(1.0) and s["share_above_2"] == 0.0
    for w in (torch.tensor([0.5, 0.5, 1.0, 3.0]), np.array([0.5, 0.5, 1.0, 3.0])):
        s = dg.weight_summary(w)
        assert s["mean"] == pytest.approx(1.25) and s["share_above_2"] == pytest.approx(0.25)


def test_prototype_counts_on_a_mask_covering_known_cells():
    clf = PrototypeClassifier(method="alpnet", channels=4, pool_train=4, pool_test=2).eval()
    feats = torch.randn(1, 4, 8, 8)  # test grid: 2 x 2 pooling -> 4 x 4 cells of 16 x 16 px at 64 px
    fg = torch.zeros(1, 64, 64)
    fg[0, :32, :16] = 1  # exactly 2 cells fully covered
    fg[0, 40:47, 40:47] = 1  # part of one cell: under 0.95
    counts = dg.prototype_counts(clf, feats, fg, 1 - fg)
    assert counts["grid"] == (4, 4)
    assert counts["fg"].tolist() == [2]
    assert counts["bg"].tolist() == [13]  # 16 cells - 2 foreground - the one 49/256 covered (bg 0.81)
    panet = PrototypeClassifier(method="panet", channels=4)
    assert dg.prototype_counts(panet, feats, fg, 1 - fg)["grid"] == (0, 0)


def _model(method: str = "crapnet") -> FewShotSegmenter:
    torch.manual_seed(0)
    cfg = ModelConfig(
        method=method, encoder="resnet18_l2", pretrained=False, feature_dim=16, attention_dim=8, n_blocks=2
    )
    return FewShotSegmenter(cfg).eval()


def _episode(b: int = 2, size: int = 64):
    g = torch.Generator().manual_seed(1)
    img = torch.randn(b, 3, size, size, generator=g)
    q = torch.randn(b, 3, size, size, generator=g)
    mask = torch.zeros(b, size, size, dtype=torch.long)
    mask[:, 16:48, 8:40] = 1
    return img, mask, q


def test_attention_modes_equal_the_model_while_the_blocks_are_the_identity_and_differ_after():
    model = _model()
    s, m, q = _episode()
    assert model.attention_mode == "full"
    full = model.predict(s, m, q)
    for v in ("bypass", "literal"):  # zero-initialised W_z: z = x, all readings agree
        with model.attention_mode_as(v):
            assert torch.allclose(model.predict(s, m, q), full, atol=1e-6), v
        assert model.attention_mode == "full"
    with torch.no_grad():
        for blk in [*model.attention.support_blocks, *model.attention.query_blocks]:
            blk.out.weight.normal_(0, 0.5)
    full = model.predict(s, m, q)
    with model.attention_mode_as("bypass"):
        bypass = model.predict(s, m, q)
    assert not torch.allclose(bypass, full, atol=1e-3)
    # bypass = the same network without attention blocks (z = x)
    x_s, x_q = model.encode(s, q)
    fg, bg = fg_bg(m)
    ref = torch.softmax(
        torch.nn.functional.interpolate(
            model.classifier(x_s, fg, bg, x_q), size=(64, 64), mode="bilinear", align_corners=False
        ),
        1,
    )[:, 1]
    assert torch.allclose(bypass, ref, atol=1e-6)
    # literal: CARAFE prototypes from z_s, global prototypes from x_s, scores against x_q
    z_s, z_q = model.attention(x_s, x_q)
    scores = literal_scores(model.classifier, x_s, z_s, fg, bg, x_q)
    literal = FewShotSegmenter(model.cfg, attention_mode="literal")  # the switch as a constructor argument
    literal.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = literal.eval()(s, m, q)
    assert torch.allclose(out.scores, scores) and torch.allclose(out.query_features, z_q)
    # with z = x the literal composition is the classifier itself
    assert torch.allclose(
        literal_scores(model.classifier, x_s, x_s, fg, bg, x_q), model.classifier(x_s, fg, bg, x_q), atol=1e-6
    )
    with pytest.raises(ValueError, match="attention_mode"):
        model.attention_mode = "nope"
    with pytest.raises(ValueError, match="attention_mode"):
        FewShotSegmenter(model.cfg, attention_mode="nope")
    with pytest.raises(ValueError, match="one support shot"):  # literal is a one-shot reading
        literal(s[:, None].expand(-1, 2, -1, -1, -1), m[:, None].expand(-1, 2, -1, -1), q)
    with pytest.raises(ValueError, match="variant"):
        dg.variant_dice(model, None, variants=("nope",))
    assert model.attention_mode == "full"


def test_diagnose_traces_every_block_and_removes_its_hooks():
    model = _model()
    s, m, q = _episode(3)
    eps = [
        {"support_image": s[i], "support_mask": m[i], "query_image": q[i], "organ": "liver", "scan_id": "1"}
        for i in range(3)
    ]
    blocks, protos, weights = dg.diagnose(model, eps, "test pairs", batch_size=2)
    assert len(blocks) == 3 * 4  # 3 episodes x (2 support + 2 query blocks)
    assert {(r["branch"], r["block"]) for r in blocks} == {("support", 1), ("support", 2), ("query", 1), ("query", 2)}
    assert all(r["residual_ratio"] == 0.0 for r in blocks)  # untrained: identity blocks
    assert all(0 < r["cycle_consistency"] <= 1 and 0 <= r["entropy_ratio"] <= 1 + 1e-6 for r in blocks)
    assert all(r["w_mean"] == pytest.approx(1.0, abs=1e-5) for r in blocks)
    assert sorted(weights) == [("query", 1), ("query", 2), ("support", 1), ("support", 2)]
    assert weights[("support", 1)].size == 3 * 8 * 8
    assert len(protos) == 3 and {p["organ"] for p in protos} == {"liver"}
    assert all(p["grid"] == "2x2" for p in protos)  # 8 x 8 features, CARAFE sigma 4
    for blk in [*model.attention.support_blocks, *model.attention.query_blocks]:
        assert not blk._forward_hooks
    # the baselines have no blocks: no rows, prototype counts still measured
    b2, p2, w2 = dg.diagnose(_model("alpnet"), eps, "test pairs")
    assert b2 == [] and w2 == {} and len(p2) == 3


def test_inside_attention_on_a_phantom_run(tmp_path):
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.runs import ensure_run

    cfg = make_config("smoke", "phantom", 1, 0, "crapnet", ["train.steps=2"])
    run = ensure_run(cfg, tmp_path, progress=False)
    res = dg.inside_attention(run, n_train=3, per_scan=1, variants=("full",))  # one evaluation: fast
    sources = {r["source"] for r in res["blocks"]}
    assert sources == {"training episodes", "test pairs"}
    assert {p["organ"] for p in res["prototypes"] if p["source"] == "test pairs"} == set(cfg.data.test_group)
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    assert res["variants"]["full"]["dice"]["mean"] == pytest.approx(metrics["mean"]["dice"], abs=1e-6)
    assert set(res["variants"]) == {"full"}


def test_eq13_bounds_match_the_formula_and_a_numerical_minimum():
    """Eq. 13 without a temperature: weights differ by at most e^2; at N = 256 the entropy of the softmax is at
    least 0.914 log N and the largest mean-one weight 7.2; projected gradient descent finds nothing lower."""
    import math

    import torch

    from crapnet_core.engine.diagnostics import eq13_bounds

    b = eq13_bounds(256)
    assert b["min_entropy_ratio"] == pytest.approx(0.9144, abs=1e-4) and b["min_entropy_k"] == 53
    assert b["max_weight"] == pytest.approx(256 * math.e**2 / (math.e**2 + 255))
    n = 12
    z = (torch.linspace(-1, 1, n)).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(800):
        p = torch.softmax(z, 0)
        h = -(p * torch.log(p)).sum()
        opt.zero_grad()
        h.backward()
        opt.step()
        with torch.no_grad():
            z.clamp_(-1, 1)
    assert h.item() / math.log(n) >= eq13_bounds(n)["min_entropy_ratio"] - 1e-6
    with pytest.raises(ValueError):
        eq13_bounds(1)
