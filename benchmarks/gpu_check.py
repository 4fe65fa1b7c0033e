"""The measurements of ``benchmarks/gpu_check.sh`` (see there): one run, results under ``--out``.

    python benchmarks/gpu_check.py --out OUT [--budget-min 12] [--data-root DIR] [--dry-run]

``--dry-run``: the same sections on CPU with the ``smoke`` profile on the phantom and a few
steps each (K = 1, 2 for the packed trainings), so that CI checks the script end to end.
Sections, in this order: env, weights, steps, train (for what the budget leaves after a reserve
for the next two, :data:`LATER_SECTIONS_S`), kernels (launches per step: batched attention, block
by block, compiled with CUDA graphs), packed (a K that would overrun the budget is skipped). Each
writes ``OUT/<section>.json``; a failing section records its error and the next one runs;
``OUT/summary.md`` at the end.
Internal: ``--worker`` runs one timed training loop (the packed section starts K of them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
METHODS = ("crapnet", "alpnet")
PACKED = (1, 2, 4, 8)
#: Seconds the kernels and packed sections take on a lent H200 (results/gpu_check/gpu_check.log, 2026-12-04:
#: 73 s and 203 s). The training runs before them with what the budget leaves after this reserve, so a short
#: budget still ends with a Dice (that run, at --budget-min 7, skipped its training: nothing was left).
LATER_SECTIONS_S = 290
#: The whole training loop (data workers, checkpoints) ran at 0.75 of the bare step rate of ``steps.json``
#: there (9.4 against 12.5 steps/s): the planned steps take this share of the measured rate.
LOOP_SHARE = 0.7


def _write(out: Path, name: str, data: dict) -> dict:
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def _config(profile: str, dataset: str, method: str, device: str, data_root: str | None, extra=()):
    from crapnet_core.engine.experiment import make_config

    overrides = [f"train.device={device}", *extra]
    if data_root and dataset in ("chaos", "sabs"):
        overrides.append(f"data.data_root={data_root}")
    return make_config(profile, dataset, 1, 0, method, overrides)


# ---------------------------------------------------------------------------- sections
def section_env(args) -> dict:
    info = dict(host=platform.node(), python=sys.version.split()[0], cpus=os.cpu_count(), dry_run=args.dry_run)
    try:
        import torch

        info.update(
            torch=torch.__version__,
            cuda=torch.version.cuda,
            cuda_available=torch.cuda.is_available(),
            devices=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            bf16=bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        )
    except Exception as err:  # noqa: BLE001
        info["torch_error"] = repr(err)
    imports = {}
    for mod in (
        "crapnet_core.models._torchvision",
        "numpy",
        "scipy",
        "nibabel",
        "skimage",
        "monai",
        "pandas",
        "yaml",
        "tqdm",
        "crapnet_core.engine.training",
    ):
        try:
            __import__(mod)
            imports[mod] = "ok"
        except Exception as err:  # noqa: BLE001
            imports[mod] = f"{type(err).__name__}: {err}"
    info["imports"] = imports
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    return info


def section_weights(args) -> dict:
    """Where torchvision would read the COCO (DeepLabV3-ResNet101) and ImageNet (ResNet-18) weights."""
    import torch

    from crapnet_core.models._torchvision import torchvision  # the project's one torchvision import (see there)

    ResNet18_Weights = torchvision.models.ResNet18_Weights
    DeepLabV3_ResNet101_Weights = torchvision.models.segmentation.DeepLabV3_ResNet101_Weights

    out = {"torch_hub_dir": torch.hub.get_dir(), "TORCH_HOME": os.environ.get("TORCH_HOME")}
    homes = {Path(torch.hub.get_dir()) / "checkpoints", Path.home() / ".cache" / "torch" / "hub" / "checkpoints"}
    for w, key in (
        (DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1, "coco_deeplabv3_resnet101"),
        (ResNet18_Weights.IMAGENET1K_V1, "imagenet_resnet18"),
    ):
        name = os.path.basename(w.url)
        found = [str(h / name) for h in sorted(homes) if (h / name).is_file()]
        out[key] = dict(
            file=name,
            url=w.url,
            cached=bool(found),
            where=found,
            in_torch_cache=(Path(torch.hub.get_dir()) / "checkpoints" / name).is_file(),
        )
    return out


def _episode_batch(cfg):
    import torch

    from crapnet_core.engine.training import build_episodes

    dataset, *_ = build_episodes(cfg)
    return torch.utils.data.default_collate([dataset[i] for i in range(cfg.train.batch_size)])


def _count_launches(step) -> dict:
    """Kernel launches of one call of ``step()``: CUDA runtime launch calls (kernels, graph launches)
    on a GPU; on CPU the ATen kernels as benchmarks/bench_attention.py counts them."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    if cuda:
        return {
            "kernel_launches": sum(n in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC") for n in names),
            "graph_launches": sum(n in ("cudaGraphLaunch", "cuGraphLaunch") for n in names),
            "device_events": sum(
                1 for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
            ),
        }
    from bench_attention import (
        operator_counts,  # the same definition of a kernel (a sibling: benchmarks/ is on the path)
    )

    return {"aten_kernels": operator_counts(prof.events())["kernels"]}


def timed_loop(cfg, seconds: float, max_steps: int, warmup: int, prepare=None, count: bool = False) -> dict:
    """The model compute of training steps as ``crapnet train`` does it (autocast, channels-last on CUDA).

    prepare: called with the built model (e.g. to compile it or switch the attention's form);
    count: also count the kernel launches of one step after the warm-up (``_count_launches``).
    """
    import contextlib

    import torch

    from crapnet_core.engine.training import _to_device, build_model, make_optimizer, resolve_device
    from crapnet_core.models.losses import episode_loss

    device = resolve_device(cfg.train.device)
    cuda = device.type == "cuda"
    batch = _episode_batch(cfg)
    model = build_model(cfg).to(device)
    channels_last = bool(cfg.train.channels_last and cuda)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    if prepare is not None:
        prepare(model, device)
    opt, sched = make_optimizer(cfg, model)
    batch = _to_device(batch, device, channels_last)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def one_step():
        with torch.autocast("cuda", dtype=torch.bfloat16) if (cuda and cfg.train.amp) else contextlib.nullcontext():
            loss = episode_loss(model, batch, cfg.loss)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    steps, t0, first_step_s, launches = 0, None, None, None
    while True:
        if steps == warmup:
            if count:
                launches = _count_launches(one_step)
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        t_step = time.perf_counter()
        loss = one_step()
        if steps == 0:
            if cuda:
                torch.cuda.synchronize(device)
            first_step_s = round(time.perf_counter() - t_step, 2)  # includes a compilation
        steps += 1
        if t0 is not None and (steps - warmup >= max_steps or time.perf_counter() - t0 >= seconds):
            break
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    timed = steps - warmup
    res = dict(
        method=cfg.model.method,
        profile=cfg.profile,
        encoder=cfg.model.encoder,
        input_size=cfg.data.input_size,
        device=str(device),
        timed_steps=timed,
        seconds=round(wall, 3),
        steps_per_s=round(timed / wall, 3),
        loss=float(loss.detach()),
        first_step_s=first_step_s,
    )
    if launches is not None:
        res["launches_per_step"] = launches
    if cuda:
        res.update(
            peak_allocated_mib=round(torch.cuda.max_memory_allocated(device) / 2**20),
            peak_reserved_mib=round(torch.cuda.max_memory_reserved(device) / 2**20),
        )
    return res


def _profile(args) -> tuple[str, str, str, list[str]]:
    """(profile, dataset, device, overrides) of the measured trainings."""
    if args.dry_run:
        return "smoke", "phantom", "cpu", []
    extra = [] if args.coco_cached else ["model.pretrained=false"]  # the speed does not depend on the weights
    dataset = "chaos" if args.data_root else "phantom"
    return "paper", dataset, "cuda", extra


def section_steps(args) -> dict:
    profile, dataset, device, extra = _profile(args)
    out = {"note": "model compute of one training step (one fixed batch of real episodes), after warm-up"}
    for method in METHODS:
        cfg = _config(profile, dataset, method, device, args.data_root, extra)
        out[method] = timed_loop(
            cfg,
            seconds=3 if args.dry_run else 30,
            max_steps=2 if args.dry_run else 10**9,
            warmup=1 if args.dry_run else 10,
        )
        print(f"steps: {method}: {out[method]}", flush=True)
    return out


def _blockwise(model, device) -> None:
    """The attention block by block (as before issue 21): the comparison row."""
    if getattr(model, "attention", None) is not None:
        model.attention.fused = False


def _compiled(model, device) -> None:
    """``crapnet train --set train.compile=on``: the model compiled, CUDA graphs on a GPU."""
    from crapnet_core.engine.training import compile_model

    compile_model(model, device)


def section_kernels(args, deadline: float) -> dict:
    """Kernel launches per training step and steps/s: CRAPNet with the batched attention, the same
    with the blocks one by one (before issue 21), compiled (``reduce-overhead``: CUDA graphs), SSL-ALPNet."""
    profile, dataset, device, extra = _profile(args)
    out = {"note": "launches: CUDA runtime kernel/graph launch calls in one training step (on CPU: ATen kernels)"}
    rows = [
        ("crapnet", "crapnet", None),
        ("crapnet-blockwise", "crapnet", _blockwise),
        ("alpnet", "alpnet", None),
        ("crapnet-compiled", "crapnet", _compiled),
    ]
    for name, method, prepare in rows:
        if prepare is _compiled and args.dry_run:
            out[name] = {"skipped": "dry run: a CPU compilation takes minutes (benchmarks/bench_compile.py)"}
            continue
        if prepare is _compiled and deadline - time.time() < 6 * 60:
            out[name] = {"skipped": f"{(deadline - time.time()) / 60:.1f} min left"}
            continue
        cfg = _config(profile, dataset, method, device, args.data_root, extra)
        out[name] = timed_loop(
            cfg,
            seconds=3 if args.dry_run else 20,
            max_steps=2 if args.dry_run else 10**9,
            warmup=1 if args.dry_run else (20 if prepare is _compiled else 5),
            prepare=prepare,
            count=True,
        )
        print(f"kernels: {name}: {out[name]}", flush=True)
    return out


def section_packed(args, deadline: float | None = None) -> dict:
    """K trainings (crapnet) at once in K processes on one device: total steps/s. A K whose workers
    (start-up included) would end after ``deadline`` is skipped and recorded under ``skipped``."""
    ks = (1, 2) if args.dry_run else PACKED
    seconds = 2 if args.dry_run else 25
    out: dict = {"seconds_per_worker": seconds, "runs": {}, "skipped": {}}
    folder = args.out / "packed"
    folder.mkdir(exist_ok=True)
    for k in ks:
        left = None if deadline is None else deadline - time.time()
        if left is not None and left < seconds + 30:  # a worker starts in about 20 s (model, data, warm-up)
            out["skipped"][str(k)] = f"{max(left, 0.0):.0f} s left of the budget"
            print(f"packed: K={k}: skipped, {out['skipped'][str(k)]}", flush=True)
            continue
        procs = []
        for i in range(k):
            res = folder / f"k{k}_{i}.json"
            cmd = [sys.executable, str(HERE), "--worker", str(res), "--out", str(args.out), "--seconds", str(seconds)]
            if args.dry_run:
                cmd.append("--dry-run")
            if args.data_root:
                cmd += ["--data-root", args.data_root]
            if args.coco_cached:
                cmd.append("--coco-cached")
            procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), res))
        results, errors = [], []
        for proc, res in procs:
            text, _ = proc.communicate(timeout=600)
            if proc.returncode == 0 and res.is_file():
                results.append(json.loads(res.read_text()))
            else:
                errors.append(text[-2000:])
        total = sum(r["steps_per_s"] for r in results)
        out["runs"][str(k)] = dict(
            workers_ok=len(results),
            total_steps_per_s=round(total, 3),
            per_worker=[r["steps_per_s"] for r in results],
            peak_allocated_mib=[r.get("peak_allocated_mib") for r in results],
            errors=errors,
        )
        print(f"packed: K={k}: {len(results)}/{k} ok, {total:.2f} steps/s in total", flush=True)
    return out


def section_train(args, deadline: float, steps_per_s: float | None) -> dict:
    """CHAOS fold 0 setting 1 (crapnet, paper profile) for the minutes left, then evaluated."""
    profile, dataset, device, extra = _profile(args)
    if not args.dry_run and dataset != "chaos":
        return {"skipped": "no CHAOS data (set CRAPNET_DATA_ROOT or pass --data-root)"}
    eval_reserve = 30 if args.dry_run else 240
    minutes = max(0.0, (deadline - time.time() - eval_reserve) / 60)
    if args.dry_run:
        steps = 2
    else:
        if not steps_per_s:
            return {"skipped": "no steps/s measured for crapnet"}
        steps = int(minutes * 60 * steps_per_s * LOOP_SHARE)  # data loading, checkpoints: see LOOP_SHARE
        if steps < 100:
            return {"skipped": f"only {minutes:.1f} min left"}
    run = args.out / "train_run"
    cmd = [
        sys.executable,
        "-m",
        "crapnet_core.cli",
        "train",
        "--dataset",
        dataset,
        "--setting",
        "1",
        "--fold",
        "0",
        "--method",
        "crapnet",
        "--profile",
        profile,
        "--steps",
        str(steps),
        "--device",
        device,
        "--out",
        str(run),
        "--evaluate",
        "--no-progress",
        "--force",
    ]
    for o in extra:
        cmd += ["--set", o]
    if args.data_root and dataset != "phantom":
        cmd += ["--data-root", args.data_root]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    res = dict(
        command=" ".join(cmd),
        returncode=proc.returncode,
        wall_s=round(time.time() - t0, 1),
        steps=steps,
        planned_minutes=round(minutes, 1),
        output_tail=(proc.stdout + proc.stderr)[-3000:],
    )
    from crapnet_core.engine.evaluation import read_metrics

    if (run / "metrics.json").is_file():
        m = read_metrics(run)
        res["mean"] = m.get("mean")
        res["per_organ_dice"] = {o: v.get("dice_mean") for o, v in m.get("per_organ", {}).items()}
    print(f"train: {steps} steps, status {proc.returncode}, {res['wall_s']} s, mean {res.get('mean')}", flush=True)
    return res


def summary(out: Path, results: dict) -> str:
    lines = ["# GPU check", "", f"dry run: {results.get('env', {}).get('dry_run')}", ""]
    env = results.get("env", {})
    lines.append(
        f"- machine: {env.get('host')}, {env.get('cpus')} CPUs, torch {env.get('torch')} (CUDA "
        f"{env.get('cuda')}), devices {env.get('devices')}"
    )
    w = results.get("weights", {})
    if "coco_deeplabv3_resnet101" in w:
        lines.append(
            f"- COCO weights cached: {w['coco_deeplabv3_resnet101']['cached']} "
            f"({w['coco_deeplabv3_resnet101']['where'] or w['coco_deeplabv3_resnet101']['file']})"
        )
    s = results.get("steps", {})
    for m in METHODS:
        if isinstance(s.get(m), dict):
            r = s[m]
            lines.append(
                f"- {m}: {r['steps_per_s']} steps/s ({r['profile']}, {r['encoder']}, {r['input_size']} px, "
                f"{r['device']}), peak memory {r.get('peak_allocated_mib', '-')} MiB"
            )
    for name, r in results.get("kernels", {}).items():
        if isinstance(r, dict) and "steps_per_s" in r:
            lines.append(
                f"- {name}: {r['steps_per_s']} steps/s, launches per step {r.get('launches_per_step')}, "
                f"first step {r.get('first_step_s')} s"
            )
    p = results.get("packed", {}).get("runs", {})
    for k, r in p.items():
        lines.append(f"- packed K={k}: {r['total_steps_per_s']} steps/s in total ({r['workers_ok']}/{k} ok)")
    for k, why in results.get("packed", {}).get("skipped", {}).items():
        lines.append(f"- packed K={k}: skipped ({why})")
    t = results.get("train", {})
    if t:
        what = "phantom (dry run)" if env.get("dry_run") else "CHAOS"
        lines.append(
            f"- {what} fold 0 setting 1, crapnet: {t.get('steps', '-')} steps, status {t.get('returncode', '-')}, "
            f"mean {t.get('mean', t.get('skipped'))}"
        )
    for name, r in results.items():
        if isinstance(r, dict) and "error" in r:
            lines.append(f"- section {name} FAILED: {r['error'].splitlines()[-1] if r['error'] else ''}")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--budget-min", type=float, default=12.0, help="minutes for the whole run (default 12)")
    ap.add_argument("--data-root", default=None, help="folder holding CHAOST2/ (default $CRAPNET_DATA_ROOT)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, smoke profile, phantom, a few steps")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=25, help=argparse.SUPPRESS)
    ap.add_argument("--coco-cached", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data_root is None:
        args.data_root = os.environ.get("CRAPNET_DATA_ROOT") or next(
            (str(p) for p in (REPO.parent / "shared" / "data", REPO / "shared" / "data") if (p / "CHAOST2").is_dir()),
            None,
        )
    if args.dry_run:
        args.data_root = None
    if args.worker is not None:  # one of the packed trainings
        profile, dataset, device, extra = _profile(args)
        cfg = _config(profile, dataset, "crapnet", device, args.data_root, extra)
        res = timed_loop(
            cfg, seconds=args.seconds, max_steps=2 if args.dry_run else 10**9, warmup=1 if args.dry_run else 5
        )
        args.worker.write_text(json.dumps(res))
        return 0
    deadline = time.time() + args.budget_min * 60
    results: dict = {}

    def run(name, fn, *a):
        t0 = time.time()
        try:
            results[name] = _write(args.out, name, fn(*a))
        except Exception:  # noqa: BLE001 - recorded; the next section runs
            results[name] = _write(args.out, name, {"error": traceback.format_exc()})
            print(f"{name}: FAILED\n{results[name]['error']}", flush=True)
        print(f"[{name}: {time.time() - t0:.0f} s]", flush=True)

    run("env", section_env, args)
    run("weights", section_weights, args)
    args.coco_cached = bool(results["weights"].get("coco_deeplabv3_resnet101", {}).get("cached"))
    run("steps", section_steps, args)
    sps = (
        results["steps"].get("crapnet", {}).get("steps_per_s")
        if isinstance(results["steps"].get("crapnet"), dict)
        else None
    )
    # the training (the one section that gives a Dice) first, leaving LATER_SECTIONS_S for the others
    run("train", section_train, args, deadline - (0 if args.dry_run else LATER_SECTIONS_S), sps)
    run("kernels", section_kernels, args, deadline)
    run("packed", section_packed, args, None if args.dry_run else deadline)  # a dry run checks every K
    print(summary(args.out, results), flush=True)
    failed = [n for n, r in results.items() if isinstance(r, dict) and "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
