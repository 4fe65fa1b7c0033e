"""SSL-RPNet: RPNet (Tang et al., ICCV 2021) trained with the superpixel self-supervision.

Reference code: github.com/uci-cbcl/RP-Net (``net/rp_net.py``: ``ContextCorrelationEncoder``,
``Correlation``, ``RP_Net.forward``; ``yamls/example.yml``), read and re-written here.

Parts:

:func:`local_correlation`
    C(h, w, k) = <f1(h, w), f2((h, w) + d_k)> / sqrt(C) for the (2r+1)^2 offsets d_k of a
    (2r+1) x (2r+1) window (zero outside the map); the reference samples the full correlation
    volume at the window with ``grid_sample`` (same values).
:class:`ContextRelationEncoder` (CRE)
    f1 = ReLU(BN(conv3x3(x_fg))), f2 = ReLU(BN(conv3x3(x_bg))) of the foreground- and
    background-masked features x M, x (1 - M); context feature = ReLU(BN(conv1x1([corr(f1, f2), f1])))
    with ``CONTEXT_CHANNELS`` = 64 channels: how each pixel relates to its surroundings across the
    mask boundary.
:class:`RecurrentPrototypeSegmenter`
    support context z_s = CRE(x_s M_s, x_s (1 - M_s)); foreground / background prototypes by
    masked average pooling of z_s (Eq. 15); the query mask M_q is refined recurrently:
    z_q = CRE(x_q M_q, x_q (1 - M_q)), scores = alpha cos(z_q, p) (alpha = 20, RPNet's ``scaler``),
    M_q = 1[softmax > 0.5] pooled to the feature grid (hard mask, ``soft_mask: False``), repeated
    ``TRAIN_ITERS`` = 4 times in training and ``EVAL_ITERS`` = 10 at evaluation
    (``n_iter_refinement`` / ``n_test_iter_refinement``); the output is the last iteration's.

Adaptation to the self-supervised setting (as the CRAPNet paper does, "SSL-RPNet"; ours where the
paper gives no detail):

- the first query mask: the reference starts from a registration-based approximate query label,
  which does not exist here; we start from the prototypical-network prediction on the encoder
  features (global foreground/background prototypes of x_s, alpha cos, argmax), the network
  RPNet refines;
- the loss is the framework's (Eq. 18-20: class-weighted cross-entropy on the query + PANet
  prototype alignment from z_q and the predicted query mask segmenting z_s) instead of the
  reference's Dice + cross-entropy, so every method is trained with the same objective;
- the encoder is crapnet's (``model.encoder``); the correlation radius ``CORRELATION_RADIUS`` = 5
  feature pixels as the reference's ``mask_refinement_correlation_radius``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crapnet_core.models.base import (
    FewShotModel,
    SegmenterOutput,
    broadcast_support,
    check_episode,
    fg_bg,
    single_shot,
    upsample,
)
from crapnet_core.models.config import ModelConfig
from crapnet_core.models.methods.common import pooled_masked_average
from crapnet_core.models.prototypes import masked_average, pool_mask

CORRELATION_RADIUS = 5
CONTEXT_CHANNELS = 64
TRAIN_ITERS = 4
EVAL_ITERS = 10


def local_correlation(f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
    """Windowed correlation (B, (2r+1)^2, h, w) of f1, f2 (B, C, h, w), divided by sqrt(C).

    Channel k = (dy + r) (2r + 1) + (dx + r) holds <f1(y, x), f2(y + dy, x + dx)> / sqrt(C),
    0 where (y + dy, x + dx) is outside the map. (Hand-written with ``F.unfold``: torchvision and
    MONAI have no correlation layer, and the reference's full h w x h w volume + grid_sample
    is quadratic in memory.)
    """
    if f1.shape != f2.shape or f1.dim() != 4:
        raise ValueError(f"local_correlation: f1 {tuple(f1.shape)} and f2 {tuple(f2.shape)} must be equal (B, C, h, w)")
    b, c, h, w = f1.shape
    k = 2 * int(radius) + 1
    windows = F.unfold(f2, kernel_size=k, padding=int(radius)).view(b, c, k * k, h, w)
    return torch.einsum("bchw,bckhw->bkhw", f1, windows) / math.sqrt(c)


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ContextRelationEncoder(nn.Module):
    """RPNet's CRE: forward(x_fg (B, C, h, w), x_bg (B, C, h, w)) -> context (B, out_channels, h, w)."""

    def __init__(
        self, channels: int = 256, radius: int = CORRELATION_RADIUS, out_channels: int = CONTEXT_CHANNELS
    ) -> None:
        super().__init__()
        self.radius = int(radius)
        self.w_k = _conv_bn_relu(channels, channels, 3)
        self.w_q = _conv_bn_relu(channels, channels, 3)
        self.out = _conv_bn_relu(channels + (2 * self.radius + 1) ** 2, out_channels, 1)

    def forward(self, x_fg: torch.Tensor, x_bg: torch.Tensor) -> torch.Tensor:
        f1 = self.w_k(x_fg)
        f2 = self.w_q(x_bg)
        corr = local_correlation(f1, f2, self.radius)
        return self.out(torch.cat([corr, f1], dim=1))

    def masked(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """CRE(x M, x (1 - M)); mask (B, h, w) on the feature grid in [0, 1]."""
        m = mask[:, None].to(features.dtype)
        return self(features * m, features * (1.0 - m))


def two_class_scores(
    features: torch.Tensor, fg_proto: torch.Tensor, bg_proto: torch.Tensor, alpha: float
) -> torch.Tensor:
    """alpha cos to the background and foreground prototypes: (B, C, h, w), (B, C), (B, C) -> (B, 2, h, w) float32."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.float()
        bg = F.cosine_similarity(f, bg_proto.float()[..., None, None], dim=1, eps=1e-8)
        fg = F.cosine_similarity(f, fg_proto.float()[..., None, None], dim=1, eps=1e-8)
        return alpha * torch.stack([bg, fg], dim=1)


class RecurrentPrototypeSegmenter(FewShotModel):
    """SSL-RPNet. forward(support_image (Bs,3,H,W), support_mask (Bs,H,W), query_image (B,3,H,W))
    -> :class:`~crapnet_core.models.base.SegmenterOutput` (logits (B, 2, H, W); support/query features are
    the context features z_s, z_q of the last iteration; ``masks``: the query masks fed to the CRE).
    ``predict`` / ``predict_logits``: :class:`~crapnet_core.models.base.FewShotModel` (the last
    iteration's class scores upsampled; argmax = the prediction, as the reference).

    ``train_iters`` (>= 1) / ``eval_iters`` (>= 0; default ``TRAIN_ITERS`` / ``EVAL_ITERS``): refinement
    iterations in train / eval mode; ``eval_iters`` = 0 returns the initial prototypical-network scores on
    the encoder features (query features = the encoder's), the starting point the refinement improves on.
    ValueError for counts below these bounds.

    K support shots ((Bs, K, 3, H, W), (Bs, K, H, W)): the CRE encodes every shot with its own mask and
    each prototype is the mean over the shots of the per-shot prototypes (PANet's ``getPrototype``, kept
    in RP-Net's ``net/rp_net.py``, whose reference passes only the first shot through the CRE)."""

    def __init__(
        self,
        cfg: ModelConfig,
        train_iters: int | None = None,
        eval_iters: int | None = None,
        radius: int = CORRELATION_RADIUS,
    ) -> None:
        train_iters = int(TRAIN_ITERS if train_iters is None else train_iters)
        eval_iters = int(EVAL_ITERS if eval_iters is None else eval_iters)
        # eval_iters = 0: the initial mask's scores, no refinement (a diagnostic: crapnet study analysis rpnet_iterations)
        if train_iters < 1 or eval_iters < 0:
            raise ValueError(
                f"RPNet: refinement iterations must be >= 1 in training and >= 0 at evaluation, "
                f"got {train_iters}, {eval_iters}"
            )
        super().__init__(cfg)
        self.alpha = float(cfg.alpha)
        self.train_iters, self.eval_iters = train_iters, eval_iters
        self.cre = ContextRelationEncoder(cfg.feature_dim, radius, CONTEXT_CHANNELS)

    def forward(self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor):
        check_episode(support_image, support_mask, query_image, type(self).__name__)
        support_image, support_mask = single_shot(support_image, support_mask)
        b = query_image.shape[0]
        size = query_image.shape[-2:]
        x_s, x_q = self.encode(support_image, query_image)
        fg, bg = fg_bg(support_mask)
        grid = x_q.shape[-2:]
        # the support side once per support (a support of batch 1 serves every query)
        if x_s.dim() == 4:
            z_s = self.cre.masked(x_s, pool_mask(fg, grid))
            protos = [
                masked_average(x_s, fg),
                masked_average(x_s, bg),
                masked_average(z_s, fg),
                masked_average(z_s, bg),
            ]
        else:  # K shots: the CRE on every shot with its own mask, prototypes averaged over the shots
            bs, k = x_s.shape[:2]
            z_s = self.cre.masked(x_s.flatten(0, 1), pool_mask(fg.flatten(0, 1), grid)).unflatten(0, (bs, k))
            protos = [
                pooled_masked_average(x_s, fg),
                pooled_masked_average(x_s, bg),
                pooled_masked_average(z_s, fg),
                pooled_masked_average(z_s, bg),
            ]
        if x_s.shape[0] != b:
            protos = [p.expand(b, -1) for p in protos]
            z_s, support_mask = broadcast_support(z_s, support_mask, b)
        # initial query mask: the prototypical network on the encoder features
        scores = two_class_scores(x_q, protos[0], protos[1], self.alpha)
        fg_p, bg_p = protos[2], protos[3]
        masks = []
        z_q = x_q
        for _ in range(self.train_iters if self.training else self.eval_iters):
            hard = (upsample(scores.detach(), size).argmax(dim=1) == 1).float()  # (B, H, W)
            m_q = pool_mask(hard, grid)
            masks.append(m_q)
            z_q = self.cre.masked(x_q, m_q)
            scores = two_class_scores(z_q, fg_p, bg_p, self.alpha)
        out = SegmenterOutput(upsample(scores, size), scores, z_s, z_q, support_mask)
        out.masks = masks
        return out


def use_batch_statistics(model: RecurrentPrototypeSegmenter) -> int:
    """Make the CRE's BatchNorm layers normalise with the statistics of the batch at hand in eval mode too
    (torch does so for a layer without running estimates; the estimates are dropped, so this is for
    evaluation only). A diagnostic of the refinement's drift at test (``crapnet study analysis
    rpnet_iterations --cre-batch-stats``, ``crapnet study analysis rpnet_batch_stats_chaos``); the
    reference evaluates with the running estimates. Returns the number of layers switched."""
    n = 0
    for m in model.cre.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
            n += 1
    return n


def build_model(cfg: ModelConfig) -> RecurrentPrototypeSegmenter:
    return RecurrentPrototypeSegmenter(cfg)


def episode_loss(model: RecurrentPrototypeSegmenter, batch: dict, cfg=None) -> dict:
    """Eq. 18-20 on the last iteration's output; the alignment uses global prototypes of z_q
    (query + predicted mask) to segment z_s (PANet/RPNet ``alignLoss``)."""
    from crapnet_core.models.config import LossConfig
    from crapnet_core.models.losses import _class_weights, weighted_cross_entropy
    from crapnet_core.models.methods.adnet import _forward_batch

    cfg = cfg if cfg is not None else LossConfig()
    out, qry_mask = _forward_batch(model, batch)
    seg = weighted_cross_entropy(out.logits, qry_mask, _class_weights(cfg, out.logits.device), cfg.reduction)
    if cfg.align_weight > 0:
        pred = out.logits.detach().argmax(dim=1)
        q_fg, q_bg = fg_bg(pred)
        scores = two_class_scores(
            out.support_features,
            masked_average(out.query_features, q_fg),
            masked_average(out.query_features, q_bg),
            model.alpha,
        )
        weight = _class_weights(cfg, scores.device) if cfg.align_class_weights else None
        align = weighted_cross_entropy(
            upsample(scores, out.support_mask.shape[-2:]), out.support_mask, weight, cfg.reduction
        )
    else:
        align = seg.new_zeros(())
    return {"total": seg + cfg.align_weight * align, "seg": seg, "align": align}


def validate(cfg) -> None:
    from crapnet_core.models.methods.common import require_own_components

    require_own_components(cfg, "rpnet")


def hashed_constants() -> dict:
    """The module constants that decide a run (config hash, :mod:`crapnet_core.models.methods`)."""
    return {
        "correlation_radius": CORRELATION_RADIUS,
        "context_channels": CONTEXT_CHANNELS,
        "train_iters": TRAIN_ITERS,
        "eval_iters": EVAL_ITERS,
    }


def method_info(cfg) -> dict:
    """Encoder initialisation and the module constants in force (not config fields: recorded here)."""
    from crapnet_core.models.methods.common import encoder_init

    return {
        "encoder_init": encoder_init(cfg),
        "refinement_iterations": {"train": TRAIN_ITERS, "eval": EVAL_ITERS},
        "correlation_radius": CORRELATION_RADIUS,
    }


__all__ = [
    "local_correlation",
    "ContextRelationEncoder",
    "RecurrentPrototypeSegmenter",
    "two_class_scores",
    "episode_loss",
    "build_model",
    "use_batch_statistics",
    "hashed_constants",
    "CORRELATION_RADIUS",
    "TRAIN_ITERS",
    "EVAL_ITERS",
]
