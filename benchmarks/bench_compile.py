"""What ``torch.compile`` costs and gains per training process: first compile, cached compile, step time.

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python benchmarks/bench_compile.py \
        [--dataset phantom] [--profile lite] [--methods crapnet] [--threads 1] \
        [--rounds 6] [--steps 5] [--warmup 3] [--out benchmarks/compile_figures]

For each method, two training processes one after the other, both with inductor's caches in one
fresh folder (``TORCHINDUCTOR_CACHE_DIR``; ``crapnet train`` puts them in crapnet's cache folder,
``engine.training.compile_cache_dir``):

1. **first**: an empty cache: the compilation a machine pays once;
2. **cached**: the same shapes again in a new process: what every later training pays.

Each process builds the model of the profile (``engine.training.build_model``) twice with the same
seed, compiles one of them as ``crapnet train`` does (``compile_model``, under
``torch.use_deterministic_algorithms``, as ``train.deterministic``), and takes one fixed batch
of the dataset's training episodes. It reports the compilation time (first compiled step minus an
eager step; CPU seconds of this process and of the C++ compiler it runs, with one compile thread
so that those are waited-for subprocesses, and wall seconds), then ``--rounds`` alternating rounds of ``--steps`` eager and ``--steps`` compiled
steps (a load change on a shared machine hits both alike): median seconds per step (process CPU
time) and the speed-up, and the first-step losses of both models (same weights, same batch: they
agree). Writes ``OUT.json`` and ``OUT.md`` with ``--out``. Timings depend on the load: quote the
load and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # crapnet_core is imported as installed or from PYTHONPATH


class _Stepper:
    """One model + optimizer on a fixed batch; ``step(n)`` runs n training steps, returns CPU seconds."""

    def __init__(self, cfg, model, batch):
        from crapnet_core.engine.training import loss_function, make_optimizer

        self.cfg, self.model, self.batch = cfg, model, batch
        self.loss_fn = loss_function(cfg)
        self.opt, _ = make_optimizer(cfg, model)
        self.first_loss = None

    def step(self, n: int) -> float:
        c = time.process_time()
        for _ in range(n):
            loss = self.loss_fn(self.model, self.batch, self.cfg.loss)["total"]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.first_loss is None:
                self.first_loss = float(loss.detach())
        return time.process_time() - c


def child(args) -> dict:
    """One training process: compile, then eager and compiled steps alternating."""
    import torch

    from crapnet_core.engine.environment import deterministic

    torch.set_num_threads(args.threads)
    with deterministic(torch.device("cpu"), True):  # as `crapnet train` (train.deterministic)
        return _child(args)


def _child(args) -> dict:
    import resource

    import torch

    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.training import build_episodes, build_model, compile_model

    cfg = make_config(
        args.profile, args.dataset, 1, 0, args.method, ["train.device=cpu", f"train.threads={args.threads}"]
    )
    dataset, *_ = build_episodes(cfg)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(cfg.train.batch_size)])
    eager = _Stepper(cfg, build_model(cfg).train(), batch)
    compiled = _Stepper(cfg, compile_model(build_model(cfg).train()), batch)  # same seed, same weights
    eager_first = eager.step(1)
    t0 = time.perf_counter()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    first = compiled.step(1)  # includes the compilation
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    first_wall = time.perf_counter() - t0
    compiler_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)  # the C++ compiler runs
    eager.step(args.warmup)
    compiled.step(args.warmup)
    e_times, c_times = [], []
    for _ in range(args.rounds):
        e_times.append(eager.step(args.steps) / args.steps)
        c_times.append(compiled.step(args.steps) / args.steps)
    e, c = statistics.median(e_times), statistics.median(c_times)
    return {
        "method": args.method,
        "compile_cpu_s": round(first - eager_first + compiler_cpu, 1),
        "compiler_subprocess_cpu_s": round(compiler_cpu, 1),
        "compile_wall_s": round(first_wall, 1),
        "eager_s": round(e, 4),
        "compiled_s": round(c, 4),
        "speedup": round(e / c, 3),
        "loss_eager": eager.first_loss,
        "loss_compiled": compiled.first_loss,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="phantom")
    ap.add_argument("--profile", default="lite")
    ap.add_argument("--methods", default="crapnet")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=6, help="timed rounds, eager and compiled alternating")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="crapnet", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    import torch

    load_start = os.getloadavg()
    rows = []
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory(prefix="crapnet-compile-") as cache:
            # one compile thread: the C++ compiler runs as waited-for subprocesses, whose CPU time is counted
            env = dict(
                os.environ,
                TORCHINDUCTOR_CACHE_DIR=cache,
                TRITON_CACHE_DIR=str(Path(cache) / "triton"),
                TORCHINDUCTOR_COMPILE_THREADS="1",
            )
            for run in ("first", "cached"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--method",
                    method,
                    "--dataset",
                    args.dataset,
                    "--profile",
                    args.profile,
                    "--threads",
                    str(args.threads),
                    "--steps",
                    str(args.steps),
                    "--rounds",
                    str(args.rounds),
                    "--warmup",
                    str(args.warmup),
                ]
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    print(f"FAILED {method} {run}:\n{res.stderr[-4000:]}", file=sys.stderr)
                    return 1
                row = dict(json.loads(res.stdout.strip().splitlines()[-1]), run=run)
                rows.append(row)
                print(json.dumps(row), flush=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# `torch.compile` per training process: first compile, cached compile, step time",
        "",
        f"Produced by `benchmarks/bench_compile.py {' '.join(sys.argv[1:])}` (torch {torch.__version__}, "
        f"{args.threads} thread(s), {os.cpu_count()} cores, commit {commit}, profile `{args.profile}`, dataset "
        f"`{args.dataset}`); load average {', '.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end, this process at nice 15 on a shared "
        "machine: times are inflated by the other work, the speed-ups are side by side.",
        "",
        "| method | process | compilation CPU s (C++ compiler) | compilation wall s | eager CPU s/step | "
        "compiled CPU s/step | speed-up | first loss eager / compiled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['run']} | {r['compile_cpu_s']} ({r['compiler_subprocess_cpu_s']}) | "
            f"{r['compile_wall_s']} | {r['eager_s']} | "
            f"{r['compiled_s']} | {r['speedup']}x | {r['loss_eager']:.6f} / {r['loss_compiled']:.6f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from crapnet_core.io import write_json, write_text

        write_json(args.out.with_suffix(".json"), {"rows": rows, "load_start": load_start, "commit": commit})
        write_text(args.out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
