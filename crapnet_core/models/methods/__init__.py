"""The few-shot methods beyond the three built into ``segmenter.py``: one module each.

``crapnet``, ``alpnet`` and ``panet`` are wired into :class:`~crapnet_core.models.segmenter.FewShotSegmenter`
and :class:`~crapnet_core.models.prototypes.PrototypeClassifier`. Every other method is one module of
this package plus one line of the method registry, :data:`crapnet_core.facts.METHODS_REGISTRY`
(key -> display name, default components, module name here). This file imports nothing
heavy (no torch) and finds a method's module through the registry.

A method module defines

``build_model(cfg: ModelConfig) -> FewShotModel`` (required)
    a :class:`~crapnet_core.models.base.FewShotModel` (the one base of every model: encoder, input
    checks, ``predict`` and ``predict_logits``) with ``forward(support_image (Bs,3,H,W), support_mask
    (Bs,H,W), query_image (B,3,H,W)) -> SegmenterOutput`` (logits (B, 2, H, W), channel 1 foreground;
    softmax = probabilities); a family whose test-time logits are not the resized scores overrides
    ``logits_at`` (ADNet).
``episode_loss(model, batch, loss_cfg) -> dict`` (optional; default :func:`crapnet_core.models.losses.episode_loss`)
    ``total`` (with grad), ``seg``, ``align`` and any further named terms (scalars).
``profile_values(profile) -> dict`` (optional)
    section -> field -> value applied on top of the profile (e.g. ``train.steps = 0``).
``test_groups(setting) -> list[tuple[str, ...]]`` (optional)
    the organ groups one fold is run for (default: all organs in setting 1, the two groups in setting 2).
``build_episodes(cfg, spec, fold, stats) -> Dataset`` (optional; default: superpixel episodes)
    the training episodes (same item keys as :class:`~crapnet_core.data.episodes.EpisodeDataset`).
``hashed_constants() -> dict`` (optional, expected whenever the module has constants that change
    what a run computes: iterations, radii, initial values...)
    JSON-able name -> value, added to the run's config hash (``method_constants``), so that a run
    made with other values of them is never reused as if it were this one.
``validate(cfg) -> None`` (optional)
    raise ValueError (one line naming the field) for a config the method cannot run as asked;
    called by ``make_config`` and ``training.train``.
``method_info(cfg) -> dict`` (optional)
    facts written into ``RUN/TRAINED`` and ``RUN/metrics.json`` (e.g. how the encoder was initialised).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ...facts import METHODS_REGISTRY

#: registered method -> its module (derived from the registry: methods with a module of their own)
REGISTRY: dict[str, str] = {name: f"{__name__}.{m.module}" for name, m in METHODS_REGISTRY.items() if m.module}


def is_registered(name: str) -> bool:
    """True for a method with a module of this package (not for the built-in crapnet/alpnet/panet)."""
    return name in REGISTRY


def get_method(name: str) -> ModuleType:
    """The module of registered method ``name`` (ValueError naming the known ones otherwise)."""
    if name not in REGISTRY:
        raise ValueError(f"model.method: {name!r} is not a registered method; known: {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def hook(name: str, attribute: str):
    """``attribute`` of method ``name``'s module, or None for built-in methods / absent hooks."""
    if name not in REGISTRY:
        return None
    return getattr(get_method(name), attribute, None)


def hashed_constants(name: str) -> dict | None:
    """The constants of method ``name``'s module that enter the config hash; None for the built-in
    methods and for a module without them (their hashes stay as they were)."""
    fn = hook(name, "hashed_constants")
    return dict(fn()) if fn is not None else None


def method_info(cfg) -> dict:
    """Facts about how the run's model was made (``cfg``: ExperimentConfig); {} when none."""
    fn = hook(cfg.model.method, "method_info")
    return dict(fn(cfg)) if fn is not None else {}


__all__ = ["REGISTRY", "is_registered", "get_method", "hook", "hashed_constants", "method_info"]
