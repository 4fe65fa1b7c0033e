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

k-shot (beyond the paper's 1-shot experiments): a support of K annotated slices, (Bs, K, 3, H, W)
with masks (Bs, K, H, W). The attention treats the K shots as one support set (Eq. 1-2 sum over
the support images; :func:`attend_shots`), and the prototypes are pooled over the shots as
PANet and SSL-ALPNet define it for n shots (:meth:`PrototypeClassifier.prototypes_shots`).
The models are trained 1-shot (the paper's episodes); k shots are a test-time option.
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
    """The input checks of every segmenter's forward (ValueError naming the argument).

    Images (B, 3, H, W) with H, W multiples of 8. One shot: support_image (Bs, 3, H, W) with
    support_mask (Bs, H, W); k shots: support_image (Bs, K, 3, H, W) with support_mask
    (Bs, K, H, W), K >= 1. The support batch Bs is 1 or the query batch.
    """
    if isinstance(support_image, torch.Tensor) and support_image.dim() == 5:
        bs, k = support_image.shape[:2]
        if k < 1:
            raise ValueError(f"{who}: support_image {tuple(support_image.shape)} holds no shot (K = 0)")
        _check_images("support_image", support_image.flatten(0, 1))
        expected = (bs, k, *support_image.shape[-2:])
    else:
        _check_images("support_image", support_image)
        bs = support_image.shape[0]
        expected = (bs, *support_image.shape[-2:])
    _check_images("query_image", query_image)
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

    Every segmenter sends K = 1 through its one-shot code path, so one shot in the k-shot layout gives
    exactly (bit for bit) the one-shot answer.
    """
    if support_image.dim() == 5 and support_image.shape[1] == 1:
        return support_image[:, 0], support_mask[:, 0]
    return support_image, support_mask


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

def attend_shots(attention: SupportQueryAttention, x_s: torch.Tensor, x_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The support-query attention (Eq. 1-13) with K support shots: x_s (B, K, C, h, w), x_q (B, C, h, w).

    The paper writes Eq. 1-2 as sums over the support images i of the support set S, with one
    normalisation C(x) over "the concatenation of input support features and query feature", and
    Eq. 7 with x_s "the feature set of all the support images". So the K shots form ONE support:
    their pixels are concatenated into a set of K h w support pixels (laid out as a (K h) x w map;
    every operation of the blocks is per pixel or over the flattened pixel set, so the layout only
    orders the pixels). In the support branch every support pixel finds its best query pixel i*
    and that pixel's best support pixel j* among the pixels of all shots (Eq. 11-12), the
    resemblance softmax (Eq. 13) and the value aggregation run over all K h w pixels; in the query
    branch every query pixel attends to the pixels of all shots. CyCTR (Zhang et al. 2021), whose
    cycle the paper adapts, builds its k-shot support the same way: the support tokens of all
    shots flattened into one sequence (e.g. ``get_supp_flatten_input`` of the public
    re-implementation github.com/YanFangCS/CyCTR-Pytorch, ``model/cyc_transformer.py``).
    K identical shots give the 1-shot result up to float round-off (each pixel is repeated K times:
    the argmaxes, resemblance weights and aggregated values are unchanged).

    The stack runs through the batched blocks (:mod:`crapnet_core.models.attention_fused`) with
    each branch as its own group, since the support's K h w pixels outnumber the query's h w
    (:meth:`SupportQueryAttention._forward_fused_apart`).

    Returns z_s (B, K, C, h, w) and z_q (B, C, h, w).
    """
    b, k, c, h, w = x_s.shape
    joint = x_s.permute(0, 2, 1, 3, 4).reshape(b, c, k * h, w)  # shot-major pixel order
    z_joint, z_q = attention(joint, x_q)
    return z_joint.reshape(b, c, k, h, w).permute(0, 2, 1, 3, 4), z_q


class FewShotSegmenter(nn.Module):
    """1-way segmenter for ``cfg.method`` in {crapnet, alpnet, panet}, 1 shot or k shots.

    forward(support_image (Bs, 3, H, W), support_mask (Bs, H, W) {0, 1},
            query_image (B, 3, H, W)) -> :class:`SegmenterOutput`;
    Bs is B or 1 (one support broadcast to every query).
    k shots: support_image (Bs, K, 3, H, W), support_mask (Bs, K, H, W); the attention runs over
    the pixels of all shots (:func:`attend_shots`), the prototypes are pooled over the shots
    (:meth:`PrototypeClassifier.prototypes_shots`); ``support_features`` and ``support_mask`` of the
    output keep the shot axis. K = 1 takes the one-shot path (same numbers bit for bit).
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
        support_image, support_mask = single_shot(support_image, support_mask)
        if support_image.dim() == 5:
            return self._forward_shots(support_image, support_mask, query_image)
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

    def _forward_shots(
        self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor
    ) -> SegmenterOutput:
        """K >= 2 shots: support_image (Bs, K, 3, H, W), support_mask (Bs, K, H, W) (module docstring)."""
        bs, k = support_image.shape[:2]
        b = query_image.shape[0]
        x_s, x_q = self.encode(support_image.flatten(0, 1), query_image)  # one encoder pass over all shots
        x_s = x_s.unflatten(0, (bs, k))  # (Bs, K, C, h, w)
        if bs != b:
            x_s = x_s.expand(b, *x_s.shape[1:])
            support_mask = support_mask.expand(b, *support_mask.shape[1:])
        if self.attention is not None:
            z_s, z_q = attend_shots(self.attention, x_s, x_q)  # Eq. 1-13 over the pixels of all shots
        else:
            z_s, z_q = x_s, x_q
        fg, bg = fg_bg(support_mask)
        scores = self.classifier.forward_shots(z_s, fg, bg, z_q)  # prototypes pooled over the shots
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


__all__ = ["FewShotSegmenter", "SegmenterOutput", "attend_shots", "check_episode", "fg_bg", "n_shots", "single_shot"]
