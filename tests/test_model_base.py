"""One few-shot model base (issue 20 §4): every method's model is a FewShotModel, and the prediction
written once in the base gives bit for bit what each family's own copy gave before.

The references below are the previous implementations, written out: ``predict_logits`` of the
segmenter and of SSL-RPNet (the feature-grid scores bilinearly upsampled), of ADNet / Q-Net (the
foreground probability upsampled, then log([1 - p, p])), ``predict`` of all (softmax of the
forward's logits), and the diagnostics' former ``AttentionVariant`` read-outs (``bypass``,
``literal``), now attention modes of the segmenter.
"""

from __future__ import annotations

import copy
import functools
import hashlib

import pytest
import torch
import torch.nn.functional as F

from crapnet_core.engine.checkpoints import build_model
from crapnet_core.engine.experiment import make_config
from crapnet_core.models.base import FewShotModel, SegmenterOutput, fg_bg
from crapnet_core.models.config import METHODS
from crapnet_core.models.methods import REGISTRY
from crapnet_core.models.methods.common import probability_logits
from crapnet_core.models.segmenter import ATTENTION_MODES, FewShotSegmenter, literal_scores

#: sha1 of the state_dict keys (one per line) of each method's smoke model, computed with the models as they
#: were before the base class: checkpoints of every method keep loading
STATE_DICT_KEYS_SHA1 = {
    "crapnet": "20d15597da2a50d240700cdeb713d8e857b1ecd9",
    "alpnet": "adf890570510e0a93fd7f66c37513c5c81cf9f11",
    "panet": "adf890570510e0a93fd7f66c37513c5c81cf9f11",
    "alpnet_init": "adf890570510e0a93fd7f66c37513c5c81cf9f11",
    "alpnet_sup": "adf890570510e0a93fd7f66c37513c5c81cf9f11",
    "rpnet": "ebd41a485d865eef09152794eeb061ba6daf4628",
    "adnet": "bb7924992453a5968527b2af74a2ccc02070c4fa",
    "qnet": "7e3af85c1d97de7d6b68bed63f758535a162d973",
}


@functools.cache
def _built(method: str):
    group = ("liver", "spleen") if method == "alpnet_sup" else None
    cfg = make_config("smoke", "phantom", 1, 0, method, ["train.device=cpu"], test_group=group)
    return build_model(cfg)


def _model(method: str):
    """A fresh copy of ``method``'s smoke model (seeded init; built once per session)."""
    return copy.deepcopy(_built(method))


def _episode():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 3, 64, 64, generator=g)
    q = torch.randn(2, 3, 64, 64, generator=g)
    m = torch.zeros(1, 64, 64, dtype=torch.long)
    m[:, 16:48, 8:40] = 1
    s2 = torch.randn(1, 2, 3, 64, 64, generator=g)
    m2 = torch.zeros(1, 2, 64, 64, dtype=torch.long)
    m2[:, :, 20:50, 10:44] = 1
    return s, m, q, s2, m2


def _old_predict_logits(model, s, m, q, size):
    """predict_logits as each family wrote it before the base class."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(s, m, q)
        size = tuple(size) if size is not None else tuple(q.shape[-2:])
        if model.cfg.method in ("adnet", "qnet"):
            prob = torch.softmax(out.scores.float(), dim=1)[:, 1:]
            up = F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
            return probability_logits(up[:, 0])
        return F.interpolate(out.scores.float(), size=size, mode="bilinear", align_corners=False)
    finally:
        model.train(was)


def _old_predict(model, s, m, q):
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.softmax(model(s, m, q).logits.float(), dim=1)[:, 1]
    finally:
        model.train(was)


def test_every_method_model_is_a_few_shot_model_with_the_one_prediction():
    assert set(REGISTRY) < set(METHODS)  # the built-in crapnet/alpnet/panet are checked too
    for method in METHODS:
        model = _model(method)
        assert isinstance(model, FewShotModel), method
        for name in ("predict", "predict_logits", "encode"):  # written once, in the base
            assert getattr(type(model), name) is getattr(FewShotModel, name), (method, name)


@pytest.mark.parametrize("method", METHODS)
def test_predictions_equal_the_previous_implementation(method):
    torch.manual_seed(0)
    model = _model(method)
    s, m, q, s2, m2 = _episode()
    model.eval()
    assert torch.equal(model.predict(s, m, q), _old_predict(model, s, m, q)), method
    assert torch.equal(model.predict_logits(s, m, q, size=(50, 60)), _old_predict_logits(model, s, m, q, (50, 60)))
    assert torch.equal(model.predict_logits(s2, m2, q), _old_predict_logits(model, s2, m2, q, None)), method  # K = 2
    model.train()
    model.predict(s, m, q[:1])
    assert model.training  # the caller's mode is restored
    with pytest.raises(TypeError, match=f"{type(model).__name__}: cfg must be a ModelConfig"):
        type(model)({"method": method})


def test_state_dict_keys_are_those_of_the_checkpoints():
    assert set(STATE_DICT_KEYS_SHA1) == set(METHODS)
    for method, sha in STATE_DICT_KEYS_SHA1.items():
        keys = "\n".join(_model(method).state_dict())
        assert hashlib.sha1(keys.encode()).hexdigest() == sha, method


def _old_variant(model: FewShotSegmenter, variant: str, s, m, q) -> SegmenterOutput:
    """The diagnostics' former AttentionVariant.forward for ``bypass`` / ``literal`` (one shot)."""
    bs, b = s.shape[0], q.shape[0]
    x_s, x_q = model.encode(s, q)
    if bs != b:
        x_s = x_s.expand(b, *x_s.shape[1:])
        m = m.expand(b, *m.shape[1:])
    fg, bg = fg_bg(m)
    if variant == "bypass" or model.attention is None:
        z_s, z_q = x_s, x_q
        scores = model.classifier(z_s, fg, bg, z_q)
    else:
        z_s, z_q = model.attention(x_s, x_q)
        scores = literal_scores(model.classifier, x_s, z_s, fg, bg, x_q)
    logits = F.interpolate(scores, size=q.shape[-2:], mode="bilinear", align_corners=False)
    return SegmenterOutput(logits, scores, z_s, z_q, m)


@pytest.mark.parametrize("method", ["crapnet", "alpnet"])
def test_attention_modes_equal_the_former_diagnostics_variants(method):
    model = _model(method).eval()
    if model.attention is not None:  # blocks away from the identity, so the modes differ
        torch.manual_seed(3)
        with torch.no_grad():
            for blk in [*model.attention.support_blocks, *model.attention.query_blocks]:
                blk.out.weight.normal_(0, 0.5)
    s, m, q, _, _ = _episode()
    for mode in ATTENTION_MODES:
        with model.attention_mode_as(mode), torch.no_grad():
            out = model(s, m, q)
            ref = model(s, m, q) if mode == "full" else _old_variant(model, mode, s, m, q)
            for field in ("logits", "scores", "support_features", "query_features", "support_mask"):
                assert torch.equal(getattr(out, field), getattr(ref, field)), (method, mode, field)
            expected = F.interpolate(ref.scores.float(), size=(50, 60), mode="bilinear", align_corners=False)
            assert torch.equal(model.predict_logits(s, m, q, size=(50, 60)), expected), (method, mode)
    assert model.attention_mode == "full"
