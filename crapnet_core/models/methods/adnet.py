"""ADNet (Hansen et al., Medical Image Analysis 2022): anomaly-detection-inspired few-shot segmentation.

Reference code: github.com/sha168/ADNet (``models/fewshot_anom.py``, ``main_train.py``), read and
re-written here. One episode (1-way 1-shot):

1. encoder features x_s, x_q (B, C, h, w) (our :func:`~crapnet_core.models.encoders.build_encoder`);
2. ONE foreground prototype, masked average pooling of x_s with the support mask
   (Eq. 15 of the CRAPNet paper; :func:`~crapnet_core.models.prototypes.masked_average`); the background
   has no prototype: it is everything "anomalous" with respect to the foreground;
3. anomaly score S(h, w) = -alpha cos(x_q(h, w), p)  (alpha = ``model.alpha`` = 20, ADNet's ``scaler``);
4. foreground probability p_fg = 1 - sigmoid(0.5 (S - T)) with ONE learned threshold T
   (a scalar parameter initialised to -10 as in the reference);
5. p_fg is upsampled bilinearly to the input size; the logits are log([1 - p_fg, p_fg]).

Loss (``main_train.py``): query NLL of the clamped log-probabilities with class weights
(here ``loss.background_weight`` / ``foreground_weight``, Eq. 18), + the prototype alignment loss
(the query and its predicted mask, argmax at feature resolution, give a query prototype that
segments the support with the same threshold; unweighted NLL; skipped for an episode whose
predicted query mask is empty), + the threshold loss T / alpha (``t_loss_scaler`` = 1). The
``align`` term is scaled by ``loss.align_weight`` (1 as in the reference).

Simplifications (ours): the prototype pools the mask to the feature grid by area (crapnet's Eq. 15)
instead of upsampling the features to the mask's size; the rest follows the reference.
"""

from __future__ import annotations

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
from crapnet_core.models.config import LossConfig, ModelConfig
from crapnet_core.models.methods.common import EPS, pooled_masked_average, probability_logits
from crapnet_core.models.prototypes import masked_average

#: initial threshold T of the reference (``self.t = Parameter(torch.Tensor([-10.0]))``)
INITIAL_THRESHOLD = -10.0


def anomaly_scores(features: torch.Tensor, prototype: torch.Tensor, alpha: float) -> torch.Tensor:
    """S = -alpha cos(f(h, w), p): features (B, C, h, w), prototype (B, C) -> float32 (B, h, w).

    Low (negative) scores are normal (foreground-like), high ones anomalous (background).
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        return -alpha * F.cosine_similarity(features.float(), prototype.float()[..., None, None], dim=1, eps=1e-8)


def foreground_probability(scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """p_fg = 1 - sigmoid(0.5 (S - T)); scores (B, h, w), threshold broadcastable ((), (1,) or (B,))."""
    t = threshold.float().reshape(-1, *([1] * (scores.dim() - 1))) if threshold.dim() else threshold.float()
    return 1.0 - torch.sigmoid(0.5 * (scores - t))


class AnomalySegmenter(FewShotModel):
    """ADNet: one foreground prototype, anomaly scores, a learned threshold.

    forward(support_image (Bs, 3, H, W), support_mask (Bs, H, W) {0, 1}, query_image (B, 3, H, W))
    -> :class:`~crapnet_core.models.base.SegmenterOutput` with ``logits`` log([1 - p, p]) (B, 2, H, W) and
    ``scores`` the same at feature resolution; Bs is 1 or B. K shots ((Bs, K, 3, H, W), (Bs, K, H, W)):
    the prototype is the mean over the shots of the per-shot prototypes (ADNet's ``getPrototype``). Subclasses change :meth:`threshold`
    and :meth:`refine` (Q-Net). ``predict`` / ``predict_logits``: :class:`~crapnet_core.models.base.FewShotModel`,
    with the probability (not the scores) resized (:meth:`logits_at`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.alpha = float(cfg.alpha)
        self.t = nn.Parameter(torch.tensor([INITIAL_THRESHOLD]))

    # hooks (Q-Net overrides them)
    def threshold(self, query_features: torch.Tensor) -> torch.Tensor:
        """T for each query: ADNet's one learned scalar, shape (1,)."""
        return self.t

    def refine(self, prototype: torch.Tensor, query_features: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """Prototype used for the query (ADNet: unchanged)."""
        return prototype

    def forward(self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor):
        check_episode(support_image, support_mask, query_image, type(self).__name__)
        support_image, support_mask = single_shot(support_image, support_mask)
        b = query_image.shape[0]
        x_s, x_q = self.encode(support_image, query_image)
        x_s, support_mask = broadcast_support(x_s, support_mask, b)
        fg, _ = fg_bg(support_mask)
        # (B, C); K shots: the mean of the per-shot prototypes (ADNet's getPrototype)
        prototype = masked_average(x_s, fg) if x_s.dim() == 4 else pooled_masked_average(x_s, fg)
        t = self.threshold(x_q)
        prototype = self.refine(prototype, x_q, t)
        prob = foreground_probability(anomaly_scores(x_q, prototype, self.alpha), t)  # (B, h, w)
        prob_up = upsample(prob[:, None], query_image.shape[-2:])[:, 0]
        out = SegmenterOutput(probability_logits(prob_up), probability_logits(prob), x_s, x_q, support_mask)
        out.threshold = t  # used by the losses
        return out

    def logits_at(self, scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """log([1 - p, p]) (B, 2, *size), p = the foreground probability softmax(scores)[:, 1] (B, h, w)
        upsampled bilinearly from the feature grid to ``size``; the argmax is ADNet's test rule
        (p > 0.5 on the upsampled probability)."""
        prob = torch.softmax(scores.float(), dim=1)[:, 1:]
        return probability_logits(upsample(prob, size)[:, 0])


def build_model(cfg: ModelConfig) -> AnomalySegmenter:
    return AnomalySegmenter(cfg)


def nll(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-episode NLL (B,) of log-probability logits (B, 2, H, W) against (B, H, W) labels (255 ignored).

    With ``weight`` the mean is weighted as torch's NLLLoss (sum w_y nll / sum w_y) per episode.
    """
    target = target.long()
    per_pixel = F.nll_loss(logits.float(), target, weight=weight, ignore_index=255, reduction="none")  # (B, H, W)
    valid = (target != 255).float()
    w = valid if weight is None else weight[target.clamp(0, 1)] * valid
    return per_pixel.flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(EPS)


def alignment_loss(model: AnomalySegmenter, out: SegmenterOutput) -> torch.Tensor:
    """ADNet's alignment: query prototype from the predicted query mask segments the support.

    The predicted mask is the argmax of [1 - p, p] at feature resolution (no gradient through
    it); episodes whose predicted query mask is empty contribute 0 (``skip_ways``); mean over B.
    """
    pred = out.scores.detach().argmax(dim=1)  # (B, h, w)
    q_fg = (pred == 1).float()
    proto = masked_average(out.query_features, q_fg)
    prob = foreground_probability(anomaly_scores(out.support_features, proto, model.alpha), out.threshold)
    logits = probability_logits(upsample(prob[:, None], out.support_mask.shape[-2:])[:, 0])
    per_episode = nll(logits, out.support_mask, None)
    keep = (q_fg.flatten(1).sum(1) > 0).float()
    return (per_episode * keep).sum() / per_episode.shape[0]


def _forward_batch(model, batch: dict):
    """(model output, query mask) of a batch of episodes (checked by ``losses.episode_tensors``)."""
    from crapnet_core.models.losses import episode_tensors

    sup_img, sup_mask, qry_img, qry_mask = episode_tensors(model, batch)
    return model(sup_img, sup_mask, qry_img), qry_mask


def episode_loss(
    model: AnomalySegmenter, batch: dict, cfg: LossConfig | None = None, threshold_loss: bool = True
) -> dict:
    """query NLL (class-weighted) + align_weight x alignment + T / alpha -> dict(total, seg, align, thresh)."""
    cfg = cfg if cfg is not None else LossConfig()
    out, qry_mask = _forward_batch(model, batch)
    weight = torch.tensor([cfg.background_weight, cfg.foreground_weight], dtype=torch.float32, device=out.logits.device)
    if cfg.reduction == "weighted_mean":
        seg = F.nll_loss(out.logits.float(), qry_mask.long(), weight=weight, ignore_index=255)
    else:
        from crapnet_core.models.losses import weighted_cross_entropy

        seg = weighted_cross_entropy(out.logits, qry_mask, weight, cfg.reduction)
    align = alignment_loss(model, out) if cfg.align_weight > 0 else seg.new_zeros(())
    thresh = (out.threshold.float().mean() / model.alpha) if threshold_loss else seg.new_zeros(())
    total = seg + cfg.align_weight * align + thresh
    return {"total": total, "seg": seg, "align": align, "thresh": thresh}


def validate(cfg) -> None:
    from crapnet_core.models.methods.common import require_own_components

    require_own_components(cfg, "adnet")


def hashed_constants() -> dict:
    """The module constants that decide a run (config hash, :mod:`crapnet_core.models.methods`)."""
    return {"initial_threshold": INITIAL_THRESHOLD}


def method_info(cfg) -> dict:
    from crapnet_core.models.methods.common import encoder_init

    return {"encoder_init": encoder_init(cfg)}


__all__ = [
    "AnomalySegmenter",
    "anomaly_scores",
    "foreground_probability",
    "alignment_loss",
    "episode_loss",
    "build_model",
    "nll",
    "hashed_constants",
    "INITIAL_THRESHOLD",
]
