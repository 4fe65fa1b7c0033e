"""The registered methods (crapnet_core/models/methods): their parts against known values, and smoke runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crapnet_core.engine.experiment import make_config
from crapnet_core.engine.runs import ensure_run, fold_configs
from crapnet_core.engine.training import build_episodes, build_model, loss_function, make_optimizer, read_checkpoint
from crapnet_core.models.base import fg_bg
from crapnet_core.models.config import METHODS
from crapnet_core.models.methods import REGISTRY, adnet, alpnet_sup, get_method, qnet, rpnet
from crapnet_core.models.prototypes import masked_average, pool_mask
from crapnet_core.models.segmenter import FewShotSegmenter


def _cfg(method, *over, setting=1, group=None):
    return make_config("smoke", "phantom", setting, 0, method, ["train.device=cpu", *over], test_group=group)


# ---------------------------------------------------------------------- registry
def test_registry_names_are_methods_and_modules_build():
    assert set(REGISTRY) <= set(METHODS)
    assert {"alpnet_init", "alpnet_sup", "rpnet", "adnet", "qnet"} <= set(REGISTRY)
    for name in REGISTRY:
        assert callable(get_method(name).build_model)
    with pytest.raises(ValueError, match="not a registered method"):
        get_method("nonet")
    with pytest.raises(ValueError, match="is not one of crapnet"):
        _cfg("nonet")


def test_one_registry_a_method_is_one_module_and_one_line():
    """facts.METHODS_REGISTRY is the only list of methods: the config's methods and components, the
    methods package's modules and the published rows all come from it."""
    from pathlib import Path

    from crapnet_core import facts, published
    from crapnet_core.models import config, methods

    registry = facts.METHODS_REGISTRY
    modules = {p.stem for p in Path(methods.__file__).parent.glob("*.py")} - {"__init__", "common"}
    assert modules == {m.module for m in registry.values() if m.module}, "one module per registered method"
    assert set(REGISTRY) == {k for k, m in registry.items() if m.module}
    assert METHODS == config.METHODS == tuple(registry)
    assert config.METHOD_COMPONENTS == {k: (m.attention, m.prototypes) for k, m in registry.items()}
    assert facts.PAPER_METHODS == ("crapnet", "alpnet", "panet") == tuple(published.PUBLISHED_METHOD_KEYS)


# ---------------------------------------------------------------------- ALPNet-init
def test_alpnet_init_is_the_untrained_alpnet_network():
    cfg = _cfg("alpnet_init")
    assert cfg.train.steps == 0 and cfg.model.method == "alpnet_init"
    init = build_model(cfg)
    ref = build_model(_cfg("alpnet"))
    assert isinstance(init, FewShotSegmenter) and init.classifier.method == "alpnet"
    a, b = init.state_dict(), ref.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_method_rules_are_checked_when_the_config_is_made(tmp_path):
    with pytest.raises(ValueError, match="train.steps: alpnet_init"):
        _cfg("alpnet_init", "train.steps=5")
    with pytest.raises(ValueError, match="data.test_group: alpnet_sup"):
        _cfg("alpnet_sup", "data.test_group=left_kidney,right_kidney,spleen,liver")
    for method in ("rpnet", "adnet", "qnet"):
        with pytest.raises(ValueError, match="model.attention"):
            _cfg(method, "model.attention=on")
        with pytest.raises(ValueError, match="model.prototypes"):
            _cfg(method, "model.prototypes=carafe")
    from crapnet_core.engine.experiment import apply_overrides
    from crapnet_core.engine.training import train

    bad = apply_overrides(_cfg("alpnet_init"), ["train.steps=3"])  # built around make_config's check
    with pytest.raises(ValueError, match="train.steps: alpnet_init"):
        train(bad, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing written


def test_alpnet_init_zero_step_run_trains_nothing_and_evaluates(tmp_path):
    cfg = _cfg("alpnet_init", setting=2, group="kidneys")  # the paper's row is in Table 2 (setting 2)
    run = ensure_run(cfg, tmp_path, progress=False)
    state = read_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 0
    fresh = build_model(cfg).state_dict()
    assert all(torch.equal(state["model"][k], fresh[k]) for k in fresh)  # the initial weights
    m = json.loads((run / "metrics.json").read_text())
    assert m["step"] == 0 and m["trained_steps"] == 0
    assert m["method_info"]["encoder_init"].startswith("random")
    assert json.loads((run / "TRAINED").read_text())["method_info"]["network"] == "alpnet"
    assert 0 <= m["mean"]["dice"] <= 1


# ---------------------------------------------------------------------- ALPNet (supervised)
def test_alpnet_sup_trains_on_the_other_group():
    assert alpnet_sup.training_organs(("left_kidney", "right_kidney")) == ("spleen", "liver")
    assert alpnet_sup.training_organs(("spleen", "liver")) == ("left_kidney", "right_kidney")
    with pytest.raises(ValueError, match="--group kidneys"):
        alpnet_sup.training_organs(("left_kidney", "right_kidney", "spleen", "liver"))
    assert _cfg("alpnet_sup").data.test_group == ("left_kidney", "right_kidney")  # default group
    for setting in (1, 2):
        groups = [c.data.test_group for c in fold_configs("smoke", "phantom", setting, "alpnet_sup", 0)]
        assert groups == [("left_kidney", "right_kidney"), ("liver", "spleen")]


@pytest.mark.parametrize("setting", [1, 2])
def test_manual_episodes_follow_the_rule(setting):
    from crapnet_core.data.datasets import load_volume

    cfg = _cfg("alpnet_sup", "train.steps=40", "data.augment=false", setting=setting, group="kidneys")
    dataset, spec, fold, _ = build_episodes(cfg)
    assert isinstance(dataset, alpnet_sup.ManualEpisodeDataset) and len(dataset) == 40
    test_ids = {spec.label_id(o) for o in ("left_kidney", "right_kidney")}
    seen = set()
    for i in range(40):
        item = dataset[i]
        organ = item["organ"]
        seen.add(organ)
        assert organ in ("spleen", "liver")
        s = (item["support_scan_id"], item["support_slice_index"])
        q = (item["scan_id"], item["slice_index"])
        assert s != q
        for sid, z in (s, q):
            assert sid in fold.train_ids
            lab = load_volume(spec, sid).label[:, :, z]
            assert (lab == spec.label_id(organ)).any()
            if setting == 2:  # setting 2: no slice shows a tested organ
                assert not np.isin(lab, list(test_ids)).any()
        # unaugmented: the mask is the organ's manual label, resized to the input size
        lab = load_volume(spec, q[0]).label[:, :, q[1]] == spec.label_id(organ)
        expect = F.interpolate(
            torch.from_numpy(lab.astype(np.float32))[None, None], size=cfg.data.input_size, mode="nearest"
        )[0, 0]
        assert set(torch.unique(item["query_mask"]).tolist()) <= {0, 1}
        assert (item["query_mask"].float() == expect).float().mean() > 0.98
    assert seen == {"spleen", "liver"}
    again = dataset[7]
    assert torch.equal(again["query_image"], dataset[7]["query_image"])  # deterministic in (seed, i)
    if setting == 1:  # setting 1 keeps slices that also show a kidney (as background)
        shown = [load_volume(spec, sid).label[:, :, z] for o in dataset.organs for sid, z in dataset.slices[o]]
        assert any(np.isin(lab, list(test_ids)).any() for lab in shown)


# ---------------------------------------------------------------------- RPNet
def _correlation_naive(f1, f2, r):
    b, c, h, w = f1.shape
    out = torch.zeros(b, (2 * r + 1) ** 2, h, w)
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        k = (dy + r) * (2 * r + 1) + (dx + r)
                        out[:, k, y, x] = (f1[:, :, y, x] * f2[:, :, yy, xx]).sum(1) / math.sqrt(c)
    return out


@pytest.mark.parametrize("h,w,r", [(5, 6, 1), (7, 4, 2), (3, 3, 5)])
def test_local_correlation_matches_a_loop(h, w, r):
    g = torch.Generator().manual_seed(h * 10 + w + r)
    f1, f2 = torch.randn(2, 3, h, w, generator=g), torch.randn(2, 3, h, w, generator=g)
    assert torch.allclose(rpnet.local_correlation(f1, f2, r), _correlation_naive(f1, f2, r), atol=1e-5)


def test_local_correlation_known_values():
    ones = torch.ones(1, 4, 3, 3)
    c = rpnet.local_correlation(ones, ones, 1)  # <1, 1> / sqrt(4) = 2 inside the map, 0 outside
    assert torch.equal(c[0, :, 1, 1], torch.full((9,), 2.0))
    assert c[0, :, 0, 0].tolist() == [0, 0, 0, 0, 2, 2, 0, 2, 2]
    with pytest.raises(ValueError, match="must be equal"):
        rpnet.local_correlation(ones, torch.ones(1, 4, 3, 2), 1)


def test_context_relation_encoder_sees_the_mask():
    torch.manual_seed(0)
    cre = rpnet.ContextRelationEncoder(channels=8, radius=2, out_channels=6).eval()
    x = torch.randn(2, 8, 7, 7)
    m = torch.zeros(2, 7, 7)
    m[:, 2:5, 2:5] = 1
    z = cre.masked(x, m)
    assert z.shape == (2, 6, 7, 7) and (z >= 0).all()  # ReLU output
    assert not torch.allclose(z, cre.masked(x, 1 - m))  # the context depends on the mask
    assert torch.allclose(z, cre(x * m[:, None], x * (1 - m[:, None])))


def test_rpnet_recurrent_refinement():
    cfg = _cfg("rpnet").model
    torch.manual_seed(0)
    model = rpnet.build_model(cfg)
    img = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[:, 16:40, 20:44] = 1
    model.train()
    out = model(img, mask, img.flip(-1))
    assert len(out.masks) == rpnet.TRAIN_ITERS and out.logits.shape == (2, 2, 64, 64)
    assert out.query_features.shape[1] == rpnet.CONTEXT_CHANNELS
    # iteration 1's mask is the prototypical network's prediction on the encoder features
    x_s, x_q = model.encoder(torch.cat([img, img.flip(-1)])).split(2)
    fg, bg = fg_bg(mask)
    s0 = rpnet.two_class_scores(x_q, masked_average(x_s, fg), masked_average(x_s, bg), 20.0)
    hard = (F.interpolate(s0, size=(64, 64), mode="bilinear", align_corners=False).argmax(1) == 1).float()
    assert torch.allclose(out.masks[0], pool_mask(hard, x_q.shape[-2:]), atol=1e-6)
    loss = rpnet.episode_loss(
        model,
        {"support_image": img, "support_mask": mask, "query_image": img.flip(-1), "query_mask": mask.flip(-1)},
        None,
    )
    loss["total"].backward()
    assert model.cre.out[0].weight.grad.abs().sum() > 0
    model.eval()
    assert len(model(img[:1], mask[:1], img).masks) == rpnet.EVAL_ITERS
    # a support of batch 1 serves every query exactly as the same support repeated
    one = model(img[:1], mask[:1], img).logits
    rep = model(img[:1].expand(2, -1, -1, -1), mask[:1].expand(2, -1, -1), img).logits
    assert torch.allclose(one, rep, atol=1e-4)
    assert torch.allclose(model.predict_logits(img[:1], mask[:1], img, size=(64, 64)), one, atol=1e-5)
    # eval_iters = 0: the initial prototypical prediction itself, before any refinement; 1: one CRE pass on it
    x_s1, x_q2 = model.encoder(torch.cat([img[:1], img])).split([1, 2])  # eval mode: BN running statistics
    s0_eval = rpnet.two_class_scores(
        x_q2, masked_average(x_s1, fg[:1]).expand(2, -1), masked_average(x_s1, bg[:1]).expand(2, -1), 20.0
    )
    model.eval_iters = 0
    zero = model(img[:1], mask[:1], img)
    assert zero.masks == [] and torch.allclose(zero.scores, s0_eval, atol=1e-4)
    model.eval_iters = 1
    assert len(model(img[:1], mask[:1], img).masks) == 1
    # use_batch_statistics: in eval mode the CRE then normalises exactly as in train mode (batch statistics)
    model.eval_iters = rpnet.EVAL_ITERS
    x_fg, x_bg = torch.randn(2, cfg.feature_dim, 8, 8), torch.randn(2, cfg.feature_dim, 8, 8)
    running = model.cre(x_fg, x_bg)
    model.cre.train()
    batch = model.cre(x_fg, x_bg)
    model.cre.eval()
    assert not torch.allclose(running, batch, atol=1e-3)
    assert rpnet.use_batch_statistics(model) == 3  # the CRE's three BatchNorm layers
    assert torch.allclose(model.cre(x_fg, x_bg), batch, atol=1e-5) and not model.cre.training
    with pytest.raises(ValueError, match=">= 0 at evaluation"):
        rpnet.RecurrentPrototypeSegmenter(cfg, eval_iters=-1)
    with pytest.raises(ValueError, match=">= 1 in training"):
        rpnet.RecurrentPrototypeSegmenter(cfg, train_iters=0)


# ---------------------------------------------------------------------- ADNet
def test_anomaly_scores_and_threshold_known_values():
    p = torch.tensor([[1.0, 0.0]])
    f = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 3.0]]).T.reshape(1, 2, 1, 3)  # same, opposite, orthogonal
    s = adnet.anomaly_scores(f, p, 20.0)
    assert torch.allclose(s, torch.tensor([[[-20.0, 20.0, 0.0]]]))
    prob = adnet.foreground_probability(s, torch.tensor([-10.0]))
    expect = 1 - torch.sigmoid(0.5 * (torch.tensor([-20.0, 20.0, 0.0]) + 10))
    assert torch.allclose(prob[0, 0], expect)
    assert adnet.foreground_probability(torch.tensor([[[3.0]]]), torch.tensor([3.0])).item() == pytest.approx(0.5)


def _episode(size=64):
    g = torch.Generator().manual_seed(3)
    img = torch.randn(2, 3, size, size, generator=g)
    mask = torch.zeros(2, size, size, dtype=torch.long)
    mask[:, 20:44, 16:40] = 1
    return {"support_image": img, "support_mask": mask, "query_image": img.roll(3, -1), "query_mask": mask.roll(3, -1)}


def test_adnet_forward_is_the_formula():
    torch.manual_seed(0)
    model = adnet.build_model(_cfg("adnet").model).eval()
    assert model.t.item() == adnet.INITIAL_THRESHOLD
    b = _episode()
    out = model(b["support_image"], b["support_mask"], b["query_image"])
    x_s, x_q = model.encoder(torch.cat([b["support_image"], b["query_image"]])).split(2)
    proto = masked_average(x_s, b["support_mask"].float())
    prob = 1 - torch.sigmoid(0.5 * (-20 * F.cosine_similarity(x_q, proto[..., None, None], dim=1) + 10))
    prob = F.interpolate(prob[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(torch.softmax(out.logits, 1)[:, 1], prob, atol=1e-5)
    assert torch.allclose(model.predict(b["support_image"], b["support_mask"], b["query_image"]), prob, atol=1e-5)
    logits = model.predict_logits(b["support_image"], b["support_mask"], b["query_image"], size=(80, 72))
    assert logits.shape == (2, 2, 80, 72)
    assert torch.allclose(
        torch.softmax(logits, 1)[:, 1],
        F.interpolate(torch.softmax(out.scores, 1)[:, 1:], size=(80, 72), mode="bilinear", align_corners=False)[:, 0],
        atol=1e-5,
    )


def test_adnet_loss_terms():
    torch.manual_seed(0)
    model = adnet.build_model(_cfg("adnet").model).train()
    b = _episode()
    loss = adnet.episode_loss(model, b, None)
    assert loss["thresh"].item() == pytest.approx(-10.0 / 20.0)  # T / alpha
    assert loss["total"].item() == pytest.approx((loss["seg"] + loss["align"] + loss["thresh"]).item(), rel=1e-6)
    loss["total"].backward()
    assert model.t.grad is not None and model.t.grad.item() != 0
    # an empty predicted query mask (T far below every score) skips the alignment term
    with torch.no_grad():
        model.t.fill_(-1e4)
    assert adnet.episode_loss(model, b, None)["align"].item() == 0.0


# ---------------------------------------------------------------------- Q-Net
def test_minmax_sigmoid_and_refinement_loss_known_values():
    x = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    assert torch.allclose(qnet.minmax_sigmoid(x), torch.sigmoid(x))
    assert torch.allclose(qnet.minmax_sigmoid(2 * x + 7), torch.sigmoid(x))  # invariant to scale and shift
    feats = torch.randn(1, 4, 3, 3)
    proto = torch.randn(1, 4, requires_grad=True)
    empty = torch.zeros(1, 3, 3)
    loss = qnet.refinement_loss(feats, proto, empty)  # nothing replaced: BCE(x, x) = entropy of x
    s = torch.sigmoid((feats - feats.min()) / (feats.max() - feats.min()))
    assert loss.item() == pytest.approx((-(s * s.log() + (1 - s) * (1 - s).log())).mean().item(), rel=1e-5)
    loss.backward()
    assert torch.count_nonzero(proto.grad) == 0


def test_qnet_threshold_from_query_and_refinement_only_at_evaluation():
    torch.manual_seed(0)
    model = qnet.build_model(_cfg("qnet").model)
    assert not hasattr(model, "t") or not isinstance(getattr(model, "t", None), torch.nn.Parameter)
    b = _episode()
    x_q = model.encoder(b["query_image"])
    assert torch.allclose(model.threshold(x_q), torch.full((2,), -10.0))  # starts at ADNet's T
    model.train()
    x_s = model.encoder(b["support_image"])
    proto = masked_average(x_s, b["support_mask"].float())
    assert model.refine(proto, x_q, model.threshold(x_q)) is proto
    model.eval()
    with torch.no_grad():
        refined = model.refine(proto, x_q, model.threshold(x_q))
        assert refined.shape == proto.shape and not torch.allclose(refined, proto)
        assert torch.equal(qnet.refine_prototype(x_q, proto, torch.tensor([-10.0]), 20.0, iters=0), proto)
        prob = model.predict(b["support_image"], b["support_mask"], b["query_image"])
    assert prob.shape == (2, 64, 64) and ((prob >= 0) & (prob <= 1)).all()
    loss = qnet.episode_loss(model.train(), b, None)
    assert loss["thresh"].item() == 0.0
    loss["total"].backward()
    assert model.threshold_head.weight.grad.abs().sum() > 0


def test_qnet_refinement_lowers_its_loss():
    torch.manual_seed(1)
    feats = torch.randn(2, 8, 6, 6)
    proto = feats[:, :, 2, 2].clone() + 0.5 * torch.randn(2, 8)
    t = torch.tensor([-5.0, -5.0])
    mask = (adnet.foreground_probability(adnet.anomaly_scores(feats, proto, 20.0), t) > 0.5).float()
    refined = qnet.refine_prototype(feats, proto, t, 20.0, iters=30, lr=0.05)
    assert qnet.refinement_loss(feats, refined, mask) < qnet.refinement_loss(feats, proto, mask)


# ---------------------------------------------------------------------- training: learns and runs end to end
@pytest.mark.parametrize("method", ["alpnet_sup", "rpnet", "adnet", "qnet"])
def test_overfit_a_fixed_episode(method):
    cfg = _cfg(method, "train.lr=0.01")
    dataset, *_ = build_episodes(cfg)
    batch = torch.utils.data.default_collate([dataset[0]])
    model = build_model(cfg).train()
    opt, _ = make_optimizer(cfg, model)
    fn = loss_function(cfg)
    losses = []
    for _ in range(15):
        loss = fn(model, batch, cfg.loss)["seg"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("method", ["alpnet_sup", "rpnet", "adnet", "qnet"])
def test_smoke_train_and_evaluate(method, tmp_path, monkeypatch):
    # setting 2, one organ group: half the evaluation of setting 1 (the suite's time budget);
    # RPNet's 10 evaluation iterations cost 70x ALPNet's forward at this size: 2 here
    monkeypatch.setattr(rpnet, "EVAL_ITERS", 2)
    cfg = _cfg(method, "train.steps=2", setting=2, group="kidneys")
    run = ensure_run(cfg, tmp_path, progress=False)
    m = json.loads((run / "metrics.json").read_text())
    assert m["step"] == 2 and list(m["organs"]) == list(cfg.data.test_group)
    assert 0 <= m["mean"]["dice"] <= 1
    assert m["method_info"]["encoder_init"].startswith("random")
    if method == "alpnet_sup":
        assert m["method_info"]["training_organs"] == ["spleen", "liver"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 3


def test_method_constants_enter_the_config_hash(monkeypatch):
    """A registered method's module constants are part of its runs' identity; the built-in
    methods' hashes are unchanged by the hook (the committed runs keep their hashes)."""
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.models.methods import rpnet

    # a run of the CHAOS setting-1 lite study (results/chaos_setting1_crapnet_lite, fold 0): its
    # hash before registered methods had constants in the hash
    crapnet = make_config(dataset="chaos", setting=1, fold=0, method="crapnet", profile="lite")
    assert "method_constants" not in crapnet.hashed_dict()
    assert crapnet.config_hash() == "7804db2a7044"

    cfg = make_config(dataset="chaos", setting=1, fold=0, method="rpnet", profile="lite")
    assert cfg.hashed_dict()["method_constants"] == {
        "correlation_radius": 5,
        "context_channels": 64,
        "train_iters": 4,
        "eval_iters": 10,
    }
    before = cfg.config_hash()
    monkeypatch.setattr(rpnet, "EVAL_ITERS", 11)
    assert cfg.config_hash() != before
    for method in ("adnet", "qnet", "alpnet_sup"):
        assert make_config(dataset="chaos", setting=1, fold=0, method=method, profile="lite").hashed_dict()[
            "method_constants"
        ]
