"""Fold-level inference (issue 19): hierarchical bootstrap, mixed model, Monte-Carlo stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from crapnet_core.engine import inference as inf
from crapnet_core.engine.stats import paired_test


def _t_interval(values):
    v = np.asarray(values, dtype=float)
    half = sps.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return v.mean() - half, v.mean() + half


def test_perfectly_correlated_scans_give_the_interval_of_the_fold_means():
    fold_means = np.array([0.031, -0.004, 0.022, 0.015, 0.008])
    d = np.repeat(fold_means, 4)  # every scan of a fold has its fold's difference
    folds = np.repeat(np.arange(5), 4)
    r = inf.fold_level_test(d, folds)
    lo, hi = _t_interval(fold_means)
    width = hi - lo
    assert r["ci_low"] == pytest.approx(lo, abs=0.01 * width)
    assert r["ci_high"] == pytest.approx(hi, abs=0.01 * width)
    # the same data as one value per fold: the same interval (the bootstrap of the fold means)
    r1 = inf.fold_level_test(fold_means, np.arange(5))
    assert r1["ci_low"] == pytest.approx(r["ci_low"], abs=0.01 * width)
    # p from the bootstrap t-test (the mixed model is degenerate without within-fold variance)
    assert r["p_source"] == "bootstrap" and "degenerate" in r["mixed_model"]["error"]
    assert r["p"] == pytest.approx(sps.ttest_1samp(fold_means, 0).pvalue, rel=0.03)
    # the per-scan analysis, which counts the 20 copies as independent, is far narrower
    per_scan = paired_test(d, n_resamples=2000)
    assert per_scan["ci_high"] - per_scan["ci_low"] < 0.5 * width


def test_independent_scans_approach_the_per_scan_interval():
    rng = np.random.default_rng(3)
    ratios = {}
    for n_folds in (5, 60):
        d = rng.normal(0.01, 0.05, 4 * n_folds)
        folds = np.repeat(np.arange(n_folds), 4)
        r = inf.fold_level_test(d, folds, n_resamples=5000)
        p = paired_test(d, n_resamples=2000)
        ratios[n_folds] = (r["ci_high"] - r["ci_low"]) / (p["ci_high"] - p["ci_low"])
        assert r["mixed_model"]["error"] is None and r["mixed_model"]["p"] == pytest.approx(r["p_boot"], rel=0.25)
    assert ratios[60] == pytest.approx(1.0, abs=0.1)  # many folds: the per-scan interval
    assert ratios[5] > ratios[60]  # five folds: t(4) and an estimated variance widen it


def test_bootstrap_variance_matches_the_variance_components():
    rng = np.random.default_rng(5)
    b = rng.normal(0, 0.03, 8)
    d = np.repeat(b, 6) + rng.normal(0, 0.02, 48)
    folds = np.repeat(np.arange(8), 6)
    a = inf.fold_anova(d, folds)
    draws = inf.hierarchical_bootstrap(d, folds, 40_000, seed=1)
    assert draws.var() == pytest.approx(a["var_mean"], rel=0.05)
    assert a["tau2"] > 0 and 0 < a["icc"] < 1 and a["design_effect"] > 1
    # unequal fold sizes: still the moment estimate
    keep = np.ones(48, bool)
    keep[[0, 1, 2, 13]] = False
    a2 = inf.fold_anova(d[keep], folds[keep])
    assert inf.hierarchical_bootstrap(d[keep], folds[keep], 40_000).var() == pytest.approx(a2["var_mean"], rel=0.08)


def test_no_call_depends_on_the_bootstrap_seed_near_the_boundary():
    rng = np.random.default_rng(11)
    folds = np.repeat(np.arange(5), 4)
    d = np.repeat(rng.normal(0, 0.02, 5), 4) + rng.normal(0, 0.02, 20)
    r = inf.fold_level_test(d, folds)
    # shift so that the lower end point sits 1 % of the half-width above 0
    half = (r["ci_high"] - r["ci_low"]) / 2
    d = d - r["ci_low"] + 0.01 * half
    calls, used = set(), []
    for seed in range(6):
        r = inf.fold_level_test(d, folds, seed=seed)
        calls.add(r["excludes_zero"])
        used.append(r["n_resamples"])
        assert r["mc_error"] * inf.MC_MARGIN < abs(r["ci_low"]) or r["n_resamples"] == inf.MAX_RESAMPLES
    assert calls == {True}
    assert max(used) > inf.N_RESAMPLES  # it had to draw more resamples to decide


def test_edge_cases_and_errors():
    r = inf.fold_level_test([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])  # two folds: no interval
    assert r["ci_low"] is None and not r["excludes_zero"] and r["n_folds"] == 2
    r = inf.fold_level_test([0.05] * 6, [0, 0, 1, 1, 2, 2])
    assert r["ci_low"] == r["ci_high"] == pytest.approx(0.05) and r["excludes_zero"]
    r = inf.fold_level_test([0.1, float("nan"), 0.2, None, 0.0, 0.1, -0.1], [0, 0, 1, 1, 2, 2, 2])
    assert r["n"] == 5
    with pytest.raises(ValueError, match="fold labels"):
        inf.fold_level_test([0.1, 0.2], [0])
    with pytest.raises(ValueError, match="confidence"):
        inf.fold_level_test([0.1, 0.2, 0.3], [0, 1, 2], confidence=1.2)
    with pytest.raises(ValueError, match="at least 2"):
        inf.hierarchical_bootstrap([0.1, 0.2], [0, 0])
    assert inf.mixed_model([0.1, 0.2, 0.3], [0, 1, 2])["error"]  # one scan per fold: no model
