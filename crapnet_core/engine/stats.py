"""Statistics the reader can trust: spreads over folds and seeds, paired per-scan comparisons.

* :func:`fold_spread` -- mean and standard deviation over folds of a cross-validation summary
  (``summary.json`` of ``crapnet cross-validate``), for every organ and the organ mean.
* :func:`aggregate_seeds` -- combine the summaries of one experiment run with several seeds
  (``crapnet cross-validate --seeds 0,1,2``): per-scan Dice averaged over the seeds, the
  spread over seeds and over folds.
* :func:`per_scan_dice` -- the per-scan Dice of a summary (stored in it since the summary
  format gained ``per_scan``; older summaries fall back to the ``metrics.json`` of the run
  folders they name, next to the summary).
* :func:`paired_comparison` -- paired per-scan differences between two methods: mean
  difference, bootstrap 95 % confidence interval of the mean difference
  (``scipy.stats.bootstrap``, BCa) and the Wilcoxon signed-rank p-value
  (``scipy.stats.wilcoxon``, two-sided), per organ and for the per-scan mean over organs.
  This is the *secondary*, per-scan analysis: it treats the scans of a fold, which share one
  trained model, as independent. What the pages call resolved is decided at the fold level
  (:mod:`crapnet_core.engine.inference`, :mod:`crapnet_core.engine.decision`); the per-scan
  ``resolved`` flag (CI excludes 0 on at least ``MIN_RESOLVE_N`` = 10 paired values) is kept
  for this column only.

Units: Dice as a fraction 0..1 in every dict returned here; the Markdown tables show 0-100.

Statistical unit: a (scan, organ) pair per organ row; for the ``mean`` row, one value per scan
(the mean over the organs that both methods scored on that scan), so that the rows of one scan
are not counted as independent observations. Scans are paired by scan id; with several seeds,
a scan's value is its mean over the seeds (seed noise averaged before pairing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..facts import ORGAN_SHORT as _ORGAN_SHORT
from ..facts import ORGANS as ORGAN_ORDER  # the paper's column order
from ..io import read_json

#: Fewest paired values for a difference to count as resolved (see the module docstring).
MIN_RESOLVE_N = 10
ORGAN_SHORT = {**_ORGAN_SHORT, "mean": "Mean"}


def _clean(values: Sequence[Any]) -> np.ndarray:
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def mean_std(values: Sequence[Any]) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation (ddof=1), n) of the finite values; None where undefined.

    The standard deviation over folds or seeds uses ddof=1 (the spread of the population the
    folds sample); with one value it is undefined (None).
    """
    arr = _clean(values)
    if arr.size == 0:
        return None, None, 0
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None), int(arr.size)


def format_pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    """``"40.01 ± 4.30"`` (Dice fractions shown 0-100 by default); ``"–"`` when the mean is missing."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean * scale:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std * scale:.{digits}f}"
    return text


# ---------------------------------------------------------------------- spreads over folds
def fold_spread(summary: Mapping[str, Any], metric: str = "dice") -> dict[str, dict[str, Any]]:
    """Mean ± standard deviation over folds of ``metric`` (dice, hd95, asd) of a summary.

    Computed from ``summary["per_fold"][fold][metric]`` (so it also works on summaries written
    before the std was stored): {organ or "mean": {"mean", "std", "n"}}; the ``mean`` entry is
    the spread of the per-fold organ means. Raises ValueError when the summary has no per-fold
    table.
    """
    per_fold = summary.get("per_fold")
    if not isinstance(per_fold, Mapping) or not per_fold:
        raise ValueError(f"{summary.get('_path', 'summary')}: no per_fold table (not a cross-validate summary)")
    organs = list(
        summary.get("organs") or [o for o in ORGAN_ORDER if any(o in e.get(metric, {}) for e in per_fold.values())]
    )
    out: dict[str, dict[str, Any]] = {}
    for key in [*organs, "mean"]:
        m, s, n = mean_std([e.get(metric, {}).get(key) for e in per_fold.values()])
        out[key] = {"mean": m, "std": s, "n": n}
    return out


# ---------------------------------------------------------------------- per-scan values
def summary_path(source: str | Path) -> Path:
    """``source`` itself when it is a file, else ``source/summary.json``; FileNotFoundError otherwise."""
    path = Path(source)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no summary.json (pass a cross-validate folder or its summary.json)")
    return path


def load_summary(source: str | Path) -> dict[str, Any]:
    """The summary dict of a cross-validate folder / summary.json (``_path`` added)."""
    path = summary_path(source)
    data = read_json(path)
    if not isinstance(data, dict) or "per_fold" not in data:
        raise ValueError(f"{path}: not a crapnet cross-validate summary (no per_fold table)")
    data["_path"] = str(path)
    return data


def per_scan_from_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{organ: {scan_id: Dice}} of one ``metrics.json`` (scans where the organ is absent left out)."""
    out: dict[str, dict[str, float]] = {}
    for organ, scans in (metrics.get("per_scan") or {}).items():
        for sid, row in scans.items():
            if row.get("absent") or row.get("dice") is None:
                continue
            out.setdefault(organ, {})[str(sid)] = float(row["dice"])
    return out


def per_scan_dice(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{organ: {scan_id: Dice}} of a summary (over all its folds; over seeds: the seed mean).

    Uses ``summary["per_scan"]`` when present (written by :func:`crapnet_core.engine.runs.summarize_runs`
    and :func:`aggregate_seeds`), else the ``metrics.json`` of the run folders that
    ``per_fold[*]["runs"]`` names, looked up next to the summary file. Raises ValueError when
    neither is available (e.g. a committed summary whose run folders are not on this machine).
    """
    if summary.get("per_scan"):
        return {
            o: {str(k): float(v) for k, v in scans.items() if v is not None} for o, scans in summary["per_scan"].items()
        }
    from .evaluation import read_metrics

    where = summary.get("_path")
    base = Path(where).parent if where else None
    if base is not None and summary.get("runs_root"):  # runs kept elsewhere (cross_validate_seeds)
        base = base / summary["runs_root"]
    out: dict[str, dict[str, float]] = {}
    missing: list[str] = []
    for entry in summary.get("per_fold", {}).values():
        for name in entry.get("runs", []):
            try:
                if base is None:
                    raise FileNotFoundError(name)
                metrics = read_metrics(base / name)
            except FileNotFoundError:
                missing.append(name)
                continue
            for organ, scans in per_scan_from_metrics(metrics).items():
                out.setdefault(organ, {}).update(scans)
    if missing or not out:
        raise ValueError(
            f"{where or 'summary'}: no per-scan Dice (the summary predates per_scan and the run folders "
            f"{', '.join(missing[:3]) or '(none named)'}{' ...' if len(missing) > 3 else ''} are not next to it); "
            "rerun `crapnet cross-validate` into the same --out (finished runs are reused) to rewrite the summary"
        )
    return out


# ---------------------------------------------------------------------- seeds
def aggregate_seeds(summaries: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Combine the cross-validation summaries of one experiment run with several seeds.

    summaries: {seed: summary dict} (each from :func:`crapnet_core.engine.runs.summarize_runs`, same
    dataset/setting/method/folds). Returns a summary with the same keys (so tables and
    :func:`crapnet_core.engine.runs.summary_markdown` read it) where ``per_fold[f].dice`` and
    ``per_scan`` are means over the seeds, plus:

    - ``seeds``: the seeds; ``per_seed``: {seed: {organ/mean: Dice mean over folds}};
    - ``mean.dice_std_over_seeds``: std (ddof=1) over seeds of the 5-fold mean Dice;
    - ``mean.dice_std_over_folds``: std over folds of the seed-averaged per-fold Dice;
    - ``per_scan_seeds``: {organ: {scan: [Dice per seed, in ``seeds`` order]}}.
    """
    if not summaries:
        raise ValueError("aggregate_seeds: no summaries")
    seeds = sorted(int(s) for s in summaries)
    first = summaries[seeds[0]] if seeds[0] in summaries else next(iter(summaries.values()))
    by_seed = {int(k): v for k, v in summaries.items()}
    for key in ("dataset", "setting", "method", "profile"):
        values = {str(s.get(key)) for s in by_seed.values()}
        if len(values) > 1:
            raise ValueError(f"aggregate_seeds: the summaries differ in {key}: {sorted(values)}")
    folds = sorted({int(f) for s in by_seed.values() for f in s["folds"]})
    for seed, s in by_seed.items():
        if sorted(int(f) for f in s["folds"]) != folds:
            raise ValueError(f"aggregate_seeds: seed {seed} has folds {s['folds']}, others {folds}")
    organs = list(first["organs"])
    metrics = ["dice", "hd95", "asd"] + (
        ["dice_lcc"] if all("dice_lcc" in e for s in by_seed.values() for e in s["per_fold"].values()) else []
    )
    per_fold: dict[str, Any] = {}
    for f in folds:
        entry: dict[str, Any] = {m: {} for m in metrics}
        entry["runs"] = []
        for metric in metrics:
            for key in [*organs, "mean"]:
                m, _, _ = mean_std([by_seed[s]["per_fold"][str(f)][metric].get(key) for s in seeds])
                entry[metric][key] = m
        for s in seeds:
            entry["runs"] += list(by_seed[s]["per_fold"][str(f)].get("runs", []))
        per_fold[str(f)] = entry
    scans_seeds: dict[str, dict[str, list[float | None]]] = {}
    per_seed_scans = {s: per_scan_dice(by_seed[s]) for s in seeds}
    for i, s in enumerate(seeds):
        for organ, scans in per_seed_scans[s].items():
            for sid, v in scans.items():
                scans_seeds.setdefault(organ, {}).setdefault(sid, [None] * len(seeds))[i] = v
    per_scan = {o: {sid: mean_std(vals)[0] for sid, vals in scans.items()} for o, scans in scans_seeds.items()}
    per_seed = {str(s): {k: by_seed[s]["mean"]["dice"].get(k) for k in [*organs, "mean"]} for s in seeds}
    mean: dict[str, dict[str, Any]] = {
        "dice": {},
        "dice_std_over_folds": {},
        "dice_std_over_seeds": {},
        "hd95": {},
        "asd": {},
    }
    for key in [*organs, "mean"]:
        mean["dice"][key], mean["dice_std_over_seeds"][key], _ = mean_std([per_seed[str(s)][key] for s in seeds])
        mean["dice_std_over_folds"][key] = mean_std([per_fold[str(f)]["dice"][key] for f in folds])[1]
        for metric in ("hd95", "asd"):
            mean[metric][key] = mean_std([by_seed[s]["mean"][metric].get(key) for s in seeds])[0]
        if "dice_lcc" in metrics:  # beyond the paper: the seed mean of the per-fold LCC Dice
            mean.setdefault("dice_lcc", {})[key] = mean_std([per_fold[str(f)]["dice_lcc"][key] for f in folds])[0]
    return {
        "dataset": first["dataset"],
        "setting": first["setting"],
        "method": first["method"],
        "profile": first["profile"],
        "organs": organs,
        "folds": folds,
        "seeds": seeds,
        "per_fold": per_fold,
        "per_seed": per_seed,
        "per_scan": per_scan,
        "per_scan_seeds": scans_seeds,
        "mean": mean,
        "paper_dice": first.get("paper_dice"),
        "train_seconds_total": round(sum(float(s.get("train_seconds_total", 0.0)) for s in by_seed.values()), 1),
        "eval_seconds_total": round(sum(float(s.get("eval_seconds_total", 0.0)) for s in by_seed.values()), 1),
        "units": first.get("units"),
    }


# ---------------------------------------------------------------------- paired comparison
def paired_test(
    diff: Sequence[float], confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0, min_n: int = MIN_RESOLVE_N
) -> dict[str, Any]:
    """Mean of paired differences, its bootstrap CI and the Wilcoxon signed-rank p-value.

    diff: per-unit differences A - B (finite). Returns {"n", "mean_diff", "ci_low", "ci_high",
    "p_wilcoxon", "resolved"}: CI from ``scipy.stats.bootstrap`` (BCa, ``n_resamples``,
    seeded; percentile method when BCa is undefined), p two-sided from ``scipy.stats.wilcoxon``
    (exact distribution for small n without ties, normal approximation otherwise). With n < 2
    the CI and p are None; identical differences give a zero-width CI at that value; all
    differences zero give p = 1. ``resolved`` = the CI excludes 0 and n >= ``min_n``.
    """
    from scipy import stats

    d = _clean(diff)
    n = int(d.size)
    out: dict[str, Any] = {
        "n": n,
        "mean_diff": float(d.mean()) if n else None,
        "ci_low": None,
        "ci_high": None,
        "p_wilcoxon": None,
        "resolved": False,
    }
    if n < 2:
        return out
    if np.ptp(d) == 0:
        lo = hi = float(d[0])
    else:
        rng = np.random.default_rng(seed)
        res = stats.bootstrap(
            (d,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="BCa", random_state=rng
        )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            res = stats.bootstrap(
                (d,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method="percentile",
                random_state=np.random.default_rng(seed),
            )
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    out["ci_low"], out["ci_high"] = lo, hi
    if np.all(d == 0):
        out["p_wilcoxon"] = 1.0
    else:
        out["p_wilcoxon"] = float(stats.wilcoxon(d, alternative="two-sided").pvalue)
    out["resolved"] = bool((lo > 0 or hi < 0) and n >= min_n)
    return out


def paired_comparison(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    organs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Paired per-scan comparison of two methods' Dice: A - B per organ and for the scan mean.

    a, b: {organ: {scan_id: Dice 0..1}} (:func:`per_scan_dice`). Only scans scored by both
    are paired. Returns {"rows": [{"organ", "n", "mean_a", "mean_b", "mean_diff", "ci_low",
    "ci_high", "p_wilcoxon", "resolved"}, ...], "confidence", "n_resamples", "seed"}, one row
    per organ and a final ``mean`` row (per scan: mean over the organs both scored).
    Raises ValueError when no scan is common to both.
    """
    organs = (
        list(organs)
        if organs is not None
        else [o for o in ORGAN_ORDER if o in a and o in b] + sorted((set(a) & set(b)) - set(ORGAN_ORDER))
    )
    rows = []
    per_scan_pairs: dict[str, list[tuple[float, float]]] = {}
    for organ in organs:
        common = sorted(set(a.get(organ, {})) & set(b.get(organ, {})))
        va = np.array([a[organ][s] for s in common], dtype=float)
        vb = np.array([b[organ][s] for s in common], dtype=float)
        for s, x, y in zip(common, va, vb):
            per_scan_pairs.setdefault(s, []).append((x, y))
        row = {
            "organ": organ,
            "mean_a": float(va.mean()) if va.size else None,
            "mean_b": float(vb.mean()) if vb.size else None,
        }
        row.update(paired_test(va - vb, confidence, n_resamples, seed))
        rows.append(row)
    if not per_scan_pairs:
        raise ValueError("paired_comparison: the two results share no (organ, scan) pair")
    scans = sorted(per_scan_pairs)
    ma = np.array([np.mean([x for x, _ in per_scan_pairs[s]]) for s in scans])
    mb = np.array([np.mean([y for _, y in per_scan_pairs[s]]) for s in scans])
    row = {"organ": "mean", "mean_a": float(ma.mean()), "mean_b": float(mb.mean())}
    row.update(paired_test(ma - mb, confidence, n_resamples, seed))
    rows.append(row)
    return {"rows": rows, "confidence": confidence, "n_resamples": n_resamples, "seed": seed}


__all__ = [
    "MIN_RESOLVE_N",
    "ORGAN_SHORT",
    "mean_std",
    "format_pm",
    "fold_spread",
    "load_summary",
    "summary_path",
    "per_scan_from_metrics",
    "per_scan_dice",
    "aggregate_seeds",
    "paired_test",
    "paired_comparison",
]
