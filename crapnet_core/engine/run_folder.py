"""A training run's folder: deciding what training into it does, its metrics log, its TRAINED marker.

The folder's layout is documented in :mod:`crapnet_core.engine.training` (which writes it);
checkpoints are read by :mod:`crapnet_core.engine.checkpoints`. Here: :func:`inspect_run_dir`
/ :func:`prepare_run_dir` (new, start over, resume, or refuse with :class:`RunFolderError`),
:class:`MetricsLog` (``metrics.csv`` + TensorBoard), :func:`mark_trained` /
:func:`is_trained` / :func:`train_seconds` (the ``TRAINED`` marker), :func:`clear_run`.
"""

from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path
from typing import NamedTuple

from ..io import read_json, write_json, write_text
from .checkpoints import describe_skipped, latest_checkpoint, newest_intact_checkpoint, step_checkpoints
from .experiment import ExperimentConfig

CSV_COLUMNS = ("step", "loss", "seg", "align", "lr", "seconds")


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (other config, finished run without --force...)."""


class MetricsLog:
    """``metrics.csv`` (append per row) + TensorBoard scalars when ``tensorboard`` is installed."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        self.path = run_dir / "metrics.csv"
        if resume_step > 0 and self.path.is_file():
            # drop rows written after the checkpoint we resume from (they will be redone)
            rows = list(csv.DictReader(self.path.open()))
            kept = [r for r in rows if int(r["step"]) <= resume_step]
            buf = _io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
            write_text(self.path, buf.getvalue())
        else:
            write_text(self.path, ",".join(CSV_COLUMNS) + "\n")
        self.fh = self.path.open("a", newline="")
        self.writer = csv.writer(self.fh)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step + 1)
        except Exception:  # noqa: BLE001 - tensorboard missing: CSV only
            self.tb = None

    def write(self, step: int, losses: dict[str, float], lr: float, seconds: float) -> None:
        self.writer.writerow(
            [
                step,
                f"{losses['total']:.6f}",
                f"{losses['seg']:.6f}",
                f"{losses['align']:.6f}",
                f"{lr:.6g}",
                f"{seconds:.2f}",
            ]
        )
        self.fh.flush()
        if self.tb is not None:
            for key, value in losses.items():
                self.tb.add_scalar(f"loss/{key}", value, step)
            self.tb.add_scalar("lr", lr, step)

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics_csv(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of ``RUN/metrics.csv`` as floats (for notebooks)."""
    path = Path(run_dir) / "metrics.csv"
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(path.open())]


# ---------------------------------------------------------------------- run folders
RUN_ITEMS = (
    "config.json",
    "checkpoints",
    "metrics.csv",
    "metrics.json",
    "predictions",
    "TRAINED",
    "tensorboard",
    "train.log",
    "environment.json",
)


def is_trained(run_dir: str | Path) -> bool:
    """True when ``RUN/TRAINED`` is written and a checkpoint is there."""
    return (Path(run_dir) / "TRAINED").is_file() and latest_checkpoint(run_dir) is not None


class TrainingProgress(NamedTuple):
    """How far a run folder's training got: ``trained`` (``TRAINED`` written) and ``step``, its newest
    ``step_<n>.pt`` (0 when only ``last.pt`` is there)."""

    trained: bool
    step: int


def training_progress(run_dir: str | Path) -> TrainingProgress | None:
    """The :class:`TrainingProgress` of ``run_dir``; None when it holds no checkpoint. Only file names are
    read (the study's status and its workflow's resume order both use it)."""
    if latest_checkpoint(run_dir) is None:
        return None
    return TrainingProgress(is_trained(run_dir), max(step_checkpoints(run_dir), default=0))


def clear_run(run_dir: Path) -> None:
    """Remove what a run writes (only crapnet's own items; the folder itself is kept)."""
    import shutil

    for name in RUN_ITEMS:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _is_failed_start(run_dir: Path) -> bool:
    """A run folder whose training never wrote a checkpoint (a start that failed or was stopped
    before its first checkpoint): nothing in it can be resumed, so it may be replaced."""
    return latest_checkpoint(run_dir) is None and not (run_dir / "TRAINED").exists()


def inspect_run_dir(
    cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False, force: bool = False
) -> tuple[str, int]:
    """Decide what training ``cfg`` into ``run_dir`` does, without touching it.

    Returns ``(action, start_step)``, action one of ``"new"`` (empty or absent folder, or a
    failed start: a config.json without any checkpoint), ``"clear"`` (``force``: start over),
    ``"resume"``. Raises :class:`RunFolderError` for the cases of :func:`prepare_run_dir`.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: exists and is not a folder")
    if run_dir.is_dir() and not cfg_path.is_file():
        others = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
        if others:
            raise RunFolderError(
                f"{run_dir}: folder is not empty and is not a crapnet run folder (no config.json); choose another --out"
            )
    if not cfg_path.is_file():
        return "new", 0
    if force or _is_failed_start(run_dir):
        return "clear", 0
    try:
        old = ExperimentConfig.load(cfg_path)
        old_hash = old.config_hash()
    except (ValueError, TypeError) as err:
        old_hash = f"unreadable ({err})"
    if old_hash != cfg.config_hash():
        raise RunFolderError(
            f"{run_dir}: holds a run of another config (hash {old_hash}, this config {cfg.config_hash()}); "
            f"choose another --out or pass --force to overwrite it"
        )
    path, state, skipped = newest_intact_checkpoint(run_dir, cfg)
    if path is None:
        raise RunFolderError(
            f"{run_dir}: no checkpoint of this run reads back ({describe_skipped(skipped)}); pass --force to start over"
        )
    step = int(state.get("step", 0))
    if is_trained(run_dir) and not (skipped and step < cfg.train.steps):
        raise RunFolderError(
            f"{run_dir}: already holds the finished run of this config; pass --force to train it again"
        )
    if not resume:
        raise RunFolderError(
            f"{run_dir}: holds an unfinished run of this config (checkpoint at step {step}); "
            f"pass --resume to continue it or --force to start over"
        )
    return "resume", step


def prepare_run_dir(
    cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False, force: bool = False
) -> tuple[Path, int]:
    """Check ``run_dir`` for training ``cfg`` and make it ready; returns ``(run_dir, start_step)``.

    - empty / new folder: start at 0;
    - a folder that is not a run folder (files but no config.json): refused;
    - a failed start (config.json but no checkpoint, e.g. bad input found at start): replaced;
    - a run of another config: refused (``force`` replaces it);
    - a finished run of this config: refused without ``force`` (which starts over);
    - an unfinished run of this config: ``resume`` continues from its newest intact
      checkpoint (``last.pt``, else the newest step file that reads back), otherwise refused
      (``force`` starts over); a finished run whose final checkpoints are all damaged counts
      as unfinished.
    """
    run_dir = Path(run_dir)
    action, start = inspect_run_dir(cfg, run_dir, resume=resume, force=force)
    if action == "clear":
        clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if action == "resume":
        (run_dir / "TRAINED").unlink(missing_ok=True)  # a finished run with damaged final checkpoints
    return run_dir, start


def mark_trained(run_dir: Path, cfg: ExperimentConfig, seconds: float) -> None:
    """Write ``RUN/TRAINED``: steps, config hash, training seconds (and the method's own info)."""
    from ..models.methods import method_info

    marker = {"steps": cfg.train.steps, "config_hash": cfg.config_hash(), "train_seconds": round(seconds, 2)}
    info = method_info(cfg)
    if info:
        marker["method_info"] = info
    write_json(run_dir / "TRAINED", marker)


def train_seconds(run_dir: str | Path) -> float | None:
    """Training seconds recorded in ``RUN/TRAINED`` (None: not trained; NaN: not recorded)."""
    path = Path(run_dir) / "TRAINED"
    if not path.is_file():
        return None
    return float(read_json(path).get("train_seconds", math.nan))


__all__ = [
    "CSV_COLUMNS",
    "RunFolderError",
    "MetricsLog",
    "read_metrics_csv",
    "RUN_ITEMS",
    "is_trained",
    "clear_run",
    "inspect_run_dir",
    "prepare_run_dir",
    "mark_trained",
    "train_seconds",
]
