"""GPUs for the workflow's jobs: how many there are, and which one a local job gets.

Snakemake's ``gpu`` resource caps how many jobs run on GPUs at once; :func:`claim_gpu` picks *which*
device a job gets on one machine (file locks, one slot per training that shares a device) and
:func:`device_env` sets ``CUDA_VISIBLE_DEVICES`` for the job's process (a SLURM job is given its
device by SLURM instead). Used by the job bodies (:mod:`crapnet_core.book.jobs`) and
``crapnet study run`` (:mod:`crapnet_core.book.study_flow`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path


def gpu_count() -> int:
    """CUDA devices visible to this process (0 without torch/CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch/CUDA: CPU only
        return 0


@contextlib.contextmanager
def claim_gpu(lock_dir: Path, n_devices: int, slots: int = 1) -> Iterator[str | None]:
    """Hold one free slot of ``n_devices`` devices (flock on ``lock_dir/gpu<k>.lock``, or
    ``gpu<k>.<j>.lock`` for ``slots`` > 1) and yield the device's id.

    Snakemake's ``gpu`` resource caps how many jobs run on GPUs at once (devices x ``slots``);
    this picks *which* device a job gets on one machine (a SLURM job is given its device by SLURM
    instead). ``slots``: trainings that share one device at once (several fit on a large GPU).
    Devices are the entries of ``CUDA_VISIBLE_DEVICES`` when set, else ``0..n_devices-1``; the
    slots of one device are taken before the next device's second slot (jobs spread over devices
    first). Yields None when ``n_devices`` is 0. Waits while every slot is held.
    """
    if n_devices <= 0:
        yield None
        return
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = visible or [str(i) for i in range(n_devices)]
    lock_dir.mkdir(parents=True, exist_ok=True)
    names = [
        (dev, f"gpu{dev}.lock" if slots <= 1 else f"gpu{dev}.{j}.lock") for j in range(max(1, slots)) for dev in devices
    ]
    while True:
        for dev, name in names:
            fh = open(lock_dir / name, "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            try:
                yield dev
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        time.sleep(1.0)


@contextlib.contextmanager
def device_env(spec: dict) -> Iterator[None]:
    """Set ``CUDA_VISIBLE_DEVICES`` to one claimed device for a local GPU job (not under SLURM)."""
    if int(spec.get("gpu", 0)) <= 0 or os.environ.get("SLURM_JOB_ID"):
        yield
        return
    with claim_gpu(Path(spec["out"]) / ".gpu-locks", gpu_count(), int(spec.get("per_gpu", 1) or 1)) as dev:
        if dev is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = dev
        yield
