"""Issue 8 §3 on the committed study: "inside the attention" of every fold of a CRAPNet result.

    CRAPNET_DATA_ROOT=../shared/data crapnet study analysis diagnostics_chaos_setting1_crapnet_lite

The declared analysis names the table; its fold runs (seed 0) are read from the runs folder
(trained there first where missing), or from ``--result DIR``, a folder
holding one trained run folder per fold. For each trained run folder, crapnet_core.engine.diagnostics.inside_attention
measures, on 8 training episodes and on the test support/query pairs: cycle consistency, column
entropy / log N, ||W_z y|| / ||x|| per block, the resemblance weights, the valid local prototypes
per organ, and the test Dice of the full model, with the attention bypassed (z = x) and with
Eq. 14-16 read literally. Writes blocks.csv, prototypes.csv, variants.csv (one row per fold and
variant) and summary.md (means over folds, std over folds for the Dice variants).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ...engine import diagnostics as dg
from ...io import write_json, write_text
from ..provenance import git_commit, run_info, utc_now


def table_runs(table, runs_root: str | Path) -> list[Path]:
    """The trained run folders of seed 0 of a declared table under ``runs_root`` (ValueError naming
    the missing ones)."""
    runs = [r for r in table.runs() if r.seed == table.seeds[0]]
    found = [Path(runs_root) / r.folder for r in runs if r.folder]
    missing = [p.name for p in found if not (p / "checkpoints" / "last.pt").is_file()]
    if missing or not found:
        raise ValueError(
            f"{runs_root}: the fold runs of {table.name} are not trained there ({', '.join(missing) or table.pending})"
        )
    return found


def main(argv=None, out: str | Path | None = None, runs: list[Path] | None = None, command: str = "") -> int:
    """``crapnet study analysis NAME [--result DIR] [--out DIR] [--n-train N]``; ``runs``: the declared
    table's trained fold runs (used without ``--result``), ``out``: the declared output folder."""
    import pandas as pd

    p = argparse.ArgumentParser(prog="crapnet study analysis", description=__doc__.split("\n")[0])
    p.add_argument(
        "--result",
        default=None,
        help="a folder holding one trained run folder per fold (default: the declared table's runs in the runs folder)",
    )
    p.add_argument("--out", default=None if out is None else str(out), required=out is None)
    p.add_argument("--n-train", type=int, default=8)
    args = p.parse_args(argv)
    if args.result:
        runs = sorted(d for d in Path(args.result).iterdir() if (d / "checkpoints" / "last.pt").is_file())
        if not runs:
            p.error(f"{args.result}: no trained run folder (RUN/checkpoints/last.pt) inside")
    elif not runs:
        p.error("--result: give the folder of the trained fold runs")
    started, t0, commit = utc_now(), time.time(), git_commit()  # the code that runs, not the code at the end
    blocks, protos, variants = [], [], []
    for run in runs:
        print(f"diagnose {run.name}", file=sys.stderr, flush=True)
        res = dg.inside_attention(run, n_train=args.n_train)
        fold = res["config"].data.fold
        blocks.append(dg.block_table(res["blocks"]).reset_index().assign(fold=fold))
        protos.append(dg.prototype_table(res["prototypes"]).reset_index().assign(fold=fold))
        vt = dg.variant_table(res["variants"]).reset_index().rename(columns={"index": "variant"}).assign(fold=fold)
        variants.append(vt)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    b, pr, v = (pd.concat(x, ignore_index=True) for x in (blocks, protos, variants))
    for name, frame in (("blocks", b), ("prototypes", pr), ("variants", v)):
        write_text(out / f"{name}.csv", frame.to_csv(index=False))
    num = lambda f: f.select_dtypes("number").columns.drop("fold")  # noqa: E731
    vm = v.groupby("variant")[num(v)].agg(["mean", "std"])
    vm.columns = [f"{a} {'±' if s == 'std' else ''}".strip() if s == "std" else a for a, s in vm.columns]
    title = Path(args.result).name if args.result else Path(args.out).name
    command = command or f"crapnet study analysis {title} --out {args.out}"
    text = [
        f"# Inside the attention: {title} ({len(runs)} folds)",
        "",
        f"Command: `CRAPNET_DATA_ROOT=../shared/data {command}`",
        "",
        "## Test Dice (0-100) of the trained model and of its variants: mean and std over folds",
        "",
        vm.round(2).to_markdown(),
        "",
        "## Attention blocks (mean over folds of the per-fold means over episodes)",
        "",
        b.groupby(["source", "branch", "block"])[num(b)].mean().round(3).to_markdown(),
        "",
        "## Valid local prototypes per support (mean over folds)",
        "",
        pr.groupby(["source", "organ"])[num(pr)].mean().round(3).to_markdown(),
        "",
    ]
    write_text(out / "summary.md", "\n".join(text))
    info = run_info(f"CRAPNET_DATA_ROOT=../shared/data {command}", started, time.time() - t0, None)
    info.update(
        commit=commit,
        folds=sorted(int(f) for f in v["fold"].unique()),
        runs=[r.name for r in runs],
        n_train=args.n_train,
    )
    write_json(out / "run_info.json", info)
    print("\n".join(text))
    return 0
