"""Does ``torch.compile`` shorten a training step? Eager against compiled, same batch, same seed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_compile.py \
        [--dataset phantom] [--profile lite] [--methods crapnet,alpnet] [--threads 1] [--steps 20] [--warmup 5]

For each method it builds the model of the profile (``crapnet_core.training.build_model``),
takes one fixed batch of real training episodes, and times the model compute of a
training step (``episode_loss`` forward, backward, SGD step) over ``--steps`` steps after
``--warmup`` steps (the compiled model's first steps include the compilation, reported
apart as "first step"). It prints seconds per step, eager and compiled, the speed-up, and
whether the loss of the first step agrees. This is what ``train.compile=true`` changes in
``crapnet train`` (a runtime-only switch: it does not change the config hash).
Figures depend on the machine's load: quote them with what else was running.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def _time_steps(cfg, model, batch, steps: int, warmup: int) -> tuple[float, float, float]:
    """(seconds of the first step, mean seconds per step after warm-up, first loss)."""
    from crapnet_core.losses import episode_loss
    from crapnet_core.training import make_optimizer

    opt, _ = make_optimizer(cfg, model)
    first = per = loss0 = 0.0
    t = time.perf_counter()
    for i in range(steps + warmup):
        if i == warmup:
            t = time.perf_counter()
        t_step = time.perf_counter()
        loss = episode_loss(model, batch, cfg.loss)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i == 0:
            first, loss0 = time.perf_counter() - t_step, float(loss.detach())
    per = (time.perf_counter() - t) / steps
    return first, per, loss0


def main() -> None:
    from crapnet_core.experiment import make_config
    from crapnet_core.training import build_episodes, build_model, compile_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="phantom")
    ap.add_argument("--profile", default="lite")
    ap.add_argument("--methods", default="crapnet,alpnet")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} cores, profile {args.profile}, "
          f"dataset {args.dataset}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'method':8s} {'eager s/step':>12s} {'compiled s/step':>15s} {'speed-up':>8s} "
          f"{'compile (1st step) s':>20s} {'loss eager':>10s} {'loss compiled':>13s}")
    for method in args.methods.split(","):
        cfg = make_config(args.profile, args.dataset, 1, 0, method, ["train.device=cpu"])
        dataset, *_ = build_episodes(cfg)
        batch = torch.utils.data.default_collate([dataset[i] for i in range(cfg.train.batch_size)])
        model = build_model(cfg).train()
        _, eager, loss_e = _time_steps(cfg, model, batch, args.steps, args.warmup)
        model = build_model(cfg).train()  # same seed: same initial weights
        first, compiled, loss_c = _time_steps(cfg, compile_model(model), batch, args.steps, args.warmup)
        print(f"{method:8s} {eager:12.4f} {compiled:15.4f} {eager / compiled:7.2f}x {first:20.1f} "
              f"{loss_e:10.4f} {loss_c:13.4f}", flush=True)


if __name__ == "__main__":
    main()
