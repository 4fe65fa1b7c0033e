"""What a set of training runs costs, before anything runs (``crapnet book --plan``, ``crapnet study plan``).

Trainings, optimisation steps and an estimate of the device time:

- ``smoke`` and ``lite``: the step rates measured on this project's CPU machine, one thread per
  training (``benchmarks/step_rates.py`` -> ``benchmarks/step_rates.json``: seconds per step of
  every method, seconds per evaluation), so core-hours; with N jobs at a time on N cores the wall
  time is about that divided by N.
- ``paper``: the paper's figure (Sec. 4.3: about 4 hours per fold of 100,000 steps on one NVIDIA RTX
  A5000, about 7 GB of GPU memory), i.e. 0.144 s per step, so GPU-hours; evaluation time is not
  published and not included.

How many trainings share one GPU is the caller's ``per_gpu`` (the workflow's ``--per-gpu``), and
what fits: the paper's training needs about 7 GB, so several fit in a large GPU's memory; whether
they then run as fast as alone (the goal: at least 4 folds at once on one large GPU) is measured by
``benchmarks/gpu_check.sh`` on a lent GPU, not here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import read_json

#: The paper's published cost (Sec. 4.3): seconds per training step and GPU memory of one training.
PAPER_SECONDS_PER_STEP = 4 * 3600 / 100_000
PAPER_GPU_MEMORY_GB = 7
PAPER_SOURCE = "the paper (Sec. 4.3): about 4 GPU-hours per 100,000-step training on one RTX A5000, about 7 GB"


def step_rates(root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``benchmarks/step_rates.json`` of the checkout (None when absent: no measured rates)."""
    from ..paths import repo_root

    try:
        path = Path(root or repo_root()) / "benchmarks" / "step_rates.json"
    except Exception:  # noqa: BLE001 - not in a checkout: no benchmark figures
        return None
    if not path.is_file():
        return None
    return read_json(path)


@dataclass
class Cost:
    """The cost of a set of runs at one profile."""

    profile: str
    trainings: int
    steps: int
    evaluations: int
    hours: float | None  # device-hours (core-hours on CPU, GPU-hours for paper); None: no rate
    device: str  # "CPU core" or "GPU"
    source: str  # where the rate comes from
    unmeasured: tuple[str, ...] = ()

    def describe(self, per_gpu: int = 1) -> str:
        text = f"{self.trainings} training(s), {self.steps:,} steps, {self.evaluations} evaluation(s)"
        if self.hours is None:
            return text + f"; no step rate for profile {self.profile} ({self.source})"
        text += f"; about {self.hours:,.1f} {self.device}-hours ({self.source})"
        if self.unmeasured:
            text += (
                f"; methods without a measured rate, counted at the slowest measured one: {', '.join(self.unmeasured)}"
            )
        if self.device == "GPU":
            text += (
                f"; {per_gpu} training(s) per GPU at once (--per-gpu; each needs about {PAPER_GPU_MEMORY_GB} GB in "
                "the paper, so several fit on a large GPU; the goal is at least 4 folds on one large GPU, "
                "measured by benchmarks/gpu_check.sh)"
            )
        return text


def estimate(profile: str, configs: Iterable[Any], root: str | os.PathLike | None = None) -> Cost:
    """The :class:`Cost` of training and evaluating ``configs`` (ExperimentConfigs, one per run) at ``profile``."""
    configs = list(configs)
    steps = sum(int(c.train.steps) for c in configs)
    trainings = sum(1 for c in configs if c.train.steps > 0)
    if profile == "paper":
        hours = steps * PAPER_SECONDS_PER_STEP / 3600
        return Cost(profile, trainings, steps, len(configs), hours, "GPU", PAPER_SOURCE)
    rates = step_rates(root)
    entry = (rates or {}).get("profiles", {}).get(profile)
    if entry is None:
        return Cost(
            profile,
            trainings,
            steps,
            len(configs),
            None,
            "CPU core",
            "benchmarks/step_rates.json has none; run benchmarks/step_rates.py",
        )
    per_step = entry["seconds_per_step"]
    slowest = max(per_step.values())
    unmeasured = sorted({c.model.method for c in configs if c.model.method not in per_step})
    seconds = sum(int(c.train.steps) * per_step.get(c.model.method, slowest) for c in configs)
    seconds += len(configs) * float(entry.get("evaluation_seconds") or 0.0)
    machine = entry.get("machine") or ", ".join(entry.get("machines") or []) or "this machine"
    source = (
        f"benchmarks/step_rates.json: {entry.get('source', 'measured')}, {machine}, "
        f"{str(entry.get('date_utc', '?'))[:10]}; plus {entry.get('evaluation_seconds')} s per evaluation; "
        "one thread per training, so the wall time is about this divided by the jobs at a time"
    )
    return Cost(profile, trainings, steps, len(configs), seconds / 3600, "CPU core", source, tuple(unmeasured))


__all__ = ["PAPER_SECONDS_PER_STEP", "PAPER_GPU_MEMORY_GB", "PAPER_SOURCE", "Cost", "step_rates", "estimate"]
