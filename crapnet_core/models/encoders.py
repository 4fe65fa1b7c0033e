"""Feature encoders f_theta (Sec. 3.3, Eq. 3-4): (B, 3, H, W) -> (B, 256, H/8, W/8).

Every encoder keeps the same contract as the paper's (Sec. 4.3: 3 x 256 x 256 in,
256 x 32 x 32 out): a fully convolutional backbone with output stride 8 followed by a
1 x 1 convolution to ``feature_dim`` channels (no bias), as SSL-ALPNet builds its
``deeplabv3_resnet101`` encoder.

Names (see :data:`ENCODERS`):

``deeplabv3_resnet101``
    The paper's encoder: the backbone of torchvision's ``deeplabv3_resnet101`` (ResNet-101
    with layer3/layer4 dilated, output stride 8, 2048 channels) + 1 x 1 conv to 256.
    ``pretrained=True`` loads torchvision's ``COCO_WITH_VOC_LABELS_V1`` weights.
``resnet18_os8``
    ResNet-18 with layer3 and layer4 dilated by hand (stride 1, dilation 2 and 4; torchvision's
    ``replace_stride_with_dilation`` only supports Bottleneck blocks), 512 channels + 1 x 1.
``resnet18_l3_os8``
    ResNet-18 stem + layer1..layer3, layer3 dilated (stride 1, dilation 2); 256 channels + 1 x 1.
``resnet18_l2``
    ResNet-18 stem + layer1..layer2 (output stride 8 without dilation), 128 channels + 1 x 1.
    The fastest ResNet variant; recommended for the CPU ``lite`` profile (see
    ``benchmarks/bench_model.py`` and book/method.md for the measured step times).

Pretrained weights go through torchvision's weights API and are only ever read from the
local torch hub cache (``torch.hub.get_dir()/checkpoints``): this project runs offline, so
a missing file raises :class:`PretrainedWeightsError` saying which file to put where.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from crapnet_core.models._torchvision import classification_models, segmentation_models

OUTPUT_STRIDE = 8


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were requested but are not in the local torch cache."""


def _weights_file(weights) -> Path:
    """Where torchvision's ``load_state_dict_from_url`` looks for ``weights`` offline."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _require_cached(weights, encoder: str) -> None:
    path = _weights_file(weights)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"encoder {encoder!r}: pretrained=True needs the weights file {path.name} "
            f"({weights}) in the local torch cache, but {path} does not exist. Download it on a "
            f"machine with internet access from {weights.url} and copy it to {path} (or set "
            f"TORCH_HOME so that $TORCH_HOME/hub/checkpoints/{path.name} exists), or build the "
            f"encoder with pretrained=False (random initialisation)."
        )


class Encoder(nn.Module):
    """``backbone`` (output stride 8, ``backbone_channels``) + 1 x 1 conv to ``feature_dim``.

    forward: (B, 3, H, W) -> (B, feature_dim, ceil(H/8), ceil(W/8)).
    """

    def __init__(self, backbone: nn.Module, backbone_channels: int, feature_dim: int = 256, name: str = "") -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.proj = nn.Conv2d(backbone_channels, feature_dim, kernel_size=1, bias=False)
        self.feature_dim = feature_dim
        self.output_stride = OUTPUT_STRIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"encoder {self.name!r}: expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        feats = self.backbone(x)
        if isinstance(feats, dict):  # torchvision IntermediateLayerGetter
            feats = feats["out"]
        return self.proj(feats)


def _deeplabv3_resnet101(pretrained: bool) -> tuple[nn.Module, int]:
    seg = segmentation_models()
    weights = None
    if pretrained:
        weights = seg.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1
        _require_cached(weights, "deeplabv3_resnet101")
    model = seg.deeplabv3_resnet101(weights=weights, weights_backbone=None, progress=False)
    backbone = model.backbone  # IntermediateLayerGetter: {"out": layer4 (2048, H/8, W/8)[, "aux": layer3]}
    if hasattr(backbone, "return_layers"):
        backbone.return_layers = {"layer4": "out"}  # drop the aux output (same compute, less memory)
    return backbone, 2048


def _dilate_basic_layer(layer: nn.Sequential, dilation: int) -> None:
    """Turn a torchvision BasicBlock layer with stride 2 into stride 1 with ``dilation``.

    The first block keeps dilation ``dilation // 2`` in its first conv (as torchvision does for
    Bottleneck with ``replace_stride_with_dilation``), all other 3 x 3 convs use ``dilation``.
    """
    for b, block in enumerate(layer):
        for c, conv in enumerate((block.conv1, block.conv2)):
            d = max(1, dilation // 2) if (b == 0 and c == 0) else dilation
            conv.stride = (1, 1)
            conv.dilation = (d, d)
            conv.padding = (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def _resnet18(pretrained: bool, depth: int, dilate: bool, name: str) -> tuple[nn.Module, int]:
    cls = classification_models()
    weights = None
    if pretrained:
        weights = cls.ResNet18_Weights.IMAGENET1K_V1
        _require_cached(weights, name)
    net = cls.resnet18(weights=weights, progress=False)
    layers = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2]
    channels = 128
    if depth >= 3:
        if dilate:
            _dilate_basic_layer(net.layer3, 2)
        layers.append(net.layer3)
        channels = 256
    if depth >= 4:
        if dilate:
            _dilate_basic_layer(net.layer4, 4)
        layers.append(net.layer4)
        channels = 512
    return nn.Sequential(*layers), channels


#: name -> builder(pretrained) -> (backbone with output stride 8, its channels)
ENCODERS: dict[str, Callable[[bool], tuple[nn.Module, int]]] = {
    "deeplabv3_resnet101": _deeplabv3_resnet101,
    "resnet18_os8": lambda p: _resnet18(p, depth=4, dilate=True, name="resnet18_os8"),
    "resnet18_l3_os8": lambda p: _resnet18(p, depth=3, dilate=True, name="resnet18_l3_os8"),
    "resnet18_l2": lambda p: _resnet18(p, depth=2, dilate=False, name="resnet18_l2"),
}

#: The encoder recommended for CPU work (``lite`` profile); see benchmarks/bench_model.py.
CPU_ENCODER = "resnet18_l2"
PAPER_ENCODER = "deeplabv3_resnet101"


def build_encoder(name: str, pretrained: bool = False, feature_dim: int = 256) -> Encoder:
    """Build encoder ``name`` (a key of :data:`ENCODERS`): (B,3,H,W) -> (B,feature_dim,H/8,W/8).

    ``pretrained=True`` loads torchvision weights (COCO for ``deeplabv3_resnet101``, ImageNet
    for the ResNet-18 variants) from the local torch cache only; raises
    :class:`PretrainedWeightsError` naming the missing file otherwise.
    """
    if name not in ENCODERS:
        raise ValueError(f"model.encoder: unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    if int(feature_dim) < 1:
        raise ValueError(f"model.feature_dim: must be positive, got {feature_dim}")
    backbone, channels = ENCODERS[name](bool(pretrained))
    return Encoder(backbone, channels, int(feature_dim), name=name)


__all__ = ["ENCODERS", "CPU_ENCODER", "PAPER_ENCODER", "Encoder", "PretrainedWeightsError", "build_encoder"]
