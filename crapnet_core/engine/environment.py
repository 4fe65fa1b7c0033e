"""What a run was computed with: package versions, CPU kernels, threads, device (issue 25).

Floating-point results of training depend on more than the code and the config: the
versions of the numeric packages (torch; numpy, scipy and scikit-image for the superpixels
and the augmentation; MONAI, nibabel and SimpleITK for reading and resampling scans), the
CPU kernels that torch, oneDNN and MKL choose at run time from the CPU's instruction set
(AVX2, AVX-512, AMX: a different kernel sums in another order, and training amplifies a
last-bit difference into a different model), the number of threads, and the device.
:func:`environment` records all of it as one JSON-able dict; every run writes it
(``RUN/environment.json`` when training starts, ``metrics.json`` at evaluation) and every
committed result carries it in ``run_info.json`` (``environment``). :func:`differences`
names what differs between two records (the rerun check, :mod:`crapnet_core.engine.rerun`).

:func:`deterministic` is the switch every training run goes through:
``torch.use_deterministic_algorithms(True)``. On CPU every op crapnet uses has a
deterministic kernel, and enabling the switch does not change the weights (checked by
``tests/test_environment.py``); on CUDA some backward kernels (bilinear upsampling,
``index_add``) have no deterministic version, so there it warns instead of refusing
(``warn_only``), and sets ``CUBLAS_WORKSPACE_CONFIG`` for cuBLAS when unset.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions can change the numbers (PyPI names; ``python`` is added).
NUMERIC_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "monai", "nibabel", "SimpleITK")

#: /proc/cpuinfo flags that decide which vector kernels oneDNN, MKL and ATen use.
KERNEL_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512cd",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vbmi2",
    "avx512_vnni",
    "avx512_bitalg",
    "avx512_vpopcntdq",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)

#: Environment variables that set thread counts or force a kernel family (recorded when set).
KERNEL_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "OMP_PROC_BIND",
    "KMP_AFFINITY",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
)

#: The file a training run writes when it starts (see :func:`write_run_environment`).
ENVIRONMENT_FILE = "environment.json"


def package_versions(names: tuple[str, ...] = NUMERIC_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when not installed), without importing it."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpuinfo(path: str | os.PathLike = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where the file does not exist)."""
    fields: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one processor is enough: a VM's cores are alike
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_info(cpuinfo_path: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, vendor, family/model/stepping, cores and the kernel-relevant flags.

    ``flags`` lists the entries of :data:`KERNEL_FLAGS` that the CPU has (from
    ``/proc/cpuinfo``; ``None`` where it cannot be read, e.g. macOS); ``torch_capability``
    is the vector kernel family ATen dispatches to (``torch.backends.cpu.get_cpu_capability``:
    DEFAULT, AVX2, AVX512, ...), which ``ATEN_CPU_CAPABILITY`` can lower.
    """
    info = _cpuinfo(cpuinfo_path)
    flags = set(info.get("flags", "").split()) if "flags" in info else None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    out: dict[str, Any] = {
        "model": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping"))
        if info
        else None,
        "microcode": info.get("microcode"),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "flags": None if flags is None else [f for f in KERNEL_FLAGS if f in flags],
    }
    try:
        import torch

        out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch absent or too old for the API
        out["torch_capability"] = None
    return out


def torch_build() -> dict[str, Any]:
    """The kernel libraries torch was built with: MKL and oneDNN versions, parallel backend."""
    try:
        import torch
    except ImportError:
        return {}
    config = torch.__config__.show()
    parallel = torch.__config__.parallel_info()
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", config)
    onednn = re.search(r"MKL-DNN v([0-9.]+)", config)
    backend = re.search(r"ATen parallel backend: (.+)", parallel)
    return {
        "mkl": mkl.group(1) if mkl else None,
        "onednn": onednn.group(1) if onednn else None,
        "mkldnn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "parallel_backend": backend.group(1).strip() if backend else None,
        "cuda": torch.version.cuda,
    }


def thread_info() -> dict[str, Any]:
    """torch's intra-op and inter-op thread counts now, and the thread/kernel variables that are set."""
    out: dict[str, Any] = {}
    try:
        import torch

        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    except ImportError:
        pass
    out["env"] = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    return out


def device_info(device: Any = None) -> dict[str, Any]:
    """The device a run computes on: ``{"type": "cpu"}`` or CUDA's name, capability and cuDNN."""
    dev = str(device) if device is not None else "cpu"
    kind = dev.split(":", 1)[0]
    out: dict[str, Any] = {"type": kind}
    if kind == "cuda":
        import torch

        index = torch.device(dev).index or 0
        out.update(
            name=torch.cuda.get_device_name(index),
            capability=".".join(map(str, torch.cuda.get_device_capability(index))),
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return out


def environment(device: Any = None) -> dict[str, Any]:
    """Everything outside the config that can change a run's numbers, as a JSON-able dict.

    Keys: ``python``, ``packages`` (:data:`NUMERIC_PACKAGES` -> version), ``os``, ``cpu``
    (:func:`cpu_info`), ``torch_build`` (:func:`torch_build`), ``threads`` (:func:`thread_info`),
    ``deterministic`` (``torch.are_deterministic_algorithms_enabled()``) and ``device``
    (:func:`device_info` of ``device``, default the CPU). Call it where the run computes:
    thread counts and the deterministic switch are read as they are at the call.
    """
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "packages": package_versions(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_info(),
        "torch_build": torch_build(),
        "threads": thread_info(),
    }
    try:
        import torch

        out["deterministic"] = torch.are_deterministic_algorithms_enabled()
    except ImportError:
        out["deterministic"] = None
    out["device"] = device_info(device)
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


#: Keys of :func:`environment` that describe a machine but cannot change a result.
NOT_NUMERIC = (
    "cpu.microcode",
    "cpu.logical_cores",
    "cpu.usable_cores",
    "os",
    "threads.env.OMP_WAIT_POLICY",
    "threads.env.CUDA_VISIBLE_DEVICES",
    "source",
    "differences_between_runs",
    "resumes",
)


def normalise(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record in :func:`environment`'s layout, also from the interim runner's flat layout
    (``cpu_model``, ``cpu_flags``, ``torch_cpu_capability``, ``torch_threads``, ``OMP_NUM_THREADS``:
    the first converged-study runs), which gets ``"partial": True`` (it has fewer fields)."""
    if not env or "cpu" in env:
        return env
    flags = env.get("cpu_flags")
    out: dict[str, Any] = {
        "python": env.get("python"),
        "packages": env.get("packages", {}),
        "cpu": {
            "model": env.get("cpu_model"),
            "torch_capability": env.get("torch_cpu_capability"),
            "flags": None if flags is None else [f for f in KERNEL_FLAGS if f in set(flags)],
        },
        "threads": {"torch_intra_op": env.get("torch_threads"), "env": {k: env[k] for k in KERNEL_ENV if k in env}},
        "partial": True,
    }
    return out


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None, all_keys: bool = False) -> list[str]:
    """``"key: A -> B"`` for every field where two :func:`environment` records differ.

    Dotted keys (``packages.scipy``, ``cpu.flags``, ``threads.torch_intra_op``). Fields that
    cannot change a number (:data:`NOT_NUMERIC`) are left out unless ``all_keys``; a partial
    record (:func:`normalise`) is compared on the fields it has. A missing record gives
    ``["environment: not recorded"]``.
    """
    if not a or not b:
        return ["environment: not recorded" + ("" if a else " (first)") + ("" if b else " (second)")]
    a, b = normalise(a), normalise(b)
    fa, fb = _flatten(a), _flatten(b)
    keys = set(fa) | set(fb)
    if a.get("partial") or b.get("partial"):
        keys = {k for k in set(fa) & set(fb) if k != "partial"} | {
            k for k in set(fa) ^ set(fb) if k.startswith("packages.")
        }
    out = []
    for key in sorted(keys):
        if not all_keys and any(key == k or key.startswith(k + ".") for k in NOT_NUMERIC):
            continue
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            if isinstance(va, list) and isinstance(vb, list):
                gone, new = [x for x in va if x not in vb], [x for x in vb if x not in va]
                # a partial record's recorder may not have looked for a flag it lacks
                new, gone = ([] if a.get("partial") else new), ([] if b.get("partial") else gone)
                if not gone and not new:
                    continue
                out.append(f"{key}: " + ", ".join([f"-{x}" for x in gone] + [f"+{x}" for x in new]))
            else:
                out.append(f"{key}: {va} -> {vb}")
    return out


def describe(env: dict[str, Any] | None) -> str:
    """One line for tables and pages: packages, CPU model, ISA, threads, device."""
    if not env:
        return "not recorded"
    env = normalise(env)
    pk = env.get("packages", {})
    cpu = env.get("cpu", {})
    th = env.get("threads", {})
    flags = cpu.get("flags") or []
    isa = "AMX" if "amx_tile" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "—"
    packages = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    dev = env.get("device", {})
    device = dev.get("name") or dev.get("type", "cpu")
    return (
        f"Python {env.get('python')}; {packages}; CPU {cpu.get('model')} ({isa}; torch kernels "
        f"{cpu.get('torch_capability')}); {th.get('torch_intra_op')} intra-op / {th.get('torch_inter_op')} "
        f"inter-op threads; device {device}; deterministic {env.get('deterministic')}"
    )


def machine_line() -> str:
    """``"<cores>-core CPU (<model>), no GPU"`` (or the GPU's name): the provenance line (the
    machine's logical cores; the cores this process may use are in :func:`cpu_info`)."""
    cpu = cpu_info()
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = "GPU " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return f"{cpu['logical_cores']}-core CPU ({cpu['model']}), {gpu}"


# --------------------------------------------------------------------------- run folders
def write_run_environment(run_dir: str | os.PathLike, device: Any = None, step: int = 0) -> dict[str, Any]:
    """Record the environment of a training start in ``RUN/environment.json``; returns the record.

    A start at step 0 writes a fresh record. A resume (``step > 0``) keeps the first record
    and appends ``{"step", "differences", "environment"}`` to its ``resumes`` list, so a run
    whose parts ran in different environments says so.
    """
    import json

    from ..io import write_json

    path = Path(run_dir) / ENVIRONMENT_FILE
    env = environment(device)
    record: dict[str, Any] = env
    if step > 0 and path.is_file():
        try:
            record = json.loads(path.read_text())
        except ValueError:
            record = None
        if isinstance(record, dict):
            first = {k: v for k, v in record.items() if k != "resumes"}
            record.setdefault("resumes", []).append(
                {"step": int(step), "differences": differences(first, env), "environment": env}
            )
        else:
            record = env
    write_json(path, record)
    return record


def read_run_environment(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``RUN/environment.json`` (the training start's record), or None for runs made before it existed."""
    from ..io import read_json

    path = Path(run_dir) / ENVIRONMENT_FILE
    if not path.is_file():
        return None
    return read_json(path)


def provenance_environment(run_dirs: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """The ``environment`` of a committed result's ``run_info.json``, from its run folders.

    The training record of the first run that has one (``RUN/environment.json``), with
    ``source: "training"``; where runs of the result differ, ``differences_between_runs``
    maps each other run's name to :func:`differences` against the first. Runs trained before
    the record existed: this process's :func:`environment` with ``source: "collection"``
    (packages and CPU of the collecting machine, which is not necessarily the training's).
    """
    records = [(Path(r).name, read_run_environment(r)) for r in run_dirs]
    records = [(name, env) for name, env in records if env]
    if not records:
        return {**environment(), "source": "collection"}
    (_, first), rest = records[0], records[1:]
    first = {k: v for k, v in first.items() if k != "resumes"}
    out: dict[str, Any] = {**first, "source": "training"}
    diffs = {name: d for name, env in rest if (d := differences(first, env))}
    if diffs:
        out["differences_between_runs"] = diffs
    return out


@contextlib.contextmanager
def deterministic(device: Any = None, enabled: bool = True) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(enabled)`` for the block, restored afterwards.

    On CPU strict (an op without a deterministic kernel raises); on CUDA ``warn_only``, with
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` set when unset (cuBLAS needs it for reproducible
    matrix products; it must be set before cuBLAS starts, hence here and not later).
    """
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cuda = str(device).startswith("cuda")
    if enabled and cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=cuda)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


__all__ = [
    "NUMERIC_PACKAGES",
    "KERNEL_FLAGS",
    "KERNEL_ENV",
    "ENVIRONMENT_FILE",
    "environment",
    "package_versions",
    "cpu_info",
    "machine_line",
    "normalise",
    "torch_build",
    "thread_info",
    "device_info",
    "differences",
    "describe",
    "write_run_environment",
    "read_run_environment",
    "provenance_environment",
    "deterministic",
]
