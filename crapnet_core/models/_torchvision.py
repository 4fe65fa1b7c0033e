"""The one place that imports torchvision.

Why this module exists
----------------------
The package registry used here ships torchvision 0.28.0 only as a CUDA build. Its compiled
operator library (``torchvision._C``) cannot load next to a CPU-only torch, and
``import torchvision`` then fails inside ``torchvision/_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist``: that file registers fake
(meta) kernels for ``torchvision::nms`` and ``torchvision::qnms`` without first checking
that the compiled library defined them.

crapnet needs only torchvision's pure-Python model definitions (ResNet, DeepLabV3) and its
weights API. When, and only when, the compiled ops are missing, we declare the schemas of
those two operators (without any kernel) before importing torchvision, so the import
succeeds. Calling a compiled op (``torchvision.ops.nms`` ...) still fails with
torchvision's own error ("Couldn't load custom C++ ops"), which is what it should do.
With a matching torch/torchvision pair (the usual case on a user's machine) this module
does nothing but ``import torchvision``.

Every other module gets torchvision from here: ``from crapnet_core.models._torchvision import
torchvision`` or the helpers below.
"""

from __future__ import annotations

import importlib
import types

import torch

#: Operators whose fake kernels torchvision registers unconditionally at import time.
_UNGUARDED_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# keeps the schema definitions alive; kept across importlib.reload (a new None would let the
# Library be garbage-collected, which removes the schemas torchvision's registrations refer to)
_library: torch.library.Library | None = globals().get("_library")
#: True when torchvision was imported with the schema work-around (no compiled ops).
COMPILED_OPS_MISSING = False


def _op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _import_torchvision() -> types.ModuleType:
    global _library, COMPILED_OPS_MISSING
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    # The first import failed half-way: forget the partial modules, declare the schemas
    # the meta registrations expect, and import again.
    import sys

    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    missing = {n: s for n, s in _UNGUARDED_OPS.items() if not _op_defined(n)}
    if missing:
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in missing.values():
            _library.define(schema)
    COMPILED_OPS_MISSING = True
    return importlib.import_module("torchvision")


torchvision = _import_torchvision()


def _has_compiled_ops() -> bool:
    try:
        return bool(torchvision.extension._has_ops())
    except AttributeError:  # very old/new torchvision without the helper: trust the import path
        return not COMPILED_OPS_MISSING


# On importlib.reload, or when torchvision was already imported, the work-around branch above
# does not run again: ask torchvision itself whether its compiled operators loaded.
COMPILED_OPS_MISSING = COMPILED_OPS_MISSING or not _has_compiled_ops()


def segmentation_models() -> types.ModuleType:
    """``torchvision.models.segmentation`` (DeepLabV3 builders and weight enums)."""
    return importlib.import_module("torchvision.models.segmentation")


def classification_models() -> types.ModuleType:
    """``torchvision.models`` (ResNet builders and weight enums)."""
    return importlib.import_module("torchvision.models")


__all__ = ["torchvision", "COMPILED_OPS_MISSING", "segmentation_models", "classification_models"]
