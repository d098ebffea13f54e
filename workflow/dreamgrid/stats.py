"""Statistics for the report: bootstrap intervals, paired arm comparisons, factorial effects.

Every interval here is a **seeded numpy percentile bootstrap** (not ``scipy.stats.bootstrap``):
the resampling indices come from ``numpy.random.default_rng([seed, crc32(key)])``, where ``key``
names what is resampled (a checkpoint, a pair of arms), so a rerun, or the same checkpoint in a
bigger grid, gives identical numbers. Per checkpoint the bootstrap resamples renders; between
checkpoints it resamples seeds, keeping each seed's pair together (every arm and epoch renders
the same seeds, so seed s of arm A and seed s of arm B share prompt and initial noise).

Paired tests are scipy's Wilcoxon signed-rank test on the per-seed differences. Families of
tests are corrected with **Holm**'s step-down method (controls the family-wise error rate).

Distances are lower-is-better: a negative difference ``a - b`` means ``a`` is more alike.
"""

from __future__ import annotations

import itertools
import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from dreamgrid.scoretable import group_columns, seed_matrix

log = logging.getLogger(__name__)

#: Defaults used when a caller passes none (the workflow passes the config's ``report`` keys).
RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0

#: Columns of :func:`compare_arms`'s table (the ``dreamgrid compare`` contract), in order.
COMPARE_COLUMNS = (
    "arm_a",
    "arm_b",
    "epoch",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
)
#: Axis levels in the order used as the reference level (first) of a contrast.
AXIS_ORDER = {
    "regularization": ("none", "noreg", "generated", "genreg", "ground_truth", "gtreg"),
    "captions": ("none", "nocap", "blip"),
}


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``key`` (not on call order)."""
    text = "\x1f".join(map(str, key)).encode()
    return np.random.default_rng([int(seed), zlib.crc32(text)])


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.nanpercentile(stats, [tail, 100.0 - tail], axis=0)
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    rng: np.random.Generator,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (NaNs dropped).

    Args:
        values: one number per resampled unit (render or seed).
        statistic: maps a (resamples, n) array to (resamples,) along axis 1; default mean.
        rng: source of the resampling indices (see :func:`rng_for`).
        resamples: number of bootstrap resamples.
        confidence: interval coverage, e.g. 0.95.

    Returns:
        (low, high); NaN for no values, the value itself for one.
    """
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if statistic is None:
        statistic = _mean
    if len(data) == 0:
        return math.nan, math.nan
    index = rng.integers(0, len(data), size=(int(resamples), len(data)))
    return _percentiles(statistic(data[index]), confidence)


def _mean(sample: np.ndarray) -> np.ndarray:
    return sample.mean(axis=1)


def checkpoint_intervals(
    distances: np.ndarray,
    thresholds: Sequence[float],
    *,
    rng: np.random.Generator,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of one checkpoint's average and shares, from one set of resamples.

    Args:
        distances: mean distances of the renders with a face.
        thresholds: cut-offs of the shares.

    Returns:
        ``{"average": (low, high), <threshold>: (low, high), ...}``; NaN without faces.
    """
    data = np.asarray(distances, dtype=float)
    data = data[np.isfinite(data)]
    if len(data) == 0:
        nan = (math.nan, math.nan)
        return {"average": nan, **{t: nan for t in thresholds}}
    sample = data[rng.integers(0, len(data), size=(int(resamples), len(data)))]
    out = {"average": _percentiles(sample.mean(axis=1), confidence)}
    for t in thresholds:
        out[t] = _percentiles(100.0 * (sample < t).mean(axis=1), confidence)
    return out


def wilcoxon_p(differences: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (NaNs dropped).

    Returns NaN without differences and 1.0 when every difference is zero (no evidence).
    """
    from scipy import stats

    data = np.asarray(differences, dtype=float)
    data = data[np.isfinite(data)]
    if len(data) == 0:
        return math.nan
    if not np.any(data != 0):
        return 1.0
    return float(stats.wilcoxon(data).pvalue)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaNs stay NaN and are not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = len(valid)
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    rng: np.random.Generator,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[str, float]:
    """Mean of ``a - b`` over pairs where both are numbers, with a bootstrap CI and Wilcoxon p.

    Args:
        a, b: values aligned by seed (NaN where that seed's render had no face).

    Returns:
        ``n_pairs, mean_diff, ci_low, ci_high, p_value`` (NaN where there is no pair).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    diff = a - b
    diff = diff[np.isfinite(diff)]
    low, high = bootstrap_ci(diff, rng=rng, resamples=resamples, confidence=confidence)
    return {
        "n_pairs": len(diff),
        "mean_diff": float(diff.mean()) if len(diff) else math.nan,
        "ci_low": low,
        "ci_high": high,
        "p_value": wilcoxon_p(diff),
    }


def compare_arms(
    scores: pd.DataFrame,
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Every pair of arms at every epoch both have, paired on seeds.

    Args:
        scores: one row per render with arm, epoch, seed, face_found (bool), mean_distance,
            and optionally model and prompt_set (compared only within equal values).
        seed: bootstrap seed.

    Returns:
        :data:`COMPARE_COLUMNS` (plus model/prompt_set when present, at the end): ``mean_diff``
        is the mean of ``a - b`` over seeds where both found a face, ``p_value`` the Wilcoxon
        signed-rank test, ``p_adjusted`` Holm over the rows of each model and prompt set
        (a family per question: adding a prompt set leaves ``main``'s verdict alone).
    """
    extra = group_columns(scores)
    rows = []
    groups = scores.groupby(extra, sort=True) if extra else [((), scores)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        matrix = seed_matrix(group)
        arms = sorted(group["arm"].unique())
        for arm_a, arm_b in itertools.combinations(arms, 2):
            for epoch in sorted(set(group.loc[group["arm"] == arm_a, "epoch"])):
                if (arm_b, epoch) not in matrix.columns:
                    continue
                result = paired_difference(
                    matrix[(arm_a, epoch)],
                    matrix[(arm_b, epoch)],
                    rng=rng_for(seed, "compare", *key, arm_a, arm_b, epoch),
                    resamples=resamples,
                    confidence=confidence,
                )
                rows.append(
                    {
                        "arm_a": arm_a,
                        "arm_b": arm_b,
                        "epoch": int(epoch),
                        **result,
                        **dict(zip(extra, key, strict=True)),
                    }
                )
    table = pd.DataFrame(rows, columns=[*COMPARE_COLUMNS[:-1], *extra])
    p_values = table["p_value"].astype(float)
    if extra and len(table):
        table["p_adjusted"] = p_values.groupby([table[c] for c in extra]).transform(holm)
    else:
        table["p_adjusted"] = holm(p_values.to_numpy()) if len(table) else []
    table = table.astype({"epoch": "int64", "n_pairs": "int64"})
    return table[[*COMPARE_COLUMNS, *extra]]


# ---- best epoch with uncertainty ----------------------------------------------------------
def earliest_not_worse(
    checkpoints: pd.DataFrame,
    threshold: float,
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> int | None:
    """Earliest epoch of one arm whose share below ``threshold`` is not significantly lower
    than that of the arm's best epoch (the one with the highest share).

    "Not significantly lower": the bootstrap CI of (share at e − share at best), resampling
    seeds where both epochs found a face (or renders independently when there is no seed
    column), reaches 0 or above.

    Returns:
        The epoch, or None when the arm has no face at all.
    """
    frame = checkpoints.loc[checkpoints["face_found"].astype(bool)]
    if frame.empty:
        return None
    below = (frame["mean_distance"] < threshold).astype(float)
    frame = frame.assign(below=below)
    shares = frame.groupby("epoch")["below"].mean()
    best = int(shares.idxmax())
    arm = str(checkpoints["arm"].iloc[0]) if "arm" in checkpoints.columns else ""
    paired = "seed" in frame.columns and not frame.duplicated(["epoch", "seed"]).any()
    for epoch in sorted(shares.index):
        if epoch == best:
            return best
        rng = rng_for(seed, "best", arm, epoch, best)
        if paired:
            table = frame.pivot(index="seed", columns="epoch", values="below")
            diff = (table[epoch] - table[best]).dropna().to_numpy()
            _, high = bootstrap_ci(diff, rng=rng, resamples=resamples, confidence=confidence)
        else:
            a = frame.loc[frame["epoch"] == epoch, "below"].to_numpy()
            b = frame.loc[frame["epoch"] == best, "below"].to_numpy()
            ia = rng.integers(0, len(a), size=(resamples, len(a)))
            ib = rng.integers(0, len(b), size=(resamples, len(b)))
            _, high = _percentiles(a[ia].mean(axis=1) - b[ib].mean(axis=1), confidence)
        if np.isfinite(high) and high >= 0:
            return int(epoch)
    return best


# ---- factorial view -----------------------------------------------------------------------
def arm_axes(
    arms: Sequence[str], table: Mapping[str, Mapping[str, str]] | None = None
) -> pd.DataFrame:
    """Axis levels per arm, from ``table`` (arm → {axis: level}).

    Returns:
        One row per arm (index), one column per axis with more than one level; arms not in
        ``table`` are left out.
    """
    rows = {}
    for arm in arms:
        if table is not None and arm in table:
            rows[arm] = dict(table[arm])
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if frame.empty:
        return frame
    keep = [c for c in frame.columns if frame[c].nunique() > 1]
    return frame[keep]


def _levels(axis: str, values: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    order = AXIS_ORDER.get(axis)
    if order:
        seen.sort(key=lambda v: order.index(v) if v in order else len(order))
    return seen


def select_checkpoints(summary: pd.DataFrame, view: str) -> dict[str, int]:
    """The checkpoint each arm contributes to a factorial view.

    ``best``: the arm's flagged best epoch (arms without one are left out). ``equal_steps``:
    the checkpoint with the most steps not above the smallest final step count of all arms
    (without a steps column: the last epoch all arms have).
    """
    if view == "best":
        best = summary.loc[summary["best"].astype(bool)]
        return {str(a): int(e) for a, e in best[["arm", "epoch"]].itertuples(index=False)}
    if view != "equal_steps":
        raise ValueError(f"unknown view {view!r}")
    column = "steps" if "steps" in summary.columns else "epoch"
    budget = summary.groupby("arm")[column].max().min()
    chosen = {}
    for arm, group in summary.groupby("arm"):
        within = group.loc[group[column] <= budget]
        if len(within):
            chosen[str(arm)] = int(within.loc[within[column].idxmax(), "epoch"])
    return chosen


def factorial_effects(
    scores: pd.DataFrame,
    axes: pd.DataFrame,
    chosen: Mapping[str, int],
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    view: str = "",
) -> pd.DataFrame:
    """Main effects and two-way interactions of the axes, paired on seeds.

    A main effect of axis X, level x vs the reference level x0 (the first: no regularization,
    no captions, the first token), is per seed the mean over matched arm pairs (equal on every
    other axis) of ``d(x) - d(x0)``; the estimate is its mean over seeds, with a seed-bootstrap
    CI and a Wilcoxon p-value. An interaction X×Y is per seed
    ``[d(x,y) - d(x0,y)] - [d(x,y0) - d(x0,y0)]``, averaged over the other axes. Negative
    estimates mean the level lowers the distance (more alike).

    Args:
        scores: renders (arm, epoch, seed, face_found, mean_distance).
        axes: from :func:`arm_axes`.
        chosen: arm → epoch (from :func:`select_checkpoints`).

    Returns:
        Columns ``view, term, axis, contrast, n_seeds, estimate, ci_low, ci_high, p_value,
        p_adjusted`` (Holm within the view).
    """
    columns = [
        "view",
        "term",
        "axis",
        "contrast",
        "n_seeds",
        "estimate",
        "ci_low",
        "ci_high",
        "p_value",
        "p_adjusted",
    ]
    arms = [a for a in axes.index if a in chosen]
    if not arms or axes.empty:
        return pd.DataFrame(columns=columns)
    axes = axes.loc[arms]
    matrix = seed_matrix(scores.loc[scores["arm"].isin(arms)])
    data = pd.DataFrame({a: matrix[(a, chosen[a])] for a in arms if (a, chosen[a]) in matrix})
    lookup = {tuple(row): arm for arm, row in axes.iterrows()}
    names = list(axes.columns)
    levels = {n: _levels(n, axes[n].tolist()) for n in names}

    def arm_at(base: tuple, **changes: str) -> str | None:
        point = list(base)
        for axis, level in changes.items():
            point[names.index(axis)] = level
        arm = lookup.get(tuple(point))
        return arm if arm in data.columns else None

    rows = []

    def add(term: str, axis: str, contrast: str, per_pair: list[pd.Series]) -> None:
        if per_pair:
            per_seed = pd.concat(per_pair, axis=1).mean(axis=1, skipna=True).to_numpy()
        else:
            per_seed = np.array([])
        per_seed = per_seed[np.isfinite(per_seed)]
        low, high = bootstrap_ci(
            per_seed,
            rng=rng_for(seed, "effect", view, axis, contrast),
            resamples=resamples,
            confidence=confidence,
        )
        rows.append(
            {
                "view": view,
                "term": term,
                "axis": axis,
                "contrast": contrast,
                "n_seeds": len(per_seed),
                "estimate": float(per_seed.mean()) if len(per_seed) else math.nan,
                "ci_low": low,
                "ci_high": high,
                "p_value": wilcoxon_p(per_seed),
            }
        )

    points = list(lookup)
    for axis in names:
        ref = levels[axis][0]
        for level in levels[axis][1:]:
            pairs = []
            for point in points:
                if point[names.index(axis)] != ref:
                    continue
                a0, a1 = arm_at(point), arm_at(point, **{axis: level})
                if a0 and a1:
                    pairs.append(data[a1] - data[a0])
            add("main", axis, f"{level} vs {ref}", pairs)
    for x, y in itertools.combinations(names, 2):
        x0, y0 = levels[x][0], levels[y][0]
        for xl, yl in itertools.product(levels[x][1:], levels[y][1:]):
            pairs = []
            for point in points:
                if point[names.index(x)] != x0 or point[names.index(y)] != y0:
                    continue
                corners = [
                    arm_at(point, **{x: xl, y: yl}),
                    arm_at(point, **{y: yl}),
                    arm_at(point, **{x: xl}),
                    arm_at(point),
                ]
                if all(corners):
                    d11, d01, d10, d00 = (data[c] for c in corners)
                    pairs.append((d11 - d01) - (d10 - d00))
            add("interaction", f"{x} x {y}", f"({xl} vs {x0}) x ({yl} vs {y0})", pairs)
    table = pd.DataFrame(rows, columns=columns[:-1])
    table["p_adjusted"] = holm(table["p_value"].to_numpy(dtype=float)) if len(table) else []
    return table[columns]


def significant(p_adjusted: float, alpha: float) -> bool:
    return bool(np.isfinite(p_adjusted) and p_adjusted < alpha)
