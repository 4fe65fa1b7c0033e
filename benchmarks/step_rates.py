"""Seconds per training step of every method, and seconds per evaluation, per profile (for cost estimates).

    # measure now: the real training loop of every method, one thread
    CRAPNET_DATA_ROOT=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_rates.py --measure smoke,lite
    # or read what the committed runs of the declared study measured (train_seconds / steps of each run)
    .venv/bin/python benchmarks/step_rates.py --from-results lite

``--measure``: for each profile (``smoke`` on the phantom, ``lite`` on CHAOS when the data root
holds it, else the phantom) and each method of the registry, the real training loop
(``crapnet_core.engine.training.train``, one thread, fold 0, setting 1) runs ``--steps`` steps in a
temporary folder; the figure is the median of the per-step wall times of ``metrics.csv`` after
``--warmup`` steps; then one 1-shot evaluation of the fold (CRAPNet, no predictions) is timed.
``--from-results``: the median over the committed runs of a profile's declared tables
(``results/<table>/seed<s>/<run>/run_info.json`` and ``metrics.json``: training seconds / steps per
method, evaluation seconds per run), i.e. what full runs cost on the machine that made them.
Each profile's entry records where its figures come from; the file keeps the other profiles'.

``crapnet book --plan`` and ``crapnet study plan`` read ``benchmarks/step_rates.json``
(``crapnet_core.study.cost``) to estimate what a plan costs on this machine. Figures depend on the
machine's load: the JSON records the load average; say what else was running when you quote them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _step_seconds(run_dir: Path, warmup: int) -> float:
    import csv

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    secs = [float(r["seconds"]) for r in rows]
    deltas = [b - a for a, b in zip(secs[warmup:], secs[warmup + 1 :])]
    return statistics.median(deltas)


def from_results(profile: str, results: Path) -> dict:
    """Median seconds per step (per method) and per evaluation over the committed runs of ``profile``."""
    from crapnet_core.study.declaration import load_declaration
    from crapnet_core.study.layout import run_state, seed_dir

    decl = load_declaration()
    steps: dict[str, list[float]] = {}
    evals: list[float] = []
    machines = set()
    for table in decl.select(profiles=[profile]):
        for run in table.runs():
            state = run_state(decl, run, results)
            if state.status != "done":
                continue
            folder = seed_dir(results, run.table, run.seed) / state.folder
            info = json.loads((folder / "run_info.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text())
            machines.add(info.get("machine"))
            n = 1
            train = info.get("train_seconds")
            if train is None and info.get("fold_train_seconds"):  # a fold of several runs kept one total
                train, n = info["fold_train_seconds"], int(info["fold_runs"])
            if train and run.config.train.steps:
                steps.setdefault(run.config.model.method, []).append(train / (n * run.config.train.steps))
            evaluation = metrics.get("seconds") or (info.get("fold_eval_seconds") or 0) / n
            if evaluation:
                evals.append(float(evaluation))
    return {
        "source": f"the committed runs of the declared {profile} tables under results/ (median over runs)",
        "machines": sorted(m for m in machines if m),
        "runs_per_method": {m: len(v) for m, v in steps.items()},
        "seconds_per_step": {m: round(statistics.median(v), 4) for m, v in sorted(steps.items())},
        "evaluation_seconds": round(statistics.median(evals), 1) if evals else None,
    }


def main() -> None:
    import torch

    from crapnet_core.engine.checkpoints import resolve_device
    from crapnet_core.engine.environment import environment
    from crapnet_core.engine.evaluation import evaluate_model
    from crapnet_core.engine.runs import run_config
    from crapnet_core.engine.training import build_model, train
    from crapnet_core.facts import METHODS
    from crapnet_core.paths import available_datasets
    from crapnet_core.report.provenance import machine_description
    from crapnet_core.study.provenance import git_commit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", default="", help="profiles to measure now, e.g. smoke,lite")
    ap.add_argument("--from-results", default="", help="profiles whose committed runs give the figures, e.g. lite")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default=str(Path(__file__).with_name("step_rates.json")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = Path(args.json)
    out = json.loads(path.read_text()) if path.is_file() else {"profiles": {}}
    stamp = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "machine": machine_description(),
        "load_average": os.getloadavg(),
    }
    for profile in [p for p in args.from_results.split(",") if p]:
        entry = from_results(profile, Path(args.results))
        entry.update(stamp, command=f".venv/bin/python benchmarks/step_rates.py --from-results {profile}")
        out["profiles"][profile] = entry
        print(f"{profile}: {entry['seconds_per_step']} s/step, {entry['evaluation_seconds']} s/evaluation", flush=True)
    real = available_datasets(os.environ.get("CRAPNET_DATA_ROOT"))
    for profile in [p for p in args.measure.split(",") if p]:
        dataset = "phantom" if profile == "smoke" else (real[0] if real else "phantom")
        rates = {}
        for method in args.methods.split(","):
            if method == "alpnet_init":
                rates[method] = 0.0  # no training step: the encoder's initial weights are evaluated
                continue
            cfg = run_config(
                profile,
                dataset,
                1,
                0,
                method,
                overrides=[
                    f"train.steps={args.steps + args.warmup + 1}",
                    "train.threads=1",
                    "train.log_every=1",
                    f"train.checkpoint_every={args.steps + args.warmup + 1}",
                    "train.device=cpu",
                ],
            )
            with tempfile.TemporaryDirectory() as tmp:
                train(cfg, Path(tmp) / "run", progress=False)
                rates[method] = round(_step_seconds(Path(tmp) / "run", args.warmup), 4)
            print(f"{profile:6s} {dataset:8s} {method:12s} {rates[method]:.4f} s/step", flush=True)
        cfg = run_config(profile, dataset, 1, 0, "crapnet", overrides=["train.threads=1", "train.device=cpu"])
        dev = resolve_device("cpu")
        model = build_model(cfg).to(dev).eval()
        t0 = time.time()
        evaluate_model(model, cfg, dev, out_dir=None, progress=False, save_predictions=False)
        eval_s = round(time.time() - t0, 1)
        print(f"{profile:6s} {dataset:8s} evaluation of fold 0 (crapnet): {eval_s:.1f} s", flush=True)
        out["profiles"][profile] = dict(
            stamp,
            source=f"measured: the training loop of each method, {args.steps} steps after {args.warmup} warm-up "
            f"steps, one thread, {dataset} fold 0 (median of the per-step times)",
            command=(
                "CRAPNET_DATA_ROOT=../shared/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_rates.py "
                f"--measure {profile} --steps {args.steps} --warmup {args.warmup}"
            ),
            environment=environment(),
            load_average_after=os.getloadavg(),
            dataset=dataset,
            seconds_per_step=rates,
            evaluation_seconds=eval_s,
        )
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
