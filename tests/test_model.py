"""FewShotSegmenter: CRAPNet and the SSL-PANet / SSL-ALPNet baselines."""

from __future__ import annotations

import pytest
import torch

from crapnet_core.models.config import ModelConfig
from crapnet_core.models.encoders import CPU_ENCODER
from crapnet_core.models.losses import episode_loss
from crapnet_core.models.segmenter import FewShotSegmenter

VARIANTS = [("crapnet", 2), ("crapnet", 1), ("alpnet", 2), ("panet", 2)]


def _episode(b=1, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, 3, size, size, generator=g)
    mask = torch.zeros(b, size, size, dtype=torch.long)
    mask[:, size // 4 : 3 * size // 4, size // 4 : size // 2] = 1
    return img, mask


def _model(method="crapnet", branches=2, **kw):
    torch.manual_seed(0)
    return FewShotSegmenter(ModelConfig(method=method, branches=branches, encoder=CPU_ENCODER, **kw))


@pytest.mark.parametrize("method,branches", VARIANTS)
def test_output_shapes_256(method, branches):
    model = _model(method, branches).eval()
    img, mask = _episode(1, 256)
    with torch.no_grad():
        out = model(img, mask, img.flip(-1))
    assert out.logits.shape == (1, 2, 256, 256)
    assert out.scores.shape == (1, 2, 32, 32)
    assert out.support_features.shape == out.query_features.shape == (1, 256, 32, 32)
    assert torch.isfinite(out.logits).all()


def test_paper_model_resnet101_shape_256():
    torch.manual_seed(0)
    model = FewShotSegmenter(ModelConfig()).eval()  # crapnet, deeplabv3_resnet101, 5 blocks, 2 branches
    assert model.cfg.encoder == "deeplabv3_resnet101" and len(model.attention.support_blocks) == 5
    img, mask = _episode(1, 256)
    with torch.no_grad():
        out = model(img, mask, img)
    assert out.logits.shape == (1, 2, 256, 256) and out.query_features.shape == (1, 256, 32, 32)


def test_attention_is_identity_at_init():
    model = _model().eval()
    img, mask = _episode(1, 64)
    q = img.roll(3, -1)
    with torch.no_grad():
        out = model(img, mask, q)
        x_s, x_q = model.encode(img, q)
    assert torch.equal(out.support_features, x_s) and torch.equal(out.query_features, x_q)


@pytest.mark.parametrize("method,branches", VARIANTS)
def test_gradients_reach_every_parameter(method, branches):
    model = _model(method, branches, n_blocks=2)
    img, mask = _episode(1, 64)
    batch = dict(support_image=img, support_mask=mask, query_image=img.roll(4, -1), query_mask=mask.roll(4, -1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # the zero-initialised output projections block the gradient of the embeddings on the very
    # first step (as in non-local networks); after one step every parameter must get gradient
    episode_loss(model, batch)["total"].backward()
    opt.step()
    opt.zero_grad()
    episode_loss(model, batch)["total"].backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert not missing


def test_support_broadcast_matches_per_query():
    model = _model().eval()
    img, mask = _episode(1, 64)
    queries = torch.stack([img[0].roll(s, -1) for s in (0, 3, 7)])
    with torch.no_grad():
        batched = model(img, mask, queries).logits
        single = torch.cat([model(img, mask, q[None]).logits for q in queries])
    assert batched.shape == (3, 2, 64, 64)
    assert torch.allclose(batched, single, atol=1e-4)


def test_predict_probability_no_grad_and_mode_restored():
    model = _model("alpnet").train()
    img, mask = _episode(1, 64)
    p = model.predict(img, mask, torch.cat([img, img.flip(-2)]))
    assert p.shape == (2, 64, 64) and not p.requires_grad
    assert ((p >= 0) & (p <= 1)).all()
    assert model.training  # restored


def test_forward_deterministic_under_seed():
    img, mask = _episode(2, 64)
    outs = []
    for _ in range(2):
        model = _model("crapnet", n_blocks=2)
        outs.append(model(img, mask, img.flip(-1)).logits)
    assert torch.equal(outs[0], outs[1])


def test_channels_last_and_bfloat16_autocast():
    model = _model(n_blocks=2).eval().to(memory_format=torch.channels_last)
    img, mask = _episode(2, 64)
    with torch.no_grad():
        ref = model(img, mask, img.flip(-1)).logits
        img_cl = img.contiguous(memory_format=torch.channels_last)
        cl = model(img_cl, mask, img_cl.flip(-1)).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = model(img_cl, mask, img_cl.flip(-1)).logits
    assert torch.allclose(ref, cl, atol=1e-3)
    assert bf.dtype == torch.float32 and torch.isfinite(bf).all()
    assert (bf.argmax(1) == ref.argmax(1)).float().mean() > 0.9


def test_input_errors():
    model = _model("panet")
    img, mask = _episode(2, 64)
    with pytest.raises(ValueError, match="support_mask has shape"):
        model(img, mask[:, :32], img)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(img[..., :60, :60], mask[:, :60, :60], img[..., :60, :60])
    with pytest.raises(ValueError, match="support batch 2 must be 1 or equal the query batch 3"):
        model(img, mask, torch.randn(3, 3, 64, 64))
    with pytest.raises(ValueError, match=r"query_image must be a tensor \(B, 3, H, W\)"):
        model(img, mask, img[:, :1])


def test_config_validation():
    with pytest.raises(ValueError, match="model.method"):
        ModelConfig(method="unet")
    with pytest.raises(ValueError, match="model.branches"):
        ModelConfig(branches=3)
    with pytest.raises(ValueError, match="model.proto_threshold"):
        ModelConfig(proto_threshold=1.5)
    with pytest.raises(TypeError, match="ModelConfig"):
        FewShotSegmenter({"method": "crapnet"})
