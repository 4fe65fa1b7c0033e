"""Print the Markdown table of every cross-validation summary under results/ (for results/README.md).

    .venv/bin/python results/collect.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [(d, s, m) for d in ("chaos", "sabs") for s in (1, 2) for m in ("crapnet", "alpnet", "panet")]
NAMES = {"crapnet": "CRAPNet", "alpnet": "SSL-ALPNet", "panet": "SSL-PANet"}
DATASETS = {"chaos": "CHAOS MRI", "sabs": "Synapse CT"}


def main() -> None:
    print("| dataset | setting | method | LK | RK | Spleen | Liver | Mean | paper Mean | HD95 mm | ASD mm | folds | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ds, setting, method in ORDER:
        folder = HERE / f"{ds}_setting{setting}_{method}_lite"
        if not (folder / "summary.json").is_file():
            continue
        s = json.loads((folder / "summary.json").read_text())
        info = json.loads((folder / "run_info.json").read_text()) if (folder / "run_info.json").is_file() else {}
        d = s["mean"]["dice"]
        vals = [d.get(o) for o in ("left_kidney", "right_kidney", "spleen", "liver")] + [d.get("mean")]
        cells = ["–" if v is None else f"{100 * v:.2f}" for v in vals]
        paper = (s.get("paper_dice") or {}).get("Mean")
        wall = info.get("wall_seconds")
        print(f"| {DATASETS[ds]} | {setting} | {NAMES[method]} | " + " | ".join(cells)
              + f" | {paper if paper is not None else '–'} | {s['mean']['hd95'].get('mean') or float('nan'):.1f}"
              + f" | {s['mean']['asd'].get('mean') or float('nan'):.1f} | {len(s['folds'])}"
              + f" | {'–' if wall is None else f'{wall / 60:.0f} min'} |")


if __name__ == "__main__":
    main()
