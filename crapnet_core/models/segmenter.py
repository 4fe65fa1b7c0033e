"""The few-shot segmenter: CRAPNet and the SSL-PANet / SSL-ALPNet baselines (Sec. 3.2-3.6).

``FewShotSegmenter(ModelConfig(...))`` chains

1. the encoder f_theta (Eq. 3-4), run once on the support and query images together (as
   SSL-ALPNet does), (B, 3, H, W) -> (B, 256, H/8, W/8);
2. when the config uses attention (``ModelConfig.uses_attention``: crapnet, or a baseline
   with ``model.attention=on``) the support-query attention with cycle resemblance
   (Eq. 1-13, :class:`~crapnet_core.models.attention.SupportQueryAttention`) giving z_s and z_q;
   otherwise the encoder features are used directly (z = x);
3. the prototypes and similarity classifier (Eq. 14-17,
   :class:`~crapnet_core.models.prototypes.PrototypeClassifier`) with prototypes from z_s and the
   support mask, scored on z_q ("decoded query feature", Sec. 3.2); the prototype set is
   ``ModelConfig.prototype_kind`` (CARAFE++ for crapnet, average pooling for alpnet, global
   for panet, or the variant's ``model.prototypes``);
4. bilinear upsampling of the two class scores to the input size: ``logits`` (B, 2, H, W),
   channel 0 background, 1 foreground; softmax over channels = Eq. 17.
"""

from __future__ import annotations

from contextlib import contextmanager

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crapnet_core.models.attention import SupportQueryAttention
from crapnet_core.models.config import ModelConfig
from crapnet_core.models.encoders import OUTPUT_STRIDE, build_encoder
from crapnet_core.models.prototypes import PrototypeClassifier


@dataclass
class SegmenterOutput:
    """What :meth:`FewShotSegmenter.forward` returns.

    logits: (B, 2, H, W) class scores upsampled to the input size (softmax -> probabilities).
    scores: (B, 2, h, w) class scores at feature resolution.
    support_features: (B, C, h, w) z_s (attended support features; x_s for the baselines).
    query_features: (B, C, h, w) z_q (attended query features; x_q for the baselines).
    support_mask: (B, H, W) the support mask, broadcast to the query batch.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    support_features: torch.Tensor
    query_features: torch.Tensor
    support_mask: torch.Tensor


def _check_images(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"FewShotSegmenter: {name} must be a tensor (B, 3, H, W), got {shape}")
    h, w = x.shape[-2:]
    if h % OUTPUT_STRIDE or w % OUTPUT_STRIDE:
        raise ValueError(f"FewShotSegmenter: {name} is {h}x{w}; height and width must be multiples of {OUTPUT_STRIDE}")


def fg_bg(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground (mask == 1) and background (mask == 0) indicator maps, float32 (B, H, W).

    Any other value (e.g. an ignore label 255) belongs to neither class.
    """
    return (mask == 1).float(), (mask == 0).float()



def check_episode(support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor, who: str) -> None:
    """The input checks of every segmenter's forward: images (B, 3, H, W) with H, W multiples of 8,
    support mask (Bs, H, W), support batch 1 or the query batch (ValueError naming the argument)."""
    _check_images("support_image", support_image)
    _check_images("query_image", query_image)
    bs, b = support_image.shape[0], query_image.shape[0]
    if support_mask.shape != (bs, *support_image.shape[-2:]):
        raise ValueError(
            f"{who}: support_mask has shape {tuple(support_mask.shape)}, expected "
            f"{(bs, *support_image.shape[-2:])} (B, H, W) matching support_image"
        )
    if bs not in (1, b):
        raise ValueError(f"{who}: support batch {bs} must be 1 or equal the query batch {b}")


@contextmanager
def eval_mode(module: nn.Module):
    """``module`` in eval mode for the block, its previous train/eval mode restored afterwards
    (the test-time calls of every segmenter: ``predict``, ``predict_logits``)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)

class FewShotSegmenter(nn.Module):
    """1-way 1-shot segmenter for ``cfg.method`` in {crapnet, alpnet, panet}.

    forward(support_image (Bs, 3, H, W), support_mask (Bs, H, W) {0, 1},
            query_image (B, 3, H, W)) -> :class:`SegmenterOutput`;
    Bs is B or 1 (one support broadcast to every query).
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"FewShotSegmenter: cfg must be a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder, pretrained=cfg.pretrained, feature_dim=cfg.feature_dim)
        self.attention = (
            SupportQueryAttention(cfg.feature_dim, cfg.attention_dim, cfg.n_blocks, cfg.branches,
                                  temperature=cfg.attention_temperature)
            if cfg.uses_attention
            else None
        )
        self.classifier = PrototypeClassifier(
            method=cfg.method,
            channels=cfg.feature_dim,
            alpha=cfg.alpha,
            threshold=cfg.proto_threshold,
            carafe_factor=cfg.carafe_factor,
            carafe_kernel=cfg.carafe_kernel,
            carafe_encoder_kernel=cfg.carafe_encoder_kernel,
            carafe_compressed=cfg.carafe_compressed,
            pool_train=cfg.alpnet_pool_train,
            pool_test=cfg.alpnet_pool_test,
            kind=cfg.prototype_kind,
            carafe_window=cfg.carafe_window,
        )

    def encode(self, support_image: torch.Tensor, query_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3-4: x_s, x_q (one encoder pass over both when their sizes match)."""
        bs = support_image.shape[0]
        if support_image.shape[1:] == query_image.shape[1:]:
            feats = self.encoder(torch.cat([support_image, query_image], dim=0))
            return feats[:bs], feats[bs:]
        return self.encoder(support_image), self.encoder(query_image)

    def forward(
        self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor
    ) -> SegmenterOutput:
        check_episode(support_image, support_mask, query_image, "FewShotSegmenter")
        bs, b = support_image.shape[0], query_image.shape[0]
        x_s, x_q = self.encode(support_image, query_image)
        if bs != b:
            x_s = x_s.expand(b, *x_s.shape[1:])
            support_mask = support_mask.expand(b, *support_mask.shape[1:])
        if self.attention is not None:
            z_s, z_q = self.attention(x_s, x_q)  # Eq. 1-13
        else:
            z_s, z_q = x_s, x_q
        fg, bg = fg_bg(support_mask)
        scores = self.classifier(z_s, fg, bg, z_q)  # Eq. 14-17 (before the class softmax)
        logits = F.interpolate(scores, size=query_image.shape[-2:], mode="bilinear", align_corners=False)
        return SegmenterOutput(logits, scores, z_s, z_q, support_mask)

    @torch.no_grad()
    def predict_logits(
        self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Class scores (B, 2, *size) float32 bilinearly upsampled from the feature grid, eval mode.

        The test-time rule of SSL-ALPNet's reference: upsample the class *logits* (here the
        Eq. 16-17 class scores before the softmax) to the label grid ``size`` (default: the
        input size) in one bilinear step and take the argmax over the 2 channels (ties go to
        background). Support batch 1 broadcasts to the query batch.
        """
        with eval_mode(self):
            out = self(support_image, support_mask, query_image)
            size = tuple(size) if size is not None else tuple(query_image.shape[-2:])
            return F.interpolate(out.scores.float(), size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, H, W) in eval mode without gradients (support batch 1 broadcasts)."""
        with eval_mode(self):
            out = self(support_image, support_mask, query_image)
            return torch.softmax(out.logits.float(), dim=1)[:, 1]

    def attention_parameters(self) -> list[nn.Parameter]:
        """Parameters of the attention blocks (empty for the baselines)."""
        return [] if self.attention is None else list(self.attention.parameters())


__all__ = ["FewShotSegmenter", "SegmenterOutput", "fg_bg"]
