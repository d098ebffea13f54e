"""Pure statistics on arrays: intervals, paired tests, corrections. No tables, no files.

Every tool here is the field's library function, wrapped only to fix its settings and its edge
cases (no data, one value, all values equal):

- intervals of a mean: ``scipy.stats.bootstrap(method="BCa")``;
- intervals of a share: Wilson (``statsmodels.stats.proportion.proportion_confint``);
- a paired mean difference: the sign-flip permutation test of that mean
  (``scipy.stats.permutation_test(permutation_type="samples")`` on one sample of differences:
  exact over all 2^n sign patterns up to :data:`EXACT_UP_TO` pairs, seeded Monte Carlo beyond);
- face found, paired: the exact McNemar test, a binomial test on the discordant seeds
  (``scipy.stats.binomtest``);
- families: ``statsmodels.stats.multitest.multipletests`` (Holm or Bonferroni).

Randomness comes from :func:`rng_for` (seed plus a key naming what is resampled), so a rerun, or
the same checkpoint in a bigger grid, gives identical numbers. Distances are lower-is-better: a
negative difference ``a - b`` means ``a`` is more alike.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

#: Defaults used when a caller passes none (the workflow passes the config's ``report`` keys;
#: test_cli.py checks they are the schema's defaults).
RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0
#: The chosen-epoch rule's defaults (report.best_margin, best_margin_relative, min_faces).
BEST_MARGIN = 5.0
BEST_MARGIN_RELATIVE = 0.25
MIN_FACES = 20
#: Distance thresholds when a caller passes none: the seed study's VGG-Face cosine ones (the
#: workflow fits them to score.model instead).
THRESHOLDS = (0.6, 0.7)
ALPHA = 0.05
#: Largest number of pairs whose permutation test enumerates every sign pattern (2^16).
EXACT_UP_TO = 16
#: Bootstrap resamples expected beyond each end of an interval (see :func:`resamples_for`).
TAIL_RESAMPLES = 10


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``key`` (not on call order)."""
    text = "\x1f".join(map(str, key)).encode()
    return np.random.default_rng([int(seed), zlib.crc32(text)])


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``values`` as floats without NaNs."""
    data = np.asarray(values, dtype=float)
    return data[np.isfinite(data)]


def resamples_for(confidence: float, resamples: int = RESAMPLES) -> int:
    """Bootstrap resamples for an interval at ``confidence``: at least ``resamples``, and
    enough that :data:`TAIL_RESAMPLES` fall beyond each end (a Bonferroni-adjusted 99.9%
    interval needs 20,000)."""
    tail = (1.0 - confidence) / 2.0
    return max(int(resamples), math.ceil(TAIL_RESAMPLES / tail))


def _mean(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(sample, axis=axis)


def mean_interval(
    values: Sequence[float] | np.ndarray,
    *,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values`` (NaNs dropped).

    Returns:
        (low, high); NaN with fewer than two values, the value itself when all are equal.
    """
    from scipy import stats

    data = finite(values)
    if len(data) < 2:
        return math.nan, math.nan
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    result = stats.bootstrap(
        (data,),
        _mean,
        vectorized=True,
        method="BCa",
        confidence_level=confidence,
        n_resamples=resamples_for(confidence, resamples),
        random_state=rng,
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def wilson(count: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson interval of a share ``count / total`` as fractions (NaN when ``total`` is 0)."""
    from statsmodels.stats.proportion import proportion_confint

    if total <= 0:
        return math.nan, math.nan
    low, high = proportion_confint(int(count), int(total), alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def sign_flip_test(
    differences: Sequence[float] | np.ndarray,
    *,
    rng: np.random.Generator,
    resamples: int = RESAMPLES,
    refine_below: float | None = None,
    refine_resamples: int | None = None,
) -> tuple[float, str]:
    """Two-sided paired permutation test of the mean difference (signs flipped per pair).

    Args:
        differences: per-pair differences (NaNs dropped).
        resamples: Monte Carlo sign patterns (beyond :data:`EXACT_UP_TO` pairs).
        refine_below, refine_resamples: when the p from ``resamples`` is at most
            ``refine_below``, test again with ``refine_resamples`` (a p that decides a claim
            at a Bonferroni level needs more resamples than one far above it).

    Returns:
        (p, how): ``how`` is ``"exact"`` (all 2^n sign patterns) or ``"monte carlo N"``;
        p is NaN without differences and 1.0 when every difference is zero.
    """
    from scipy import stats

    data = finite(differences)
    if len(data) == 0:
        return math.nan, "none"
    if not np.any(data != 0):
        return 1.0, "exact"
    exact = len(data) <= EXACT_UP_TO or 2 ** len(data) <= resamples

    def test(n: float) -> float:
        result = stats.permutation_test(
            (data,),
            _mean,
            vectorized=True,
            permutation_type="samples",
            alternative="two-sided",
            n_resamples=n,
            random_state=rng,
        )
        return min(1.0, float(result.pvalue))

    if exact:
        return test(np.inf), "exact"
    p, used = test(int(resamples)), int(resamples)
    if refine_below is not None and refine_resamples and p <= refine_below:
        used = max(used, int(refine_resamples))
        p = test(used)
    return p, f"monte carlo {used}"


def mcnemar_p(found_a: np.ndarray, found_b: np.ndarray) -> float:
    """Exact McNemar test of paired face detection: a binomial test (p = 1/2) on the seeds
    where exactly one of the two found a face. 1.0 when there is no such seed."""
    from scipy import stats

    a = np.asarray(found_a, dtype=bool)
    b = np.asarray(found_b, dtype=bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def adjust(p_values: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values of one family (``multipletests``); NaNs stay NaN and are not
    counted in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.isfinite(p)
    if valid.any():
        adjusted[valid] = multipletests(p[valid], method=method)[1]
    return adjusted


def simultaneous_confidence(confidence: float, family_size: int) -> float:
    """Bonferroni: the per-interval coverage that gives every interval of a family of
    ``family_size`` at least ``confidence`` together (matches Bonferroni-adjusted p)."""
    return 1.0 - (1.0 - confidence) / max(int(family_size), 1)


def paired(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    found_a: Sequence[float] | np.ndarray | None = None,
    found_b: Sequence[float] | np.ndarray | None = None,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> dict[str, float | int | str]:
    """Paired comparison of two arrays aligned by seed (NaN where that render had no face).

    Args:
        a, b: distances per seed, NaN where no face (or not rendered).
        found_a, found_b: 1/0 per seed whether a face was found, NaN where the seed was not
            rendered; default: ``a``/``b`` is a number.

    Returns:
        ``n_pairs`` (seeds where both are numbers), ``mean_diff`` (mean of ``a - b`` there),
        ``ci_low, ci_high`` (BCa interval of that mean), ``p_value`` (sign-flip permutation
        test of that mean), ``share_a_better`` (fraction of pairs with ``a < b``),
        ``median_diff``, ``face_diff`` (face rate of a minus b over all seeds), ``face_p``
        (exact McNemar) and ``test`` (``exact`` or ``monte carlo N``).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    diff = finite(a - b)
    low, high = mean_interval(diff, rng=rng, confidence=confidence, resamples=resamples)
    p, how = sign_flip_test(diff, rng=rng, resamples=resamples)
    fa = np.isfinite(a).astype(float) if found_a is None else np.asarray(found_a, dtype=float)
    fb = np.isfinite(b).astype(float) if found_b is None else np.asarray(found_b, dtype=float)
    both = np.isfinite(fa) & np.isfinite(fb)
    fa, fb = fa[both] > 0.5, fb[both] > 0.5
    return {
        "n_pairs": len(diff),
        "mean_diff": float(diff.mean()) if len(diff) else math.nan,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "share_a_better": float(np.mean(diff < 0)) if len(diff) else math.nan,
        "median_diff": float(np.median(diff)) if len(diff) else math.nan,
        "face_diff": float(fa.mean() - fb.mean()) if len(fa) else math.nan,
        "face_p": mcnemar_p(fa, fb) if len(fa) else math.nan,
        "test": how,
    }


def excludes_zero(low: float, high: float) -> int:
    """+1 when the interval lies above 0, -1 below, 0 when it holds 0 or is unknown."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return 0
    if low > 0:
        return 1
    if high < 0:
        return -1
    return 0
