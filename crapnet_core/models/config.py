"""Model and loss configuration (dataclasses saved with every run).

Shared contract between ``segmenter`` (which reads ``ModelConfig``), ``losses`` (``LossConfig``)
and ``experiment`` (which nests both in an ``ExperimentConfig`` with data and training
settings and defines the profiles ``smoke``, ``lite`` and ``paper``).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..facts import METHODS, METHODS_REGISTRY  # the method registry

#: Components of each method: (attention on z = attended features, prototype kind), from the
#: registry. The decomposition variants of issue 8 section 4 override one of them with
#: ``model.attention`` / ``model.prototypes`` (e.g. SSL-ALPNet + attention = ``method=alpnet, attention=on``).
METHOD_COMPONENTS = {name: (m.attention, m.prototypes) for name, m in METHODS_REGISTRY.items()}
PROTOTYPE_KINDS = ("carafe", "avgpool", "global")
CARAFE_WINDOWS = ("centred", "aligned")
#: ``model.attention_temperature``: Eq. 13 and the affinity scale as published, or learned per block.
ATTENTION_TEMPERATURES = ("fixed", "learned")
#: The paper's attention: 5 blocks per branch, two branches (Sec. 4.4, Tables 3-4).
DEFAULT_BLOCKS, DEFAULT_BRANCHES = 5, 2


@dataclass
class ModelConfig:
    """Architecture of the few-shot segmenter.

    method: ``crapnet`` (attention + CARAFE++ prototypes), ``alpnet`` (SSL-ALPNet: local
        prototypes by average pooling) or ``panet`` (SSL-PANet: global prototypes only).
    encoder: name understood by ``crapnet_core.models.encoders.build_encoder``
        (``deeplabv3_resnet101`` is the paper's).
    pretrained: load pretrained weights for the encoder (COCO for DeepLabV3) through
        torchvision's weights API; needs the weights in the local torch cache offline.
    feature_dim: channels of the feature map the encoder returns (256 in the paper).
    n_blocks: support-query attention blocks per branch (paper: 5; 1..15).
    branches: 2 = two-branch design (Fig. 2), 1 = one-branch variant (Fig. 4).
    attention_dim: inner channels d of the 1x1 embeddings (theta, phi, g) of a block. The
        paper does not give it; 64 (a quarter of the 256 feature channels) keeps the 2 x 5
        blocks under 10 % of the ResNet-101 training step (measured on CPU: about 5 % with
        64, 10-12 % with non-local networks' C/2 = 128; see benchmarks/bench_model.py) and
        learned as well as 128 in a short CPU training run (book/method.md).
    carafe_factor: CARAFE++ downsampling factor sigma (Eq. 14; paper: 4).
    carafe_kernel: reassembly kernel size k_up (r = k_up // 2).
    carafe_encoder_kernel: kernel size of the content encoder that predicts the kernels.
    carafe_compressed: channels of the channel compressor.
    alpha: scale of the cosine similarity (Eq. 16; paper: 20).
    proto_threshold: a local prototype is kept where the pooled mask is above this
        fraction of foreground (or of background).
    alpnet_pool_train / alpnet_pool_test: ALPNet pooling windows (feature pixels).
    carafe_window: ``centred`` (default, the reading used since version 1: the k x k
        reassembly window of cell (h', w') is centred on feature pixel sigma h' + (sigma-1)//2,
        so for sigma=4, k=5 it covers rows 4h'-1..4h'+3, partly outside the cell) or
        ``aligned`` (the window is the sigma x sigma cell itself, k = sigma: every tap lies in
        the cell whose mask fraction the 0.95 rule thresholds; ``carafe_kernel`` is then unused).
    attention: ``auto`` (the method's own: on for crapnet, off for the baselines), ``on`` or
        ``off``: support-query attention (Eq. 1-13) before the prototypes.
    prototypes: ``auto`` (the method's own), ``carafe`` (CARAFE++ local prototypes, Eq. 14),
        ``avgpool`` (SSL-ALPNet's average-pooled local prototypes) or ``global`` (SSL-PANet's
        global prototypes only). With ``attention`` this spans the component decomposition:
        alpnet + attention=on, alpnet + prototypes=carafe, crapnet, crapnet + carafe_window=aligned.
    free_geometry: accept prototype cells more than a factor 1.5 away from the paper's
        (``crapnet_core.models.prototype_grid.check_geometry``); not part of the config hash.
    attention_temperature: ``fixed`` (Eq. 13 as published: a softmax over cosines without a
        temperature; the affinity scaled by 1/sqrt(d)) or ``learned`` (a variant beyond the paper:
        every block learns a temperature of Eq. 13's softmax and the scale of the affinity of
        Eq. 9/10, initialised to the fixed values; :mod:`crapnet_core.models.attention`). Only
        used when the attention runs; variant name ``<method>-temp``. Left out of the config
        hash at ``fixed``, so earlier runs keep their hash.

    Input sizes must be multiples of 8 (encoder output stride). ``experiment.make_config``
    sets ``carafe_factor`` and the ALPNet pools from the input size with the rule of
    :mod:`crapnet_core.models.prototype_grid` (256 px: the paper's 4, 4, 2; 96 and 128 px: 2, 2, 1), so
    that the cells keep the paper's physical size (CRAPNet 8 x 8 cells of 1/8 of the image
    side at 256 px; SSL-ALPNet 8 x 8 in training, 16 x 16 at test).
    """

    method: str = "crapnet"
    encoder: str = "deeplabv3_resnet101"
    pretrained: bool = False
    feature_dim: int = 256
    n_blocks: int = DEFAULT_BLOCKS
    branches: int = DEFAULT_BRANCHES
    attention_dim: int = 64
    carafe_factor: int = 4
    carafe_kernel: int = 5
    carafe_encoder_kernel: int = 3
    carafe_compressed: int = 64
    alpha: float = 20.0
    proto_threshold: float = 0.95
    alpnet_pool_train: int = 4
    alpnet_pool_test: int = 2
    carafe_window: str = "centred"
    attention: str = "auto"
    prototypes: str = "auto"
    free_geometry: bool = False
    attention_temperature: str = "fixed"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"model.method: {self.method!r} is not one of {', '.join(METHODS)}")
        if self.carafe_window not in CARAFE_WINDOWS:
            raise ValueError(f"model.carafe_window: {self.carafe_window!r} is not one of {', '.join(CARAFE_WINDOWS)}")
        if self.attention not in ("auto", "on", "off"):
            raise ValueError(f"model.attention: {self.attention!r} is not one of auto, on, off")
        if self.attention_temperature not in ATTENTION_TEMPERATURES:
            raise ValueError(
                f"model.attention_temperature: {self.attention_temperature!r} is not one of "
                f"{', '.join(ATTENTION_TEMPERATURES)}"
            )
        if self.attention_temperature != "fixed" and not self.uses_attention:
            raise ValueError(
                f"model.attention_temperature: {self.attention_temperature!r} needs the attention, which "
                f"{self.method} with model.attention={self.attention} does not run (use crapnet, or "
                f"model.attention=on)"
            )
        if self.prototypes not in ("auto", *PROTOTYPE_KINDS):
            raise ValueError(f"model.prototypes: {self.prototypes!r} is not one of auto, {', '.join(PROTOTYPE_KINDS)}")
        if not 1 <= int(self.n_blocks) <= 15:
            raise ValueError(f"model.n_blocks: {self.n_blocks} is outside 1..15")
        if self.branches not in (1, 2):
            raise ValueError(f"model.branches: {self.branches} must be 1 or 2")
        for name in (
            "feature_dim",
            "attention_dim",
            "carafe_factor",
            "carafe_kernel",
            "carafe_encoder_kernel",
            "carafe_compressed",
            "alpnet_pool_train",
            "alpnet_pool_test",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name}: must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.proto_threshold) < 1.0:
            raise ValueError(f"model.proto_threshold: {self.proto_threshold} must be in [0, 1)")
        if float(self.alpha) <= 0:
            raise ValueError(f"model.alpha: {self.alpha} must be positive")

    @property
    def uses_attention(self) -> bool:
        """Whether the support-query attention (Eq. 1-13) runs: ``attention`` or the method's default
        (False for a method without an entry in :data:`METHOD_COMPONENTS`)."""
        if self.attention == "auto":
            return METHOD_COMPONENTS.get(self.method, (False, None))[0]
        return self.attention == "on"

    def variant_name(self) -> str:
        """The method, plus the component switches that differ from its preset, e.g. ``crapnet``,
        ``alpnet-att`` (+ attention), ``alpnet-carafe`` (+ CARAFE++ prototypes), ``crapnet-aligned``,
        and the ablation points of Tables 3-4 when the attention runs: ``crapnet-blocks7``
        (``n_blocks`` other than the paper's 5), ``crapnet-onebranch`` (``branches=1``), and
        ``crapnet-temp`` (learned temperatures, ``attention_temperature=learned``).

        Any name other than the bare method marks a variant, which the Tables 1-2 analogues and the
        findings leave out (``crapnet_core.report.tables.load_summaries``)."""
        default_att, default_kind = METHOD_COMPONENTS.get(self.method, (False, None))
        parts = [self.method]
        if self.uses_attention != default_att:
            parts.append("att" if self.uses_attention else "noatt")
        if self.prototype_kind != default_kind:
            parts.append(str(self.prototype_kind))
        if self.prototype_kind == "carafe" and self.carafe_window != "centred":
            parts.append(self.carafe_window)
        if self.uses_attention and int(self.n_blocks) != DEFAULT_BLOCKS:
            parts.append(f"blocks{int(self.n_blocks)}")
        if self.uses_attention and int(self.branches) != DEFAULT_BRANCHES:
            parts.append("onebranch")
        if self.uses_attention and self.attention_temperature != "fixed":
            parts.append("temp")
        return "-".join(parts)

    @property
    def prototype_kind(self) -> str | None:
        """``carafe``, ``avgpool`` or ``global``: ``prototypes`` or the method's default; None for a
        method without an entry in :data:`METHOD_COMPONENTS` (its own model builds its prototypes)."""
        if self.prototypes == "auto":
            return METHOD_COMPONENTS.get(self.method, (False, None))[1]
        return self.prototypes


@dataclass
class LossConfig:
    """Eq. 18-20: weighted cross-entropy on the query plus lambda x prototype alignment.

    background_weight / foreground_weight: class weights of the query cross-entropy (Eq. 18).
    align_weight: lambda of Eq. 20 (0 switches the alignment loss off and skips its compute).
    align_class_weights: also weight the alignment cross-entropy (Eq. 19) by class; False as
        in SSL-ALPNet's code (the paper states the weights for Eq. 18 only).
    reduction: ``weighted_mean`` (PyTorch's weighted cross-entropy: sum w_y nll / sum w_y,
        what SSL-ALPNet trains with) or ``pixel_mean`` (Eq. 18 literally: sum w_y nll / HW).
    """

    background_weight: float = 0.05
    foreground_weight: float = 1.0
    align_weight: float = 1.0  # lambda of Eq. 20
    align_class_weights: bool = False
    reduction: str = "weighted_mean"

    def __post_init__(self) -> None:
        if self.reduction not in ("weighted_mean", "pixel_mean"):
            raise ValueError(f"loss.reduction: {self.reduction!r} is not one of weighted_mean, pixel_mean")
        for name in ("background_weight", "foreground_weight", "align_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"loss.{name}: {getattr(self, name)} must be non-negative")


def dataclass_from_dict(cls, data: dict[str, Any]):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a clear error."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**data)


__all__ = [
    "METHODS",
    "METHOD_COMPONENTS",
    "PROTOTYPE_KINDS",
    "CARAFE_WINDOWS",
    "ATTENTION_TEMPERATURES",
    "ModelConfig",
    "LossConfig",
    "dataclass_from_dict",
    "asdict",
    "field",
    "summary_variant",
    "convert_value",
]


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def convert_value(text: str, annotation: Any, where: str) -> Any:
    """Convert the string ``text`` to the type ``annotation`` of field ``where`` (ValueError naming
    ``where`` when it cannot): ``true``/``false`` for booleans, ``1e5`` for integers, comma lists or
    JSON for tuples, ``none`` for optional fields. The one parser of ``--set`` overrides."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return convert_value(text, inner[0], where)
    if annotation is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{where}: {text!r} is not a boolean (use true/false)")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if number == number and number.is_integer():
            return int(number)  # "1e5" -> 100000
        raise ValueError(f"{where}: {text!r} is not an integer")
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a number") from None
    if origin in (tuple, list):
        text = text.strip()
        if text.startswith("["):
            items = json.loads(text)
        else:
            items = [t.strip() for t in text.split(",") if t.strip()]
        inner = args[0] if args else str
        return tuple(convert_value(str(i), inner, where) for i in items)
    return text


def summary_variant(summary: Mapping[str, Any]) -> str | None:
    """The model variant of a summary (``ModelConfig.variant_name``: ``crapnet``, ``alpnet-att``,
    ``crapnet-blocks7``, ``crapnet-onebranch``...).

    Two sources: the ``variant`` field the run wrote, and the name re-derived from the ``model.*``
    entries of its ``overrides`` (converted as ``--set`` converts them). The derived name wins when it
    says more than the stored one (the stored one is the bare method, or the derived one extends it),
    so a summary whose code predates a variant axis (e.g. an ablation over ``model.n_blocks`` run
    before the block count entered the name, which stored ``crapnet``) is still recognised as a
    variant; otherwise the stored name; None when neither source says. Overrides that do not
    convert or validate are ignored (the stored name then decides).
    """
    method = summary.get("method")
    stored = str(summary["variant"]) if summary.get("variant") else None
    derived = None
    if method:
        hints = typing.get_type_hints(ModelConfig)
        given = {}
        for item in summary.get("overrides") or ():
            key, _, value = str(item).partition("=")
            name, value = key.strip()[6:], value.strip()
            if not key.strip().startswith("model.") or name not in hints or name == "method":
                continue
            given[name] = value
        try:  # the CLI's converter: whatever `--set` accepted reads back the same way
            fields_ = {name: convert_value(value, hints[name], f"model.{name}") for name, value in given.items()}
            derived = ModelConfig(method=method, **fields_).variant_name()
        except (TypeError, ValueError):
            derived = None
    if derived and derived != method and (not stored or stored == method or derived.startswith(stored + "-")):
        return derived  # the overrides name more than the stored field (an axis newer than the run's code)
    return stored or derived
