"""Seed aggregate of one table folder: results/<name>/seed<k>/summary.json -> results/<name>/summary.*

    .venv/bin/python results/aggregate_seeds.py results/chaos_setting1_crapnet_lite [...]

Each training seed of a table is its own queue entry in results/run_study.sh (so that every
finished seed is committed on its own and a stopped session loses at most the seed in
progress); its summary lands in ``<name>/seed<k>/``. This writes ``<name>/summary.json|md``:
with one seed, that seed's summary; with several, crapnet_core.engine.stats.aggregate_seeds over them
(the same function ``crapnet cross-validate --seeds`` uses: per-scan Dice averaged over seeds,
std over seeds and over folds). A seed folder whose summary has other folds, dataset, setting or
method than the rest is an error naming it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's crapnet_core

from crapnet_core.io import write_json, write_text  # noqa: E402
from crapnet_core.engine.runs import summary_markdown  # noqa: E402
from crapnet_core.engine.stats import aggregate_seeds  # noqa: E402


def aggregate(folder: Path) -> dict:
    summaries = {}
    for path in sorted(folder.glob("seed*/summary.json")):
        match = re.fullmatch(r"seed(\d+)", path.parent.name)
        if match:
            summaries[int(match.group(1))] = json.loads(path.read_text())
    if not summaries:
        raise SystemExit(f"aggregate_seeds: {folder}: no seed<k>/summary.json")
    if len(summaries) == 1:
        (summary,) = summaries.values()
    else:
        try:
            summary = aggregate_seeds(summaries)
        except ValueError as err:
            raise SystemExit(f"aggregate_seeds: {folder}: {err}") from None
        summary["overrides"] = next(iter(summaries.values())).get("overrides", [])
    write_json(folder / "summary.json", summary)
    write_text(folder / "summary.md", summary_markdown(summary))
    return summary


if __name__ == "__main__":
    for arg in sys.argv[1:] or sys.exit(__doc__):
        s = aggregate(Path(arg))
        print(f"{arg}: seeds {s.get('seeds', '(one)')}, mean Dice {100 * s['mean']['dice']['mean']:.2f}")
