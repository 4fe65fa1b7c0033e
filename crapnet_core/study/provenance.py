"""Provenance of a committed result: commit, machine, environment, command (``run_info.json``).

One writer for what the study's shell scripts used to write inline: :func:`run_info` returns the
record the per-run results layout keeps next to ``metrics.json`` (``command``, ``started_utc``,
``wall_seconds``, ``train_seconds``, ``commit``, ``machine``, ``environment``, ``note``).
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from pathlib import Path
from typing import Any


def git_commit(root: str | os.PathLike | None = None) -> str | None:
    """The short commit of the checkout at ``root`` (default: this package's), ``+dirty`` appended when
    tracked files under ``crapnet_core/`` differ from it; None outside a git checkout."""
    from ..paths import repo_root

    try:
        where = Path(root) if root else repo_root()
    except Exception:  # noqa: BLE001 - no project folder: no commit to name
        return None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "crapnet_core"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_info(
    command: str,
    started_utc: str,
    wall_seconds: float,
    train_seconds: float | None,
    run_dir: str | os.PathLike | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """The ``run_info.json`` record of one run of the study (see the module docstring); ``environment``
    is the run's training record (``RUN/environment.json``, :mod:`crapnet_core.engine.environment`)."""
    from ..engine.environment import environment, machine_line, provenance_environment

    info = {
        "command": command,
        "started_utc": started_utc,
        "wall_seconds": round(float(wall_seconds), 1),
        "train_seconds": None if train_seconds is None else round(float(train_seconds), 2),
        "commit": git_commit(),
        "machine": machine_line(),
        "environment": provenance_environment([run_dir]) if run_dir else {**environment(), "source": "collection"},
    }
    if note:
        info["note"] = note
    return info


__all__ = ["git_commit", "utc_now", "run_info"]
