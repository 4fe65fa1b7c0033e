"""Issue 8 §3 on the committed study: "inside the attention" of every fold of a CRAPNet result.

    CRAPNET_DATA_ROOT=../shared/data .venv/bin/python results/diagnose_runs.py \
        runs/study/chaos_setting1_crapnet_lite --out results/diagnostics/chaos_setting1_crapnet_lite

For each trained run folder under RESULT (one per fold), crapnet_core.engine.diagnostics.inside_attention
measures, on 8 training episodes and on the test support/query pairs: cycle consistency, column
entropy / log N, ||W_z y|| / ||x|| per block, the resemblance weights, the valid local prototypes
per organ, and the test Dice of the full model, with the attention bypassed (z = x) and with
Eq. 14-16 read literally. Writes blocks.csv, prototypes.csv, variants.csv (one row per fold and
variant) and summary.md (means over folds, std over folds for the Dice variants).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from crapnet_core.engine import diagnostics as dg  # noqa: E402
from crapnet_core.io import write_text  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", help="a cross-validate --out folder holding one trained run folder per fold")
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, default=8)
    args = p.parse_args(argv)
    runs = sorted(d for d in Path(args.result).iterdir() if (d / "checkpoints" / "last.pt").is_file())
    if not runs:
        p.error(f"{args.result}: no trained run folder (RUN/checkpoints/last.pt) inside")
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
    text = [f"# Inside the attention: {Path(args.result).name} ({len(runs)} folds)", "",
            "Command: `CRAPNET_DATA_ROOT=../shared/data .venv/bin/python results/diagnose_runs.py "
            f"{args.result} --out {args.out}`", "",
            "## Test Dice (0-100) of the trained model and of its variants: mean and std over folds", "",
            vm.round(2).to_markdown(), "",
            "## Attention blocks (mean over folds of the per-fold means over episodes)", "",
            b.groupby(["source", "branch", "block"])[num(b)].mean().round(3).to_markdown(), "",
            "## Valid local prototypes per support (mean over folds)", "",
            pr.groupby(["source", "organ"])[num(pr)].mean().round(3).to_markdown(), ""]
    write_text(out / "summary.md", "\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
