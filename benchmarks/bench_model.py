"""Training-step cost of the few-shot segmenter on CPU.

For every (method, encoder, input size) it reports, for one episode (one support + one query,
batch 1, as in the paper's training):

* seconds per training step: forward, :func:`crapnet_core.models.losses.episode_loss` (Eq. 18-20,
  with the alignment term), backward and an SGD step (momentum 0.9, weight decay 5e-4);
  median over ``--repeats`` timed steps after ``--warmup`` untimed ones;
* peak memory: each configuration runs in a fresh child process; ``peak_rss_mb`` is the
  process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the
  steps, ``step_rss_mb`` the rise of that high-water mark over the steps (activations, gradients,
  optimiser state: what a training step adds on top of the built model);
* floating-point operations of one step (forward + backward) from
  ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv family only: it does not count
  element-wise operations, softmax, argmax or gathers), with the attention module's share;
* ``cpu_s_per_step``: process CPU seconds per step (all threads; ``time.process_time``), a
  figure that other work on a shared machine disturbs less than the wall clock;
* for ``crapnet``: the attention blocks' share of the step, measured by ablation: the same
  model with its attention module removed (encoder, CARAFE++ prototypes, classifier and loss
  unchanged) is timed in the same child process, alternating step by step with the full
  model (the peak memory is then that of the full model); ``attention_added`` = c_full / c_without - 1
  and ``attention_share`` = 1 - c_without / c_full on CPU seconds (the issue's goal: under 10 %
  added for the 2 x 5 blocks on the ResNet-101 step).

Examples::

    .venv/bin/python benchmarks/bench_model.py                       # everything (slow: ResNet-101)
    .venv/bin/python benchmarks/bench_model.py --encoders resnet18_l2 --sizes 128 256 --repeats 5
    .venv/bin/python benchmarks/bench_model.py --methods crapnet --encoders deeplabv3_resnet101 --repeats 2
    .venv/bin/python benchmarks/bench_model.py --json bench.json     # also write the rows as JSON
    # does it learn? 400 steps on real CHAOS episodes, held-out loss/Dice before and after
    CRAPNET_DATA_ROOT=/path/to/data .venv/bin/python benchmarks/bench_model.py \
        --encoders resnet18_l2 --sizes 128 --learn-steps 400 --lr 1e-3 --threads 1

Timings depend on the machine and on what else runs on it; report them with that caveat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _episode(size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 3, size, size, generator=g)
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[:, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
    return {
        "support_image": img,
        "support_mask": mask,
        "query_image": img.roll(size // 32, -1) + 0.1 * torch.randn(img.shape, generator=g),
        "query_mask": mask.roll(size // 32, -1),
    }


def _build(cfg):
    """The model of ``cfg.method``: a registered method's module (crapnet_core/models/methods) or FewShotSegmenter."""
    from crapnet_core.models.methods import hook
    from crapnet_core.models.segmenter import FewShotSegmenter

    build = hook(cfg.method, "build_model")
    return build(cfg) if build is not None else FewShotSegmenter(cfg)


def _loss_fn(model):
    """The episode loss of the model's method (registered methods bring their own)."""
    from crapnet_core.models.losses import episode_loss
    from crapnet_core.models.methods import hook

    return hook(model.cfg.method, "episode_loss") or episode_loss


class _Stepper:
    """One training step (forward, episode loss, backward, SGD step) with its wall/CPU time."""

    def __init__(self, model, batch) -> None:
        import torch

        self.model, self.batch = model, batch
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def __call__(self) -> tuple[float, float]:
        from crapnet_core.models.config import LossConfig

        t0, c0 = time.perf_counter(), time.process_time()
        loss = _loss_fn(self.model)(self.model, self.batch, LossConfig())["total"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0, time.process_time() - c0


def _flops(model, batch) -> tuple[int, int]:
    from torch.utils.flop_counter import FlopCounterMode

    from crapnet_core.models.config import LossConfig

    counter = FlopCounterMode(display=False)
    with counter:
        _loss_fn(model)(model, batch, LossConfig())["total"].backward()
    model.zero_grad(set_to_none=True)
    total = counter.get_total_flops()
    per_module = counter.get_flop_counts()
    attention = sum(per_module.get("FewShotSegmenter.attention", {}).values())
    return int(total), int(attention)


def run_child(args: argparse.Namespace) -> dict:
    """One configuration, in this (fresh) process."""
    import torch

    from crapnet_core.models.config import ModelConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(
        method=args.method,
        encoder=args.encoder,
        n_blocks=args.n_blocks,
        branches=args.branches,
        attention_dim=args.attention_dim,
    )
    model = _build(cfg).train()
    batch = _episode(args.size)
    n_params = sum(p.numel() for p in model.parameters())
    n_att = sum(p.numel() for p in getattr(model, "attention_parameters", list)())
    step = _Stepper(model, batch)
    attention = getattr(model, "attention", None)
    ablate = args.method == "crapnet" and not args.no_ablation
    rss_before = _rss_mb()
    times, cpu, times_wo, cpu_wo = [], [], [], []
    for i in range(args.warmup + args.repeats):
        # full and ablated (attention removed) steps alternate, so that a change in the load of
        # a shared machine hits both alike
        if ablate:
            model.attention = attention
        dt, dc = step()
        if i >= args.warmup:
            times.append(dt)
            cpu.append(dc)
        if ablate:
            model.attention = None
            dt, dc = step()
            if i >= args.warmup:
                times_wo.append(dt)
                cpu_wo.append(dc)
    if ablate:
        model.attention = attention
    rss_after = _rss_mb()
    row = {
        "method": args.method,
        "encoder": args.encoder,
        "size": args.size,
        "n_blocks": args.n_blocks if args.method == "crapnet" else 0,
        "branches": args.branches if args.method == "crapnet" else 0,
        "attention_dim": args.attention_dim if args.method == "crapnet" else 0,
        "threads": torch.get_num_threads(),
        "params_m": round(n_params / 1e6, 3),
        "attention_params_m": round(n_att / 1e6, 3),
        "s_per_step": round(statistics.median(times), 4),
        "s_per_step_min": round(min(times), 4),
        "cpu_s_per_step": round(statistics.median(cpu), 4),
        "peak_rss_mb": round(rss_after, 1),
        "step_rss_mb": round(rss_after - rss_before, 1),
    }
    if not args.no_flops:
        total, att = _flops(model, batch)
        row["gflop_per_step"] = round(total / 1e9, 2)
        row["attention_flop_share"] = round(att / total, 4) if total else 0.0
    if ablate:
        t_wo, c_wo = statistics.median(times_wo), statistics.median(cpu_wo)
        row["s_per_step_without_attention"] = round(t_wo, 4)
        row["cpu_s_per_step_without_attention"] = round(c_wo, 4)
        # shares from process CPU time: less sensitive to other work on a shared machine
        row["attention_share"] = round(1 - c_wo / row["cpu_s_per_step"], 4)
        row["attention_added"] = round(row["cpu_s_per_step"] / c_wo - 1, 4)
        row["attention_share_wall"] = round(1 - t_wo / row["s_per_step"], 4)
    return row


def run_learning_check(args: argparse.Namespace) -> dict:
    """Does the configuration learn? Short self-supervised training on real episodes.

    CHAOS (or ``--dataset``) fold 0, setting 1, episodes of ``--size`` pixels from
    :class:`crapnet_core.data.episodes.EpisodeDataset` (seed 0); SGD (momentum 0.9, weight decay
    5e-4) at ``--lr`` for ``--learn-steps`` steps, batch 1. Before and after: mean query
    cross-entropy (Eq. 18) and mean Dice of the thresholded prediction (eval mode) on 24
    held-out episodes (seed 999). The labels are superpixel pseudo-labels, not organs: this
    measures learning, not segmentation quality.
    """
    import torch

    from crapnet_core.data.episodes import EpisodeDataset
    from crapnet_core.data.protocol import make_fold
    from crapnet_core.data.scans import scan_ids
    from crapnet_core.data.spec import resolve_dataset
    from crapnet_core.models.config import LossConfig, ModelConfig
    from crapnet_core.models.losses import episode_loss
    from crapnet_core.models.segmenter import FewShotSegmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = resolve_dataset(args.dataset)
    fold = make_fold(scan_ids(spec), 0)
    collate = torch.utils.data.default_collate
    train = EpisodeDataset(spec, fold, size=args.size, seed=0, length=args.learn_steps, jobs=1)
    held = EpisodeDataset(spec, fold, size=args.size, seed=999, length=24, jobs=1)
    held_batches = [collate([held[i]]) for i in range(len(held))]
    torch.manual_seed(0)
    cfg = ModelConfig(
        method=args.method, encoder=args.encoder, n_blocks=args.n_blocks, branches=args.branches,
        attention_dim=args.attention_dim,
    )  # fmt: skip
    model = FewShotSegmenter(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)

    def evaluate() -> tuple[float, float]:
        model.eval()
        loss = dice = 0.0
        with torch.no_grad():
            for b in held_batches:
                loss += float(episode_loss(model, b, LossConfig())["seg"])
                p = model.predict(b["support_image"], b["support_mask"], b["query_image"]) > 0.5
                y = b["query_mask"] == 1
                dice += float(2 * (p & y).sum() / (p.sum() + y.sum()).clamp_min(1))
        model.train()
        return round(loss / len(held_batches), 4), round(dice / len(held_batches), 4)

    loss0, dice0 = evaluate()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(args.learn_steps):
        loss = episode_loss(model, collate([train[i]]), LossConfig())["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    loss1, dice1 = evaluate()
    return {
        "method": args.method, "encoder": args.encoder, "size": args.size, "lr": args.lr,
        "attention_dim": args.attention_dim if args.method == "crapnet" else 0,
        "steps": args.learn_steps, "threads": torch.get_num_threads(),
        "heldout_loss_before": loss0, "heldout_loss_after": loss1,
        "heldout_dice_before": dice0, "heldout_dice_after": dice1,
        "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
    }  # fmt: skip


def _fmt(rows: list[dict]) -> str:
    cols = [
        ("method", "method"),
        ("encoder", "encoder"),
        ("size", "size"),
        ("s_per_step", "s/step"),
        ("s_per_step_without_attention", "s/step w/o att"),
        ("cpu_s_per_step", "CPU s/step"),
        ("cpu_s_per_step_without_attention", "CPU s/step w/o att"),
        ("attention_added", "att added"),
        ("attention_share", "att share"),
        ("gflop_per_step", "GFLOP/step"),
        ("attention_flop_share", "att FLOP share"),
        ("peak_rss_mb", "peak RSS MB"),
        ("step_rss_mb", "step RSS MB"),
    ]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key, "")
            if key in ("attention_added", "attention_share", "attention_flop_share") and v != "":
                v = f"{100 * v:.1f} %"
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["crapnet", "alpnet", "panet"])
    p.add_argument("--encoders", nargs="+", default=["deeplabv3_resnet101", "resnet18_l2"])
    p.add_argument("--sizes", nargs="+", type=int, default=[256])
    p.add_argument("--repeats", type=int, default=3, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--n-blocks", type=int, default=5)
    p.add_argument("--branches", type=int, default=2)
    p.add_argument("--attention-dim", type=int, default=64, help="inner channels d of the attention blocks")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-flops", action="store_true", help="skip the FlopCounterMode pass")
    p.add_argument("--no-ablation", action="store_true", help="skip the without-attention timing")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument(
        "--learn-steps", type=int, default=0,
        help="instead of timing: train this many steps on real episodes and report the held-out "
        "loss/Dice before and after (needs CRAPNET_DATA_ROOT)",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the --learn-steps check")
    p.add_argument("--dataset", default="chaos", help="dataset of the --learn-steps check")
    # internal: run one configuration in this process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="crapnet", help=argparse.SUPPRESS)
    p.add_argument("--encoder", default="resnet18_l2", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(run_learning_check(args) if args.learn_steps else run_child(args)))
        return 0

    rows = []
    for encoder in args.encoders:
        for size in args.sizes:
            for method in args.methods:
                cmd = [
                    sys.executable, __file__, "--child", "--method", method, "--encoder", encoder,
                    "--size", str(size), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                    "--n-blocks", str(args.n_blocks), "--branches", str(args.branches),
                    "--attention-dim", str(args.attention_dim),
                    "--threads", str(args.threads),
                ]  # fmt: skip
                cmd += ["--learn-steps", str(args.learn_steps), "--lr", str(args.lr), "--dataset", args.dataset]
                cmd += ["--no-flops"] if args.no_flops else []
                cmd += ["--no-ablation"] if args.no_ablation else []
                res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if res.returncode != 0:
                    print(f"FAILED {method} {encoder} {size}:\n{res.stderr}", file=sys.stderr)
                    return 1
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    if not args.learn_steps:
        print(_fmt(rows))
    if args.json:
        from crapnet_core.io import write_json

        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
