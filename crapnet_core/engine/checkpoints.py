"""Checkpoints of a run: find, read, check against a config and load into a model.

Apart from the training loop (:mod:`crapnet_core.engine.training`, which writes them) so that the
evaluation, ``crapnet segment`` and the notebooks load a trained model without importing
the trainer. A checkpoint is a ``torch.save`` dict: ``format``, ``step``, ``config``,
``config_hash``, ``model`` (state dict), ``optimizer``, ``scheduler``, ``rng``,
``norm_stats``, ``seconds``; ``RUN/checkpoints/last.pt`` is a copy of the newest one (a separate
file, so damage to one leaves the other), and a damaged checkpoint is skipped for the newest
intact one (:func:`newest_intact_checkpoint`), saying which and why. Every load checks that
the checkpoint belongs to the run's config (its stored config hash, :func:`check_checkpoint`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .experiment import ExperimentConfig

CHECKPOINT_FORMAT = 1


class CheckpointMismatch(ValueError):
    """A checkpoint that does not belong to the given model config or run."""


class CheckpointUnreadable(CheckpointMismatch):
    """A checkpoint file that cannot be read (truncated, overwritten, not a checkpoint)."""


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


def step_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """``{step: path}`` of the ``step_<n>.pt`` files of a run, by step."""
    out: dict[int, Path] = {}
    for p in checkpoint_dir(run_dir).glob("step_*.pt"):
        tail = p.stem.split("_", 1)[1]
        if tail.isdigit():
            out[int(tail)] = p
    return dict(sorted(out.items()))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``checkpoints/last.pt``, else the newest ``step_<n>.pt``, else None (no file is read).

    Whether it is intact is :func:`newest_intact_checkpoint`'s business.
    """
    path = checkpoint_dir(run_dir) / "last.pt"
    if path.is_file():
        return path
    steps = step_checkpoints(run_dir)
    return steps[max(steps)] if steps else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of ``path``; :class:`CheckpointUnreadable` naming it when it is damaged."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle error: all "unreadable"
        raise CheckpointUnreadable(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointUnreadable(f"{path}: not a crapnet checkpoint (no model state)")
    return state


def recorded_hash(run_dir: str | Path) -> str | None:
    """The ``config_hash`` that ``RUN/config.json`` recorded when the run was written (None if absent)."""
    import json

    try:
        value = json.loads((Path(run_dir) / "config.json").read_text()).get("config_hash")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_differences(saved: dict | None, cfg: ExperimentConfig, limit: int = 4) -> str:
    """``train.seed: checkpoint 0 vs run 1, ...`` over the hashed fields (empty when unknown)."""
    if not isinstance(saved, dict):
        return ""
    try:
        a = _flat(ExperimentConfig.from_dict({k: v for k, v in saved.items() if k != "config_hash"}).hashed_dict())
    except (TypeError, ValueError, KeyError):
        a = _flat({k: v for k, v in saved.items() if k != "config_hash"})
    b = _flat(cfg.hashed_dict())
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    parts = [f"{k}: checkpoint {a.get(k)!r} vs run {b.get(k)!r}" for k in diff[:limit]]
    if len(diff) > limit:
        parts.append(f"{len(diff) - limit} more")
    return ", ".join(parts)


def run_hashes(run_dir: str | Path, cfg: ExperimentConfig) -> tuple[str, ...]:
    """The config hashes a checkpoint of the run in ``run_dir`` may carry: ``cfg``'s (its
    ``config.json`` as loaded now) and the one ``config.json`` recorded when it was written."""
    return tuple(h for h in (cfg.config_hash(), recorded_hash(run_dir)) if h)


def _saved_model_config(saved: dict | None) -> dict | None:
    """The ``model`` section of the config stored in a checkpoint, completed with the defaults of model
    fields added after it was written (their default is the behaviour the checkpoint was trained with),
    so that an older checkpoint is compared field by field with today's config; the raw section where
    the stored config cannot be read as a config of this version."""
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        return None
    try:  # the model section alone: another section of an old config need not parse today
        return ExperimentConfig.from_dict({"model": saved["model"]}).to_dict()["model"]
    except (TypeError, ValueError, KeyError):
        return saved["model"]


def check_checkpoint(
    state: dict[str, Any],
    cfg: ExperimentConfig,
    path: str | Path,
    run_hashes: tuple[str, ...] | list[str] | None = None,
) -> None:
    """Refuse a checkpoint that does not fit ``cfg`` (:class:`CheckpointMismatch`).

    Always the model config (naming the differing ``model`` fields: another architecture).
    With ``run_hashes`` (the checkpoint is used as a run folder's: :func:`run_hashes`), also
    the config hash: the ``config_hash`` stored in the checkpoint must be one of them, so a
    model of another seed, dataset or fold is never evaluated or resumed under this run's
    config. A checkpoint written before hashes were stored is compared through the config
    stored in it (and the message says so); one without any config can only be checked
    tensor by tensor (:func:`load_model`), with a warning. Without ``run_hashes`` (a model
    used under a config of one's own, e.g. on another dataset) only the architecture counts.
    """
    saved = _saved_model_config(state.get("config"))
    if saved is not None:
        current = cfg.to_dict()["model"]
        diff = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        if diff:
            parts = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in diff)
            raise CheckpointMismatch(f"{path}: checkpoint does not match the model config ({parts})")
    if run_hashes is None:
        return
    accepted = {h for h in run_hashes if h}
    stored = state.get("config_hash")
    how = "stored in it"
    if not stored and isinstance(state.get("config"), dict):
        how = "of the config stored in it (the checkpoint predates stored hashes)"
        try:
            stored = ExperimentConfig.from_dict(state["config"]).config_hash()
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointMismatch(
                f"{path}: the config stored in the checkpoint cannot be read ({err}); "
                f"cannot tell whether it belongs to this run"
            ) from None
    if not stored:
        import warnings

        warnings.warn(
            f"{path}: the checkpoint stores no config; only its tensors are checked against the run's "
            f"model, not that it was trained with this run's config",
            stacklevel=2,
        )
        return
    if stored not in accepted:
        diff = _config_differences(state.get("config"), cfg)
        raise CheckpointMismatch(
            f"{path}: checkpoint belongs to another config (hash {how}: {stored}; this run's config: "
            f"{cfg.config_hash()}{'; ' + diff if diff else ''}): it was not trained by this run. Evaluate it in "
            f"its own run folder (or `crapnet segment --checkpoint`), or train this run again with --force"
        )


def newest_intact_checkpoint(
    run_dir: str | Path, cfg: ExperimentConfig | None = None
) -> tuple[Path | None, dict[str, Any] | None, list[tuple[Path, str]]]:
    """The newest checkpoint of a run that reads back: ``(path, state, skipped)``.

    Candidates: ``last.pt`` (a copy of the newest step file, written after it), then the
    ``step_<n>.pt`` files from the newest down; each is read fully (``torch.load``) until the
    newest readable one is found. ``skipped``: ``[(path, reason)]`` of the damaged ones met on
    the way (truncated, overwritten...). ``(None, None, skipped)`` when none reads back. With
    ``cfg`` (the run's config), the one found must belong to the run (:func:`check_checkpoint`
    with :func:`run_hashes`: a checkpoint of another config is an error, never skipped over).
    """
    steps = step_checkpoints(run_dir)
    last = checkpoint_dir(run_dir) / "last.pt"
    candidates: list[tuple[float, Path]] = [(float("inf"), last)] if last.is_file() else []
    candidates += [(float(n), p) for n, p in sorted(steps.items(), reverse=True)]
    skipped: list[tuple[Path, str]] = []
    best: tuple[int, Path, dict[str, Any]] | None = None
    for claimed, path in candidates:
        if best is not None and best[0] >= claimed:
            break  # nothing newer is left to try
        try:
            state = read_checkpoint(path)
        except (CheckpointUnreadable, FileNotFoundError) as err:
            skipped.append((path, str(err).split(": ", 1)[-1]))
            continue
        step = int(state.get("step", -1))
        if best is None or step > best[0]:
            best = (step, path, state)
    if best is None:
        return None, None, skipped
    if cfg is not None:
        check_checkpoint(best[2], cfg, best[1], run_hashes(run_dir, cfg))
    return best[1], best[2], skipped


def describe_skipped(skipped: list[tuple[Path, str]]) -> str:
    """``last.pt (unreadable checkpoint ...), step_40.pt (...)`` for messages."""
    return "; ".join(f"{p.name} skipped: {why}" for p, why in skipped)


def load_model(
    cfg: ExperimentConfig,
    checkpoint: str | Path,
    device=None,
    state: dict[str, Any] | None = None,
    run_hashes: tuple[str, ...] | list[str] | None = None,
):
    """Build ``cfg``'s model and load ``checkpoint`` into it; returns ``(model, checkpoint_state)``.

    A checkpoint of another architecture raises :class:`CheckpointMismatch` naming the
    differing config fields (or, for checkpoints without a config, the mismatching tensors).
    ``run_hashes`` (a run folder's checkpoint: :func:`run_hashes`): one of another config
    (seed, data, fold...: its stored hash) raises it too (:func:`check_checkpoint`).
    ``state``: the checkpoint already read.
    """
    import torch

    if state is None:
        state = read_checkpoint(checkpoint)
    check_checkpoint(state, cfg, checkpoint, run_hashes)
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise CheckpointMismatch(
            f"{checkpoint}: checkpoint does not match the model config ({' '.join(first)})"
        ) from None
    model.to(device or torch.device("cpu"))
    model.eval()
    return model, state


def run_checkpoint(run_dir: str | Path, cfg: ExperimentConfig) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a finished run is used with (evaluate, segment --run, diagnostics): ``(path, state)``.

    ``last.pt``, or, when it is damaged, the newest intact step file of the same step (a
    warning names what was skipped and why). A run whose final step survives in no intact
    file is an error (``CheckpointUnreadable``) saying which step is intact and how to go
    on, never a silent evaluation of an earlier step. Errors: ``FileNotFoundError`` when the
    run has no checkpoint; ``CheckpointMismatch`` for a checkpoint of another config.
    """
    import logging

    run_dir = Path(run_dir)
    if latest_checkpoint(run_dir) is None:
        raise FileNotFoundError(
            f"{checkpoint_dir(run_dir) / 'last.pt'}: no checkpoint in {run_dir}; train the run first"
        )
    path, state, skipped = newest_intact_checkpoint(run_dir, cfg)
    if path is None:
        raise CheckpointUnreadable(
            f"{run_dir}: no intact checkpoint ({describe_skipped(skipped)}); train the run again with --force"
        )
    step = int(state.get("step", -1))
    if skipped:
        trained = (run_dir / "TRAINED").is_file()
        if trained and step < cfg.train.steps:
            raise CheckpointUnreadable(
                f"{run_dir}: the final checkpoint (step {cfg.train.steps}) is damaged ({describe_skipped(skipped)}); "
                f"the newest intact one is {path.name} (step {step}): finish the run from it with `crapnet train "
                f"... --out {run_dir} --resume`, or evaluate it explicitly with --checkpoint {path}"
            )
        logging.getLogger(__name__).warning(
            "%s: %s; using %s (step %d)", run_dir, describe_skipped(skipped), path.name, step
        )
    return path, state
