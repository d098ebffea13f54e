"""Pure statistics: each wrapper against a hand computation or the library call it wraps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from dreamgrid import stats


def test_holm_and_bonferroni_hand_computed():
    adjusted = stats.adjust([0.01, 0.04, 0.03, math.nan, 0.5], "holm")
    # sorted 0.01, 0.03, 0.04, 0.5 with m=4: 0.04, 0.09, max(0.09, 0.08)=0.09, 0.5
    assert adjusted[0] == pytest.approx(0.04)
    assert adjusted[2] == pytest.approx(0.09)
    assert adjusted[1] == pytest.approx(0.09)
    assert math.isnan(adjusted[3])
    assert adjusted[4] == pytest.approx(0.5)
    bonferroni = stats.adjust([0.01, 0.3, math.nan], "bonferroni")
    assert list(bonferroni[:2]) == pytest.approx([0.02, 0.6])


def test_wilson_matches_the_issue_and_never_collapses():
    # Wilson 95%: 5/5 -> [56.6, 100], 0/20 -> [0, 16.1] (the percentile bootstrap gave
    # [100, 100] and [0, 0]).
    low, high = stats.wilson(5, 5)
    assert (100 * low, 100 * high) == pytest.approx((56.55, 100.0), abs=0.01)
    low, high = stats.wilson(0, 20)
    assert (100 * low, 100 * high) == pytest.approx((0.0, 16.11), abs=0.01)
    # hand formula: centre (k + z²/2) / (n + z²), half-width z/(n+z²) sqrt(k(n-k)/n + z²/4)
    k, n, z = 7, 20, sps.norm.ppf(0.975)
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    assert stats.wilson(k, n) == pytest.approx((centre - half, centre + half))
    assert all(math.isnan(v) for v in stats.wilson(0, 0))


def test_mean_interval_is_scipy_bca_and_handles_edge_cases():
    values = np.random.default_rng(3).normal(0.6, 0.05, 300)
    ours = stats.mean_interval(values, rng=np.random.default_rng(5), resamples=3000)
    theirs = sps.bootstrap(
        (values,), np.mean, method="BCa", n_resamples=3000, random_state=np.random.default_rng(5)
    ).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), rel=1e-9)
    # and close to normal theory: mean ± 1.96 s / sqrt(n)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert ours == pytest.approx((values.mean() - half, values.mean() + half), abs=0.001)
    assert all(math.isnan(v) for v in stats.mean_interval([], rng=stats.rng_for(0)))
    assert all(math.isnan(v) for v in stats.mean_interval([0.5], rng=stats.rng_for(0)))
    assert stats.mean_interval([0.5, 0.5, 0.5], rng=stats.rng_for(0)) == (0.5, 0.5)
    # seeded: the same key gives the same interval
    first = stats.mean_interval(values, rng=stats.rng_for(7, "a"))
    assert first == stats.mean_interval(values, rng=stats.rng_for(7, "a"))


def test_resamples_grow_with_the_coverage():
    assert stats.resamples_for(0.95, 2000) == 2000
    # 99.9%: 0.0005 per tail, 10 resamples beyond each end
    assert stats.resamples_for(0.999, 2000) == 20000


def test_sign_flip_exact_by_hand():
    # differences 1, 2, 3: 8 sign patterns, |mean| >= 2 only for +++ and ---: p = 2/8
    p, how = stats.sign_flip_test([1.0, 2.0, 3.0], rng=stats.rng_for(0))
    assert how == "exact" and p == pytest.approx(0.25)
    assert stats.sign_flip_test([0.0, 0.0], rng=stats.rng_for(0)) == (1.0, "exact")
    assert math.isnan(stats.sign_flip_test([], rng=stats.rng_for(0))[0])


def test_sign_flip_tests_the_mean_not_the_pseudo_median():
    # The issue's case: 85% of seeds better by 0.01, 15% worse by 0.05. Mean -0.001: the
    # Wilcoxon test calls it significant (it tests a pseudo-median); the mean test must not.
    diff = np.array([-0.01] * 170 + [0.05] * 30)
    assert diff.mean() == pytest.approx(-0.001)
    assert sps.wilcoxon(diff).pvalue < 1e-6
    p, how = stats.sign_flip_test(diff, rng=stats.rng_for(0), resamples=4000)
    assert how == "monte carlo 4000" and p > 0.5
    low, high = stats.mean_interval(diff, rng=stats.rng_for(0))
    assert low < 0 < high
    # a real shift is found: z = 0.01 / (0.02 / sqrt(100)) = 5
    shifted = np.random.default_rng(1).normal(0.01, 0.02, 100)
    p, _ = stats.sign_flip_test(shifted, rng=stats.rng_for(0))
    assert p < 0.001


def test_mcnemar_exact_by_hand():
    # a alone on 10 seeds, b alone on 2, both on 5, neither on 3:
    # p = 2 * P(X >= 10 | n=12, 1/2) = 2 * (66 + 12 + 1) / 4096
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    assert stats.mcnemar_p(a, b) == pytest.approx(2 * 79 / 4096)
    assert stats.mcnemar_p(a, a) == 1.0


def test_paired_reports_one_quantity_and_the_face_outcome():
    a = np.array([0.5, 0.6, np.nan, 0.4, 0.7])
    b = np.array([0.6, 0.5, 0.5, np.nan, 0.9])
    result = stats.paired(a, b, rng=stats.rng_for(0))
    # pairs: (0.5,0.6) (0.6,0.5) (0.7,0.9): differences -0.1, +0.1, -0.2
    assert result["n_pairs"] == 3
    assert result["mean_diff"] == pytest.approx(-0.2 / 3)
    assert result["median_diff"] == pytest.approx(-0.1)
    assert result["share_a_better"] == pytest.approx(2 / 3)
    assert result["face_diff"] == pytest.approx(0.0)  # 4 of 5 each
    assert result["test"] == "exact"
    # sign patterns of magnitudes (0.1, 0.1, 0.2): sums ±0.4, ±0.2, ±0.2, 0, 0; |sum| >= 0.2
    # (the observed) for 6 of 8
    assert result["p_value"] == pytest.approx(0.75)


def test_simultaneous_confidence_is_bonferroni():
    assert stats.simultaneous_confidence(0.95, 10) == pytest.approx(0.995)
    assert stats.simultaneous_confidence(0.95, 0) == pytest.approx(0.95)
    assert stats.excludes_zero(0.1, 0.2) == 1
    assert stats.excludes_zero(-0.2, -0.1) == -1
    assert stats.excludes_zero(-0.1, 0.1) == 0
    assert stats.excludes_zero(math.nan, 0.1) == 0


def test_sign_flip_refines_only_the_p_values_that_can_decide():
    rng = np.random.default_rng(2)
    null = rng.normal(0, 1, 100)
    p, how = stats.sign_flip_test(
        null, rng=stats.rng_for(0), resamples=2000, refine_below=0.0125, refine_resamples=20000
    )
    assert p > 0.0125 and how == "monte carlo 2000"
    shifted = rng.normal(0.4, 1, 100)
    p, how = stats.sign_flip_test(
        shifted, rng=stats.rng_for(0), resamples=2000, refine_below=0.0125, refine_resamples=20000
    )
    assert p < 0.0125 and how == "monte carlo 20000"
