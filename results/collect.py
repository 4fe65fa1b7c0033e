"""Table of every cross-validation summary under results/ (for results/README.md).

    .venv/bin/python results/collect.py                  # print the Markdown table
    .venv/bin/python results/collect.py --update-readme  # rewrite the table block of results/README.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [("chaos", 1, "crapnet"), ("chaos", 1, "alpnet"), ("chaos", 1, "panet"),
         ("chaos", 2, "crapnet"), ("chaos", 2, "alpnet"), ("chaos", 2, "panet"),
         ("sabs", 1, "crapnet"), ("sabs", 1, "alpnet"), ("sabs", 2, "crapnet"), ("sabs", 2, "alpnet")]
NAMES = {"crapnet": "CRAPNet", "alpnet": "SSL-ALPNet", "panet": "SSL-PANet"}
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
        d = s["mean"]["dice"]
        vals = [d.get(o) for o in ("left_kidney", "right_kidney", "spleen", "liver")] + [d.get("mean")]
        cells = [_num(None if v is None else 100 * v, ".2f") for v in vals]
        paper = (s.get("paper_dice") or {}).get("Mean")
        wall = info.get("wall_seconds")
        lines.append(f"| {DATASETS[ds]} | {setting} | {NAMES[method]} | " + " | ".join(cells)
                     + f" | {_num(paper, '.2f')} | {_num(s['mean']['hd95'].get('mean'))}"
                     + f" | {_num(s['mean']['asd'].get('mean'))} | {len(s['folds'])}"
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
             "Dice in percent, mean over the 5 folds (each fold: mean over its test scans); HD95/ASD in mm\n"
             "(mean over organs and folds, scans with an empty prediction left out); \"paper Mean\" is the\n"
             "paper's Table 1/2 value for the same method (SSL-ALPNet, SSL-PANet, CRAPNet rows); \"wall\" is\n"
             "the wall time of the cross-validate command (see the notes above).\n\n"
             + table() + "\nState of each run:\n\n" + status() + "<!-- /results-table -->\n")
    text = path.read_text()
    new, n = re.subn(r"<!-- results-table:.*?<!-- /results-table -->\n", lambda m: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: no results-table block to replace")
    path.write_text(new)


if __name__ == "__main__":
    if "--update-readme" in sys.argv[1:]:
        update_readme()
    else:
        print(table(), end="")
