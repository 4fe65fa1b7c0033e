"""Table of every cross-validation summary under results/ (for results/README.md).

    .venv/bin/python results/collect.py                      # print the Markdown table
    .venv/bin/python results/collect.py --update-readme      # rewrite the table block of results/README.md
    .venv/bin/python results/collect.py --rewrite-summaries  # re-render every summary.md from its summary.json

Every Dice/HD95/ASD cell is mean ± sample standard deviation (ddof=1) over the folds,
computed from the per-fold values of summary.json (crapnet_core.engine.stats.fold_spread), so
summaries written before the standard deviation was stored render the same way.
``--rewrite-summaries`` needs no rerun: it only re-renders summary.md (and refreshes the
derived ``mean.dice_std_over_folds`` of summary.json to the same ddof=1 values).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from a checkout: use its crapnet_core

from crapnet_core.io import write_json, write_text  # noqa: E402
from crapnet_core.engine.runs import summary_markdown  # noqa: E402
from crapnet_core.engine.stats import fold_spread, format_pm  # noqa: E402

ORDER = [("chaos", 1, "crapnet"), ("chaos", 1, "alpnet"), ("chaos", 1, "panet"),
         ("chaos", 2, "crapnet"), ("chaos", 2, "alpnet"), ("chaos", 2, "panet"),
         ("sabs", 1, "crapnet"), ("sabs", 1, "alpnet"), ("sabs", 1, "panet"),
         ("sabs", 2, "crapnet"), ("sabs", 2, "alpnet"), ("sabs", 2, "panet"),
         # issue 8 §4: the component decomposition (CHAOS setting 1)
         ("chaos", 1, "alpnet-attention"), ("chaos", 1, "alpnet-carafe"), ("chaos", 1, "crapnet-aligned")]
NAMES = {"crapnet": "CRAPNet", "alpnet": "SSL-ALPNet", "panet": "SSL-PANet",
         "alpnet-attention": "SSL-ALPNet + attention", "alpnet-carafe": "SSL-ALPNet + CARAFE++ prototypes",
         "crapnet-aligned": "CRAPNet, aligned CARAFE++ window"}
DATASETS = {"chaos": "CHAOS MRI", "sabs": "Synapse CT"}


def _num(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def table() -> str:
    lines = ["| dataset | setting | method | LK | RK | Spleen | Liver | Mean | paper Mean | HD95 mm | ASD mm | folds | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds, setting, method in ORDER:
        folder = HERE / f"{ds}_setting{setting}_{method}_lite"
        if not (folder / "summary.json").is_file():
            continue
        s = json.loads((folder / "summary.json").read_text())
        info = json.loads((folder / "run_info.json").read_text()) if (folder / "run_info.json").is_file() else {}
        d = fold_spread(s, "dice")
        keys = ("left_kidney", "right_kidney", "spleen", "liver", "mean")
        cells = [format_pm(d[k]["mean"], d[k]["std"]) if k in d else "–" for k in keys]
        hd, asd = fold_spread(s, "hd95")["mean"], fold_spread(s, "asd")["mean"]
        paper = None if "-" in method else (s.get("paper_dice") or {}).get("Mean")  # no paper row for variants
        wall = info.get("wall_seconds")
        lines.append(f"| {DATASETS[ds]} | {setting} | {NAMES[method]} | " + " | ".join(cells)
                     + f" | {_num(paper, '.2f')} | {format_pm(hd['mean'], hd['std'], 1.0, 1)}"
                     + f" | {format_pm(asd['mean'], asd['std'], 1.0, 1)} | {len(s['folds'])}"
                     + f" | {'–' if wall is None else f'{wall / 60:.0f} min'} |")
    return "\n".join(lines) + "\n"


def status() -> str:
    out = []
    for ds, setting, method in ORDER:
        name = f"{ds}_setting{setting}_{method}_lite"
        info_path = HERE / name / "run_info.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            out.append(f"- `{name}`: **done**, started {info['started_utc']}, wall {info['wall_seconds']} s")
        else:
            out.append(f"- `{name}`: **not finished** when this table was written (same command)")
    return "\n".join(out) + "\n"


def update_readme() -> None:
    path = HERE / "README.md"
    block = ("<!-- results-table: regenerate with `.venv/bin/python results/collect.py --update-readme` -->\n"
             "Dice in percent, mean ± standard deviation (ddof=1) over the 5 folds (each fold: mean over its\n"
             "test scans); HD95/ASD in mm (mean over organs, then mean ± std over folds, scans with an empty\n"
             "prediction left out); \"paper Mean\" is the\n"
             "paper's Table 1/2 value for the same method (SSL-ALPNet, SSL-PANet, CRAPNet rows); \"wall\" is\n"
             "the wall time of the cross-validate command (see the notes above).\n\n"
             + table() + "\nState of each run:\n\n" + status() + "<!-- /results-table -->\n")
    text = path.read_text()
    new, n = re.subn(r"<!-- results-table:.*?<!-- /results-table -->\n", lambda m: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: no results-table block to replace")
    path.write_text(new)


def rewrite_summaries(root: Path = HERE) -> list[Path]:
    """Re-render every ``root/*/summary.md`` (and the variants') from its ``summary.json``; no rerun.

    Also refreshes the derived ``mean.dice_std_over_folds`` of the JSON to the sample standard
    deviation over folds (ddof=1) of every organ and of the organ mean. Returns the rewritten files.
    """
    done = []
    for path in sorted(root.rglob("summary.json")):
        s = json.loads(path.read_text())
        if "per_fold" not in s:
            continue
        spread = fold_spread(s, "dice")
        std = {k: (None if v["std"] is None else round(v["std"], 6)) for k, v in spread.items()}
        if s.get("mean", {}).get("dice_std_over_folds") != std and not s.get("seeds"):
            s["mean"]["dice_std_over_folds"] = std
            s["std_ddof"] = 1
            write_json(path, s)
        write_text(path.with_suffix(".md"), summary_markdown(s))
        done.append(path.with_suffix(".md"))
    return done


if __name__ == "__main__":
    if "--rewrite-summaries" in sys.argv[1:]:
        for p in rewrite_summaries():
            print(p)
    elif "--update-readme" in sys.argv[1:]:
        update_readme()
    else:
        print(table(), end="")
