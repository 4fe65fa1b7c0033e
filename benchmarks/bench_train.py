"""Steps per second of the training loop, data included (smoke and lite profiles).

    CRAPNET_DATA_ROOT=../shared/data .venv/bin/python benchmarks/bench_train.py \
        [--dataset chaos] [--profiles smoke,lite] [--steps 30] [--workers 0,1] [--set model.n_blocks=3]

For each profile and each number of data-loading workers it runs the real loop pieces
(DataLoader over EpisodeDataset -> episode_loss -> backward -> SGD step) and prints:
episodes/s of the data alone, steps/s of model compute alone (one fixed batch), and
steps/s of the full loop (data + compute, as ``crapnet train`` does it). The first few
steps are warm-up and not timed. Figures depend on the load of the machine: say what else
was running when you quote them.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def _loop(cfg, dataset, workers: int, steps: int, warmup: int) -> float:
    from crapnet_core.engine.training import build_model, make_optimizer
    from crapnet_core.models.losses import episode_loss

    model = build_model(cfg)
    model.train()
    opt, sched = make_optimizer(cfg, model)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=list(range((steps + warmup) * cfg.train.batch_size)),
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    t0 = None
    for i, batch in enumerate(loader):
        if i == warmup:
            t0 = time.perf_counter()
        loss = episode_loss(model, batch, cfg.loss)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.training import build_episodes, build_model, make_optimizer
    from crapnet_core.models.losses import episode_loss

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="phantom")
    ap.add_argument("--profiles", default="smoke,lite")
    ap.add_argument("--methods", default="crapnet")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", default="0,1")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, dataset {args.dataset}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    for profile in args.profiles.split(","):
        for method in args.methods.split(","):
            cfg = make_config(profile, args.dataset, 1, 0, method, ["train.device=cpu", *args.overrides])
            cfg.train.steps = (args.steps + args.warmup) * 2
            torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)  # as crapnet train does
            dataset, *_ = build_episodes(cfg)
            n = 10
            t = time.perf_counter()
            for i in range(n):
                dataset[i]
            eps = n / (time.perf_counter() - t)
            batch = torch.utils.data.default_collate([dataset[i] for i in range(cfg.train.batch_size)])
            model = build_model(cfg)
            model.train()
            opt, _ = make_optimizer(cfg, model)
            for i in range(args.steps + args.warmup):
                if i == args.warmup:
                    t = time.perf_counter()
                loss = episode_loss(model, batch, cfg.loss)["total"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            compute = args.steps / (time.perf_counter() - t)
            line = (
                f"{profile:6s} {method:8s} {cfg.model.encoder} {cfg.data.input_size}px "
                f"{torch.get_num_threads()} threads "
                f"{cfg.model.n_blocks} blocks: data {eps:6.1f} episodes/s, compute {compute:5.2f} steps/s"
            )
            for w in [int(x) for x in args.workers.split(",")]:
                line += f", loop(workers={w}) {_loop(cfg, dataset, w, args.steps, args.warmup):5.2f} steps/s"
            print(line, flush=True)


if __name__ == "__main__":
    main()
