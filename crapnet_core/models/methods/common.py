"""Pieces shared by the registered methods (input checks, probabilities as logits, encoder facts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crapnet_core.models.segmenter import check_episode, single_shot  # noqa: F401  (re-exported: the one input check)

#: probabilities are clamped to [EPS, 1 - EPS] before the log (as ADNet / Q-Net's NLL on log-probabilities)
EPS = float(torch.finfo(torch.float32).eps)


def encode_pair(encoder, support_image: torch.Tensor, query_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_s, x_q: one encoder pass over support and query when their sizes match (as SSL-ALPNet).

    A k-shot support (Bs, K, 3, H, W) gives x_s (Bs, K, C, h, w) (its shots encoded with the query).
    """
    if support_image.dim() == 5:
        bs, k = support_image.shape[:2]
        x_s, x_q = encode_pair(encoder, support_image.flatten(0, 1), query_image)
        return x_s.unflatten(0, (bs, k)), x_q
    bs = support_image.shape[0]
    if support_image.shape[1:] == query_image.shape[1:]:
        feats = encoder(torch.cat([support_image, query_image], dim=0))
        return feats[:bs], feats[bs:]
    return encoder(support_image), encoder(query_image)


def broadcast_support(x_s: torch.Tensor, support_mask: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand a support of batch 1 to the query batch ``b`` (one shot or K shots: any trailing axes)."""
    if x_s.shape[0] != b:
        x_s = x_s.expand(b, *x_s.shape[1:])
        support_mask = support_mask.expand(b, *support_mask.shape[1:])
    return x_s, support_mask


def pooled_masked_average(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One prototype per episode from 1 or K support shots -> float32 (B, C).

    One shot: Eq. 15 (masked average pooling), features (B, C, h, w), mask (B, H, W). K shots:
    features (B, K, C, h, w), mask (B, K, H, W); the mean over the shots of the per-shot masked
    averages, as PANet's ``getPrototype`` (``sum(way) / n_shots``), which ADNet
    (github.com/sha168/ADNet, ``models/fewshot_anom.py``), Q-Net and RP-Net inherit.
    """
    from crapnet_core.models.prototypes import masked_average

    if features.dim() == 4:
        return masked_average(features, mask)
    b, k = features.shape[:2]
    return masked_average(features.flatten(0, 1), mask.flatten(0, 1)).unflatten(0, (b, k)).mean(dim=1)


def probability_logits(prob: torch.Tensor) -> torch.Tensor:
    """(B, h, w) foreground probability -> (B, 2, h, w) logits log([1 - p, p]) (clamped to [EPS, 1 - EPS]).

    softmax over the channels gives back [1 - p, p] exactly (the two probabilities sum to one), and
    the cross-entropy of these logits equals ADNet's NLL of the clamped log-probabilities.
    """
    p = prob.float().clamp(EPS, 1.0 - EPS)
    return torch.log(torch.stack([1.0 - p, p], dim=1))


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (B, K, h, w) to ``size`` (align_corners=False, as the rest of crapnet)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def require_own_components(cfg, name: str) -> None:
    """A method with its own architecture has no attention / prototype variants: ``model.attention``
    and ``model.prototypes`` must stay ``auto`` (ValueError naming the field otherwise)."""
    for field_name in ("attention", "prototypes"):
        value = getattr(cfg.model, field_name, "auto")
        if value != "auto":
            raise ValueError(f"model.{field_name}: {name} has its own architecture; {value!r} is not "
                             f"available for it (leave model.{field_name}=auto)")


def encoder_init(cfg) -> str:
    """How the encoder of ``cfg`` (ExperimentConfig) was initialised, in words."""
    if cfg.model.pretrained:
        source = "COCO (torchvision COCO_WITH_VOC_LABELS_V1)" if cfg.model.encoder == "deeplabv3_resnet101" else "ImageNet (torchvision)"
        return f"pretrained: {cfg.model.encoder} weights from {source}"
    return f"random: {cfg.model.encoder} with PyTorch's default initialisation after torch.manual_seed({cfg.train.seed})"


__all__ = ["EPS", "check_episode", "single_shot", "encode_pair", "pooled_masked_average", "broadcast_support", "probability_logits", "upsample", "encoder_init", "require_own_components"]
