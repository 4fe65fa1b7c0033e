"""SSL-RPNet's 5-fold models re-evaluated with the CRE's BatchNorm on batch statistics (issue 10).

Why: on the validation scan (analysis ``rpnet_iterations --cre-batch-stats``; CHAOS fold 0,
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

    CRAPNET_DATA_ROOT=../shared/data OMP_WAIT_POLICY=PASSIVE crapnet study analysis rpnet_batch_stats_chaos \
        [--runs DIR] [--folds 0,1]

The declared analysis names the table (``chaos_setting1_rpnet_lite``, ``sabs_setting1_rpnet_lite``);
``--runs``: the folder holding the table's fold runs (default: the runs folder, where the analysis
trains them first where missing); each fold's run is found by its name and its own
``config.json``. Writes ``<runs>/rpnet_batch_stats/<dataset>/<run>/metrics.json`` (resumable:
evaluated folds are kept) and, once all five folds are there, the declared output folder
``results/rpnet_iterations/batch_stats_5fold/<dataset>_setting1/summary.{json,md}`` (kept outside
the ``*_lite`` tables so that no table averages it into the SSL-RPNet row); compare it with
``crapnet compare``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ...engine.checkpoints import cpu_threads, load_model, resolve_device
from ...engine.evaluation import evaluate_model
from ...engine.experiment import ExperimentConfig
from ...engine.runs import summarize_runs, summary_markdown
from ...io import read_json, write_json, write_text
from ...models.methods import rpnet
from ..provenance import git_commit


def main(
    argv: list[str] | None = None,
    dataset: str = "chaos",
    out: str | Path | None = None,
    runs: str | Path = "runs",
    name: str = "rpnet_batch_stats_chaos",
) -> int:
    """``crapnet study analysis rpnet_batch_stats_<dataset> [--runs DIR] [--folds F]``: ``dataset``
    (of the declared table), ``out`` (the declared output folder) and ``runs`` (the runs folder)."""
    p = argparse.ArgumentParser(prog=f"crapnet study analysis {name}", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs", default=str(runs), help="the folder holding the table's fold runs (default: the runs folder)"
    )
    p.add_argument("--folds", default="0,1,2,3,4", help="folds to evaluate in this call, e.g. 3,4 (two processes)")
    p.add_argument("--out-runs", default=str(Path(runs) / "rpnet_batch_stats"))
    args = p.parse_args(argv)
    args.dataset = dataset
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
        found = [d for d in runs.glob(f"{args.dataset}_s1_all_f{fold}_rpnet_lite_*") if (d / "config.json").is_file()]
        if len(found) != 1:
            p.error(f"--runs {runs}: expected one SSL-RPNet setting-1 run of fold {fold}, found {len(found)}")
        src = found[0]
        cfg = ExperimentConfig.load(src / "config.json")
        if (
            cfg.data.fold != fold
            or cfg.model.method != "rpnet"
            or not (src / "metrics.json").is_file()
            or int(read_json(src / "metrics.json").get("step", -1)) != cfg.train.steps
        ):
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
        print(
            f"rpnet_batch_stats: {args.dataset} fold {fold}: mean Dice {100 * m['mean']['dice']:.2f} "
            f"({time.time() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    done = sorted(out_root.glob("*/metrics.json"))
    if len(done) == 5:
        summary = summarize_runs(
            [d.parent for d in done], dataset=read_json(done[0])["dataset"], setting=1, method="rpnet", profile="lite"
        )
        summary["variant"] = "rpnet (CRE BatchNorm on batch statistics at test)"
        table = f"{args.dataset}_setting1_rpnet_lite"
        summary["command"] = (
            f"OMP_WAIT_POLICY=PASSIVE CRAPNET_DATA_ROOT=../shared/data crapnet study analysis {name} --runs <RUNS>"
        )
        summary["commit"] = git_commit()
        summary["models"] = f"the trained fold runs of results/{table} (trained at that table's commit)"
        out = (
            Path(out)
            if out
            else Path("results") / "rpnet_iterations" / "batch_stats_5fold" / f"{args.dataset}_setting1"
        )
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "summary.json", summary)
        write_text(out / "summary.md", summary_markdown(summary))
        print(f"rpnet_batch_stats: 5-fold mean Dice {100 * summary['mean']['dice']['mean']:.2f} -> {out}", flush=True)
    return 0
