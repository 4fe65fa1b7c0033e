"""Checkpoints of a run: find, read, check against a config and load into a model.

Apart from the training loop (:mod:`crapnet_core.engine.training`, which writes them) so that the
evaluation, ``crapnet segment`` and the notebooks load a trained model without importing
the trainer. A checkpoint is a ``torch.save`` dict: ``format``, ``step``, ``config``,
``config_hash``, ``model`` (state dict), ``optimizer``, ``scheduler``, ``rng``,
``norm_stats``, ``seconds``; ``RUN/checkpoints/last.pt`` points at the newest one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .experiment import ExperimentConfig

CHECKPOINT_FORMAT = 1


class CheckpointMismatch(ValueError):
    """A checkpoint that does not belong to the given model config."""


def resolve_device(name: str | None):
    """``auto`` -> CUDA when available else CPU; a clear error when CUDA is asked for but absent."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} asked for but CUDA is not available on this machine")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ValueError(f"train.device: {name!r} is not one of auto, cpu, cuda, cuda:K")
    return torch.device(name)


@contextlib.contextmanager
def cpu_threads(cfg: ExperimentConfig, device):
    """Use ``train.threads`` CPU threads (0: every core) for torch kernels, restored afterwards.

    On a CPU shared with other processes, fewer threads than cores avoids oversubscription
    (OpenMP threads spin-waiting for each other); ``OMP_WAIT_POLICY=PASSIVE`` helps too.
    """
    import torch

    previous = torch.get_num_threads()
    if device.type == "cpu":
        n = cfg.train.threads or (os.cpu_count() or 1)
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_model(cfg: ExperimentConfig):
    """The few-shot segmenter of ``cfg.model`` (seeded with ``train.seed`` for a reproducible init)."""
    import torch

    from ..models.methods import hook
    from ..models.segmenter import FewShotSegmenter

    torch.manual_seed(cfg.train.seed)
    build = hook(cfg.model.method, "build_model")  # registered methods (crapnet_core/models/methods/)
    return build(cfg.model) if build is not None else FewShotSegmenter(cfg.model)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    path = checkpoint_dir(run_dir) / "last.pt"
    return path if path.is_file() else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle error: all "unreadable"
        raise CheckpointMismatch(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointMismatch(f"{path}: not a crapnet checkpoint (no model state)")
    return state


def check_checkpoint(state: dict[str, Any], cfg: ExperimentConfig, path: str | Path) -> None:
    """Refuse a checkpoint whose model config differs from ``cfg.model`` (naming the fields)."""
    saved = (state.get("config") or {}).get("model")
    if saved is None:
        return
    current = cfg.to_dict()["model"]
    diff = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diff:
        parts = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in diff)
        raise CheckpointMismatch(f"{path}: checkpoint does not match the model config ({parts})")


def load_model(cfg: ExperimentConfig, checkpoint: str | Path, device=None):
    """Build ``cfg``'s model and load ``checkpoint`` into it; returns ``(model, checkpoint_state)``.

    A checkpoint of another architecture raises :class:`CheckpointMismatch` naming the
    differing config fields (or, for checkpoints without a config, the mismatching tensors).
    """
    import torch

    state = read_checkpoint(checkpoint)
    check_checkpoint(state, cfg, checkpoint)
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise CheckpointMismatch(f"{checkpoint}: checkpoint does not match the model config ({' '.join(first)})") from None
    model.to(device or torch.device("cpu"))
    model.eval()
    return model, state
