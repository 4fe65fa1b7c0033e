"""Provenance of a committed result: commit, machine, environment, command (``run_info.json``).

One writer for what the study's shell scripts used to write inline: :func:`run_info` returns the
record the per-run results layout keeps next to ``metrics.json`` (``command``, ``started_utc``,
``wall_seconds``, ``train_seconds``, ``commit``, ``machine``, ``environment``, ``note``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

#: Packages whose versions can change a result (issue 25): recorded with every run.
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "monai", "nibabel", "SimpleITK")
#: CPU instruction-set flags that decide which kernels run.
CPU_FLAGS = ("avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


def git_commit(root: str | os.PathLike | None = None) -> str | None:
    """The short commit of the checkout at ``root`` (default: this package's), ``+dirty`` appended when
    tracked files under ``crapnet_core/`` differ from it; None outside a git checkout."""
    from ..paths import repo_root

    try:
        where = Path(root) if root else repo_root()
    except Exception:  # noqa: BLE001 - no project folder: no commit to name
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "crapnet_core"],
                               cwd=where, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def environment() -> dict[str, Any]:
    """Package versions, CPU model and instruction-set flags, thread counts, Python."""
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(k)}
    try:
        import torch

        threads["torch"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001 - torch missing: no thread count to record
        pass
    return {"packages": versions, "python": platform.python_version(), "cpu": cpu,
            "cpu_flags": sorted(f for f in CPU_FLAGS if f in flags), "cpu_count": os.cpu_count(), "threads": threads}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_info(command: str, started_utc: str, wall_seconds: float, train_seconds: float | None,
             device: str | None = None, note: str | None = None) -> dict[str, Any]:
    """The ``run_info.json`` record of one run of the study (see the module docstring)."""
    from ..report.figures import machine_description

    info = {"command": command, "started_utc": started_utc, "wall_seconds": round(float(wall_seconds), 1),
            "train_seconds": None if train_seconds is None else round(float(train_seconds), 2),
            "commit": git_commit(), "machine": machine_description() + (f", device {device}" if device else ""),
            "environment": environment()}
    if note:
        info["note"] = note
    return info


__all__ = ["PACKAGES", "git_commit", "environment", "utc_now", "run_info"]
