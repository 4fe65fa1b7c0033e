"""SSL-RPNet's 5-fold models re-evaluated with the CRE's BatchNorm on batch statistics (issue 10).

Why: on the validation scan (``results/rpnet_iterations.py --cre-batch-stats``; CHAOS fold 0,
never a test scan) the refinement drifts when the context relation encoder (CRE) normalises with
its running estimates (torch eval mode, as the reference evaluates) and improves the mask when it
normalises with the statistics of the batch at hand (650 steps: 27.9 -> 32.9 mean Dice after 10
iterations; 2000 steps: 17.0 -> 52.5). The running estimates average the CRE's inputs over the
support pass (true mask) and the query passes (predicted masks), which differ. This script asks
whether the same holds on the test scans of every fold: it loads the *trained* fold models of a
committed SSL-RPNet table (nothing is retrained; same checkpoints, same support slices, same
protocol), switches the CRE's BatchNorm layers to batch statistics, and evaluates again. The
choice was made on the validation scan before this script ran; its output is a second row for the
same models, not a replacement of the reference-protocol table.

    CRAPNET_DATA_ROOT=../shared/data OMP_WAIT_POLICY=PASSIVE .venv/bin/python results/rpnet_batch_stats.py \
        --dataset chaos --runs /work/compute/runs/study/chaos_setting1_rpnet_lite [--folds 0,1]

``--runs``: the folder of the table's fold runs (``results/run_study.sh``'s RUNS/<table>); each
fold's run is found by its name and its own ``config.json``. Writes
``runs/rpnet_batch_stats/<dataset>/<run>/metrics.json`` (resumable: evaluated folds are kept)
and, once all five folds are there, ``results/rpnet_iterations/batch_stats_5fold/<dataset>_setting1/
summary.{json,md}`` (kept outside the ``*_lite`` tables so that no table averages it into the
SSL-RPNet row); compare it with ``crapnet compare``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crapnet_core.engine.checkpoints import cpu_threads, load_model, resolve_device  # noqa: E402
from crapnet_core.engine.evaluation import evaluate_model  # noqa: E402
from crapnet_core.engine.experiment import ExperimentConfig  # noqa: E402
from crapnet_core.engine.runs import summarize_runs, summary_markdown  # noqa: E402
from crapnet_core.io import write_json, write_text  # noqa: E402
from crapnet_core.models.methods import rpnet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=["chaos", "sabs"])
    p.add_argument("--runs", required=True, help="the committed table's fold runs (RUNS/<dataset>_setting1_rpnet_lite)")
    p.add_argument("--folds", default="0,1,2,3,4", help="folds to evaluate in this call, e.g. 3,4 (two processes)")
    p.add_argument("--out-runs", default=str(ROOT / "runs" / "rpnet_batch_stats"))
    args = p.parse_args(argv)
    try:
        folds = [int(f) for f in args.folds.split(",") if f.strip()]
    except ValueError:
        p.error(f"--folds {args.folds!r}: expected fold numbers joined by commas, e.g. 0,1")
    if not folds or any(not 0 <= f <= 4 for f in folds):
        p.error(f"--folds {args.folds!r}: folds are 0..4")
    runs = Path(args.runs)
    if not runs.is_dir():
        p.error(f"--runs {runs}: not a folder")
    out_root = Path(args.out_runs) / args.dataset
    dev = resolve_device("cpu")
    for fold in folds:
        # the fold's run by its own config.json (the table may have been trained at an older commit whose
        # config hash differs from this code's; load_model still refuses a model config that differs)
        found = [d for d in runs.glob(f"*_s1_all_f{fold}_rpnet_*") if (d / "config.json").is_file()]
        if len(found) != 1:
            p.error(f"--runs {runs}: expected one SSL-RPNet setting-1 run of fold {fold}, found {len(found)}")
        src = found[0]
        cfg = ExperimentConfig.load(src / "config.json")
        if cfg.data.fold != fold or cfg.model.method != "rpnet" or not (src / "metrics.json").is_file() \
                or int(json.loads((src / "metrics.json").read_text()).get("step", -1)) != cfg.train.steps:
            p.error(f"--runs {runs}: {src.name} is not a trained and evaluated SSL-RPNet run of fold {fold}")
        dst = out_root / src.name
        if (dst / "metrics.json").is_file():
            continue
        model, _ = load_model(cfg, src / "checkpoints" / "last.pt", dev)
        assert rpnet.use_batch_statistics(model) > 0
        t0 = time.time()
        with cpu_threads(cfg, dev):
            m = evaluate_model(model, cfg, dev, progress=False, save_predictions=False)
        m["cre_batchnorm"] = "batch statistics"
        m["source_run"] = str(src)
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "config.json", dst / "config.json")
        write_json(dst / "metrics.json", m)
        print(f"rpnet_batch_stats: {args.dataset} fold {fold}: mean Dice {100 * m['mean']['dice']:.2f} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    done = sorted(out_root.glob("*/metrics.json"))
    if len(done) == 5:
        summary = summarize_runs([d.parent for d in done], dataset=json.loads(done[0].read_text())["dataset"],
                                 setting=1, method="rpnet", profile="lite")
        summary["variant"] = "rpnet (CRE BatchNorm on batch statistics at test)"
        summary["command"] = ("OMP_WAIT_POLICY=PASSIVE CRAPNET_DATA_ROOT=../shared/data .venv/bin/python "
                              f"results/rpnet_batch_stats.py --dataset {args.dataset} --runs <RUNS>/{runs.name}")
        summary["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                           capture_output=True, text=True).stdout.strip()
        summary["models"] = f"the trained fold runs of results/{runs.name} (trained at that table's commit)"
        out = ROOT / "results" / "rpnet_iterations" / "batch_stats_5fold" / f"{args.dataset}_setting1"
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "summary.json", summary)
        write_text(out / "summary.md", summary_markdown(summary))
        print(f"rpnet_batch_stats: 5-fold mean Dice {100 * summary['mean']['dice']['mean']:.2f} -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
