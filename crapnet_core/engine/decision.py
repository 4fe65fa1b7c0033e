"""The decision rule, declared before the comparisons are computed: families, correction, seed band.

Everything a page calls *resolved*, *weak* or *not resolved* is decided here, from data
declared in this module (the rule and the families were fixed in code before the fold-level
comparisons of the committed results were first computed; issue 19).

**The rule** (for the per-scan organ-mean row of each declared comparison):

1. Fold-level 95 % interval of the mean paired difference (hierarchical bootstrap,
   :func:`crapnet_core.engine.inference.fold_level_test`): does it exclude 0?
2. Fold-level p-value (the mixed model's Wald test with F - 1 degrees of freedom), corrected
   for multiplicity **within the comparison's family** by Holm's step-down method: is it below
   :data:`ALPHA` = 0.05?
3. *resolved* when both hold; *weak* when exactly one holds; *not resolved* when neither.
4. A **one-seed** comparison (either side trained with a single seed) is never *resolved* when
   its mean difference lies inside the **seed band** of its dataset and profile (or when no band
   was measured for them): it is then at most *weak*.

Why Holm and not Benjamini-Hochberg: "resolved" says of *each* difference that it is real, and
a reader reads every resolved row as such a claim; Holm controls the family-wise error rate
(the chance of one or more false "resolved" in a family) at 5 %, under any dependence between
the tests (Holm 1979, *Scand. J. Statist.* 6:65). Benjamini-Hochberg controls the expected
share of false discoveries, a screening guarantee that lets some resolved rows be false.
A family's correction counts every declared comparison, run or not (one not run yet counts
with p = 1), so a family's threshold does not loosen while its tables are missing.

Why the mixed model's p and the bootstrap's interval: two estimates of the same fold-level
uncertainty made differently (a REML model fit; resampling folds and scans), so that a call
does not rest on one method's assumptions; the p-value is deterministic (no Monte-Carlo draw),
the interval's Monte-Carlo error is kept below a quarter of its distance from 0
(:mod:`crapnet_core.engine.inference`). With a balanced design the two agree up to Monte-Carlo
error before correction, so *weak* mostly marks a difference that does not survive the
multiplicity correction, or a one-seed difference inside the seed band.

**Seed band** (:func:`seed_band`): the tables trained with several seeds (:data:`SEED_BAND_TABLES`)
give, for each method, the 5-fold mean Dice of each seed. Their variance over seeds, pooled over
the methods of a dataset and profile (``s^2`` with ``sum(K - 1)`` degrees of freedom), gives the
spread of a one-seed 5-fold mean; the difference of two one-seed means of *equal* methods then has
standard deviation ``sqrt(2) s``, and the band is its 95 % range, ``t(0.975, df) sqrt(2) s``
(Student's t for the estimated s). The band assumes that the other methods' seed noise is like
the measured ones' and applies to both settings of the dataset.

Units: Dice fractions 0..1 in every dict here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.protocol import N_FOLDS
from .comparisons import compare_tables, complete_seeds, load_table, mean_row, paired_rows

#: Significance level of the corrected fold-level test; the interval is at 1 - ALPHA.
ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
#: Multiplicity correction within a family (see the module docstring).
CORRECTION = "Holm"
#: Calls, strongest first.
CALLS = ("resolved", "weak", "not resolved")


@dataclass(frozen=True)
class Comparison:
    """One declared comparison A - B of two result tables (names of folders under ``results/``).

    seeds: the training seeds used on both sides (None: those both tables have).
    """

    a: str
    b: str
    seeds: tuple[int, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.a} - {self.b}" + ("" if self.seeds is None else f" (seeds {','.join(map(str, self.seeds))})")


@dataclass(frozen=True)
class Family:
    """A family of comparisons corrected together (Holm); ``question``: what the family asks."""

    key: str
    title: str
    question: str
    comparisons: tuple[Comparison, ...] = field(default_factory=tuple)


def table_name(dataset: str, setting: int, method: str, profile: str = "lite") -> str:
    """``results/`` folder of a declared table, e.g. ``chaos_setting1_crapnet_lite``."""
    return f"{dataset}_setting{setting}_{method}_{profile}"


def _c(dataset: str, setting: int, a: str, b: str, profile: str = "lite", seeds: tuple[int, ...] | None = None):
    return Comparison(table_name(dataset, setting, a, profile), table_name(dataset, setting, b, profile), seeds)


_DATASETS = ("chaos", "sabs")
_MAIN = (("crapnet", "alpnet"), ("crapnet", "panet"), ("alpnet", "panet"))
#: Registry methods compared with CRAPNet (issue 10), in the order of the paper's Tables 1-2.
OTHER_METHODS = ("alpnet_init", "alpnet_sup", "rpnet", "adnet", "qnet")

#: The declared families (issue 19 §3), in the order the pages show them.
FAMILIES: tuple[Family, ...] = (
    Family(
        "main",
        "Main comparison (setting 1, `lite`, three seeds)",
        "Do CRAPNet, SSL-ALPNet and SSL-PANet differ at the `lite` budget?",
        tuple(_c(ds, 1, a, b) for ds in _DATASETS for a, b in _MAIN),
    ),
    Family(
        "setting2",
        "Setting 2 (`lite`, one seed)",
        "Do the three methods differ when the test organs are removed from training?",
        tuple(_c(ds, 2, a, b) for ds in _DATASETS for a, b in _MAIN),
    ),
    Family(
        "decomposition",
        "Component decomposition (CHAOS setting 1, `lite`, seed 0)",
        "Which half of CRAPNet, the attention or the CARAFE++ prototypes, moves the Dice?",
        (
            _c("chaos", 1, "alpnet-attention", "alpnet", seeds=(0,)),
            _c("chaos", 1, "alpnet-carafe", "alpnet", seeds=(0,)),
            _c("chaos", 1, "crapnet", "alpnet-carafe", seeds=(0,)),
            _c("chaos", 1, "crapnet-aligned", "crapnet", seeds=(0,)),
            _c("chaos", 1, "crapnet", "alpnet", seeds=(0,)),
        ),
    ),
    Family(
        "ablations",
        "Ablations, Tables 3-4 (CHAOS setting 1, `lite`, seed 0)",
        "Does the number of attention blocks, or a second branch, change the Dice?",
        tuple(
            _c("chaos", 1, f"crapnet-{v}", "crapnet", seeds=(0,))
            for v in ("blocks1", "blocks7", "blocks9", "blocks12", "blocks15", "onebranch")
        ),
    ),
    Family(
        "methods",
        "Other methods against CRAPNet (`lite`, seed 0)",
        "Where do the paper's other rows and the later methods stand against CRAPNet?",
        tuple(_c(ds, st, m, "crapnet") for st in (1, 2) for m in OTHER_METHODS for ds in _DATASETS),
    ),
    Family(
        "temperature",
        "Learned temperatures, a variant beyond the paper (CHAOS setting 1, `lite`, seed 0)",
        "Does lifting Eq. 13's bound (learned temperature and affinity scale per block) change the Dice?",
        (_c("chaos", 1, "crapnet-temp", "crapnet", seeds=(0,)),),
    ),
    Family(
        "converged",
        "The converged study (issue 18)",
        "At a budget where training has converged, does CRAPNet beat SSL-ALPNet, and does "
        "self-supervision beat supervision from other organs?",
        (
            _c("chaos", 1, "crapnet", "alpnet", "converged"),
            _c("chaos", 1, "alpnet", "alpnet_sup", "converged"),
            _c("chaos", 1, "alpnet", "panet", "converged"),
            _c("sabs", 1, "crapnet", "alpnet", "converged"),
            _c("sabs", 1, "alpnet", "alpnet_sup", "converged"),
            _c("chaos", 1, "alpnet-attention", "alpnet", "converged", (0,)),
            _c("chaos", 1, "alpnet-carafe", "alpnet", "converged", (0,)),
        ),
    ),
)
FAMILY_KEYS = tuple(f.key for f in FAMILIES)

#: Tables with several training seeds whose seed-vs-seed differences give the seed band,
#: per (dataset, profile).
SEED_BAND_TABLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("chaos", "lite"): tuple(table_name("chaos", 1, m) for m in ("crapnet", "alpnet", "panet")),
    ("sabs", "lite"): tuple(table_name("sabs", 1, m) for m in ("crapnet", "alpnet", "panet")),
    ("chaos", "converged"): tuple(table_name("chaos", 1, m, "converged") for m in ("crapnet", "alpnet")),
}


def family(key: str) -> Family:
    """The declared family ``key`` (ValueError listing the keys otherwise)."""
    for f in FAMILIES:
        if f.key == key:
            return f
    raise ValueError(f"no comparison family {key!r}; declared: {', '.join(FAMILY_KEYS)}")


def holm(pvalues: Sequence[float | None], m: int | None = None) -> list[float | None]:
    """Holm-adjusted p-values (step-down; Holm 1979), in the order given.

    pvalues: None for a comparison not run (it counts in ``m`` with p = 1 and gets None back);
    m: the family size (default: ``len(pvalues)``; must not be smaller). Adjusted p_(i) =
    max over j <= i of min(1, (m - j + 1) p_(j)) for the ascending p_(1..m).
    """
    m = len(pvalues) if m is None else m
    if m < len(pvalues):
        raise ValueError(f"holm: family size {m} is smaller than the {len(pvalues)} p-values given")
    filled = [1.0 if p is None else float(p) for p in pvalues] + [1.0] * (m - len(pvalues))
    if any(not 0 <= p <= 1 for p in filled):
        raise ValueError(f"holm: p-values must lie in [0, 1], got {pvalues}")
    order = np.argsort(filled, kind="stable")
    adjusted = np.empty(len(filled))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * filled[i]))
        adjusted[i] = running
    return [None if p is None else float(adjusted[i]) for i, p in enumerate(pvalues)]


def decide(
    excludes_zero: bool,
    p_corrected: float | None,
    one_seed: bool,
    mean_diff: float | None,
    band: float | None,
    alpha: float = ALPHA,
) -> tuple[str, str]:
    """The call of the rule (module docstring) and the reason, e.g. ``("weak", "corrected p = 0.08")``."""
    test = p_corrected is not None and p_corrected < alpha
    if excludes_zero and test:
        call, reason = "resolved", "interval excludes 0 and corrected p < 0.05"
    elif excludes_zero:
        call, reason = "weak", "interval excludes 0, corrected p ≥ 0.05"
    elif test:
        call, reason = "weak", "corrected p < 0.05, interval includes 0"
    else:
        call, reason = "not resolved", "interval includes 0" + ("" if p_corrected is None else ", corrected p ≥ 0.05")
    if alpha != ALPHA:
        reason = reason.replace("0.05", f"{alpha:g}")
    if call == "resolved" and one_seed:
        if band is None:
            call, reason = "weak", "one seed and no seed band measured for this dataset and profile"
        elif mean_diff is not None and abs(mean_diff) <= band:
            call, reason = "weak", "one seed, inside the seed band"
    return call, reason


# ---------------------------------------------------------------------- seed band
def seed_band(
    results_dir: str | Path, dataset: str, profile: str = "lite", tables: Sequence[str] | None = None, seed: int = 0
) -> dict[str, Any] | None:
    """The seed band of ``dataset`` and ``profile`` from its several-seed tables, or None without any.

    tables: default :data:`SEED_BAND_TABLES`; only a table's complete seeds count (those that scored every
    scan and organ any of its seeds scored: a seed still in training is left out, and named under
    ``"left_out"``), and a table with fewer than two of them is skipped.
    Returns {"dataset", "profile", "band" (fraction), "sd_seed" (pooled standard deviation of a
    one-seed 5-fold mean), "df", "tables": {table: {"seed_means": {seed: mean}, "sd"}}, "pairs":
    [{"table", "seeds", "mean_diff", "ci_low", "ci_high", "excludes_zero", "p", "p_wilcoxon",
    "scan_ci_low", "scan_ci_high"}] (every seed against every other seed of the same table,
    same fold-level analysis), "max_abs_diff", "left_out": {table: {seed: why}}}.
    """
    from scipy import stats as sps

    names = list(tables if tables is not None else SEED_BAND_TABLES.get((dataset, profile), ()))
    root = Path(results_dir)
    per_table, pairs, ss, df = {}, [], 0.0, 0
    left_out: dict[str, dict[int, str]] = {}
    for name in names:
        if not (root / name).is_dir():
            continue
        t = load_table(root / name)
        seeds, partial = complete_seeds(t, folds=range(N_FOLDS))  # a "5-fold mean" has five folds
        if partial:
            left_out[name] = partial
        if len(seeds) < 2:
            continue
        means = {s: float(np.mean(paired_rows(t, t, [s], [s])[-1]["a"])) for s in seeds}  # the organ-mean row
        vals = np.array(list(means.values()))
        per_table[name] = {"seed_means": means, "sd": float(vals.std(ddof=1))}
        ss += float(((vals - vals.mean()) ** 2).sum())
        df += len(vals) - 1
        for i, si in enumerate(seeds):
            for sj in seeds[i + 1 :]:
                r = mean_row(compare_tables(t, t, [si], [sj], seed=seed))
                pairs.append(
                    {
                        "table": name,
                        "seeds": [si, sj],
                        "mean_diff": r["mean_diff"],
                        "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"],
                        "excludes_zero": r["excludes_zero"],
                        "p": r["p"],
                        "p_wilcoxon": r["p_wilcoxon"],
                        "scan_ci_low": r["scan_ci_low"],
                        "scan_ci_high": r["scan_ci_high"],
                    }
                )
    if df == 0:
        return None
    sd = math.sqrt(ss / df)
    band = float(sps.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(2) * sd
    return {
        "dataset": dataset,
        "profile": profile,
        "band": band,
        "sd_seed": sd,
        "df": df,
        "tables": per_table,
        "pairs": pairs,
        "max_abs_diff": max(abs(p["mean_diff"]) for p in pairs),
        "left_out": left_out,
    }


# ---------------------------------------------------------------------- families
def _has_results(folder: Path) -> bool:
    """True when ``folder`` holds any JSON file (a summary or a run's ``metrics.json``): the empty seed and
    run folders that the study workflow makes when a job starts are not a result, so such a table is
    "not run yet", not "not comparable"."""
    return folder.is_file() or (folder.is_dir() and any(p.is_file() for p in folder.rglob("*.json")))


def evaluate_family(
    fam: Family,
    results_dir: str | Path,
    bands: dict[tuple[str, str], Any] | None = None,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    n_resamples: int | None = None,
    progress=None,
) -> dict[str, Any]:
    """Every declared comparison of ``fam`` on the tables under ``results_dir``, with Holm and the calls.

    Table names are folders under ``results_dir`` (an absolute path is used as it is). bands:
    {(dataset, profile): :func:`seed_band` dict or None}, filled in place where missing.
    ``confidence``: the interval's level; the rule's alpha is ``1 - confidence``. Returns
    {"family", "title", "question", "m" (declared size), "comparisons": [{"key", "a", "b",
    "seeds", "status" ("done" / "not run yet" / "not comparable: ..."), "result"
    (:func:`crapnet_core.engine.comparisons.compare_tables` dict or None), "p_holm", "call",
    "reason", "one_seed", "band"}]}; the call is that of the organ-mean row; organ rows get
    ``p_holm`` corrected over the organs of their comparison and their own call (same rule).
    ``progress``: a callable given each comparison's key before it is computed.
    """
    from .inference import N_RESAMPLES

    root = Path(results_dir)
    bands = {} if bands is None else bands
    alpha = 1 - confidence
    entries = []
    for comp in fam.comparisons:
        entry: dict[str, Any] = {
            "key": comp.key,
            "a": comp.a,
            "b": comp.b,
            "seeds": None if comp.seeds is None else list(comp.seeds),
            "status": "done",
            "result": None,
            "p_holm": None,
            "call": None,
            "reason": None,
            "one_seed": None,
            "band": None,
        }
        missing = [n for n in (comp.a, comp.b) if not _has_results(root / n)]
        if missing:
            entry["status"], entry["missing"] = "not run yet", missing
            entries.append(entry)
            continue
        if progress is not None:
            progress(comp.key)
        try:
            a, b = load_table(root / comp.a), load_table(root / comp.b)
            seeds = list(comp.seeds) if comp.seeds is not None else None
            entry["result"] = compare_tables(a, b, seeds, seeds, confidence, n_resamples or N_RESAMPLES, seed)
        except (ValueError, FileNotFoundError) as err:
            entry["status"] = f"not comparable: {err}"
            entries.append(entry)
            continue
        res = entry["result"]
        key = (str(res["dataset"]), str(res["profile"]))
        if key not in bands:
            bands[key] = seed_band(root, *key, seed=seed)
        entry["one_seed"] = min(len(res["a"]["seeds"]), len(res["b"]["seeds"])) == 1
        entry["band"] = bands[key]["band"] if bands[key] else None
        entries.append(entry)
    adjusted = holm([mean_row(e["result"])["p"] if e["result"] else None for e in entries], len(fam.comparisons))
    for e, p in zip(entries, adjusted):
        if e["result"] is None:
            continue
        e["p_holm"] = p
        row = mean_row(e["result"])
        e["call"], e["reason"] = decide(row["excludes_zero"], p, e["one_seed"], row["mean_diff"], e["band"], alpha)
        organ_rows = [r for r in e["result"]["rows"] if r["organ"] != "mean"]
        for r, q in zip(organ_rows, holm([r["p"] for r in organ_rows])):
            r["p_holm"] = q
            r["call"], r["reason"] = decide(r["excludes_zero"], q, e["one_seed"], r["mean_diff"], e["band"], alpha)
        row["p_holm"], row["call"], row["reason"] = p, e["call"], e["reason"]
    return {
        "family": fam.key,
        "title": fam.title,
        "question": fam.question,
        "m": len(fam.comparisons),
        "confidence": confidence,
        "comparisons": entries,
    }


def all_comparisons(results_dir: str | Path, families: Sequence[Family] = FAMILIES, seed: int = 0) -> dict[str, Any]:
    """Every declared family evaluated on ``results_dir``: {"families": {key: evaluate_family dict},
    "bands": {"<dataset>/<profile>": seed_band dict or None}, "rule": the declared constants}."""
    bands: dict[tuple[str, str], Any] = {}
    out = {f.key: evaluate_family(f, results_dir, bands, seed) for f in families}
    return {
        "families": out,
        "bands": {f"{k[0]}/{k[1]}": v for k, v in sorted(bands.items())},
        "rule": {"alpha": ALPHA, "confidence": CONFIDENCE, "correction": CORRECTION},
    }


__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "CORRECTION",
    "CALLS",
    "Comparison",
    "Family",
    "FAMILIES",
    "FAMILY_KEYS",
    "SEED_BAND_TABLES",
    "OTHER_METHODS",
    "table_name",
    "family",
    "holm",
    "decide",
    "seed_band",
    "evaluate_family",
    "all_comparisons",
]
