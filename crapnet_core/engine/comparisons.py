"""Paired comparisons of two result tables at the fold level, scan by scan and seed by seed.

A *table* is one experiment's cross-validation: ``results/<table>/`` with one folder per
training seed, ``seed<k>/``, holding one folder per trained run
(``seed<k>/<run_name>/metrics.json``: the per-run results layout, read first when present) or,
for a seed committed before that layout, only that seed's ``summary.json`` (``crapnet
cross-validate``'s, with each fold's per-scan Dice); a plain ``crapnet
cross-validate --out`` folder or its ``summary.json`` works too (its seed is read from a
``seed<k>`` folder name or a ``train.seed=`` override, else 0).

* :func:`load_table` -- {seed: {organ: {scan: Dice}}} and each scan's fold.
* :func:`paired_rows` -- the paired differences A - B per organ and for the per-scan organ
  mean, averaged over the chosen seeds of each side, with each scan's fold.
* :func:`compare_tables` -- every row tested twice: at the fold level
  (:func:`crapnet_core.engine.inference.fold_level_test`, the primary analysis) and per scan
  (:func:`crapnet_core.engine.stats.paired_test`, BCa bootstrap and Wilcoxon: the secondary
  column, which treats the scans of a fold as independent).

Seeds: the per-scan Dice of a side is its mean over that side's seeds before the difference is
taken (the convention of :func:`crapnet_core.engine.stats.aggregate_seeds`); why this carries the
training noise into the fold-level variance is in :mod:`crapnet_core.engine.inference`. By default
a comparison uses the complete seeds both tables have (:func:`complete_seeds`; a three-seed table
against a one-seed table: seed 0 of both, so that both sides carry the same training noise; a seed
still in training is left out).

Units: Dice fractions 0..1 in every dict here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..facts import ORGANS as ORGAN_ORDER
from ..io import read_json
from .inference import N_RESAMPLES, fold_level_test
from .stats import paired_test

_SEED_DIR = re.compile(r"seed(\d+)")


def _read(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _seed_of(path: Path, summary: Mapping[str, Any]) -> int:
    """The training seed of a one-seed summary: its ``seed<k>`` folder, a ``train.seed=`` override, else 0."""
    m = _SEED_DIR.fullmatch(path.parent.name)
    if m:
        return int(m.group(1))
    for o in summary.get("overrides") or []:
        if str(o).startswith("train.seed="):
            return int(str(o).split("=", 1)[1])
    return 0


def _from_summary(path: Path, summary: Mapping[str, Any]) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per-scan Dice and fold of each scan from a one-seed summary's per-fold entries."""
    scans: dict[str, dict[str, float]] = {}
    fold_of: dict[str, int] = {}
    for f, entry in (summary.get("per_fold") or {}).items():
        per_scan = entry.get("per_scan")
        if not per_scan:
            raise ValueError(
                f"{path}: fold {f} has no per-scan Dice (a summary written before per_scan was "
                "stored; rerun its cross-validation into the same --out to rewrite it)"
            )
        for organ, values in per_scan.items():
            for sid, v in values.items():
                if v is None:
                    continue
                scans.setdefault(organ, {})[str(sid)] = float(v)
                fold_of[str(sid)] = int(f)
    return scans, fold_of


def _from_runs(folder: Path) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per-scan Dice and folds from the per-run layout: ``folder/<run_name>/metrics.json``."""
    from .stats import per_scan_from_metrics

    scans: dict[str, dict[str, float]] = {}
    fold_of: dict[str, int] = {}
    for path in sorted(folder.glob("*/metrics.json")):
        m = _read(path)
        if "fold" not in m:
            raise ValueError(f"{path}: no 'fold' (not a crapnet evaluate metrics.json)")
        for organ, values in per_scan_from_metrics(m).items():
            for sid, v in values.items():
                if sid in scans.get(organ, {}):  # two runs of one seed scoring the same organ and scan
                    raise ValueError(
                        f"{path}: {organ} of scan {sid} is also scored by another run of {folder}; "
                        "one run per fold and test group is expected"
                    )
                scans.setdefault(organ, {})[sid] = v
                fold_of[sid] = int(m["fold"])
    return scans, fold_of


def load_table(source: str | Path) -> dict[str, Any]:
    """The per-scan Dice of every training seed of a result table, with each scan's fold.

    source: ``results/<table>`` (seed folders as in the module docstring), a ``crapnet
    cross-validate --out`` folder, or a ``summary.json``. Returns {"path", "name", "dataset",
    "setting", "method", "variant", "profile", "seeds": {seed: {organ: {scan: Dice}}},
    "fold_of": {scan: fold}}. Raises FileNotFoundError when nothing is there, ValueError when a
    file lacks per-scan values or two seeds put a scan in different folds (naming the file).
    """
    path = Path(source)
    if path.is_file():
        summary_file, folder = path, path.parent
    elif path.is_dir():
        summary_file, folder = path / "summary.json", path
    else:
        raise FileNotFoundError(f"{source}: no such result folder or summary.json")
    seed_dirs = sorted(
        (p for p in folder.glob("seed*") if p.is_dir() and _SEED_DIR.fullmatch(p.name)), key=lambda p: int(p.name[4:])
    )
    seeds: dict[int, dict[str, dict[str, float]]] = {}
    fold_of: dict[str, int] = {}
    meta: dict[str, Any] = {}
    sources: list[tuple[Path, dict, dict]] = []
    if seed_dirs:
        for sd in seed_dirs:
            k = int(sd.name[4:])
            run_metrics = sorted(sd.glob("*/metrics.json"))
            if run_metrics:  # the per-run layout: each fold's own record (migrated lite tables too)
                scans, folds = _from_runs(sd)
                meta = meta or _read(run_metrics[0])
            elif (sd / "summary.json").is_file():  # a seed committed as its summary only
                s = _read(sd / "summary.json")
                meta = meta or s
                scans, folds = _from_summary(sd / "summary.json", s)
            else:
                continue
            if not scans:
                continue
            seeds[k] = scans
            sources.append((sd, folds, scans))
    if not seeds:
        if not summary_file.is_file():
            raise FileNotFoundError(f"{source}: no seed<k>/ folder with results and no summary.json")
        s = _read(summary_file)
        if s.get("seeds"):
            raise ValueError(
                f"{summary_file}: a seed aggregate without its seed<k>/summary.json folders next to "
                "it; pass the folder that holds them"
            )
        meta = s
        scans, folds = _from_summary(summary_file, s)
        seeds[_seed_of(summary_file, s)] = scans
        sources.append((summary_file, folds, scans))
    for where, folds, _ in sources:
        for sid, f in folds.items():
            if fold_of.setdefault(sid, f) != f:
                raise ValueError(f"{where}: scan {sid} is in fold {f} here and in fold {fold_of[sid]} in another seed")
    return {
        "path": str(path),
        "name": folder.name if path.is_dir() else summary_file.parent.name,
        "dataset": meta.get("dataset"),
        "setting": meta.get("setting"),
        "method": meta.get("method"),
        "variant": meta.get("variant"),
        "profile": meta.get("profile"),
        "seeds": seeds,
        "fold_of": fold_of,
    }


def _seed_mean(table: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, dict[str, float]]:
    """{organ: {scan: mean Dice over ``seeds``}} (scans scored in every one of them)."""
    missing = [s for s in seeds if s not in table["seeds"]]
    if missing:
        raise ValueError(
            f"{table['path']}: no seed {', '.join(map(str, missing))} "
            f"(it has {', '.join(map(str, sorted(table['seeds'])))})"
        )
    out: dict[str, dict[str, float]] = {}
    organs = set.intersection(*(set(table["seeds"][s]) for s in seeds))
    for organ in organs:
        common = set.intersection(*(set(table["seeds"][s][organ]) for s in seeds))
        out[organ] = {sid: float(np.mean([table["seeds"][s][organ][sid] for s in seeds])) for sid in common}
    return out


#: the end of the error of two tables that share no scored (organ, scan) yet (the report names it)
NO_COMMON_PAIR = "no (organ, scan) pair in common"


def paired_rows(
    a: Mapping[str, Any], b: Mapping[str, Any], seeds_a: Sequence[int], seeds_b: Sequence[int]
) -> list[dict[str, Any]]:
    """Paired per-scan values of two tables: one row per organ, then the per-scan organ mean.

    a, b: :func:`load_table` dicts; seeds_a/seeds_b: the seeds averaged on each side. Returns
    [{"organ", "scans", "folds", "a", "b"}] (lists aligned by scan; ``mean``: per scan, the mean
    over the organs both sides scored). Raises ValueError when no scan is common or a scan's fold
    differs between the tables.
    """
    va, vb = _seed_mean(a, seeds_a), _seed_mean(b, seeds_b)
    organs = [o for o in ORGAN_ORDER if o in va and o in vb] + sorted((set(va) & set(vb)) - set(ORGAN_ORDER))
    rows, per_scan = [], {}
    for organ in organs:
        common = sorted(set(va[organ]) & set(vb[organ]), key=lambda s: (len(s), s))
        if not common:  # both score the organ, on different folds so far (tables still in training)
            continue
        for sid in common:
            fa, fb = a["fold_of"].get(sid), b["fold_of"].get(sid)
            if fa != fb:
                raise ValueError(
                    f"{a['path']} and {b['path']}: scan {sid} is in fold {fa} and fold {fb}; "
                    "a paired comparison needs the same folds"
                )
            per_scan.setdefault(sid, []).append((va[organ][sid], vb[organ][sid]))
        rows.append(
            {
                "organ": organ,
                "scans": common,
                "folds": [a["fold_of"][s] for s in common],
                "a": [va[organ][s] for s in common],
                "b": [vb[organ][s] for s in common],
            }
        )
    if not per_scan:
        raise ValueError(f"{a['path']} and {b['path']}: {NO_COMMON_PAIR}")
    scans = sorted(per_scan, key=lambda s: (len(s), s))
    rows.append(
        {
            "organ": "mean",
            "scans": scans,
            "folds": [a["fold_of"][s] for s in scans],
            "a": [float(np.mean([x for x, _ in per_scan[s]])) for s in scans],
            "b": [float(np.mean([y for _, y in per_scan[s]])) for s in scans],
        }
    )
    return rows


def _label(table: Mapping[str, Any], seeds: Sequence[int]) -> str:
    from ..facts import METHOD_LABELS

    method = table.get("method")
    name = METHOD_LABELS.get(method, method or "?")
    variant = table.get("variant")
    if variant and variant != method:
        name += f" variant {variant}"
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
    return (
        f"{name} ({table.get('dataset')}, setting {table.get('setting')}, {table.get('profile')}, "
        f"{seed_text}; {table['name']})"
    )


def complete_seeds(table: Mapping[str, Any], folds: Iterable[int] | None = None) -> tuple[list[int], dict[int, str]]:
    """The seeds of a :func:`load_table` dict that scored every (organ, scan) any of its seeds scored (and,
    with ``folds``, have scans in each of these folds), and {seed: why} for the others (a seed still being
    trained covers only some folds, or one of a fold's two test groups).

    A partial seed must not enter a mean over seeds: its folds would be averaged over more seeds than
    the others', and a seed's mean over its own folds mixes the fold-to-fold spread (several Dice
    points) into the seed-to-seed spread. ``folds`` guards the case where every seed lacks the same fold."""
    seeds = table["seeds"]
    fold_of = table["fold_of"]
    every = {(o, s) for per in seeds.values() for o, scans in per.items() for s in scans}
    need = sorted(set(folds) if folds is not None else {fold_of[s] for _, s in every})
    complete, partial = [], {}
    for k in sorted(seeds):
        have = {(o, s) for o, scans in seeds[k].items() for s in scans}
        whole = [
            f
            for f in need
            if {x for x in every if fold_of[x[1]] == f} <= have and any(fold_of[s] == f for _, s in have)
        ]
        if have == every and len(whole) == len(need):
            complete.append(k)
            continue
        some = sorted({fold_of[s] for _, s in have} - set(whole))
        why = f"fold{'s' if len(whole) != 1 else ''} {', '.join(map(str, whole)) or 'none'} of {', '.join(map(str, need))} scored"
        if some:
            why += f" (fold{'s' if len(some) != 1 else ''} {', '.join(map(str, some))} in part)"
        partial[k] = why
    return complete, partial


def _default_seeds(table: Mapping[str, Any]) -> list[int]:
    """The complete seeds of ``table``; when none is complete, the seed that scored the most."""
    complete, _ = complete_seeds(table)
    if complete:
        return complete
    return [max(sorted(table["seeds"]), key=lambda k: sum(len(v) for v in table["seeds"][k].values()))]


def compare_tables(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    seeds_a: Sequence[int] | None = None,
    seeds_b: Sequence[int] | None = None,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    per_scan_resamples: int = 9999,
) -> dict[str, Any]:
    """Fold-level and per-scan tests of A - B for every organ and the per-scan organ mean.

    a, b: :func:`load_table` dicts (same dataset and setting, else ValueError). seeds_a/seeds_b:
    None = the complete seeds (:func:`complete_seeds`) both tables have (when they share none: every
    complete seed of each side; a seed still in training is left out). Returns {"a", "b"
    (label, table, path, seeds), "dataset", "setting", "confidence", "rows": [{"organ", "n",
    "n_folds", "mean_a", "mean_b", "mean_diff", fold-level keys of
    :func:`crapnet_core.engine.inference.fold_level_test` ("ci_low", "ci_high", "p", "p_source",
    "se", "df", "mc_error", "n_resamples", "icc", "design_effect", "excludes_zero"), "lmm" (its
    mixed-model dict), and the per-scan test: "scan_ci_low", "scan_ci_high", "p_wilcoxon"}]}.
    """
    for key in ("dataset", "setting"):
        if a.get(key) != b.get(key):
            raise ValueError(
                f"{a['path']} and {b['path']}: different {key} ({a.get(key)} vs {b.get(key)}); "
                "a paired comparison needs the same scans"
            )
    if seeds_a is None or seeds_b is None:
        full_a, full_b = _default_seeds(a), _default_seeds(b)
        common = sorted(set(full_a) & set(full_b))
        seeds_a = (common or full_a) if seeds_a is None else seeds_a
        seeds_b = (common or full_b) if seeds_b is None else seeds_b
    seeds_a, seeds_b = sorted(int(s) for s in seeds_a), sorted(int(s) for s in seeds_b)
    rows = []
    for r in paired_rows(a, b, seeds_a, seeds_b):
        d = np.asarray(r["a"]) - np.asarray(r["b"])
        fl = fold_level_test(d, r["folds"], confidence, n_resamples, seed)
        ps = paired_test(d, confidence, per_scan_resamples, seed)
        row = {
            "organ": r["organ"],
            "n": fl["n"],
            "n_folds": fl["n_folds"],
            "mean_a": float(np.mean(r["a"])),
            "mean_b": float(np.mean(r["b"])),
            "mean_diff": fl["mean_diff"],
        }
        row.update(
            {
                k: fl[k]
                for k in (
                    "ci_low",
                    "ci_high",
                    "excludes_zero",
                    "p",
                    "p_source",
                    "p_boot",
                    "se",
                    "df",
                    "mc_error",
                    "n_resamples",
                    "icc",
                    "design_effect",
                    "tau2",
                    "sigma2",
                )
            }
        )
        row["lmm"] = fl["mixed_model"]
        row.update(scan_ci_low=ps["ci_low"], scan_ci_high=ps["ci_high"], p_wilcoxon=ps["p_wilcoxon"])
        rows.append(row)
    return {
        "a": {
            "label": _label(a, seeds_a),
            "table": a["name"],
            "path": a["path"],
            "seeds": seeds_a,
            "method": a.get("method"),
        },
        "b": {
            "label": _label(b, seeds_b),
            "table": b["name"],
            "path": b["path"],
            "seeds": seeds_b,
            "method": b.get("method"),
        },
        "dataset": a.get("dataset"),
        "setting": a.get("setting"),
        "profile": a.get("profile"),
        "confidence": confidence,
        "seed": seed,
        "rows": rows,
    }


def mean_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The per-scan organ-mean row of a :func:`compare_tables` result."""
    return next(r for r in result["rows"] if r["organ"] == "mean")


__all__ = ["load_table", "paired_rows", "complete_seeds", "compare_tables", "mean_row"]
