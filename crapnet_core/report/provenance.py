"""Provenance notes of the book's pages: which profile, data and machine produced the numbers.

:func:`provenance_md` is the note every page prints under its numbers (the phantom is flagged as
synthetic), :func:`left_out_md` one line naming what a build left out of the paper's folds or
settings, and :func:`machine_description` the machine line both use (also written into the
benchmarks' and the analyses' reports).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..facts import DATASET_LABELS


def machine_description() -> str:
    """One line: OS, CPU model and cores, memory, GPU if any (for provenance notes)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", GPU " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001
        pass
    return f"{platform.system()} {platform.machine()}, {cpu} ({cores} cores){mem}{gpu or ', no GPU'}"


def provenance_md(
    profile: str,
    datasets: Sequence[str] | str,
    data_root: str | None = None,
    device: str | None = None,
    what: str = "The numbers on this page",
    extra: str | None = None,
) -> str:
    """Markdown note naming the profile, data and machine that produced a page's numbers.

    Real datasets name their folder; the phantom gets a warning box saying it is synthetic.
    """
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    data_parts = []
    for name in names:
        label = DATASET_LABELS.get(name, name)
        if name in ("chaos", "sabs") and data_root:
            sub = {"chaos": "CHAOST2", "sabs": "SABS"}[name]
            label += f" from `{Path(data_root) / sub}`"
        data_parts.append(label)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    dev = f"; training device `{device}`" if device else ""
    lines = [
        f"**Provenance.** {what} were produced by the **`{profile}`** profile on "
        f"**{', '.join(data_parts) or 'no data'}**; machine: {machine_description()}{dev}; executed {when}.",
    ]
    if extra:
        lines += ["", extra]
    if "phantom" in names:
        lines += [
            "",
            ":::{warning}",
            "**Synthetic data.** These numbers come from the built-in phantom, not from patients: they show that "
            "the pipeline runs end to end and say nothing about how the methods segment real organs.",
            ":::",
        ]
    return "\n".join(lines)


def left_out_md(what: str, ran: Iterable[Any], full: Iterable[Any]) -> str:
    """One Markdown line: which of ``full`` this build ran and which it left out."""
    ran, full = list(ran), list(full)
    missing = [x for x in full if x not in ran]
    ran_text = ", ".join(map(str, ran)) or "none"
    if not missing:
        return f"**{what}:** all of {', '.join(map(str, full))} (as the paper)."
    return (
        f"**{what}:** this build ran {ran_text}; the paper also has {', '.join(map(str, missing))}, "
        "left out by this profile (see *This build*)."
    )


__all__ = ["machine_description", "provenance_md", "left_out_md"]
