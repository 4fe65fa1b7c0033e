"""Fold-level inference for paired comparisons: the scans of a fold share one trained model.

The unit of a comparison is a test scan (its Dice, or the mean over the organs both methods
scored on it), but the scans of one cross-validation fold are not independent: they are
segmented by the same trained model(s), from the same support scan, after training on the same
scans. A per-scan test (:func:`crapnet_core.engine.stats.paired_test`) treats them as
independent and is too sure of itself when the paired differences correlate within a fold.
This module treats the fold as the unit of replication.

Model (a one-way random-effects layout): the paired difference of scan ``s`` of fold ``f`` is

    d_fs = mu + b_f + e_fs,   b_f ~ (0, tau^2) the fold's effect, e_fs ~ (0, sigma^2) the scan's,

and the estimate is the mean over all paired scans, ``mu_hat`` (with equal fold sizes the mean
of the fold means). Its variance, tau^2 * sum(m_f^2) / N^2 + sigma^2 / N (``m_f`` scans in fold
``f``, N in all), is estimated two ways:

* :func:`hierarchical_bootstrap` (the **primary interval**): resample folds with replacement,
  then scans with replacement within each resampled fold (Davison & Hinkley 1997, *Bootstrap
  Methods and their Application*, Sec. 3.8, "strategy 2"). Resampled as they are, the two
  stages count the scan-level variance twice (the fold means already carry it), so the
  interval would be too wide when scans are nearly independent. Following Davison & Hinkley's
  adjustment, the fold means are shrunk towards ``mu_hat`` and the within-fold residuals
  inflated so that the bootstrap variance matches the moment (ANOVA) estimates of tau^2 and
  sigma^2: perfectly correlated scans then give the bootstrap of the fold means, independent
  scans the per-scan variance. The interval is ``mu_hat ± t(F-1) × SE*``, SE* the standard
  deviation of the bootstrap means and t(F-1) Student's quantile with F - 1 degrees of freedom
  (F folds). Why not the bootstrap's percentiles: with F = 5 folds a percentile (or normal)
  interval rests on 4 degrees of freedom and covers about 85 % instead of 95 %; t(F-1) critical
  values are the standard correction for few clusters (Cameron, Gelbach & Miller 2008, *Rev.
  Econ. Stat.* 90:414, Sec. IV). For a balanced design with tau^2 > 0 this interval is the
  one-sample t interval of the fold means.
* :func:`mixed_model` (the **cross-check, and the p-value of the decision rule**): a linear mixed
  model ``d ~ 1`` with fold as a random intercept, fitted by REML with statsmodels
  (``statsmodels.formula.api.mixedlm``). Its Wald statistic beta / SE(beta) is referred to
  Student's t with F - 1 degrees of freedom (not the normal: the between-fold degrees of freedom
  of the intercept in this layout, exact for a balanced design), giving the fold-level
  p-value. It is computed independently of the bootstrap's random draws.

:func:`fold_level_test` runs both on one vector of differences; the decision rule that
combines the interval, the multiplicity-corrected p-value and the seed band is
:mod:`crapnet_core.engine.decision`.

Monte-Carlo error: the bootstrap SE comes from a finite number of resamples.
:func:`fold_level_test` reports the Monte-Carlo standard error of the interval's end points and
draws more resamples (× 4, up to ``max_resamples``) while the end point nearest 0 lies within
four Monte-Carlo errors of 0, so that no call depends on the bootstrap's seed (tested on a
constructed near-boundary case).

Seeds: a method trained with several seeds gives each scan one Dice per seed; the caller
averages them per scan before the paired difference (:mod:`crapnet_core.engine.comparisons`).
Training randomness acts on whole models, i.e. per (fold, seed): averaged over K seeds it
enters the fold effect b_f (with variance sigma_seed^2 / K), so the fold-level variance already
carries it and no third resampling level is needed. The seed-vs-seed band of a one-seed
comparison is a separate guard (:func:`crapnet_core.engine.decision.seed_band`).

The bootstrap is written here (about 40 lines of numpy) because neither scipy.stats.bootstrap nor
statsmodels resamples nested data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Resamples of the hierarchical bootstrap at the start (more are drawn near the boundary).
N_RESAMPLES = 20_000
#: Most resamples drawn for one interval (:func:`fold_level_test`).
MAX_RESAMPLES = 1_280_000
#: The interval's end point nearest 0 must lie this many Monte-Carlo errors from 0.
MC_MARGIN = 4.0
#: Fewest folds for a fold-level interval (with two folds t(1) gives no useful interval).
MIN_FOLDS = 3
#: Resamples drawn per batch (memory: batch × N integers).
_BATCH = 50_000


def _as_arrays(diff: Sequence[float], folds: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    d = np.asarray([np.nan if v is None else float(v) for v in diff], dtype=float)
    labels = list(folds)
    if d.shape[0] != len(labels):
        raise ValueError(f"fold-level test: {d.shape[0]} differences but {len(labels)} fold labels")
    keep = np.isfinite(d)
    d = d[keep]
    labels = [lab for lab, k in zip(labels, keep) if k]
    names = sorted(set(labels), key=str)
    index = {name: i for i, name in enumerate(names)}
    return d, np.array([index[lab] for lab in labels], dtype=int), names


def fold_anova(diff: Sequence[float], folds: Sequence[Any]) -> dict[str, Any]:
    """One-way random-effects moment estimates of the paired differences grouped by fold.

    diff: per-scan differences (non-finite values dropped); folds: the fold of each. Returns
    {"n", "n_folds", "folds" (labels, sorted), "sizes", "fold_means" (in the order of "folds"),
    "mean" (over scans), "msb", "msw", "n0", "tau2" (between-fold variance, clamped at 0),
    "sigma2" (= msw), "icc" (tau2 / (tau2 + sigma2)), "var_mean" (estimated variance of the
    mean: tau2 sum m_f^2 / N^2 + sigma2 / N), "design_effect" (var_mean over the variance of the
    mean of N independent scans; 1 for independent scans)}. ANOVA formulas for unequal group
    sizes (``n0``: Searle, Casella & McCulloch 1992, *Variance Components*, Sec. 3.6).
    """
    d, g, names = _as_arrays(diff, folds)
    out = _anova(d, g, len(names))
    out["folds"] = names
    return out


def _anova(d: np.ndarray, g: np.ndarray, k: int) -> dict[str, Any]:
    """:func:`fold_anova` on finite differences ``d`` and fold indices ``g`` in 0..k-1."""
    n = int(d.size)
    if n == 0:
        raise ValueError("fold-level test: no finite difference")
    sizes = np.bincount(g, minlength=k).astype(float)
    means = np.bincount(g, weights=d, minlength=k) / sizes
    grand = float(d.mean())
    ssb = float(np.sum(sizes * (means - grand) ** 2))
    ssw = float(np.sum((d - means[g]) ** 2))
    msb = ssb / (k - 1) if k > 1 else float("nan")
    msw = ssw / (n - k) if n > k else 0.0
    n0 = (n - float(np.sum(sizes**2)) / n) / (k - 1) if k > 1 else float("nan")
    tau2 = max(0.0, (msb - msw) / n0) if k > 1 else 0.0
    var_mean = tau2 * float(np.sum(sizes**2)) / n**2 + msw / n
    total = tau2 + msw
    return {
        "n": n,
        "n_folds": k,
        "sizes": sizes.astype(int).tolist(),
        "fold_means": means.tolist(),
        "mean": grand,
        "msb": msb,
        "msw": msw,
        "n0": n0,
        "tau2": tau2,
        "sigma2": msw,
        "icc": (tau2 / total) if total > 0 else float("nan"),
        "var_mean": var_mean,
        "design_effect": (var_mean / (total / n)) if total > 0 else float("nan"),
    }


def hierarchical_bootstrap(
    diff: Sequence[float], folds: Sequence[Any], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """Bootstrap means of ``diff``: folds resampled, then scans within each resampled fold.

    Davison & Hinkley (1997) Sec. 3.8 with their variance adjustment (module docstring): each
    resample draws F folds with replacement and, within each drawn fold, as many scans as it
    has, with replacement, from ``mu_hat + c (mean_f - mu_hat) + a (d_fs - mean_f)``, where
    ``c^2 = tau2 sum m_f^2 / sum m_f^2 (mean_f - mu_hat)^2`` (0 when tau2 = 0) and
    ``a^2 = N / (N - F)``, so that the bootstrap variance of the mean matches
    :func:`fold_anova`'s ``var_mean``. The statistic is the mean over the resampled scans.
    Returns the ``n_resamples`` means (float array). Fold draws come first from the generator
    (``numpy.random.default_rng(seed)``), so data whose scans are identical within each fold
    give exactly the bootstrap of the fold means. Raises ValueError with fewer than 2 folds.
    """
    d, g, names = _as_arrays(diff, folds)
    k = len(names)
    if k < 2:
        raise ValueError(f"hierarchical bootstrap: {k} fold(s); at least 2 are needed")
    if n_resamples < 1:
        raise ValueError(f"hierarchical bootstrap: n_resamples must be positive, got {n_resamples}")
    a = _anova(d, g, k)
    sizes = np.asarray(a["sizes"], dtype=int)
    means = np.asarray(a["fold_means"])
    grand = a["mean"]
    spread = float(np.sum(sizes**2 * (means - grand) ** 2))
    c = math.sqrt(a["tau2"] * float(np.sum(sizes**2)) / spread) if spread > 0 and a["tau2"] > 0 else 0.0
    n = d.size
    scale = math.sqrt(n / (n - k)) if n > k else 1.0
    resid = d - means[g]
    # scans of each fold in one padded table: row f holds fold f's residuals
    order = np.argsort(g, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    width = int(sizes.max())
    table = np.zeros((k, width))
    for f in range(k):
        table[f, : sizes[f]] = resid[order][starts[f] : starts[f] + sizes[f]]
    centre = grand + c * (means - grand)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    draws_fold = rng.integers(0, k, size=(n_resamples, k))  # first: the fold draws (see the docstring)
    for lo in range(0, n_resamples, _BATCH):
        hi = min(lo + _BATCH, n_resamples)
        pick = draws_fold[lo:hi]  # (b, F) fold indices
        m = sizes[pick]  # (b, F) scans per drawn fold
        u = rng.random((hi - lo, k, width))
        j = np.minimum((u * m[..., None]).astype(int), m[..., None] - 1)  # scan index within the fold
        valid = np.arange(width)[None, None, :] < m[..., None]
        r = np.where(valid, table[pick[..., None], j], 0.0)
        total = (m * centre[pick]).sum(axis=1) + scale * r.sum(axis=(1, 2))
        out[lo:hi] = total / m.sum(axis=1)
    return out


def mixed_model(diff: Sequence[float], folds: Sequence[Any]) -> dict[str, Any]:
    """REML fit of ``d ~ 1 + (1 | fold)`` (statsmodels MixedLM) and its fold-level Wald test.

    Returns {"estimate", "se", "df" (= F - 1), "p" (two-sided, Student's t with F - 1 df),
    "tau2" (random-intercept variance), "sigma2" (residual variance), "converged", "warnings"
    (messages statsmodels raised), "error" (None, or why no fit: then estimate/se/p are None)}.
    """
    import pandas as pd
    from scipy import stats as sps

    d, g, names = _as_arrays(diff, folds)
    k = len(names)
    out: dict[str, Any] = {
        "estimate": None,
        "se": None,
        "df": k - 1,
        "p": None,
        "tau2": None,
        "sigma2": None,
        "converged": False,
        "warnings": [],
        "error": None,
    }
    if k < 2 or d.size <= k:
        out["error"] = f"{k} folds and {d.size} scans: too few for a mixed model"
        return out
    if np.ptp(d) == 0:
        out["error"] = "all differences equal: no variance to model"
        return out
    a = _anova(d, g, k)
    if a["msw"] <= 1e-12 * max(a["msb"], 1e-300):
        # scans identical within every fold: the residual variance is 0 and REML degenerates
        # (statsmodels returns a fit with a far too small standard error); no model-based p
        out["error"] = "no variance within folds: the mixed model is degenerate"
        return out
    import statsmodels.formula.api as smf

    frame = pd.DataFrame({"d": d, "fold": g})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm("d ~ 1", frame, groups=frame["fold"]).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as err:
            out["error"] = f"{type(err).__name__}: {err}"
            return out
    out["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})
    est, se = float(fit.fe_params.iloc[0]), float(fit.bse_fe.iloc[0])
    if not (math.isfinite(est) and math.isfinite(se)) or se <= 0:
        out["error"] = f"the fit gave estimate {est} and standard error {se}"
        return out
    out.update(
        estimate=est,
        se=se,
        p=float(2 * sps.t.sf(abs(est / se), k - 1)),
        tau2=float(np.asarray(fit.cov_re)[0, 0]),
        sigma2=float(fit.scale),
        converged=bool(fit.converged),
    )
    return out


def _mc_error_of_sd(draws: np.ndarray) -> float:
    """Monte-Carlo standard error of the standard deviation of ``draws`` (delta method on the
    sample variance: Var(s^2) ~ (m4 - s^4) / B)."""
    c = draws - draws.mean()
    v = float(np.mean(c**2))
    if v <= 0:
        return 0.0
    m4 = float(np.mean(c**4))
    return math.sqrt(max(m4 - v * v, 0.0) / draws.size) / (2 * math.sqrt(v))


def fold_level_test(
    diff: Sequence[float],
    folds: Sequence[Any],
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    max_resamples: int = MAX_RESAMPLES,
) -> dict[str, Any]:
    """Fold-level interval (hierarchical bootstrap) and p-value (mixed model) of a mean paired difference.

    diff: per-scan differences A - B (Dice fraction, non-finite dropped); folds: each scan's fold.
    Returns {"n", "n_folds", "mean_diff", "se", "df", "ci_low", "ci_high" (mean ± t(df) SE),
    "excludes_zero", "p" (the mixed model's fold-level p; the bootstrap t-test's when the model
    cannot be fitted), "p_source" ("mixed model" / "bootstrap"), "p_boot" (2 P(T_df > |mean/SE|)),
    "mc_error" (Monte-Carlo standard error of the interval's end points), "n_resamples" (drawn),
    "seed", "icc", "design_effect", "tau2", "sigma2", "mixed_model" (:func:`mixed_model`'s dict),
    "percentile_low"/"percentile_high" (the bootstrap's own percentile interval, for reference:
    too narrow with few folds)}. With fewer than :data:`MIN_FOLDS` folds the interval and p are
    None and ``excludes_zero`` is False. Identical differences give a zero-width interval at their
    value (no test). Raises ValueError for an invalid confidence or mismatched lengths.
    """
    from scipy import stats as sps

    if not 0.5 <= confidence < 1:
        raise ValueError(f"fold-level test: confidence {confidence} must be in [0.5, 1)")
    d, g, names = _as_arrays(diff, folds)
    k = len(names)
    out: dict[str, Any] = {
        "n": int(d.size),
        "n_folds": k,
        "mean_diff": float(d.mean()) if d.size else None,
        "se": None,
        "df": k - 1,
        "ci_low": None,
        "ci_high": None,
        "excludes_zero": False,
        "p": None,
        "p_source": None,
        "p_boot": None,
        "mc_error": None,
        "n_resamples": 0,
        "seed": seed,
        "icc": None,
        "design_effect": None,
        "tau2": None,
        "sigma2": None,
        "mixed_model": None,
        "percentile_low": None,
        "percentile_high": None,
    }
    if k < MIN_FOLDS:
        return out
    a = _anova(d, g, k)
    out.update(icc=a["icc"], design_effect=a["design_effect"], tau2=a["tau2"], sigma2=a["sigma2"])
    if np.ptp(d) == 0:
        out.update(se=0.0, ci_low=float(d[0]), ci_high=float(d[0]), excludes_zero=bool(d[0] != 0), mc_error=0.0)
        return out
    tq = float(sps.t.ppf(0.5 + confidence / 2, k - 1))
    b = n_resamples
    while True:
        draws = hierarchical_bootstrap(d, g, b, seed)
        se = float(draws.std(ddof=1))
        mc = tq * _mc_error_of_sd(draws)
        lo, hi = out["mean_diff"] - tq * se, out["mean_diff"] + tq * se
        if min(abs(lo), abs(hi)) > MC_MARGIN * mc or b >= max_resamples:
            break
        b = min(b * 4, max_resamples)
    alpha = 1 - confidence
    out.update(
        se=se,
        ci_low=lo,
        ci_high=hi,
        excludes_zero=bool(lo > 0 or hi < 0),
        mc_error=mc,
        n_resamples=b,
        p_boot=float(2 * sps.t.sf(abs(out["mean_diff"]) / se, k - 1)) if se > 0 else None,
        percentile_low=float(np.quantile(draws, alpha / 2)),
        percentile_high=float(np.quantile(draws, 1 - alpha / 2)),
    )
    mm = mixed_model(d, g)
    out["mixed_model"] = mm
    if mm["p"] is not None:
        out["p"], out["p_source"] = mm["p"], "mixed model"
    else:
        out["p"], out["p_source"] = out["p_boot"], "bootstrap"
    return out


__all__ = [
    "N_RESAMPLES",
    "MAX_RESAMPLES",
    "MC_MARGIN",
    "MIN_FOLDS",
    "fold_anova",
    "hierarchical_bootstrap",
    "mixed_model",
    "fold_level_test",
]
