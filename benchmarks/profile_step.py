"""Where CRAPNet's `lite` training step spends its time beyond SSL-ALPNet's (issue 21).

    PYTHONPATH=$PWD taskset -c 1 .venv/bin/python benchmarks/profile_step.py \
        [--profile lite] [--rounds 10] [--steps 3] [--top 20] [--out benchmarks/step_profile]

One process, one thread, random weights, the fixed synthetic episode of
``bench_attention.episode``. Two views:

* **Parts**, timed in rounds (each part ``--steps`` times per round, the parts in a fixed order
  within a round, medians of process CPU seconds over rounds): the whole training step of
  CRAPNet and SSL-ALPNet (``bench_attention.Stepper``); the shared encoder's forward + backward on
  the support and query images; CRAPNet's attention stack (both branches, forward + backward) on
  the encoder features; the prototype classifier (Eq. 14-17, forward + backward) with CARAFE++
  (CRAPNet) and with average pooling (SSL-ALPNet). The classifier runs twice per step (the
  forward pass and the alignment term, Eq. 19), so CRAPNet's step exceeds SSL-ALPNet's by about
  attention + 2 x (CARAFE++ classifier - pooling classifier).
* **Operators**: ``torch.profiler`` over ``--steps`` steps of each method, the ``--top``
  operators by self CPU time (the profiler's own overhead inflates the small operators; read
  the shares, not the absolute times).

Writes ``OUT.json`` and ``OUT.md`` with the command, machine, load and commit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# the sibling script bench_attention is importable: Python puts a script's own folder first on the path


def parts(profile: str) -> dict:
    """name -> a callable running one forward + backward of that part (see the module docstring)."""
    import bench_attention as ba
    import torch

    from crapnet_core.models.segmenter import fg_bg

    steppers = ba.build(profile)
    crap, alp = steppers["crapnet"], steppers["alpnet"]
    m, batch = crap.model, crap.batch
    images = torch.cat([batch["support_image"], batch["query_image"]])
    with torch.no_grad():
        x_s, x_q = m.encode(batch["support_image"], batch["query_image"])
        z_s, z_q = m.attention(x_s, x_q)
    x_s, x_q = x_s.detach().requires_grad_(True), x_q.detach().requires_grad_(True)
    z_s, z_q = z_s.detach().requires_grad_(True), z_q.detach().requires_grad_(True)
    g = torch.Generator().manual_seed(2)
    d_s, d_q = torch.randn(x_s.shape, generator=g), torch.randn(x_q.shape, generator=g)
    fg, bg = fg_bg(batch["support_mask"])

    def encoder():
        f = m.encoder(images)
        f.backward(torch.ones_like(f))

    def attention():
        torch.autograd.backward(list(m.attention(x_s, x_q)), [d_s, d_q])

    def classifier(model):
        def run():
            model.classifier(z_s, fg, bg, z_q).sum().backward()

        return run

    return {
        "crapnet step": crap.step,
        "alpnet step": alp.step,
        "encoder": encoder,
        "attention": attention,
        "classifier (CARAFE++)": classifier(m),
        "classifier (pooling)": classifier(alp.model),
    }, steppers


def time_parts(fns: dict, rounds: int, steps: int) -> dict:
    for f in fns.values():
        for _ in range(2):
            f()
    times = {n: [] for n in fns}
    for _ in range(rounds):
        for n, f in fns.items():
            t = time.process_time()
            for _ in range(steps):
                f()
            times[n].append((time.process_time() - t) / steps)
    return {n: {"cpu_s": statistics.median(v), "min_s": min(v)} for n, v in times.items()}


def top_operators(stepper, steps: int, top: int) -> dict:
    import bench_attention as ba
    from torch.profiler import ProfilerActivity, profile

    stepper.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            stepper.step()
    with profile(activities=[ProfilerActivity.CPU]) as once:
        stepper.step()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    return {
        "total_self_ms_per_step": total / 1e3 / steps,
        "counts": ba.operator_counts(once.events()),
        "top": [
            {
                "name": e.key,
                "calls_per_step": e.count / steps,
                "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                "share": e.self_cpu_time_total / total,
            }
            for e in rows[:top]
        ],
    }


def step_flops(stepper) -> float:
    """Floating-point operations of one step's loss + backward (``FlopCounterMode``: matrix products and
    convolutions only, no element-wise work)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        stepper.step(optimizer=False)
    return float(counter.get_total_flops())


def markdown(res: dict) -> str:
    m = res["machine"]
    t = res["parts"]
    extra = t["crapnet step"]["cpu_s"] - t["alpnet step"]["cpu_s"]
    carafe = t["classifier (CARAFE++)"]["cpu_s"] - t["classifier (pooling)"]["cpu_s"]
    lines = [
        "# Where CRAPNet's training step spends its time (issue 21)",
        "",
        f"Produced by `{res['command']}`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch thread; torch {m['torch']}; commit "
        f"{m['commit']}; load average {', '.join(f'{x:.1f}' for x in res['load_start'])} at the start, "
        f"{', '.join(f'{x:.1f}' for x in res['load_end'])} at the end (a shared machine: two single-thread "
        "trainings ran on its two cores; the parts alternate within every round, so they share that load).",
        "",
        *([f"Code under test: {res['code']}.", ""] if res.get("code") else []),
        f"## Parts (`{res['profile']}`, process CPU ms, median of {res['rounds']} rounds x {res['steps']})",
        "",
        "| part | CPU ms | min ms |",
        "|---|---|---|",
    ]
    for n, row in t.items():
        lines.append(f"| {n} | {1e3 * row['cpu_s']:.2f} | {1e3 * row['min_s']:.2f} |")
    lines += [
        "",
        f"CRAPNet's step exceeds SSL-ALPNet's by {1e3 * extra:.1f} ms (ratio "
        f"{t['crapnet step']['cpu_s'] / t['alpnet step']['cpu_s']:.2f}); the attention stack accounts for "
        f"{1e3 * t['attention']['cpu_s']:.1f} ms, CARAFE++ over pooling for 2 x {1e3 * carafe:.1f} ms "
        "(forward pass and alignment term).",
        "",
    ]
    fl = res["flops"]
    lines += [
        f"Matrix-product and convolution FLOPs of one step (loss + backward, `FlopCounterMode`): CRAPNet "
        f"{fl['crapnet'] / 1e9:.3f} G, SSL-ALPNet {fl['alpnet'] / 1e9:.3f} G, ratio "
        f"{fl['crapnet'] / fl['alpnet']:.3f}: the step ratio if CRAPNet's extra products ran as fast per FLOP "
        "as SSL-ALPNet's convolutions (element-wise work not counted).",
        "",
    ]
    for name, ops in res["operators"].items():
        c = ops["counts"]
        lines += [
            f"## Operators of one `{name}` step (torch.profiler)",
            "",
            f"{c['kernels']} kernels, {c['aten_top_level']} top-level ATen calls, {c['events']} events per step "
            f"(counted as in `bench_attention.py`); {ops['total_self_ms_per_step']:.1f} ms of self CPU time "
            "per step under the profiler.",
            "",
            "| operator | calls/step | self ms/step | share |",
            "|---|---|---|---|",
        ]
        for r in ops["top"]:
            lines.append(
                f"| `{r['name']}` | {r['calls_per_step']:.0f} | {r['self_ms_per_step']:.2f} | "
                f"{100 * r['share']:.1f} % |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import bench_attention as ba
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="lite")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    p.add_argument(
        "--code", default="", help="which crapnet_core was imported, when not this checkout's (stated in OUT.md)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {
        "command": " ".join(["benchmarks/profile_step.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": ba.machine(),
        "load_start": os.getloadavg(),
        "profile": args.profile,
        "rounds": args.rounds,
        "steps": args.steps,
        "code": args.code or None,
    }
    fns, steppers = parts(args.profile)
    res["parts"] = time_parts(fns, args.rounds, args.steps)
    res["flops"] = {n: step_flops(steppers[n]) for n in ("crapnet", "alpnet")}
    res["operators"] = {n: top_operators(steppers[n], args.steps, args.top) for n in ("crapnet", "alpnet")}
    res["load_end"] = os.getloadavg()
    text = markdown(res)
    print(text)
    if args.out:
        from crapnet_core.io import write_json, write_text

        write_json(args.out.with_suffix(".json"), res)
        write_text(args.out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
