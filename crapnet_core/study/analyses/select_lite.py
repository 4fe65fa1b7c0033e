"""Choose the ``lite`` settings on the *validation* scan of CHAOS fold 0, setting 1 (issue 8 §2).

Every trial trains with ``data.validation=true`` (the last training scan of the fold, CHAOS 39,
is held out of training; ``crapnet_core/data/protocol.py``) and is scored only on that scan with
the fold's support scan 8 (``metrics_validation.json``); the test scans 1 2 3 5 are never
evaluated here. The prototype grids follow the input size by the rule of
``crapnet_core/models/prototype_grid.py`` (96 px: sigma 2, pools 2 / 1; 128 px: sigma 2, pools 2 / 1).

Candidates (``TRIALS``): the input size at a fixed ~3-minute budget per fold on 2 cores, the
step count chosen so that each trial fills it (a 128-px step costs ~1.7x a 96-px step;
results/README.md, trials t2/t5/t6). Selection rule, fixed before running: the candidate with
the highest validation mean Dice averaged over the methods in ``--methods`` (crapnet and
alpnet by default, so the profile does not favour one method). The candidates have equal
compute budgets by design (steps scaled by the measured per-step cost), so wall time is
reported but does not decide: on the shared 2-core machine it measures the other jobs' load
as much as the trial (``BUDGET_SECONDS`` is None; set it to exclude slow candidates on a
quiet machine).

Run it as the declared analysis ``select_lite`` (about 4 x 3 min with the defaults):

    CRAPNET_DATA_ROOT=../shared/data OMP_WAIT_POLICY=PASSIVE crapnet study analysis select_lite

Writes <runs>/select_lite/<run>/ (runs are skipped when their metrics_validation.json exists)
and the declared output folder (results/select_lite/) trials.json + trials.md. ``--steps N``
overrides every trial's steps (a quick check only: give ``--out`` another folder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ...engine.evaluation import evaluate, read_metrics
from ...engine.experiment import describe, make_config
from ...engine.training import is_trained, train, train_seconds
from ...facts import ORGANS
from ...io import write_json, write_text

#: name -> overrides on top of the lite profile (runtime: one torch thread, as the result runs)
TRIALS = {
    "v96": ["data.input_size=96", "train.steps=1100"],
    "v128": ["data.input_size=128", "train.steps=650"],
}
BUDGET_SECONDS: float | None = None


def run_trial(name: str, method: str, extra: list[str], runs_root: Path, progress: bool) -> dict:
    overrides = [*TRIALS[name], *extra, "data.validation=true", "train.threads=1"]
    cfg = make_config("lite", "chaos", 1, 0, method, overrides)
    run = runs_root / f"{name}_{cfg.run_name()}"
    metrics_path = run / "metrics_validation.json"
    t0 = time.time()
    if not metrics_path.is_file():
        print(f"select_lite: {name} {describe(cfg)}", file=sys.stderr, flush=True)
        if not is_trained(run):  # an interrupted trial resumes from its last checkpoint
            train(cfg, run, resume=(run / "config.json").is_file(), progress=progress)
        evaluate(run, progress=progress, save_predictions=False, split="validation")
    m = read_metrics(run, split="validation")
    assert m["split"] == "validation"
    return {
        "trial": name,
        "method": method,
        "overrides": overrides,
        "config_hash": cfg.config_hash(),
        "run": run.name,
        "validation_scans": m["test_scans"],
        "support_scan": m["support"]["scan_id"],
        "dice": {o: m["per_organ"].get(o, {}).get("dice_mean") for o in ORGANS},
        "mean_dice": m["mean"]["dice"],
        "train_seconds": train_seconds(run),
        "eval_seconds": m.get("seconds"),
        "wall_seconds_this_call": round(time.time() - t0, 1),
        "grid": {
            "carafe_factor": cfg.model.carafe_factor,
            "alpnet_pool_train": cfg.model.alpnet_pool_train,
            "alpnet_pool_test": cfg.model.alpnet_pool_test,
        },
    }


def choose(rows: list[dict], methods: list[str]) -> tuple[str | None, dict]:
    """The rule of the module docstring: best method-averaged validation Dice within the budget."""
    scores = {}
    for name in TRIALS:
        mine = [r for r in rows if r["trial"] == name]
        if len(mine) != len(methods) or any(r["mean_dice"] is None for r in mine):
            continue
        secs = [r["train_seconds"] or 0.0 for r in mine]
        scores[name] = {
            "mean_dice": sum(r["mean_dice"] for r in mine) / len(mine),
            "mean_train_seconds": sum(secs) / len(secs),
        }
    ok = {k: v for k, v in scores.items() if BUDGET_SECONDS is None or v["mean_train_seconds"] <= BUDGET_SECONDS}
    best = max(ok, key=lambda k: ok[k]["mean_dice"]) if ok else None
    return best, scores


def markdown(rows: list[dict], best: str | None, scores: dict, check_only: bool) -> str:
    lines = ["# lite selection on the validation scan (CHAOS fold 0, setting 1)", ""]
    if check_only:
        lines += ["**Check run of the script only (--steps override); not a selection.**", ""]
    lines += [
        "| trial | method | grid (sigma / pools) | train s | eval s | LK | RK | Spleen | Liver | Mean |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        g = r["grid"]
        d = [r["dice"][o] for o in ORGANS] + [r["mean_dice"]]
        lines.append(
            f"| {r['trial']} | {r['method']} | {g['carafe_factor']} / {g['alpnet_pool_train']}, "
            f"{g['alpnet_pool_test']} | {r['train_seconds'] or 0:.0f} | {r['eval_seconds'] or 0:.0f} | "
            + " | ".join("–" if v is None else f"{100 * v:.2f}" for v in d)
            + " |"
        )
    lines += [
        "",
        "Dice in percent on the validation scan "
        f"{', '.join(sorted({s for r in rows for s in r['validation_scans']}))} (support scan "
        f"{', '.join(sorted({r['support_scan'] for r in rows}))}). Method-averaged: "
        + "; ".join(f"{k} {100 * v['mean_dice']:.2f} ({v['mean_train_seconds']:.0f} s)" for k, v in scores.items())
        + f". Chosen by the rule: **{best or 'none'}**.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, out: str | Path = "results/select_lite", runs: str | Path = "runs") -> int:
    """``crapnet study analysis select_lite [OPTIONS]``: ``out`` and ``runs`` are the declared output
    folder and the runs folder (``--out``/``--runs`` override them)."""
    p = argparse.ArgumentParser(prog="crapnet study analysis select_lite", description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="crapnet,alpnet", help="comma list (default crapnet,alpnet)")
    p.add_argument("--trials", default=",".join(TRIALS), help=f"comma list of {', '.join(TRIALS)}")
    p.add_argument("--steps", type=int, default=None, help="override the steps of every trial (script check only)")
    p.add_argument("--runs", default=str(Path(runs) / "select_lite"), help="folder for the trial runs")
    p.add_argument("--out", default=str(out), help="folder for trials.json / trials.md")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    trials = [t.strip() for t in args.trials.split(",") if t.strip()]
    unknown = sorted(set(trials) - set(TRIALS))
    if unknown:
        p.error(f"--trials: unknown trial(s) {', '.join(unknown)}; known: {', '.join(TRIALS)}")
    extra = [] if args.steps is None else [f"train.steps={args.steps}"]
    runs_root = Path(args.runs)
    rows = [run_trial(t, m, extra, runs_root, not args.no_progress) for t in trials for m in methods]
    best, scores = choose(rows, methods)
    out = Path(args.out)
    write_json(
        out / "trials.json",
        {
            "rows": rows,
            "method_average": scores,
            "chosen": best,
            "rule": "highest method-averaged validation mean Dice (equal-budget candidates; "
            f"train-seconds limit: {BUDGET_SECONDS})",
            "check_only": args.steps is not None,
        },
    )
    text = markdown(rows, best, scores, args.steps is not None)
    write_text(out / "trials.md", text)
    print(text)
    return 0
