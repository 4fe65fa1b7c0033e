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

Attention modes (:attr:`FewShotSegmenter.attention_mode`, a switch of the model that changes no
parameter, config or state_dict key; the "variants" of the diagnostics, issue 8 §3):

* ``full`` -- the model as trained (prototypes and scores from z, our reading);
* ``bypass`` -- the attention skipped, z = x (the blocks' contribution removed);
* ``literal`` -- Eq. 14-16 read literally (:func:`literal_scores`): local prototypes by CARAFE++ from
  z_s (Eq. 14), the global prototypes by masked average pooling of x_s (Eq. 15) and the scores
  against x_q (Eq. 16), i.e. the attended query features z_q are not used at all (one shot only).

A model without attention blocks (the baselines) computes the same in every mode.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from crapnet_core.models.attention import SupportQueryAttention
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
from crapnet_core.models.prototypes import PrototypeClassifier, class_score

#: read-outs of a trained model's attention (:attr:`FewShotSegmenter.attention_mode`), the
#: "variants" of the diagnostics (:func:`crapnet_core.engine.diagnostics.variant_dice`)
ATTENTION_MODES = ("full", "bypass", "literal")


def attend_shots(
    attention: SupportQueryAttention, x_s: torch.Tensor, x_q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
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


def literal_scores(
    classifier: PrototypeClassifier,
    x_s: torch.Tensor,
    z_s: torch.Tensor,
    fg: torch.Tensor,
    bg: torch.Tensor,
    x_q: torch.Tensor,
) -> torch.Tensor:
    """Class scores (B, 2, h, w) with Eq. 14-16 read literally (the ``literal`` attention mode).

    x_s, z_s (B, C, h, w) encoder and attended support features, fg / bg (B, H, W) support masks,
    x_q (B, C, h, w) encoder query features. Local prototypes from CARAFE++ of z_s (Eq. 14), global
    prototypes by masked average pooling of x_s (Eq. 15), similarities against x_q (Eq. 16).
    Relies on :meth:`PrototypeClassifier.prototypes` putting the global prototype last in each
    class's set (its documented layout); validity (threshold rule, background fallback)
    depends only on the masks, so it is the same for both calls.
    """
    fg_z, fg_ok, bg_z, bg_ok = classifier.prototypes(z_s, fg, bg)
    fg_x, _, bg_x, _ = classifier.prototypes(x_s, fg, bg)
    fg_p = torch.cat([fg_z[:, :-1], fg_x[:, -1:]], dim=1)
    bg_p = torch.cat([bg_z[:, :-1], bg_x[:, -1:]], dim=1)
    bg_score = class_score(bg_p, bg_ok, x_q, classifier.alpha)
    fg_score = class_score(fg_p, fg_ok, x_q, classifier.alpha)
    return torch.stack([bg_score, fg_score], dim=1)


def _check_mode(mode: str) -> str:
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention_mode: {mode!r} is not one of {', '.join(ATTENTION_MODES)}")
    return mode


class FewShotSegmenter(FewShotModel):
    """1-way segmenter for ``cfg.method`` in {crapnet, alpnet, panet}, 1 shot or k shots.

    forward(support_image (Bs, 3, H, W), support_mask (Bs, H, W) {0, 1},
            query_image (B, 3, H, W)) -> :class:`~crapnet_core.models.base.SegmenterOutput`;
    Bs is B or 1 (one support broadcast to every query).
    k shots: support_image (Bs, K, 3, H, W), support_mask (Bs, K, H, W); the attention runs over
    the pixels of all shots (:func:`attend_shots`), the prototypes are pooled over the shots
    (:meth:`PrototypeClassifier.prototypes_shots`); ``support_features`` and ``support_mask`` of the
    output keep the shot axis. K = 1 takes the one-shot path (same numbers bit for bit).
    ``predict`` / ``predict_logits``: :class:`~crapnet_core.models.base.FewShotModel`.

    ``attention_mode`` (constructor argument and attribute, one of :data:`ATTENTION_MODES`, default
    ``full``): how the attention is read (module docstring); ValueError for another value, and from
    forward for ``literal`` with K >= 2 shots. :meth:`attention_mode_as` sets it for a block.
    """

    def __init__(self, cfg: ModelConfig | None = None, attention_mode: str = "full") -> None:
        super().__init__(cfg if cfg is not None else ModelConfig())
        cfg = self.cfg
        self.attention_mode = attention_mode
        self.attention = (
            SupportQueryAttention(
                cfg.feature_dim, cfg.attention_dim, cfg.n_blocks, cfg.branches, temperature=cfg.attention_temperature
            )
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

    @property
    def attention_mode(self) -> str:
        """The attention read-out, one of :data:`ATTENTION_MODES` (ValueError on setting another)."""
        return self._attention_mode

    @attention_mode.setter
    def attention_mode(self, mode: str) -> None:
        self._attention_mode = _check_mode(mode)

    @contextmanager
    def attention_mode_as(self, mode: str):
        """The model with ``attention_mode = mode`` for the block, the previous mode restored afterwards."""
        previous = self.attention_mode
        self.attention_mode = mode
        try:
            yield self
        finally:
            self.attention_mode = previous

    def forward(
        self, support_image: torch.Tensor, support_mask: torch.Tensor, query_image: torch.Tensor
    ) -> SegmenterOutput:
        check_episode(support_image, support_mask, query_image, "FewShotSegmenter")
        support_image, support_mask = single_shot(support_image, support_mask)
        shots = support_image.dim() == 5  # K >= 2: (Bs, K, 3, H, W), (Bs, K, H, W)
        if shots and self.attention_mode == "literal":
            raise ValueError(
                "attention_mode: 'literal' (Eq. 14-16 read literally) is defined for one support shot, "
                f"got {support_image.shape[1]}"
            )
        x_s, x_q = self.encode(support_image, query_image)  # one encoder pass over the shots and the query
        x_s, support_mask = broadcast_support(x_s, support_mask, query_image.shape[0])
        attend = self.attention is not None and self.attention_mode != "bypass"
        if not attend:
            z_s, z_q = x_s, x_q
        elif shots:
            z_s, z_q = attend_shots(self.attention, x_s, x_q)  # Eq. 1-13 over the pixels of all shots
        else:
            z_s, z_q = self.attention(x_s, x_q)  # Eq. 1-13
        fg, bg = fg_bg(support_mask)
        if shots:
            scores = self.classifier.forward_shots(z_s, fg, bg, z_q)  # prototypes pooled over the shots
        elif attend and self.attention_mode == "literal":
            scores = literal_scores(self.classifier, x_s, z_s, fg, bg, x_q)
        else:
            scores = self.classifier(z_s, fg, bg, z_q)  # Eq. 14-17 (before the class softmax)
        logits = upsample(scores, query_image.shape[-2:])
        return SegmenterOutput(logits, scores, z_s, z_q, support_mask)

    def attention_parameters(self) -> list[nn.Parameter]:
        """Parameters of the attention blocks (empty for the baselines)."""
        return [] if self.attention is None else list(self.attention.parameters())


__all__ = ["ATTENTION_MODES", "FewShotSegmenter", "attend_shots", "literal_scores"]
