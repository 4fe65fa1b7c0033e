"""Fold 0 of chaos_setting1_crapnet_lite under different CPU kernel families (issue 25's diagnosis).

One machine, one environment (requirements.lock), one config (hash 7804db2a7044): the fold is
trained and evaluated once per kernel variant, where a variant lowers the instruction set that
torch's own kernels (ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA), MKL
(MKL_ENABLE_INSTRUCTIONS) and numpy (NPY_DISABLE_CPU_FEATURES) may use. Their spread is what a
rerun on another CPU can give; the committed fold (AMD EPYC) is listed beside them.

    CRAPNET_DATA_ROOT=../shared/data .venv/bin/python benchmarks/rerun_kernels.py [--runs runs/rerun_kernels]

Finished variants (``RUNS/<variant>/metrics.json``) are reused. Writes
``results/rerun_check/kernels.json`` and ``kernels.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from crapnet_core.engine.environment import environment, machine_line
from crapnet_core.io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"

COMMAND = [
    "-m",
    "crapnet_core.cli",
    "train",
    "--profile",
    "lite",
    "--set",
    "train.threads=1",
    "--dataset",
    "chaos",
    "--setting",
    "1",
    "--fold",
    "0",
    "--method",
    "crapnet",
    "--evaluate",
    "--no-progress",
]
NUMPY_AVX2 = "X86_V4 AVX512_ICL AVX512_SPR"
#: name -> (environment variables, what it stands for)
VARIANTS = {
    "default": ({}, "this machine's own choice (AVX-512 everywhere)"),
    "mkl_avx2": ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "MKL's AVX2 path only (what MKL may take on an AMD CPU)"),
    "avx2": (
        {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
        "torch, oneDNN and MKL at AVX2 (a CPU without AVX-512)",
    ),
    "avx2_mkl_sse42": (
        {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
        "torch and oneDNN at AVX2, MKL at SSE4.2 (MKL's generic path on a non-Intel CPU)",
    ),
}
ORGANS = ("left_kidney", "right_kidney", "spleen", "liver")
TITLES = {"left_kidney": "LK", "right_kidney": "RK", "spleen": "Spleen", "liver": "Liver"}


def run_variant(name: str, env_vars: dict[str, str], runs: Path) -> dict:
    run = runs / name
    if not (run / "metrics.json").is_file():
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **env_vars}
        print(f"{name}: training {run}", file=sys.stderr)
        subprocess.run(
            [sys.executable, *COMMAND, "--out", str(run), "--force"], check=True, env=env, cwd=RESULTS.parent
        )
    return json.loads((run / "metrics.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/rerun_kernels", help="folder of the variants' run folders")
    ap.add_argument("--out", default=str(RESULTS / "rerun_check"), help="folder for kernels.json/.md")
    ap.add_argument("--note", default=None, help="a provenance note kept in both files")
    args = ap.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    committed = json.loads((RESULTS / "chaos_setting1_crapnet_lite" / "seed0" / "summary.json").read_text())
    info = json.loads((RESULTS / "chaos_setting1_crapnet_lite" / "seed0" / "run_info.json").read_text())
    rows = []
    for name, (env_vars, meaning) in VARIANTS.items():
        m = run_variant(name, env_vars, runs)
        dice = {o: m["per_organ"][o]["dice_mean"] for o in ORGANS}
        rows.append(
            {
                "variant": name,
                "env": env_vars,
                "meaning": meaning,
                "config_hash": m["config_hash"],
                "dice": {**dice, "mean": m["mean"]["dice"]},
            }
        )
    record = {
        "command": "python " + " ".join(COMMAND) + " --out RUNS/<variant>",
        "script": "CRAPNET_DATA_ROOT=../shared/data .venv/bin/python benchmarks/rerun_kernels.py",
        "machine": machine_line(),
        "environment": environment(),
        "variants": rows,
        "committed": {
            "dice": committed["per_fold"]["0"]["dice"],
            "machine": info.get("machine"),
            "commit": info.get("commit"),
            "run": committed["per_fold"]["0"]["runs"][0],
        },
    }
    if args.note:
        record["note"] = args.note
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "kernels.json", record)
    lines = [
        "# Fold 0 of CHAOS setting 1 CRAPNet `lite` under different CPU kernels",
        "",
        f"One machine ({record['machine']}), one environment (`requirements.lock`), one config; only the "
        "instruction set that the kernels may use changes. Dice in percent, test scans 1, 2, 3, 5.",
        "",
        "| variant | environment variables | stands for | LK | RK | Spleen | Liver | Mean |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        env = ", ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "none"
        cells = " | ".join(f"{100 * r['dice'][o]:.2f}" for o in (*ORGANS, "mean"))
        lines.append(f"| {r['variant']} | {env} | {r['meaning']} | {cells} |")
    c = record["committed"]
    cells = " | ".join(f"{100 * c['dice'][o]:.2f}" for o in (*ORGANS, "mean"))
    lines.append(f"| committed | – | {c['machine']}, commit {c['commit']} | {cells} |")
    means = [100 * r["dice"]["mean"] for r in rows]
    lines += [
        "",
        f"Range of the fold mean over the kernel variants: {min(means):.2f} to {max(means):.2f} "
        f"({max(means) - min(means):.2f} points). Command per variant: `{record['command']}` with the "
        f"variables above; `{record['script']}` makes this table.",
    ]
    if args.note:
        lines += ["", f"Note: {args.note}"]
    write_text(out / "kernels.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
