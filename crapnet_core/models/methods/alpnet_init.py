"""ALPNet-init: the ALPNet network evaluated without any training (the paper's Table 2 row, from SSL-ALPNet).

The network is exactly ``method="alpnet"`` (encoder + adaptive local prototype pooling,
:class:`~crapnet_core.models.segmenter.FewShotSegmenter`); the run trains for 0 steps, so evaluation sees
the encoder's initial weights: COCO-pretrained DeepLabV3 when ``model.pretrained`` is true and the
weights are in the local torch cache (``paper`` profile), PyTorch's random initialisation
otherwise (``smoke``/``lite``: the fast CPU encoder has no COCO weights). Which one is recorded
as ``method_info.encoder_init`` in ``RUN/TRAINED`` and ``RUN/metrics.json``.

The run goes through the normal ``crapnet train`` / ``evaluate`` / ``cross-validate`` path:
training with ``train.steps = 0`` writes the initial weights as the step-0 checkpoint.
"""

from __future__ import annotations

from dataclasses import replace

from crapnet_core.models.config import ModelConfig
from crapnet_core.models.methods.common import encoder_init


def build_model(cfg: ModelConfig):
    """The ALPNet network (``FewShotSegmenter`` with ``method="alpnet"``) for ``cfg``."""
    from crapnet_core.models.segmenter import FewShotSegmenter

    return FewShotSegmenter(replace(cfg, method="alpnet"))


def profile_values(profile: str) -> dict:
    """Every profile: no training step (the point of the row)."""
    return {"train": {"steps": 0}}


def validate(cfg) -> None:
    """ALPNet-init is the untrained network: ``train.steps`` must stay 0."""
    if int(cfg.train.steps) != 0:
        raise ValueError(
            f"train.steps: alpnet_init evaluates the untrained ALPNet network, so it must be 0 (got "
            f"{cfg.train.steps}); use --method alpnet to train the network"
        )


def method_info(cfg) -> dict:
    return {"network": "alpnet", "trained_steps": int(cfg.train.steps), "encoder_init": encoder_init(cfg)}
