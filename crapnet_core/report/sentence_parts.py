"""The parts every generated sentence is built from: comparison look-ups, differences, numbers, summaries.

Used by :mod:`crapnet_core.report.prose` and :mod:`crapnet_core.report.converged`. A comparison ``e``
is an entry of a family of the cached analysis (:func:`crapnet_core.report.collect.analysis`):
``a``, ``b``, ``call`` and ``result`` (:func:`crapnet_core.engine.comparisons.compare_tables`; Dice
fractions). Differences are shown in Dice points (0-100) with a true minus sign
(:mod:`crapnet_core.report.stats_tables`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..io import read_json
from .stats_tables import DATASET_SHORT, call_md, ci, minus, pts, table_label


def entry_mean_row(e: Mapping) -> dict:
    """The organ-mean row of an evaluated comparison (``e["result"]["rows"]``)."""
    return next(r for r in e["result"]["rows"] if r["organ"] == "mean")


def find_comparison(an: Mapping, fam: str, a: str, b: str) -> dict | None:
    """The evaluated comparison ``a`` − ``b`` of family ``fam`` in the analysis ``an``, or None (not run yet)."""
    for e in an["families"][fam]["comparisons"]:
        if e["a"] == a and e["b"] == b and e.get("result"):
            return e
    return None


def diff_md(e: Mapping | None, digits: int = 2) -> str:
    """``−0.55 [−5.54, +4.45], not resolved`` for an evaluated comparison."""
    if e is None:
        return "not run yet"
    r = entry_mean_row(e)
    return f"{pts(r['mean_diff'], digits)} {ci(r['ci_low'], r['ci_high'], digits)}, {call_md(e['call'])}"


def num(x: float, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals."""
    return f"{x:.{digits}f}"


def range_md(values, digits: int = 1, scale: float = 100.0) -> str:
    """``0.3–2.2``; with a negative end: ``−10.6 to −3.7`` (true minus signs)."""
    v = [scale * x for x in values]
    lo, hi = min(v), max(v)
    if lo < 0:
        return minus(f"{lo:.{digits}f} to {hi:.{digits}f}")
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def count_md(n: int, what: str) -> str:
    """``3 resolved``, ``none resolved``: a count before ``what`` ("none" for 0)."""
    return f"{'none' if n == 0 else n} {what}"


def calls_by_call(fam: Mapping) -> dict[str, list[dict]]:
    """The comparisons of a family grouped by their call (``resolved``, ``weak``, ``not resolved``, ``missing``)."""
    out: dict[str, list[dict]] = {"resolved": [], "weak": [], "not resolved": [], "missing": []}
    for e in fam["comparisons"]:
        out[e["call"] if e.get("call") else "missing"].append(e)
    return out


def comparison_name(e: Mapping) -> str:
    """``A − B`` with the tables' display labels."""
    return f"{table_label(e['a'])} − {table_label(e['b'])}"


def comparison_where(e: Mapping) -> str:
    """``CHAOS setting 1``: the dataset and setting of an evaluated comparison."""
    res = e["result"]
    return f"{DATASET_SHORT.get(res['dataset'], res['dataset'])} setting {res['setting']}"


def read_summary(results: Path, name: str, seed: int | None = None) -> dict | None:
    """``results/<name>/summary.json`` (``seed``: that seed's, else the aggregate), or None when absent."""
    folder = results / name
    path = folder / f"seed{seed}" / "summary.json" if seed is not None else folder / "summary.json"
    if seed is not None and not path.is_file():
        path = folder / "summary.json"
    return read_json(path) if path.is_file() else None


def summary_mean(s: Mapping | None) -> float | None:
    """The organ-mean Dice (fraction) of a summary, or None."""
    return None if s is None else float(s["mean"]["dice"]["mean"])


def fold_diffs(results: Path, e: Mapping) -> list[float]:
    """Per-fold mean paired differences (organ-mean row) of an evaluated comparison."""
    from ..engine.comparisons import load_table, paired_rows

    res = e["result"]
    a, b = load_table(results / e["a"]), load_table(results / e["b"])
    row = paired_rows(a, b, res["a"]["seeds"], res["b"]["seeds"])[-1]
    d = np.asarray(row["a"]) - np.asarray(row["b"])
    folds = np.asarray(row["folds"])
    return [float(d[folds == f].mean()) for f in sorted(set(row["folds"]))]
