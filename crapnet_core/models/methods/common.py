"""Pieces shared by the registered methods (shot pooling, probabilities as logits, config checks, encoder facts).

The episode contract, the encoder pass and the prediction are the base class's
(:class:`crapnet_core.models.base.FewShotModel`)."""

from __future__ import annotations

import torch

#: probabilities are clamped to [EPS, 1 - EPS] before the log (as ADNet / Q-Net's NLL on log-probabilities)
EPS = float(torch.finfo(torch.float32).eps)


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


def require_own_components(cfg, name: str) -> None:
    """A method with its own architecture has no attention / prototype variants: ``model.attention``
    and ``model.prototypes`` must stay ``auto`` (ValueError naming the field otherwise)."""
    for field_name in ("attention", "prototypes"):
        value = getattr(cfg.model, field_name, "auto")
        if value != "auto":
            raise ValueError(
                f"model.{field_name}: {name} has its own architecture; {value!r} is not "
                f"available for it (leave model.{field_name}=auto)"
            )


def encoder_init(cfg) -> str:
    """How the encoder of ``cfg`` (ExperimentConfig) was initialised, in words."""
    if cfg.model.pretrained:
        source = (
            "COCO (torchvision COCO_WITH_VOC_LABELS_V1)"
            if cfg.model.encoder == "deeplabv3_resnet101"
            else "ImageNet (torchvision)"
        )
        return f"pretrained: {cfg.model.encoder} weights from {source}"
    return (
        f"random: {cfg.model.encoder} with PyTorch's default initialisation after torch.manual_seed({cfg.train.seed})"
    )


__all__ = ["EPS", "pooled_masked_average", "probability_logits", "encoder_init", "require_own_components"]
