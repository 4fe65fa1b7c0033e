"""Episode loss (Sec. 3.7, Eq. 18-20): weighted query cross-entropy + lambda x prototype alignment.

* Eq. 18 (``seg``): cross-entropy of the query logits against the query (pseudo-)label with
  class weights (background 0.05, foreground 1.0). ``LossConfig.reduction`` picks PyTorch's
  weighted mean (sum_p w_{y_p} nll_p / sum_p w_{y_p}; what SSL-ALPNet trains with, default) or
  Eq. 18's literal 1/HW mean (sum_p w_{y_p} nll_p / #pixels).
* Eq. 19 (``align``, PANet's prototype alignment): the query and its predicted mask
  (argmax of the query logits, no gradient through the mask) become the support: prototypes
  from the query features z_q, built exactly as in the forward pass (same method, CARAFE++
  module, threshold rule and fallback), segment the support features z_s; cross-entropy
  against the support mask. Unweighted by default, as in SSL-ALPNet's code.
* Eq. 20: total = seg + lambda align.

Pixels labelled 255 are ignored in both terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crapnet_core.models.base import SegmenterOutput, fg_bg
from crapnet_core.models.config import LossConfig
from crapnet_core.models.segmenter import FewShotSegmenter

IGNORE_INDEX = 255
BATCH_KEYS = ("support_image", "support_mask", "query_image", "query_mask")


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, reduction: str = "weighted_mean"
) -> torch.Tensor:
    """Cross-entropy of (B, K, H, W) logits against (B, H, W) labels, ignoring 255.

    reduction ``weighted_mean``: sum w_y nll / sum w_y (torch's ``F.cross_entropy`` with
    ``weight``); ``pixel_mean``: sum w_y nll / number of labelled pixels (Eq. 18).
    """
    logits = logits.float()
    target = target.long()
    if reduction == "weighted_mean":
        return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
    if reduction != "pixel_mean":
        raise ValueError(f"loss.reduction: {reduction!r} is not one of weighted_mean, pixel_mean")
    nll = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    n = (target != IGNORE_INDEX).sum().clamp_min(1)
    return nll / n


def alignment_loss(model: FewShotSegmenter, out: SegmenterOutput, cfg: LossConfig) -> torch.Tensor:
    """Eq. 19: segment the support with prototypes from the query and its predicted mask."""
    pred = out.logits.detach().argmax(dim=1)  # (B, H, W) predicted query mask
    q_fg, q_bg = fg_bg(pred)
    scores = model.classifier(out.query_features, q_fg, q_bg, out.support_features)  # (B, 2, h, w)
    logits = F.interpolate(scores, size=out.support_mask.shape[-2:], mode="bilinear", align_corners=False)
    weight = _class_weights(cfg, logits.device) if cfg.align_class_weights else None
    return weighted_cross_entropy(logits, out.support_mask, weight, cfg.reduction)


def _class_weights(cfg: LossConfig, device: torch.device) -> torch.Tensor:
    return torch.tensor([cfg.background_weight, cfg.foreground_weight], dtype=torch.float32, device=device)


def episode_tensors(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
    """The checked tensors of a batch of episodes, on the model's device, for every method's loss.

    Returns (support_image (B, 3, H, W), support_mask (B, H, W), query_image (B, 3, H, W),
    query_mask (B, H, W)). KeyError names the missing keys; ValueError when the query mask's shape
    does not match the query image.
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"episode_loss: batch lacks {', '.join(missing)} (has {', '.join(map(str, batch))})")
    device = next(model.parameters()).device
    sup_img, sup_mask, qry_img, qry_mask = (batch[k].to(device, non_blocking=True) for k in BATCH_KEYS)
    if qry_mask.shape != (qry_img.shape[0], *qry_img.shape[-2:]):
        raise ValueError(
            f"episode_loss: query_mask has shape {tuple(qry_mask.shape)}, expected "
            f"{(qry_img.shape[0], *qry_img.shape[-2:])} matching query_image"
        )
    return sup_img, sup_mask, qry_img, qry_mask


def episode_loss(model: FewShotSegmenter, batch: dict, cfg: LossConfig | None = None) -> dict[str, torch.Tensor]:
    """Eq. 20 on a batch of episodes -> dict(total, seg, align) (scalar tensors; total has grad).

    batch: dict with ``support_image`` (B, 3, H, W), ``support_mask`` (B, H, W) {0, 1},
    ``query_image`` (B, 3, H, W), ``query_mask`` (B, H, W) {0, 1} (other keys are ignored).
    Tensors are moved to the model's device.
    """
    cfg = cfg if cfg is not None else LossConfig()
    sup_img, sup_mask, qry_img, qry_mask = episode_tensors(model, batch)
    out = model(sup_img, sup_mask, qry_img)
    seg = weighted_cross_entropy(out.logits, qry_mask, _class_weights(cfg, out.logits.device), cfg.reduction)
    if cfg.align_weight > 0:
        align = alignment_loss(model, out, cfg)
    else:
        align = seg.new_zeros(())
    total = seg + cfg.align_weight * align
    return {"total": total, "seg": seg, "align": align}


__all__ = ["episode_loss", "episode_tensors", "alignment_loss", "weighted_cross_entropy", "IGNORE_INDEX"]
