"""The one base of every few-shot model: the episode contract and the prediction, written once.

As torchvision has one ``_SimpleSegmentationModel`` under every segmentation head
(``torchvision/models/segmentation/_utils.py``: backbone, classifier, upsampling of the logits to
the input size), every few-shot model of crapnet is a :class:`FewShotModel`:

- **the episode**: ``forward(support_image, support_mask, query_image) -> SegmenterOutput`` with
  the inputs checked by :func:`check_episode` (1 shot: (Bs, 3, H, W) with (Bs, H, W); K shots:
  (Bs, K, 3, H, W) with (Bs, K, H, W); Bs is 1 or the query batch B; H, W multiples of 8);
  K = 1 in the k-shot layout takes the one-shot path (:func:`single_shot`);
- **the encoder** f_theta (Eq. 3-4 of the CRAPNet paper), ``self.encoder`` built from the
  config, run once over support and query together (:meth:`FewShotModel.encode`, as SSL-ALPNet);
- **the prediction** (test time, eval mode, no gradients): :meth:`FewShotModel.predict_logits`
  (two class logits bilinearly resized in one step to a label grid; the label is their argmax,
  ties to background) and :meth:`FewShotModel.predict` (foreground probability at the input
  size). A model family changes only how its feature-grid scores become logits at a size
  (:meth:`FewShotModel.logits_at`; ADNet / Q-Net resize the probability, not the scores).

The families: :class:`~crapnet_core.models.segmenter.FewShotSegmenter` (CRAPNet, SSL-ALPNet,
SSL-PANet), :class:`~crapnet_core.models.methods.adnet.AnomalySegmenter` (ADNet, and Q-Net by
subclassing), :class:`~crapnet_core.models.methods.rpnet.RecurrentPrototypeSegmenter` (SSL-RPNet).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crapnet_core.models.config import ModelConfig
from crapnet_core.models.encoders import OUTPUT_STRIDE, build_encoder


@dataclass
class SegmenterOutput:
    """What the ``forward`` of every few-shot model returns.

    logits: (B, 2, H, W) class scores upsampled to the input size (softmax -> probabilities).
    scores: (B, 2, h, w) class scores at feature resolution.
    support_features: (B, C, h, w) z_s (attended support features; x_s for the baselines);
        (B, K, C, h, w) with K shots.
    query_features: (B, C, h, w) z_q (attended query features; x_q for the baselines).
    support_mask: (B, H, W) the support mask, broadcast to the query batch; (B, K, H, W) with K shots.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    support_features: torch.Tensor
    query_features: torch.Tensor
    support_mask: torch.Tensor


def _check_images(name: str, x: torch.Tensor, who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: {name} must be a tensor (B, 3, H, W), got {shape}")
    h, w = x.shape[-2:]
    if h % OUTPUT_STRIDE or w % OUTPUT_STRIDE:
        raise ValueError(f"{who}: {name} is {h}x{w}; height and width must be multiples of {OUTPUT_STRIDE}")


def check_episode(support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor, who: str) -> None:
    """The input checks of every few-shot model's forward (ValueError naming ``who`` and the argument).

    Images (B, 3, H, W) with H, W multiples of 8. One shot: support_image (Bs, 3, H, W) with
    support_mask (Bs, H, W); k shots: support_image (Bs, K, 3, H, W) with support_mask
    (Bs, K, H, W), K >= 1. The support batch Bs is 1 or the query batch.
    """
    if isinstance(support_image, torch.Tensor) and support_image.dim() == 5:
        bs, k = support_image.shape[:2]
        if k < 1:
            raise ValueError(f"{who}: support_image {tuple(support_image.shape)} holds no shot (K = 0)")
        _check_images("support_image", support_image.flatten(0, 1), who)
        expected = (bs, k, *support_image.shape[-2:])
    else:
        _check_images("support_image", support_image, who)
        bs = support_image.shape[0]
        expected = (bs, *support_image.shape[-2:])
    _check_images("query_image", query_image, who)
    b = query_image.shape[0]
    if not isinstance(support_mask, torch.Tensor) or tuple(support_mask.shape) != expected:
        shape = tuple(support_mask.shape) if isinstance(support_mask, torch.Tensor) else type(support_mask).__name__
        layout = "(B, K, H, W)" if len(expected) == 4 else "(B, H, W)"
        raise ValueError(f"{who}: support_mask has shape {shape}, expected {expected} {layout} matching support_image")
    if bs not in (1, b):
        raise ValueError(f"{who}: support batch {bs} must be 1 or equal the query batch {b}")


def n_shots(support_image: torch.Tensor) -> int:
    """Number of support shots K: 1 for a (B, 3, H, W) support, K for a (B, K, 3, H, W) one."""
    return int(support_image.shape[1]) if support_image.dim() == 5 else 1


def single_shot(support_image: torch.Tensor, support_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A k-shot support with K = 1 as the plain one-shot tensors ((B, 3, H, W), (B, H, W)); others unchanged.

    Every model sends K = 1 through its one-shot code path, so one shot in the k-shot layout gives
    exactly (bit for bit) the one-shot answer.
    """
    if support_image.dim() == 5 and support_image.shape[1] == 1:
        return support_image[:, 0], support_mask[:, 0]
    return support_image, support_mask


def fg_bg(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground (mask == 1) and background (mask == 0) indicator maps, float32, the shape of ``mask``.

    Any other value (e.g. an ignore label 255) belongs to neither class.
    """
    return (mask == 1).float(), (mask == 0).float()


def broadcast_support(x_s: torch.Tensor, support_mask: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand a support of batch 1 to the query batch ``b`` (one shot or K shots: any trailing axes)."""
    if x_s.shape[0] != b:
        x_s = x_s.expand(b, *x_s.shape[1:])
        support_mask = support_mask.expand(b, *support_mask.shape[1:])
    return x_s, support_mask


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (B, K, h, w) to ``size`` (H, W) (align_corners=False, as the rest of crapnet);
    the dtype is kept."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@contextmanager
def eval_mode(module: nn.Module):
    """``module`` in eval mode for the block, its previous train/eval mode restored afterwards
    (the test-time calls of every model: ``predict``, ``predict_logits``; the diagnostics)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class FewShotModel(nn.Module):
    """Base of every few-shot model: config, encoder, episode encoding and the prediction (module docstring).

    ``FewShotModel(cfg)`` stores ``cfg`` (a :class:`~crapnet_core.models.config.ModelConfig`; TypeError
    naming the class otherwise) and builds ``self.encoder`` (``cfg.encoder``, ``cfg.pretrained``,
    ``cfg.feature_dim``; images (B, 3, H, W) -> features (B, C, H/8, W/8)) as the first submodule
    (state_dict keys ``encoder.*``, as every family had them before the base). Subclasses define ``forward`` (returning a
    :class:`SegmenterOutput`) and, where their logits are not the bilinearly resized scores,
    :meth:`logits_at`.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"{type(self).__name__}: cfg must be a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder, pretrained=cfg.pretrained, feature_dim=cfg.feature_dim)

    def encode(self, support_image: torch.Tensor, query_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 3-4: x_s, x_q, one encoder pass over support and query when their sizes match (as SSL-ALPNet).

        support_image (Bs, 3, H, W) -> x_s (Bs, C, h, w); a k-shot support (Bs, K, 3, H, W) gives
        x_s (Bs, K, C, h, w) (its shots encoded with the query); query_image (B, 3, H', W') -> x_q (B, C, h', w').
        """
        if support_image.dim() == 5:
            bs, k = support_image.shape[:2]
            x_s, x_q = self.encode(support_image.flatten(0, 1), query_image)
            return x_s.unflatten(0, (bs, k)), x_q
        bs = support_image.shape[0]
        if support_image.shape[1:] == query_image.shape[1:]:
            feats = self.encoder(torch.cat([support_image, query_image], dim=0))
            return feats[:bs], feats[bs:]
        return self.encoder(support_image), self.encoder(query_image)

    def logits_at(self, scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Class logits (B, 2, *size) float32 from the feature-grid scores (B, 2, h, w) of ``forward``.

        Default, the test-time rule of SSL-ALPNet's reference: the scores (logits before the class
        softmax) bilinearly upsampled in one step. The argmax over the 2 channels is the label.
        """
        return upsample(scores.float(), size)

    @torch.no_grad()
    def predict_logits(
        self,
        support_image: torch.Tensor,
        support_mask: torch.Tensor,
        query_image: torch.Tensor,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Class logits (B, 2, *size) float32 at the label grid ``size`` (default: the input size), in
        eval mode without gradients (:meth:`logits_at` of the forward's scores); the argmax over the
        2 channels is the prediction (ties: background). Support batch 1 broadcasts to the query batch;
        the support may hold K shots (:func:`check_episode`).
        """
        with eval_mode(self):
            out = self(support_image, support_mask, query_image)
            size = tuple(size) if size is not None else tuple(query_image.shape[-2:])
            return self.logits_at(out.scores, size)

    @torch.no_grad()
    def predict(
        self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor
    ) -> torch.Tensor:
        """Foreground probability (B, H, W) float32 at the input size, in eval mode without gradients
        (softmax of the forward's logits; support batch 1 broadcasts)."""
        with eval_mode(self):
            out = self(support_image, support_mask, query_image)
            return torch.softmax(out.logits.float(), dim=1)[:, 1]


__all__ = [
    "FewShotModel",
    "SegmenterOutput",
    "broadcast_support",
    "check_episode",
    "eval_mode",
    "fg_bg",
    "n_shots",
    "single_shot",
    "upsample",
]
