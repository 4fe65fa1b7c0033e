"""Does ``torch.compile`` shorten a training step? Eager against compiled, same batch, same seed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_compile.py \
        [--dataset phantom] [--profile lite] [--methods crapnet,alpnet] [--threads 1]
        [--rounds 6] [--steps 5] [--warmup 3]

For each method it builds the model of the profile (``crapnet_core.engine.training.build_model``),
takes one fixed batch of real training episodes, and times the model compute of a
training step (``episode_loss`` forward, backward, SGD step): after ``--warmup`` steps,
``--rounds`` alternating rounds of ``--steps`` eager and ``--steps`` compiled steps (so that a
load change on a shared machine hits both alike). It prints the median seconds per step,
eager and compiled, the speed-up, the compilation time (first compiled step) and the loss of
the first step of each (same weights, same batch: they should agree). This is what ``train.compile=true`` changes in
``crapnet train`` (a runtime-only switch: it does not change the config hash).
Figures depend on the machine's load: quote them with what else was running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


class _Stepper:
    """One model + optimizer; ``step(n)`` runs n training steps on the fixed batch, returns seconds."""

    def __init__(self, cfg, model, batch):
        from crapnet_core.engine.training import make_optimizer

        self.cfg, self.model, self.batch = cfg, model, batch
        self.opt, _ = make_optimizer(cfg, model)
        self.first_loss = None

    def step(self, n: int) -> float:
        from crapnet_core.models.losses import episode_loss

        t = time.perf_counter()
        for _ in range(n):
            loss = episode_loss(self.model, self.batch, self.cfg.loss)["total"]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.first_loss is None:
                self.first_loss = float(loss.detach())
        return time.perf_counter() - t


def main() -> None:
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.training import build_episodes, build_model, compile_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="phantom")
    ap.add_argument("--profile", default="lite")
    ap.add_argument("--methods", default="crapnet,alpnet")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=6, help="timed rounds, eager and compiled alternating")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} cores, profile {args.profile}, "
          f"dataset {args.dataset}, {args.rounds} x {args.steps} timed steps each after {args.warmup} warm-up, "
          f"median seconds per step")
    print(f"{'method':8s} {'eager s/step':>12s} {'compiled s/step':>15s} {'speed-up':>8s} "
          f"{'compile (1st step) s':>20s} {'loss eager':>10s} {'loss compiled':>13s}")
    for method in args.methods.split(","):
        cfg = make_config(args.profile, args.dataset, 1, 0, method, ["train.device=cpu"])
        dataset, *_ = build_episodes(cfg)
        batch = torch.utils.data.default_collate([dataset[i] for i in range(cfg.train.batch_size)])
        eager = _Stepper(cfg, build_model(cfg).train(), batch)
        compiled = _Stepper(cfg, compile_model(build_model(cfg).train()), batch)  # same seed, same weights
        eager.step(args.warmup)
        first = compiled.step(1)  # includes the compilation
        compiled.step(args.warmup - 1)
        # interleaved rounds: a load change on a shared machine hits both alike; median per step
        e_times, c_times = [], []
        for _ in range(args.rounds):
            e_times.append(eager.step(args.steps) / args.steps)
            c_times.append(compiled.step(args.steps) / args.steps)
        e, c = statistics.median(e_times), statistics.median(c_times)
        print(f"{method:8s} {e:12.4f} {c:15.4f} {e / c:7.2f}x {first:20.1f} "
              f"{eager.first_loss:10.4f} {compiled.first_loss:13.4f}", flush=True)


if __name__ == "__main__":
    main()
