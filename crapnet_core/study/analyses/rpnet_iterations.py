"""SSL-RPNet's recurrent refinement at the ``lite`` budget, on the *validation* scan (issue 10).

Why: the 5-fold SSL-RPNet tables score below the untrained ALPNet-init (CHAOS setting 1:
14.6 against 21.9), and a first look (``book/method.md``) saw the Dice fall as the number of
refinement iterations at test grows. This script measures that on data that is not a test scan,
so that it can explain the table (and choose a count, if one is ever chosen) without touching
the test scans.

What it does: trains SSL-RPNet on CHAOS fold 0, setting 1, ``lite`` with ``data.validation=true``
(the last training scan of the fold, CHAOS 39, held out of training, as ``select_lite``) and
scores the trained model on that scan only (support scan 8) with ``eval_iters`` = each of
``ITERATIONS`` refinement iterations at test (training always runs RPNet's 4; the reference
evaluates with 10, ``rpnet.EVAL_ITERS``; 0 = the initial query mask, the prototypical-network
prediction on the encoder features that the refinement starts from). The count is set on the model instance
(``RecurrentPrototypeSegmenter.eval_iters``), so one trained model serves every row and the run's
config hash stays the reference's. For scale, SSL-ALPNet is trained with the same overrides
(same steps, same validation hold-out; same encoder and grid) and scored on the same scan.

Run it as the declared analysis ``rpnet_iterations`` (about 6 + 2 min of training + ~1 min per
row on one core):

    CRAPNET_DATA_ROOT=../shared/data OMP_WAIT_POLICY=PASSIVE crapnet study analysis rpnet_iterations

Writes <runs>/rpnet_iterations/<run>/ (resumable: training resumes from its last checkpoint, rows
already scored are kept in rows.json) and results/rpnet_iterations/iterations.{json,md}.
``--steps N`` trains N steps instead of lite's 650 (does a longer budget lift the model?):
results/rpnet_iterations/steps<N>/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ...engine.checkpoints import cpu_threads, load_model, resolve_device
from ...engine.evaluation import evaluate, evaluate_model, metrics_filename, read_metrics
from ...engine.experiment import describe, make_config
from ...engine.training import is_trained, train, train_seconds
from ...facts import ORGAN_SHORT, ORGANS
from ...io import read_json, write_json, write_text
from ...models.methods import rpnet
from ...report.provenance import machine_description
from ..provenance import git_commit

ITERATIONS = (0, 1, 2, 4, 10)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _dice(metrics: dict) -> dict:
    """Mean Dice (0-1) per organ of one evaluation's metrics."""
    return {o: metrics["per_organ"].get(o, {}).get("dice_mean") for o in ORGANS}


def _trained(cfg, run: Path) -> Path:
    """Train ``cfg`` into ``run`` unless it is trained (an interrupted training resumes from its last checkpoint)."""
    if not is_trained(run):
        print(f"rpnet_iterations: training {describe(cfg)} -> {run}", file=sys.stderr, flush=True)
        train(cfg, run, resume=(run / "config.json").is_file(), progress=False)
    return run


def markdown(info: dict) -> str:
    lines = [
        "# SSL-RPNet: refinement iterations at test, on the validation scan (CHAOS fold 0, setting 1)",
        "",
        f"Validation scan {', '.join(info['validation_scans'])} (support scan {info['support_scan']}), "
        f"held out of training; test scans never evaluated. Model: `{info['describe']}`, trained with "
        f"{info['train_iters']} refinement iterations ({info['train_seconds']:.0f} s). CRE BatchNorm at test: "
        f"{info['cre_batchnorm']}. Dice in percent.",
        "",
        "| iterations at test | " + " | ".join(ORGAN_SHORT[o] for o in ORGANS) + " | Mean | eval s |",
        "|---:|" + "---:|" * (len(ORGANS) + 2),
    ]
    for row in info["rows"]:
        label = "0 (initial mask, no refinement)" if row["eval_iters"] == 0 else str(row["eval_iters"])
        lines.append(
            f"| {label} | "
            + " | ".join(_pct(row["dice"][o]) for o in ORGANS)
            + f" | {_pct(row['mean_dice'])} | {row['eval_seconds']:.0f} |"
        )
    ref = info.get("alpnet_validation")
    if ref:
        lines.append(
            f"| SSL-ALPNet, same steps and split ({ref['train_seconds']:.0f} s) | "
            + " | ".join(_pct(ref["dice"][o]) for o in ORGANS)
            + f" | {_pct(ref['mean_dice'])} | – |"
        )
    lines += ["", f"Command: `{info['command']}`; commit {info['commit']}; {info['machine']}; torch {info['torch']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, out: str | Path = "results/rpnet_iterations", runs: str | Path = "runs") -> int:
    """``crapnet study analysis rpnet_iterations [OPTIONS]``: ``out`` and ``runs`` are the declared output
    folder and the runs folder."""
    import torch

    p = argparse.ArgumentParser(prog="crapnet study analysis rpnet_iterations", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(Path(runs) / "rpnet_iterations"), help="run folder root")
    p.add_argument(
        "--out",
        default=None,
        help="where iterations.{json,md} go (default results/rpnet_iterations, "
        "results/rpnet_iterations/steps<N> with --steps)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps instead of lite's (a longer budget; or a quick check of the script with a few)",
    )
    p.add_argument(
        "--cre-batch-stats",
        action="store_true",
        help="evaluate with the CRE's BatchNorm on batch statistics instead of its running estimates "
        "(does the train/eval difference of BatchNorm explain the refinement's drift?); "
        "output under <out>/cre_batch_stats",
    )
    p.add_argument(
        "--iterations",
        default=",".join(map(str, ITERATIONS)),
        help="refinement counts at test, e.g. 0,1,10 (0: the initial mask)",
    )
    args = p.parse_args(argv)
    try:
        iterations = [int(x) for x in args.iterations.split(",") if x.strip()]
    except ValueError:
        p.error(f"--iterations {args.iterations!r}: expected integers joined by commas, e.g. 1,2,4,10")
    if not iterations or min(iterations) < 0:
        p.error(f"--iterations {args.iterations!r}: every count must be >= 0")
    overrides = ["data.validation=true", "train.threads=1"] + ([f"train.steps={args.steps}"] if args.steps else [])
    cfg = make_config("lite", "chaos", 1, 0, "rpnet", overrides)
    run = _trained(cfg, Path(args.runs) / cfg.run_name())
    dev = resolve_device("cpu")
    model, _ = load_model(cfg, run / "checkpoints" / "last.pt", dev)
    if args.cre_batch_stats:
        assert rpnet.use_batch_statistics(model) > 0
    rows_path = run / ("rows_cre_batch_stats.json" if args.cre_batch_stats else "rows.json")
    done = {r["eval_iters"]: r for r in (read_json(rows_path) if rows_path.is_file() else [])}
    for n in iterations:
        if n in done:
            continue
        model.eval_iters = n  # the instance's count; the config (and its hash) keep the reference's
        t0 = time.time()
        with cpu_threads(cfg, dev):
            m = evaluate_model(model, cfg, dev, out_dir=run, progress=False, save_predictions=False, split="validation")
        assert m["split"] == "validation"
        done[n] = {
            "eval_iters": n,
            "dice": _dice(m),
            "mean_dice": m["mean"]["dice"],
            "eval_seconds": round(time.time() - t0, 1),
            "validation_scans": m["test_scans"],
            "support_scan": m["support"]["scan_id"],
        }
        write_json(rows_path, sorted(done.values(), key=lambda r: r["eval_iters"]))
        print(f"rpnet_iterations: {n} iterations: mean Dice {100 * m['mean']['dice']:.2f}", file=sys.stderr, flush=True)
    rows = [done[n] for n in sorted(iterations)]
    # the scale: SSL-ALPNet with the same overrides, scored on the same validation scan
    alp_cfg = make_config("lite", "chaos", 1, 0, "alpnet", overrides)
    alp_run = _trained(alp_cfg, Path(args.runs) / alp_cfg.run_name())
    if not (alp_run / metrics_filename("validation")).is_file():
        evaluate(alp_run, progress=False, save_predictions=False, split="validation")
    m = read_metrics(alp_run, split="validation")
    assert m["split"] == "validation" and m["test_scans"] == rows[0]["validation_scans"]
    alp = {
        "describe": describe(alp_cfg),
        "run": alp_run.name,
        "train_seconds": train_seconds(alp_run),
        "dice": _dice(m),
        "mean_dice": m["mean"]["dice"],
    }

    info = {
        "cre_batchnorm": "batch statistics" if args.cre_batch_stats else "running estimates (torch eval mode)",
        "describe": describe(cfg),
        "config_hash": cfg.config_hash(),
        "run": run.name,
        "train_iters": rpnet.TRAIN_ITERS,
        "reference_eval_iters": rpnet.EVAL_ITERS,
        "train_seconds": train_seconds(run),
        "rows": rows,
        "validation_scans": rows[0]["validation_scans"],
        "support_scan": rows[0]["support_scan"],
        "alpnet_validation": alp,
        "command": "OMP_WAIT_POLICY=PASSIVE CRAPNET_DATA_ROOT=../shared/data crapnet study analysis rpnet_iterations"
        + (f" {' '.join(argv)}" if argv else ""),
        "commit": git_commit(),
        "machine": machine_description() + ", shared with other jobs",
        "torch": torch.__version__,
    }
    out = Path(args.out) if args.out else Path(out) / (f"steps{args.steps}" if args.steps else "")
    if args.cre_batch_stats:
        out = out / "cre_batch_stats"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "iterations.json", info)
    write_text(out / "iterations.md", markdown(info))
    print(markdown(info))
    return 0
