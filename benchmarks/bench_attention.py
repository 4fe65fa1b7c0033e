"""CRAPNet's training step against SSL-ALPNet's, side by side: time ratio and dispatched operators (issue 21).

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python benchmarks/bench_attention.py \
        [--profiles lite,paper] [--time-profiles lite] [--rounds 15] [--steps 2] [--warmup 3] \
        [--threads 1] [--out benchmarks/attention_figures]

One process, one thread. Per profile it builds, with the profile's config (``make_config``;
random weights, ``model.pretrained=false``) and one fixed synthetic episode of the profile's
input size, these training steps (``episode_loss``, Eq. 18-20 with the alignment term,
backward, SGD step of Sec. 4.3):

* ``crapnet``: as ``crapnet train`` runs it now: the attention batched over both branches
  with a hand-written backward (``crapnet_core.models.attention_fused``), CARAFE++ summed by
  taps on CPU (``models.carafe``), fused SGD on CPU (``engine.training.make_optimizer``);
* ``crapnet-before``: the same model and weights computed as before issue 21: the blocks one
  by one differentiated by autograd (``attention.fused = False``), CARAFE++ by ``unfold`` +
  ``einsum`` (``by_taps = False``), SGD looping over the parameters (``foreach=False``);
* ``alpnet`` / ``alpnet-before`` (SSL-ALPNet, fused / looping SGD), ``panet`` (SSL-PANet).

Reported:

* **Operators per step**: ``torch.profiler`` over one step; ``kernels`` = leaf ATen operators
  that compute (views, reshapes, allocations and other metadata-only operators left out: the
  proxy for the kernel launches of a GPU step), ``aten`` = every top-level ATen dispatch,
  ``events`` = every profiler event. Also for the **GPU form**: loss and backward only (on a GPU
  SGD runs as a few multi-tensor kernels for every method), with the new code's path off CPU
  (every column in the attention, CARAFE++ by einsum) against the old code.
* **Time per step** (only ``--time-profiles``): ``--rounds`` rounds; in each round every model
  runs ``--steps`` steps, in an order rotated from round to round, so that a change in the load
  of a shared machine hits all alike. Medians over rounds of process CPU seconds per step (less
  disturbed by other work than the wall clock) and of wall seconds; each model's ratio to
  SSL-ALPNet (new code) computed within every round, median and range over rounds.
* **Used columns**: the share of the other side's pixels that are some pixel's best match
  (Eq. 11) in CRAPNet's blocks on the episode, what the attention's CPU form computes instead of
  every column.
* **Same results**: the first-step losses of ``crapnet`` and ``crapnet-before`` (same weights and
  episode) and their largest gradient difference relative to the largest gradient.

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

REPO = Path(__file__).resolve().parents[1]  # crapnet_core is imported as installed or from PYTHONPATH

MODELS = ("crapnet", "crapnet-before", "alpnet", "alpnet-before", "panet")
#: Operators that only make views, allocate or change metadata: not kernels.
METADATA_OPS = {
    "aten::view",
    "aten::_unsafe_view",
    "aten::as_strided",
    "aten::empty",
    "aten::empty_strided",
    "aten::resize_",
    "aten::detach",
    "aten::detach_",
    "aten::alias",
    "aten::lift_fresh",
    "aten::set_",
    "aten::_reshape_alias",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::expand",
    "aten::transpose",
    "aten::t",
    "aten::permute",
    "aten::select",
    "aten::slice",
    "aten::unbind",
    "aten::split",
    "aten::split_with_sizes",
    "aten::narrow",
    "aten::reshape",
    "aten::flatten",
    "aten::unflatten",
    "aten::view_as",
    "aten::expand_as",
    "aten::to",
    "aten::contiguous",
    "aten::chunk",
    "aten::result_type",
    "aten::is_nonzero",
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::numpy_T",
    "aten::new_empty",
    "aten::new_empty_strided",
    "aten::empty_like",
    "aten::_has_compatible_shallow_copy_type",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::mT",
    "aten::mH",
    "aten::adjoint",
    "aten::swapaxes",
    "aten::movedim",
    "aten::diagonal",
}


#: Matrix products: one kernel each (on CPU some loop over the batch with nested calls).
BLAS_OPS = {"aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::addbmm"}


def episode(size: int) -> dict:
    """One synthetic episode (batch 1) of ``size`` pixels, fixed seed."""
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


class Stepper:
    """A model, its SGD optimiser (Sec. 4.3) and one fixed episode; ``step()`` is a training step.

    sgd: ``new`` (``make_optimizer``: fused on CPU), ``loop`` (one parameter at a time, as
    before) or ``foreach`` (CUDA's default).
    """

    def __init__(self, cfg, model, batch, sgd: str = "new") -> None:
        import torch

        from crapnet_core.engine.training import loss_function, make_optimizer

        self.cfg, self.model, self.batch = cfg, model.train(), batch
        self.loss_fn = loss_function(cfg)
        if sgd == "new":
            self.opt, _ = make_optimizer(cfg, model)
        else:
            self.opt = torch.optim.SGD(
                model.parameters(),
                lr=cfg.train.lr,
                momentum=cfg.train.momentum,
                weight_decay=cfg.train.weight_decay,
                foreach=sgd == "foreach",
            )

    def step(self, optimizer: bool = True) -> float:
        loss = self.loss_fn(self.model, self.batch, self.cfg.loss)["total"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer:
            self.opt.step()
        return float(loss.detach())


def _old_code(model) -> None:
    """Switch a CRAPNet model to the computation before issue 21 (same parameters)."""
    if getattr(model, "attention", None) is not None:
        model.attention.fused = False
    carafe = getattr(getattr(model, "classifier", None), "carafe", None)
    if carafe is not None:
        carafe.by_taps = False


def _gpu_form(model) -> None:
    """The new code as it runs off CPU: every column in the attention, CARAFE++ by einsum (the
    operators are counted without the SGD step: a GPU runs it as multi-tensor kernels)."""
    if getattr(model, "attention", None) is not None:
        model.attention.compact = False
    carafe = getattr(getattr(model, "classifier", None), "carafe", None)
    if carafe is not None:
        carafe.by_taps = False


def build(profile: str, gpu_form: bool = False) -> dict:
    """name -> Stepper for the profile (models of one method share their initial weights)."""
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.training import build_model

    out = {}
    for name in MODELS:
        method, before = name.split("-")[0], name.endswith("-before")
        cfg = make_config(profile, "phantom", 1, 0, method, ["train.threads=1", "model.pretrained=false"])
        model = build_model(cfg)  # seeded with train.seed: the same initial weights for both codes
        if before:
            _old_code(model)
        elif gpu_form:
            _gpu_form(model)
        sgd = "loop" if before else "new"
        out[name] = Stepper(cfg, model, episode(cfg.data.input_size), sgd)
    return out


def operator_counts(events) -> dict:
    """Operators among profiler ``events``: ``kernels`` (computing operators that call no other
    computing operator; a matrix product counts once whatever it calls on CPU: a batch loop of mm
    calls is one batched kernel on a GPU), ``aten_top_level`` (every outermost ATen call), ``events``."""
    events = list(events)
    aten = [e for e in events if e.name.startswith("aten::")]
    ids = {id(e) for e in aten}

    def has_ancestor(e, pred) -> bool:
        p = e.cpu_parent
        while p is not None:
            if pred(p):
                return True
            p = p.cpu_parent
        return False

    top = [e for e in aten if not has_ancestor(e, lambda p: id(p) in ids)]
    computing = [e for e in aten if e.name not in METADATA_OPS and not has_ancestor(e, lambda p: p.name in BLAS_OPS)]
    has_computing_child = set()
    for e in computing:
        p = e.cpu_parent
        while p is not None:
            has_computing_child.add(id(p))
            p = p.cpu_parent
    kernels = [e for e in computing if id(e) not in has_computing_child]
    return {"kernels": len(kernels), "aten_top_level": len(top), "events": len(events)}


def count_operators(stepper: Stepper, optimizer: bool = True) -> dict:
    """Operators of one training step (``optimizer=False``: loss and backward only), see :func:`operator_counts`."""
    from torch.profiler import ProfilerActivity, profile

    stepper.step(optimizer)  # warm: lazy initialisations are not part of a step
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stepper.step(optimizer)
    return operator_counts(prof.events())


def same_results(steppers: dict) -> dict:
    """First-step loss of crapnet and crapnet-before (same weights and episode), largest gradient difference."""

    a, b = steppers["crapnet"], steppers["crapnet-before"]
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


def used_columns(stepper: Stepper) -> dict:
    """Share of the other side's pixels that are some pixel's best match (Eq. 11), per block call on
    the episode: what the used-columns form of the attention computes instead of all columns."""
    import torch

    from crapnet_core.engine.diagnostics import trace_attention

    m, b = stepper.model, stepper.batch
    with torch.no_grad(), trace_attention(m) as traces:
        m(b["support_image"], b["support_mask"], b["query_image"])
    shares = [
        t.cycle.best_other[i].unique().numel() / t.cycle.affinity.shape[2]
        for t in traces
        for i in range(t.cycle.best_other.shape[0])
    ]
    return {"mean": statistics.mean(shares), "max": max(shares), "blocks": len(shares)}


def time_steps(steppers: dict, rounds: int, steps: int, warmup: int) -> dict:
    """Alternating rounds: CPU and wall seconds per step per model, ratios to alpnet per round."""
    names = list(steppers)
    for s in steppers.values():
        for _ in range(warmup):
            s.step()
    cpu = {n: [] for n in names}
    wall = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                steppers[n].step()
            cpu[n].append((time.process_time() - c0) / steps)
            wall[n].append((time.perf_counter() - t0) / steps)
    out = {}
    for n in names:
        ratios = [c / a for c, a in zip(cpu[n], cpu["alpnet"])]
        out[n] = {
            "cpu_s": statistics.median(cpu[n]),
            "wall_s": statistics.median(wall[n]),
            "ratio_to_alpnet": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return out


def machine() -> dict:
    import torch

    model = "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "--", "crapnet_core"], capture_output=True, text=True
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "unknown", False
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "commit": commit + ("+dirty" if dirty else ""),
    }


def _ratio(res: dict, a: str, b: str, key: str) -> str:
    return f"{res[a][key] / res[b][key]:.2f}" if res.get(a) and res.get(b) else ""


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# CRAPNet's training step against SSL-ALPNet's (issue 21)",
        "",
        f"Produced by `{result['command']}`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch thread; torch {m['torch']}; "
        f"commit {m['commit']}; load average {', '.join(f'{x:.1f}' for x in result['load_start'])} at the "
        f"start, {', '.join(f'{x:.1f}' for x in result['load_end'])} at the end (a shared machine: "
        "absolute times are not idle-machine figures; the ratios are measured side by side). Random "
        "weights, one synthetic episode (batch 1); a step = `episode_loss` (Eq. 18-20) + backward + SGD "
        "step. `-before`: the same model and weights computed as before issue 21 (attention block by block "
        "with autograd, CARAFE++ by unfold + einsum, SGD looping over the parameters).",
        "",
    ]
    for prof, res in result["profiles"].items():
        lines += [f"## `{prof}`", ""]
        ops, gpu = res["operators"], res["operators_gpu_form"]
        if "time" in res:
            t = res["time"]
            lines += [
                f"Time: one process, {result['rounds']} rounds x {result['steps']} steps per model, the "
                "order rotated each round; medians over rounds; ratio = CPU seconds per step / SSL-ALPNet's "
                "(new code) in the same round, median and range over rounds.",
                "",
                "| model | CPU s/step | wall s/step | ratio to SSL-ALPNet | range |",
                "|---|---|---|---|---|",
            ]
            for n, row in t.items():
                lines.append(
                    f"| {n} | {row['cpu_s']:.4f} | {row['wall_s']:.4f} | **{row['ratio_to_alpnet']:.3f}** | "
                    f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f} |"
                )
            lines.append("")
        lines += [
            "Operators dispatched in one training step (torch.profiler): `kernels` = leaf ATen operators that "
            "compute (no views or allocations), the proxy for a GPU's kernel launches; `aten` = top-level "
            "ATen calls; `events` = all profiler events. CPU form: the whole step as run here. GPU form: "
            "loss and backward only (a GPU's SGD is one multi-tensor kernel per operation for every "
            "method), the new code's path off CPU (every column, CARAFE++ by einsum) against the old "
            "code.",
            "",
            "| model | kernels (CPU form) | aten | events | kernels (GPU form) | aten | events |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in ops:
            g = gpu.get(n, {})
            lines.append(
                f"| {n} | {ops[n]['kernels']} | {ops[n]['aten_top_level']} | {ops[n]['events']} | "
                f"{g.get('kernels', '')} | {g.get('aten_top_level', '')} | {g.get('events', '')} |"
            )
        lines += [
            "",
            f"CRAPNet new / before: kernels {_ratio(ops, 'crapnet', 'crapnet-before', 'kernels')} (CPU form), "
            f"{_ratio(gpu, 'crapnet', 'crapnet-before', 'kernels')} (GPU form).",
            "",
        ]
        if "used_columns" in res:
            uc = res["used_columns"]
            lines += [
                f"Used columns (Eq. 11: other-side pixels that are some pixel's best match), CRAPNet on this "
                f"episode at the end of the run: {100 * uc['mean']:.0f} % on average over {uc['blocks']} block "
                f"calls, at most {100 * uc['max']:.0f} %.",
                "",
            ]
        same = res["same_results"]
        lines += [
            f"Same results (first step, same weights and episode): loss {same['loss'][0]:.6f} (new) and "
            f"{same['loss'][1]:.6f} (before), relative difference {same['loss_rel_diff']:.1e}; largest "
            f"gradient difference / largest gradient {same['max_grad_diff_over_max_grad']:.1e}.",
            "",
        ]
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
    result = {
        "command": " ".join(["benchmarks/bench_attention.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "load_start": os.getloadavg(),
        "rounds": args.rounds,
        "steps": args.steps,
        "profiles": {},
    }
    timed = [x for x in args.time_profiles.split(",") if x]
    for prof in [x for x in args.profiles.split(",") if x]:
        res = {
            "operators_gpu_form": {
                n: count_operators(s, optimizer=False)
                for n, s in build(prof, gpu_form=True).items()
                if n != "alpnet-before"
            }
        }
        steppers = build(prof)
        res["operators"] = {n: count_operators(s) for n, s in steppers.items()}
        print(prof, "operators", json.dumps(res["operators"]), json.dumps(res["operators_gpu_form"]), flush=True)
        if prof in timed:
            res["time"] = time_steps(steppers, args.rounds, args.steps, args.warmup)
            print(prof, "time", json.dumps(res["time"]), flush=True)
        res["used_columns"] = used_columns(steppers["crapnet"])
        res["same_results"] = same_results(steppers)
        print(prof, "same results", json.dumps(res["same_results"]), flush=True)
        result["profiles"][prof] = res
        del steppers
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
