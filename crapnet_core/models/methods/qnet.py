"""Q-Net (Shen et al., 2023): query-informed threshold adaptation and prototype refinement on ADNet.

Reference code: github.com/ZJLAB-AMMI/Q-Net (``models/fewshot.py``, ``models/encoder.py``,
``train.py``, ``test.py``), read and re-written here. Everything is ADNet
(:mod:`crapnet_core.models.methods.adnet`: one foreground prototype, anomaly scores S = -alpha cos,
p_fg = 1 - sigmoid(0.5 (S - T))) except:

- **query-informed threshold**: T is predicted from each query image instead of being one
  learned scalar: T(q) = w . GAP(x_q) + b (the reference pools the deepest backbone features,
  applies the ResNet classifier head (1000 outputs) and a Linear(1000, 1); ours is a
  Linear(C, 1) on the pooled encoder features, initialised to w = 0, b = -10 so that training
  starts from ADNet's threshold). There is no threshold loss (``train.py``: query + alignment).
- **query-informed prototype refinement** (evaluation only, ``n_iters`` = 7 in the reference
  ``config.py``): the prototype p is optimised by Adam (lr 0.01) for ``REFINE_ITERS`` steps so that
  the query features with their predicted foreground replaced by p stay close to the original
  ones: loss = BCE(sigmoid(minmax(x_q)), sigmoid(minmax(x_q'))), x_q' = x_q (1 - M) + p M,
  M = predicted query mask (argmax, recomputed with the current p after every step), minmax
  over the whole (C, h, w) map of each query. Training uses the support prototype unchanged.

Simplification (ours): ONE feature scale. The reference fuses two (ResNet-101 layer3 and layer4,
reduced to 512 channels, weights 0.9 / 0.1); crapnet's encoders return one 256-channel map at
output stride 8 (the shared encoder contract), which plays the role of the 0.9-weighted scale.
"""

from __future__ import annotations

import torch
from torch import nn

from crapnet_core.models.config import LossConfig, ModelConfig
from crapnet_core.models.methods import adnet
from crapnet_core.models.methods.adnet import (
    INITIAL_THRESHOLD,
    AnomalySegmenter,
    anomaly_scores,
    foreground_probability,
)

#: prototype refinement steps at evaluation (reference config: n_iters = 7) and Adam's learning rate
REFINE_ITERS = 7
REFINE_LR = 0.01


def minmax_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """sigmoid((x - min) / (max - min)) with min/max over all but the batch dimension ((B, ...) -> same shape)."""
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.reshape(-1, *([1] * (x.dim() - 1)))
    hi = flat.max(dim=1).values.reshape(-1, *([1] * (x.dim() - 1)))
    return torch.sigmoid((x - lo) / (hi - lo).clamp_min(1e-12))


def refinement_loss(features: torch.Tensor, prototype: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of Q-Net's per-query BCE(sigmoid(minmax(x)), sigmoid(minmax(x'))).

    features (B, C, h, w) (no gradient needed), prototype (B, C), mask (B, h, w) {0, 1};
    x' = x (1 - M) + p M. Input = the original features, target = the replaced ones (as the
    reference's ``BCELoss()(fts_norm, new_fts_norm)``); written out so that the gradient
    reaches the prototype through the target.
    """
    m = mask[:, None].float()
    replaced = features * (1.0 - m) + prototype[..., None, None] * m
    x = minmax_sigmoid(features)
    y = minmax_sigmoid(replaced)
    bce = -(y * torch.log(x.clamp_min(1e-12)) + (1.0 - y) * torch.log((1.0 - x).clamp_min(1e-12)))
    return bce.flatten(1).mean(dim=1).sum()


def refine_prototype(
    features: torch.Tensor,
    prototype: torch.Tensor,
    threshold: torch.Tensor,
    alpha: float,
    iters: int = REFINE_ITERS,
    lr: float = REFINE_LR,
) -> torch.Tensor:
    """Q-Net's test-time prototype refinement: ``iters`` Adam steps on :func:`refinement_loss`.

    features (B, C, h, w), prototype (B, C), threshold broadcastable to (B,). Returns the refined
    prototypes (B, C), detached. Each query's prototype depends only on its own loss term (the
    loss is a sum over the batch and Adam is element-wise), as the reference's loop over queries.
    """
    feats = features.detach().float()
    t = threshold.detach().float()
    p = nn.Parameter(prototype.detach().float().clone())
    opt = torch.optim.Adam([p], lr=lr)
    with torch.enable_grad(), torch.autocast(device_type=feats.device.type, enabled=False):
        mask = (foreground_probability(anomaly_scores(feats, p.detach(), alpha), t) > 0.5).float()
        for _ in range(int(iters)):
            loss = refinement_loss(feats, p, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mask = (foreground_probability(anomaly_scores(feats, p.detach(), alpha), t) > 0.5).float()
    return p.detach()


class QueryInformedSegmenter(AnomalySegmenter):
    """Q-Net: ADNet with T predicted from the query and the prototype refined on the query at evaluation.

    Same forward/predict contract as :class:`~crapnet_core.models.methods.adnet.AnomalySegmenter`.
    """

    def __init__(self, cfg: ModelConfig, refine_iters: int = REFINE_ITERS) -> None:
        super().__init__(cfg)
        del self.t  # the threshold comes from the query
        self.threshold_head = nn.Linear(cfg.feature_dim, 1)
        nn.init.zeros_(self.threshold_head.weight)
        nn.init.constant_(self.threshold_head.bias, INITIAL_THRESHOLD)
        self.refine_iters = int(refine_iters)

    def threshold(self, query_features: torch.Tensor) -> torch.Tensor:
        """T(q) (B,) = Linear(GAP(x_q))."""
        pooled = query_features.float().mean(dim=(2, 3))
        with torch.autocast(device_type=query_features.device.type, enabled=False):
            return self.threshold_head(pooled)[:, 0]

    def refine(self, prototype: torch.Tensor, query_features: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        if self.training or self.refine_iters <= 0:
            return prototype
        return refine_prototype(query_features, prototype, threshold, self.alpha, self.refine_iters)


def build_model(cfg: ModelConfig) -> QueryInformedSegmenter:
    return QueryInformedSegmenter(cfg)


def episode_loss(model: QueryInformedSegmenter, batch: dict, cfg: LossConfig | None = None) -> dict:
    """query NLL (class-weighted) + align_weight x alignment (no threshold loss) -> dict(total, seg, align)."""
    return adnet.episode_loss(model, batch, cfg, threshold_loss=False)


def validate(cfg) -> None:
    from crapnet_core.models.methods.common import require_own_components

    require_own_components(cfg, "qnet")


def hashed_constants() -> dict:
    """The module constants that decide a run (config hash, :mod:`crapnet_core.models.methods`)."""
    return {"initial_threshold": INITIAL_THRESHOLD, "refine_iters": REFINE_ITERS, "refine_lr": REFINE_LR}


def method_info(cfg) -> dict:
    return dict(adnet.method_info(cfg), prototype_refinement={"iterations": REFINE_ITERS, "adam_lr": REFINE_LR})


__all__ = [
    "QueryInformedSegmenter",
    "refine_prototype",
    "refinement_loss",
    "minmax_sigmoid",
    "build_model",
    "episode_loss",
    "hashed_constants",
    "REFINE_ITERS",
    "REFINE_LR",
]
