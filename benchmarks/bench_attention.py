"""CRAPNet's training step against SSL-ALPNet's, side by side: time ratio and dispatched operators (issue 21).

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python benchmarks/bench_attention.py \
        [--profiles lite,paper] [--rounds 15] [--steps 2] [--warmup 3] [--threads 1] \
        [--time-profiles lite] [--out benchmarks/attention_figures]

One process, one thread. Per profile it builds, with the profile's config (``make_config``;
random weights, ``model.pretrained=false``), the models

* ``crapnet`` -- the attention as it runs in training (both branches batched,
  ``crapnet_core.models.attention_fused``),
* ``crapnet-reference`` -- the same model (same weights) with ``attention.fused = False``: the
  blocks one by one, differentiated by autograd, i.e. the computation before issue 21,
* ``alpnet`` (SSL-ALPNet) and ``panet`` (SSL-PANet),

and one fixed synthetic episode of the profile's input size. A training step is the one of
``crapnet train``: ``episode_loss`` (Eq. 18-20, alignment included), backward, SGD step.

* **Operators per step**: ``torch.profiler`` over one step, counting the ATen operators
  dispatched (top-level ``aten::`` events, i.e. what a GPU would launch kernels for, at most
  one launch each; nested calls are not counted twice) and all profiler events.
* **Time per step** (only ``--time-profiles``): ``--rounds`` rounds; in each round every model
  runs ``--steps`` steps, in an order rotated from round to round, so that a change in the load
  of a shared machine hits all alike. Reported: the median over rounds of process CPU seconds
  per step (less disturbed by other work than the wall clock) and of wall seconds, and each
  model's ratio to SSL-ALPNet computed within every round, median and range over rounds.
* **Same results**: the losses of the first step of ``crapnet`` and ``crapnet-reference``
  (same weights, same episode) and their largest relative gradient difference.

Writes ``OUT.json`` (everything) and ``OUT.md`` (the tables, with the command, machine, load
and commit). Timings are only comparable within one run; quote ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("crapnet", "crapnet-reference", "alpnet", "panet")


def episode(size: int) -> dict:
    """One synthetic episode (batch 1) of ``size`` pixels, fixed seed."""
    import torch

    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 3, size, size, generator=g)
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[:, size // 4: size // 2, size // 3: 2 * size // 3] = 1
    return {"support_image": img, "support_mask": mask,
            "query_image": img.roll(size // 32, -1) + 0.1 * torch.randn(img.shape, generator=g),
            "query_mask": mask.roll(size // 32, -1)}


class Stepper:
    """A model, its SGD optimiser (Sec. 4.3) and one fixed episode; ``step()`` is a training step."""

    def __init__(self, cfg, model, batch) -> None:
        from crapnet_core.engine.training import loss_function, make_optimizer

        self.cfg, self.model, self.batch = cfg, model.train(), batch
        self.loss_fn = loss_function(cfg)
        self.opt, _ = make_optimizer(cfg, model)

    def step(self) -> float:
        loss = self.loss_fn(self.model, self.batch, self.cfg.loss)["total"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def build(profile: str) -> dict:
    """name -> Stepper for the profile (crapnet and crapnet-reference share their initial weights)."""
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.training import build_model

    out = {}
    for name in MODELS:
        method = name.split("-")[0]
        cfg = make_config(profile, "phantom", 1, 0, method, ["train.threads=1", "model.pretrained=false"])
        model = build_model(cfg)  # seeded with train.seed: the two crapnet models start equal
        if name == "crapnet-reference":
            model.attention.fused = False
        out[name] = Stepper(cfg, model, episode(cfg.data.input_size))
    return out


def count_operators(stepper: Stepper) -> dict:
    """ATen operators dispatched by one training step (top level) and all profiler events."""
    from torch.profiler import ProfilerActivity, profile

    stepper.step()  # warm: lazy initialisations are not part of a step
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stepper.step()
    events = list(prof.events())
    aten = [e for e in events if e.name.startswith("aten::")]
    ids = {id(e) for e in aten}

    def nested(e) -> bool:
        p = e.cpu_parent
        while p is not None:
            if id(p) in ids:
                return True
            p = p.cpu_parent
        return False

    top = [e for e in aten if not nested(e)]
    return {"aten_top_level": len(top), "aten_all": len(aten), "events": len(events)}


def same_results(steppers: dict) -> dict:
    """First-step loss of crapnet and crapnet-reference (same weights and episode), largest gradient difference."""
    import torch

    a, b = steppers["crapnet"], steppers["crapnet-reference"]
    b.model.load_state_dict(a.model.state_dict())
    out = {}
    grads = []
    for s in (a, b):
        loss = s.loss_fn(s.model, s.batch, s.cfg.loss)["total"]
        s.model.zero_grad(set_to_none=True)
        loss.backward()
        out.setdefault("loss", []).append(float(loss.detach()))
        grads.append({n: p.grad.clone() for n, p in s.model.named_parameters() if p.grad is not None})
        s.model.zero_grad(set_to_none=True)
    scale = max(float(g.abs().max()) for g in grads[1].values())
    out["max_grad_diff_over_max_grad"] = max(float((grads[0][n] - g).abs().max()) for n, g in grads[1].items()) / scale
    out["loss_rel_diff"] = abs(out["loss"][0] - out["loss"][1]) / abs(out["loss"][1])
    return out


def time_steps(steppers: dict, rounds: int, steps: int, warmup: int) -> dict:
    """Alternating rounds: CPU and wall seconds per step per model, ratios to alpnet per round."""
    names = list(steppers)
    for s in steppers.values():
        for _ in range(warmup):
            s.step()
    cpu = {n: [] for n in names}
    wall = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                steppers[n].step()
            cpu[n].append((time.process_time() - c0) / steps)
            wall[n].append((time.perf_counter() - t0) / steps)
    out = {}
    for n in names:
        ratios = [c / a for c, a in zip(cpu[n], cpu["alpnet"])]
        out[n] = {"cpu_s": statistics.median(cpu[n]), "wall_s": statistics.median(wall[n]),
                  "ratio_to_alpnet": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return out


def machine() -> dict:
    import torch

    model = "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "crapnet_core"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", False
    return {"cpu": model, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average": os.getloadavg(),
            "commit": commit + ("+dirty" if dirty else "")}


def markdown(result: dict) -> str:
    lines = ["# CRAPNet's training step against SSL-ALPNet's (issue 21)", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{result['machine']['threads']} torch thread; torch {result['machine']['torch']}; "
             f"commit {result['machine']['commit']}; load average at the start "
             f"{', '.join(f'{x:.2f}' for x in result['load_start'])}, at the end "
             f"{', '.join(f'{x:.2f}' for x in result['load_end'])}. Random weights, one synthetic episode "
             "(batch 1), `episode_loss` + backward + SGD step.", ""]
    for prof, res in result["profiles"].items():
        lines += [f"## `{prof}`", ""]
        if "time" in res:
            t = res["time"]
            lines += [f"Alternating in one process: {result['rounds']} rounds x {result['steps']} steps per model, "
                      "order rotated each round; medians over rounds; ratio = CPU seconds per step / SSL-ALPNet's "
                      "in the same round (median, range).", "",
                      "| model | CPU s/step | wall s/step | ratio to SSL-ALPNet | range | ATen ops/step | all events/step |",
                      "|---|---|---|---|---|---|---|"]
            for n, row in t.items():
                ops = res["operators"][n]
                lines.append(f"| {n} | {row['cpu_s']:.4f} | {row['wall_s']:.4f} | **{row['ratio_to_alpnet']:.3f}** | "
                             f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f} | {ops['aten_top_level']} | {ops['events']} |")
        else:
            lines += ["| model | ATen ops/step | all ATen ops/step | all events/step |", "|---|---|---|---|"]
            for n, ops in res["operators"].items():
                lines.append(f"| {n} | {ops['aten_top_level']} | {ops['aten_all']} | {ops['events']} |")
        same = res["same_results"]
        lines += ["", f"Same results (first step, same weights and episode): loss crapnet {same['loss'][0]:.6f}, "
                      f"reference {same['loss'][1]:.6f} (relative difference {same['loss_rel_diff']:.1e}); largest "
                      f"gradient difference / largest gradient {same['max_grad_diff_over_max_grad']:.1e}.", ""]
    lines += ["ATen ops/step: top-level `aten::` operators dispatched in one training step (torch.profiler), "
              "the count of kernel launches a GPU would make at most; all events: every profiler event "
              "(autograd nodes and nested operators included).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="lite,paper", help="profiles whose operators are counted")
    p.add_argument("--time-profiles", default="lite", help="profiles that are also timed (comma list, may be empty)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=2, help="steps per model per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"command": " ".join(["benchmarks/bench_attention.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "load_start": os.getloadavg(), "rounds": args.rounds, "steps": args.steps,
              "profiles": {}}
    timed = [x for x in args.time_profiles.split(",") if x]
    for prof in [x for x in args.profiles.split(",") if x]:
        steppers = build(prof)
        res = {"operators": {n: count_operators(s) for n, s in steppers.items()}}
        print(prof, "operators", json.dumps(res["operators"]), flush=True)
        if prof in timed:
            res["time"] = time_steps(steppers, args.rounds, args.steps, args.warmup)
            print(prof, "time", json.dumps(res["time"]), flush=True)
        res["same_results"] = same_results(steppers)
        print(prof, "same results", json.dumps(res["same_results"]), flush=True)
        result["profiles"][prof] = res
    result["load_end"] = os.getloadavg()
    text = markdown(result)
    print(text)
    if args.out:
        from crapnet_core.io import write_json, write_text

        write_json(args.out.with_suffix(".json"), result)
        write_text(args.out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
