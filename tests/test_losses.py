"""Episode loss (Eq. 18-20)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crapnet_core.models.config import LossConfig, ModelConfig
from crapnet_core.models.encoders import CPU_ENCODER
from crapnet_core.models.losses import alignment_loss, episode_loss, weighted_cross_entropy
from crapnet_core.models.segmenter import FewShotSegmenter


def _log_softmax(a, b):
    m = max(a, b)
    z = m + math.log(math.exp(a - m) + math.exp(b - m))
    return a - z, b - z


def test_weighted_cross_entropy_by_hand():
    # two pixels: (bg logit, fg logit) = (2, 0) labelled bg; (0.5, 1.5) labelled fg; one ignored
    logits = torch.tensor([[[[2.0, 0.5, 9.0]], [[0.0, 1.5, -9.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    w = torch.tensor([0.05, 1.0])
    nll_bg = -_log_softmax(2.0, 0.0)[0]
    nll_fg = -_log_softmax(0.5, 1.5)[1]
    weighted = (0.05 * nll_bg + 1.0 * nll_fg) / (0.05 + 1.0)
    pixel = (0.05 * nll_bg + 1.0 * nll_fg) / 2
    assert float(weighted_cross_entropy(logits, target, w, "weighted_mean")) == pytest.approx(weighted, rel=1e-6)
    assert float(weighted_cross_entropy(logits, target, w, "pixel_mean")) == pytest.approx(pixel, rel=1e-6)
    assert float(weighted_cross_entropy(logits, target, None)) == pytest.approx((nll_bg + nll_fg) / 2, rel=1e-6)


def _batch(size=64, b=1):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(b, 3, size, size, generator=g)
    mask = torch.zeros(b, size, size, dtype=torch.long)
    mask[:, 16:48, 16:40] = 1
    return dict(
        support_image=img,
        support_mask=mask,
        query_image=img.roll(4, -1),
        query_mask=mask.roll(4, -1),
        scan_id=["1"] * b,
    )


def _model(method):
    torch.manual_seed(0)
    return FewShotSegmenter(ModelConfig(method=method, encoder=CPU_ENCODER, n_blocks=2))


def test_episode_loss_composition():
    model = _model("crapnet")
    batch = _batch()
    cfg = LossConfig(align_weight=0.7)
    torch.manual_seed(1)
    out = episode_loss(model, batch, cfg)
    assert set(out) == {"total", "seg", "align"}
    total, seg, align = (float(out[k].detach()) for k in ("total", "seg", "align"))
    assert total == pytest.approx(seg + 0.7 * align, rel=1e-6)
    assert out["total"].requires_grad and align > 0
    model.eval()  # no BN-statistics drift between the two calls below
    seg_only = episode_loss(model, batch, LossConfig(align_weight=0.0))
    assert float(seg_only["align"]) == 0.0 and torch.equal(seg_only["total"], seg_only["seg"])


def test_seg_term_is_weighted_ce_of_query_logits():
    model = _model("alpnet").eval().requires_grad_(False)
    batch = _batch()
    out = model(batch["support_image"], batch["support_mask"], batch["query_image"])
    logp = F.log_softmax(out.logits, dim=1)
    y = batch["query_mask"]
    nll = -logp.gather(1, y[:, None])[:, 0]
    w = torch.where(y == 1, 1.0, 0.05)
    expected = float((w * nll).sum() / w.sum())
    assert float(episode_loss(model, batch)["seg"]) == pytest.approx(expected, rel=1e-5)


def test_alignment_loss_panet_direct_computation():
    """Eq. 19 for SSL-PANet written out: query prototypes from the predicted mask segment the support."""
    model = _model("panet").eval().requires_grad_(False)
    batch = _batch()
    out = model(batch["support_image"], batch["support_mask"], batch["query_image"])
    got = float(alignment_loss(model, out, LossConfig()))
    pred = out.logits.argmax(1).float()  # (1, 64, 64)
    zq, zs = out.query_features, out.support_features  # (1, C, 8, 8)
    small_fg = F.avg_pool2d(pred[:, None], 8)[:, 0]  # fraction per feature pixel
    protos = []
    for m in (1 - small_fg, small_fg):
        protos.append((zq * m[:, None]).sum((2, 3)) / (m.sum() + 1e-5))
    scores = torch.stack([20 * F.cosine_similarity(zs, p[..., None, None], dim=1) for p in protos], 1)
    logits = F.interpolate(scores, size=(64, 64), mode="bilinear", align_corners=False)
    expected = float(F.cross_entropy(logits, batch["support_mask"]))
    assert got == pytest.approx(expected, rel=1e-4)


def test_missing_batch_key_error():
    model = _model("panet")
    batch = _batch()
    del batch["query_mask"]
    with pytest.raises(KeyError, match="query_mask"):
        episode_loss(model, batch)


def test_loss_config_validation():
    with pytest.raises(ValueError, match="loss.reduction"):
        LossConfig(reduction="sum")
    with pytest.raises(ValueError, match="loss.align_weight"):
        LossConfig(align_weight=-1)


@pytest.mark.parametrize("method", ["crapnet", "alpnet", "panet"])
def test_overfitting_one_episode_lowers_the_loss(method):
    model = _model(method)
    batch = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = episode_loss(model, batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-3:]) < 0.5 * losses[0]
