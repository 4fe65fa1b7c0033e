"""Component decomposition variants (issue 8 section 4): one model, switches for attention and
the prototype set, the three methods as presets of them."""

from __future__ import annotations

import pytest
import torch

from crapnet_core.engine.experiment import make_config
from crapnet_core.models.config import ModelConfig
from crapnet_core.models.segmenter import FewShotSegmenter

VARIANTS = {
    "alpnet": [],
    "alpnet+attention": ["model.attention=on"],
    "alpnet+carafe": ["model.prototypes=carafe"],
    "crapnet": [],
    "crapnet+aligned": ["model.carafe_window=aligned"],
}


def _cfg(name):
    method = name.split("+")[0]
    return make_config("lite", "chaos", 1, 0, method, VARIANTS[name]).model


def _small(model_cfg: ModelConfig) -> ModelConfig:
    d = dict(model_cfg.__dict__, feature_dim=32, attention_dim=8, n_blocks=1, carafe_compressed=8)
    return ModelConfig(**d)


def test_presets_and_switches():
    assert (_cfg("crapnet").uses_attention, _cfg("crapnet").prototype_kind) == (True, "carafe")
    assert (_cfg("alpnet").uses_attention, _cfg("alpnet").prototype_kind) == (False, "avgpool")
    assert (_cfg("alpnet+attention").uses_attention, _cfg("alpnet+attention").prototype_kind) == (True, "avgpool")
    assert (_cfg("alpnet+carafe").uses_attention, _cfg("alpnet+carafe").prototype_kind) == (False, "carafe")
    assert _cfg("crapnet+aligned").carafe_window == "aligned"
    p = ModelConfig(method="panet")
    assert (p.uses_attention, p.prototype_kind) == (False, "global")
    assert ModelConfig(method="crapnet", attention="off").uses_attention is False
    names = {n: make_config("lite", "chaos", 1, 0, n.split("+")[0], VARIANTS[n]).model.variant_name() for n in VARIANTS}
    assert names == {
        "alpnet": "alpnet",
        "alpnet+attention": "alpnet-att",
        "alpnet+carafe": "alpnet-carafe",
        "crapnet": "crapnet",
        "crapnet+aligned": "crapnet-aligned",
    }
    assert (
        make_config("lite", "chaos", 1, 0, "alpnet", ["model.attention=on"])
        .run_name()
        .startswith("chaos_s1_all_f0_alpnet-att_lite_")
    )
    # each variant is its own experiment (own hash)
    hashes = {make_config("lite", "chaos", 1, 0, n.split("+")[0], VARIANTS[n]).config_hash() for n in VARIANTS}
    assert len(hashes) == len(VARIANTS)
    with pytest.raises(ValueError, match="model.attention"):
        ModelConfig(attention="yes please")
    with pytest.raises(ValueError, match="model.prototypes"):
        ModelConfig(prototypes="kmeans")
    with pytest.raises(ValueError, match="model.carafe_window"):
        make_config("lite", "chaos", 1, 0, "crapnet", ["model.carafe_window=left"])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_shapes_and_one_training_step(name):
    torch.manual_seed(0)
    cfg = _small(_cfg(name))
    model = FewShotSegmenter(cfg)
    assert (model.attention is not None) == cfg.uses_attention
    assert (model.classifier.carafe is not None) == (cfg.prototype_kind == "carafe")
    s, q = torch.randn(2, 3, 96, 96), torch.randn(2, 3, 96, 96)
    m = torch.zeros(2, 96, 96)
    m[:, 20:80, 20:80] = 1
    out = model(s, m, q)
    assert out.logits.shape == (2, 2, 96, 96) and out.scores.shape == (2, 2, 12, 12)
    grid = model.classifier.grid_features(out.support_features)
    assert grid.shape[-2:] == (6, 6)  # lite: sigma 2 / pool 2 on 12 x 12 features
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(out.logits, m.long())
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    if cfg.uses_attention:  # W_z starts at zero: the step moves it
        assert model.attention.support_blocks[0].out.weight.abs().sum() > 0
    if cfg.prototype_kind == "carafe":
        assert model.classifier.carafe.encoder.weight.grad.abs().sum() > 0


def test_variant_summary_has_no_paper_row():
    from crapnet_core.engine.runs import summary_markdown

    summary = {
        "dataset": "chaos",
        "setting": 1,
        "method": "alpnet",
        "variant": "alpnet-att",
        "profile": "lite",
        "organs": ["left_kidney", "right_kidney", "spleen", "liver"],
        "folds": [0],
        "per_fold": {"0": {"dice": {"left_kidney": 0.5, "mean": 0.5}}},
        "mean": {"dice": {"left_kidney": 0.5, "mean": 0.5}, "dice_std_over_folds": {}, "hd95": {}, "asd": {}},
        "paper_dice": {"LK": 73.63, "RK": 78.39, "Spleen": 67.02, "Liver": 73.05, "Mean": 73.02},
        "train_seconds_total": 1.0,
        "eval_seconds_total": 1.0,
    }
    md = summary_markdown(summary)
    assert "SSL-ALPNet variant `alpnet-att`" in md and "(paper, Table 1)" not in md
    summary["variant"] = "alpnet"
    assert "(paper, Table 1)" in summary_markdown(summary)


def test_switches_change_the_computation():
    torch.manual_seed(1)
    s, q = torch.randn(1, 3, 96, 96), torch.randn(1, 3, 96, 96)
    m = torch.zeros(1, 96, 96)
    m[:, 10:90, 10:90] = 1

    def run(name, perturb_attention=False):
        torch.manual_seed(2)
        model = FewShotSegmenter(_small(_cfg(name))).eval()
        if perturb_attention:  # W_z = 0 at init makes the attention an identity: give it weight
            for blk in [*model.attention.support_blocks, *model.attention.query_blocks]:
                torch.nn.init.normal_(blk.out.weight, std=0.5)
        with torch.no_grad():
            return model(s, m, q)

    base = run("alpnet")
    att = run("alpnet+attention", perturb_attention=True)
    assert not torch.allclose(base.query_features, att.query_features)
    assert torch.equal(run("alpnet+attention").scores, base.scores)  # identity attention at init
    car = run("alpnet+carafe")
    assert not torch.allclose(base.scores, car.scores)
    cen, ali = run("crapnet"), run("crapnet+aligned")
    assert not torch.allclose(cen.scores, ali.scores)
