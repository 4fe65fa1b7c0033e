"""Prototypes and the similarity-based classifier (Sec. 3.6, Eq. 14-17).

A class is represented by a set of prototypes, stored as a padded tensor ``(B, K, C)`` with a
validity mask ``(B, K)`` so that every episode of a batch can keep a different number of them
without a Python loop over the batch.

Prototype sets per kind (``ModelConfig.prototype_kind``: the method's own, or
``ModelConfig.prototypes`` for the decomposition variants; named after the method that
introduced them):

``carafe`` (CRAPNet)
    local prototypes = CARAFE++ reassembly of the attended support features z_s (Eq. 14) on a
    grid of sigma x sigma cells; a local prototype is a foreground prototype where the support
    mask covers more than ``threshold`` of its cell, a background prototype where the
    background covers more than ``threshold``; plus the global foreground prototype by masked
    average pooling (Eq. 15). ``carafe_window`` places the reassembly window
    (:mod:`crapnet_core.models.carafe`: ``centred`` or ``aligned`` with the cell).
``avgpool`` (SSL-ALPNet)
    the same, with the local prototypes made by average pooling windows of
    ``pool_train`` (training) or ``pool_test`` (evaluation) feature pixels.
``global`` (SSL-PANet)
    one global foreground and one global background prototype (Eq. 15 for both classes).

Fallback (our choice; SSL-ALPNet leaves the class without prototypes, i.e. a score of 0):
when no local background prototype passes the rule, the global background prototype is used.
The foreground always has its global prototype, so small organs whose mask fills no cell to
``threshold`` are still represented. An empty mask gives a zero prototype (cosine 0).

k shots (beyond the paper, which evaluates 1 shot; :meth:`PrototypeClassifier.prototypes_shots`),
pooled as the reference code of the methods pools n shots, per class over the shots:

- SSL-PANet (``global``): PANet's ``getPrototype`` (github.com/kaixin96/PANet, ``models/fewshot.py``)
  averages the per-shot masked-average prototypes of a class: ``sum(way) / n_shots``.
- SSL-ALPNet (``avgpool``) and CRAPNet (``carafe``, whose prototype set follows SSL-ALPNet's):
  SSL-ALPNet's ``MultiProtoAsConv`` (github.com/cheng-01037/Self-supervised-Fewshot-Medical-Image-Segmentation,
  ``models/alpmodule.py``) pools the support features of every shot and keeps the local prototypes
  of all shots (``n_sup_x.reshape(1, -1, nch)`` then the ``> thresh`` selection); in its
  local + global mode (``gridconv+``) it adds the global prototype of every shot (``glb_proto``,
  one row per shot); in its global-only mode (``mask``, used for the foreground when no pooled
  cell reaches the threshold) it averages the shots' global prototypes (``proto.mean(dim=0)``).
  Here: local prototypes of every shot; the foreground's global prototypes are those of every
  shot when some shot gave a local foreground prototype, else their mean; the background's
  fallback global prototype is the mean over the shots.

Identical shots give the 1-shot answer: a prototype repeated K times leaves Eq. 17's
softmax-weighted sum unchanged, and the mean of K equal prototypes is that prototype.

Classifier (Eq. 16-17): S_k(h, w) = alpha cos(p_k, q(h, w)) for each valid prototype k of a
class; class score = sum_k softmax_k(S_k) S_k; softmax over the classes is left to the caller
(the logits are the class scores). Cosines run in float32 with autocast disabled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crapnet_core.models.carafe import CARAFEDownsample
from crapnet_core.models.config import METHOD_COMPONENTS, PROTOTYPE_KINDS

EPS = 1e-5


def _no_autocast(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


def pool_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Fraction of each cell of a ``size`` grid covered by ``mask``.

    mask: (B, H, W) in [0, 1] (any dtype); returns float32 (B, size[0], size[1]). Area pooling
    (exact cell fractions when H, W are multiples of the grid).
    """
    m = mask.float().unsqueeze(1)
    return F.adaptive_avg_pool2d(m, size).squeeze(1)


def masked_average(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 15: p = sum_hw Y(h,w) x(h,w) / sum_hw Y(h,w) (masked average pooling).

    features: (B, C, h, w); mask: (B, H, W) in [0, 1], pooled to (h, w) by area first.
    Returns float32 (B, C); a zero vector for an empty mask.
    """
    with _no_autocast(features.device.type):
        m = pool_mask(mask, features.shape[-2:])  # (B, h, w)
        f = features.float()
        num = torch.einsum("bchw,bhw->bc", f, m)
        return num / (m.sum(dim=(1, 2)).unsqueeze(1) + EPS)


def local_prototypes(
    grid_features: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local prototypes on a grid with the ``threshold`` rule.

    grid_features: (B, C, gh, gw) one candidate per cell; fg, bg: (B, H, W) masks in [0, 1].
    Returns protos (B, gh*gw, C) float32, fg_valid (B, gh*gw), bg_valid (B, gh*gw) bool
    (cell fraction of foreground / background strictly above ``threshold``).
    """
    size = grid_features.shape[-2:]
    protos = grid_features.float().flatten(2).transpose(1, 2)
    fg_valid = pool_mask(fg, size).flatten(1) > threshold
    bg_valid = pool_mask(bg, size).flatten(1) > threshold
    return protos, fg_valid, bg_valid


def class_score(protos: torch.Tensor, valid: torch.Tensor, query: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 16-17 for one class: sum_k softmax_k(S_k) S_k with S_k = alpha cos(p_k, q).

    protos: (B, K, C); valid: (B, K) bool; query: (B, C, h, w). Returns float32 (B, h, w).
    Invalid prototypes are excluded from the softmax; a class without any valid prototype
    scores 0.
    """
    with _no_autocast(query.device.type):
        p = F.normalize(protos.float(), dim=2, eps=1e-8)
        q = F.normalize(query.float(), dim=1, eps=1e-8)
        s = alpha * torch.einsum("bkc,bchw->bkhw", p, q)  # Eq. 16
        keep = valid[:, :, None, None]
        # finite fill (not -inf): a class with no valid prototype gets a uniform softmax over
        # zeros (score 0) instead of NaNs in the forward and backward pass
        s_masked = s.masked_fill(~keep, torch.finfo(s.dtype).min)
        w = torch.softmax(s_masked, dim=1)
        return (w * s.masked_fill(~keep, 0.0)).sum(dim=1)  # Eq. 17 (inside the class softmax)


class PrototypeClassifier(nn.Module):
    """Builds the prototypes of one reference (support) and scores a target (query).

    forward(ref_features (B, C, h, w), ref_fg (B, H, W), ref_bg (B, H, W), target (B, C, h', w'))
    -> class scores (B, 2, h', w') float32 (channel 0 background, 1 foreground); softmax over
    the channel gives Eq. 17's probabilities.

    ``kind`` (``carafe``, ``avgpool``, ``global``) picks the prototype set; None = the one of
    ``method`` (crapnet: carafe, alpnet: avgpool, panet: global).
    """

    def __init__(
        self,
        method: str = "crapnet",
        channels: int = 256,
        alpha: float = 20.0,
        threshold: float = 0.95,
        carafe_factor: int = 4,
        carafe_kernel: int = 5,
        carafe_encoder_kernel: int = 3,
        carafe_compressed: int = 64,
        pool_train: int = 4,
        pool_test: int = 2,
        kind: str | None = None,
        carafe_window: str = "centred",
    ) -> None:
        super().__init__()
        if kind is None:
            if method not in METHOD_COMPONENTS:
                raise ValueError(f"model.method: {method!r} is not one of {', '.join(METHOD_COMPONENTS)}")
            kind = METHOD_COMPONENTS[method][1]
        if kind not in PROTOTYPE_KINDS:
            raise ValueError(f"model.prototypes: {kind!r} is not one of {', '.join(PROTOTYPE_KINDS)}")
        self.method = method
        self.kind = kind
        self.alpha = float(alpha)
        self.threshold = float(threshold)
        self.pool_train = int(pool_train)
        self.pool_test = int(pool_test)
        self.carafe = (
            CARAFEDownsample(
                channels, carafe_factor, carafe_kernel, carafe_encoder_kernel, carafe_compressed, window=carafe_window
            )
            if kind == "carafe"
            else None
        )

    def grid_features(self, features: torch.Tensor) -> torch.Tensor | None:
        """Candidate local prototypes (B, C, gh, gw): CARAFE++ (Eq. 14; ``carafe``), average pooling
        (``avgpool``), None for ``global``."""
        if self.kind == "carafe":
            return self.carafe(features)
        if self.kind == "avgpool":
            k = self.pool_train if self.training else self.pool_test
            return F.avg_pool2d(features, kernel_size=k, stride=k, ceil_mode=True)
        return None

    def prototypes(
        self, features: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fg_protos (B,Kf,C), fg_valid (B,Kf), bg_protos (B,Kb,C), bg_valid (B,Kb))."""
        b = features.shape[0]
        glob_fg = masked_average(features, fg).unsqueeze(1)  # Eq. 15
        glob_bg = masked_average(features, bg).unsqueeze(1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=features.device)
        grid = self.grid_features(features)
        if grid is None:  # global prototypes only (SSL-PANet)
            return glob_fg, ones, glob_bg, ones
        local, fg_valid, bg_valid = local_prototypes(grid, fg, bg, self.threshold)
        fg_protos = torch.cat([local, glob_fg], dim=1)
        fg_ok = torch.cat([fg_valid, ones], dim=1)
        bg_protos = torch.cat([local, glob_bg], dim=1)
        bg_fallback = ~bg_valid.any(dim=1, keepdim=True)  # global background only when needed
        bg_ok = torch.cat([bg_valid, bg_fallback], dim=1)
        return fg_protos, fg_ok, bg_protos, bg_ok

    def prototypes_shots(
        self, features: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prototypes of K support shots pooled per class: features (B, K, C, h, w), fg / bg (B, K, H, W).

        Returns (fg_protos (B, Kf, C), fg_valid (B, Kf), bg_protos (B, Kb, C), bg_valid (B, Kb)), as
        :meth:`prototypes`; K = 1 returns exactly :meth:`prototypes` of the one shot. The pooling
        follows the reference code of the methods (module docstring, "k shots"):

        - ``global``: per class the mean over the shots of the per-shot masked averages (PANet);
        - ``carafe`` / ``avgpool``: the local prototypes of every shot (each shot's grid with its
          own mask and the ``threshold`` rule); the foreground adds the global prototype of every
          shot when at least one local foreground prototype passed, else the mean over the shots
          of the global foreground prototypes (SSL-ALPNet's ``mask`` mode); the background
          fallback (no local background prototype in any shot) is the mean over the shots of the
          global background prototypes.
        """
        b, k = features.shape[:2]
        if k == 1:
            return self.prototypes(features[:, 0], fg[:, 0], bg[:, 0])
        flat, fg_f, bg_f = features.flatten(0, 1), fg.flatten(0, 1), bg.flatten(0, 1)
        glob_fg = masked_average(flat, fg_f).unflatten(0, (b, k))  # (B, K, C), Eq. 15 per shot
        glob_bg = masked_average(flat, bg_f).unflatten(0, (b, k))
        mean_fg = glob_fg.mean(dim=1, keepdim=True)  # PANet: sum over shots / n_shots
        mean_bg = glob_bg.mean(dim=1, keepdim=True)
        ones = torch.ones(b, 1, dtype=torch.bool, device=features.device)
        grid = self.grid_features(flat)
        if grid is None:  # global prototypes only (SSL-PANet)
            return mean_fg, ones, mean_bg, ones
        local, fg_valid, bg_valid = local_prototypes(grid, fg_f, bg_f, self.threshold)  # (B*K, G, C), (B*K, G)
        g = local.shape[1]
        local = local.reshape(b, k * g, local.shape[2])  # shot-major: the G cells of shot 0, then shot 1...
        fg_valid, bg_valid = fg_valid.reshape(b, k * g), bg_valid.reshape(b, k * g)
        any_local_fg = fg_valid.any(dim=1, keepdim=True)
        fg_protos = torch.cat([local, glob_fg, mean_fg], dim=1)
        fg_ok = torch.cat([fg_valid, any_local_fg.expand(b, k), ~any_local_fg], dim=1)
        bg_protos = torch.cat([local, mean_bg], dim=1)
        bg_ok = torch.cat([bg_valid, ~bg_valid.any(dim=1, keepdim=True)], dim=1)
        return fg_protos, fg_ok, bg_protos, bg_ok

    def forward(
        self, ref_features: torch.Tensor, ref_fg: torch.Tensor, ref_bg: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        fg_p, fg_ok, bg_p, bg_ok = self.prototypes(ref_features, ref_fg, ref_bg)
        return self.scores(fg_p, fg_ok, bg_p, bg_ok, target)

    def forward_shots(
        self, ref_features: torch.Tensor, ref_fg: torch.Tensor, ref_bg: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`forward` with K reference shots: ref_features (B, K, C, h, w), ref_fg / ref_bg
        (B, K, H, W), target (B, C, h', w') -> class scores (B, 2, h', w')."""
        fg_p, fg_ok, bg_p, bg_ok = self.prototypes_shots(ref_features, ref_fg, ref_bg)
        return self.scores(fg_p, fg_ok, bg_p, bg_ok, target)

    def scores(self, fg_p, fg_ok, bg_p, bg_ok, target: torch.Tensor) -> torch.Tensor:
        """Eq. 16-17 for both classes: (B, 2, h', w') float32, channel 0 background, 1 foreground."""
        bg_score = class_score(bg_p, bg_ok, target, self.alpha)
        fg_score = class_score(fg_p, fg_ok, target, self.alpha)
        return torch.stack([bg_score, fg_score], dim=1)


__all__ = ["PrototypeClassifier", "class_score", "local_prototypes", "masked_average", "pool_mask"]
