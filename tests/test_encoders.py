"""Encoders (Sec. 3.3, 4.3): (B, 3, H, W) -> (B, 256, H/8, W/8)."""

from __future__ import annotations

import pytest
import torch

from crapnet_core.models import encoders
from crapnet_core.models.encoders import CPU_ENCODER, ENCODERS, PAPER_ENCODER, PretrainedWeightsError, build_encoder

SMALL = [n for n in ENCODERS if n != PAPER_ENCODER]


def test_registry_names():
    assert PAPER_ENCODER == "deeplabv3_resnet101" and PAPER_ENCODER in ENCODERS
    assert CPU_ENCODER in ENCODERS and CPU_ENCODER != PAPER_ENCODER


@pytest.mark.parametrize("name", SMALL)
def test_small_encoder_shape_and_stride(name):
    torch.manual_seed(0)
    enc = build_encoder(name)
    out = enc(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 256, 8, 12)
    assert enc.output_stride == 8


def test_feature_dim_option():
    enc = build_encoder(CPU_ENCODER, feature_dim=64)
    assert enc(torch.randn(1, 3, 32, 32)).shape == (1, 64, 4, 4)


def test_dilated_resnet18_uses_dilation_not_stride():
    enc = build_encoder("resnet18_os8")
    layer3, layer4 = enc.backbone[6], enc.backbone[7]
    assert layer3[0].conv1.stride == (1, 1) and layer3[1].conv2.dilation == (2, 2)
    assert layer4[0].conv1.dilation == (2, 2) and layer4[1].conv2.dilation == (4, 4)
    assert layer4[0].downsample[0].stride == (1, 1)


def test_paper_encoder_structure_and_stride():
    # the 256 x 256 -> 256 x 32 x 32 forward runs once, in tests/test_model.py
    torch.manual_seed(0)
    enc = build_encoder(PAPER_ENCODER).eval()
    assert enc.proj.in_channels == 2048 and enc.proj.out_channels == 256 and enc.proj.bias is None
    assert enc.backbone.return_layers == {"layer4": "out"}
    assert enc.backbone.layer4[0].conv2.dilation == (2, 2) and enc.backbone.layer4[0].conv2.stride == (1, 1)
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 256, 8, 8)


def test_unknown_encoder_error():
    with pytest.raises(ValueError, match="unknown encoder 'nope'.*deeplabv3_resnet101"):
        build_encoder("nope")


def test_bad_input_shape_error():
    enc = build_encoder(CPU_ENCODER)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.randn(1, 1, 32, 32))


def test_pretrained_missing_says_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsError) as err:
        build_encoder(PAPER_ENCODER, pretrained=True)
    msg = str(err.value)
    assert "deeplabv3_resnet101_coco-586e9e4e.pth" in msg and "https://download.pytorch.org" in msg
    assert str(tmp_path) in msg and "pretrained=False" in msg


def test_pretrained_loads_from_local_cache(tmp_path, monkeypatch):
    """A weights file in the torch cache is loaded (never downloaded)."""
    from crapnet_core.models._torchvision import classification_models

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = classification_models().ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(123)
    reference = classification_models().resnet18(weights=None)
    path = encoders._weights_file(weights)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    enc = build_encoder("resnet18_l2", pretrained=True)
    assert torch.equal(enc.backbone[0].weight, reference.conv1.weight)
    assert torch.equal(enc.backbone[5][0].conv1.weight, reference.layer2[0].conv1.weight)
