"""The per-checkpoint summary: face rate, average, shares below thresholds, best epoch.

Renders in which no face was found count towards ``renders`` and ``face_rate`` only: they never
enter the average or the faces-only percentages (they are not distance 0), and a checkpoint
without any face has NaN there, not a number that looks like a result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dreamgrid import stats
from dreamgrid.errors import SpecError
from dreamgrid.scoretable import (
    SUMMARY_INPUT_COLUMNS,
    _check_thresholds,
    _normalise,
    _require,
    group_columns,
    pct_column,
)


def summarize(
    scores: pd.DataFrame,
    thresholds: Sequence[float] = (0.6, 0.7),
    best_within: float = 5.0,
    *,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """One row per checkpoint (arm, epoch) with face rate, average and % below thresholds.

    Args:
        scores: one row per render with arm, epoch, face_found (bool or "true"/"false"),
            mean_distance and optionally steps.
        thresholds: distance thresholds, any order; columns come out ascending.
        best_within: the best epoch of an arm is the earliest whose % below the lowest
            threshold is within this many percentage points of the arm's maximum.

        confidence, resamples, seed: of the bootstrap intervals (see :mod:`dreamgrid.stats`).

    Returns:
        Columns ``arm, epoch, [model], [prompt_set], [steps], renders, face_rate, average,
        pct_below_<t>..., best``, then (appended, so scripts reading the first columns keep
        working) ``median, average_ci_low, average_ci_high, pct_below_<t>_ci_low,
        pct_below_<t>_ci_high..., best_not_worse``; sorted by arm then epoch. ``face_rate``
        is a fraction (0..1); the percentages (0..100), average and median are over renders
        with a face and NaN when there is none. The intervals resample those renders (seeded
        percentile bootstrap). ``best_not_worse`` flags the arm's earliest epoch whose share
        below the lowest threshold is not significantly below the arm's highest (paired on
        seeds when there is a ``seed`` column). An arm without any face has neither flag.

    Raises:
        SpecError: a missing column, bad values, bad thresholds or a negative best_within.
    """
    _require(scores, SUMMARY_INPUT_COLUMNS, "scores")
    levels = _check_thresholds(thresholds)
    if not math.isfinite(best_within) or best_within < 0:
        raise SpecError(
            f"best_within must be a non-negative number of points, got {best_within!r}."
        )
    scores = _normalise(scores, "scores")
    pct_columns = [pct_column(t) for t in levels]
    extra = group_columns(scores)
    keys = ["arm", "epoch", *extra]
    has_steps = "steps" in scores.columns
    columns = keys + (["steps"] if has_steps else []) + ["renders", "face_rate", "average"]
    columns += [*pct_columns, "best"]
    ci_columns = ["median", "average_ci_low", "average_ci_high"]
    ci_columns += [f"{c}_ci_{end}" for c in pct_columns for end in ("low", "high")]

    rows = []
    for key, group in scores.groupby(keys, sort=True):
        arm, epoch = key[0], key[1]
        row: dict[str, object] = {"arm": arm, "epoch": int(epoch)}
        row.update(zip(extra, key[2:], strict=True))
        if has_steps:
            steps = group["steps"].unique()
            if len(steps) != 1:
                raise SpecError(
                    f"scores: arm {arm} epoch {epoch} has several step counts {sorted(steps)}; "
                    "one checkpoint has one step count. Check the score files' steps column."
                )
            row["steps"] = int(steps[0])
        faces = group.loc[group["face_found"], "mean_distance"].to_numpy(dtype=float)
        row["renders"] = len(group)
        row["face_rate"] = len(faces) / len(group)
        row["average"] = float(faces.mean()) if len(faces) else math.nan
        for level, name in zip(levels, pct_columns, strict=True):
            row[name] = (
                100.0 * float((faces < level).sum()) / len(faces) if len(faces) else math.nan
            )
        row["median"] = float(np.median(faces)) if len(faces) else math.nan
        intervals = stats.checkpoint_intervals(
            faces,
            levels,
            rng=stats.rng_for(seed, "checkpoint", *key),
            resamples=resamples,
            confidence=confidence,
        )
        row["average_ci_low"], row["average_ci_high"] = intervals["average"]
        for level, name in zip(levels, pct_columns, strict=True):
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = intervals[level]
        rows.append(row)
    summary = pd.DataFrame(rows, columns=columns[:-1] + ci_columns)
    if summary.empty:
        summary = summary.astype({"epoch": "int64", "renders": "int64"})
    arm_keys = ["arm", *extra]
    summary["best"] = _best_flags(summary, pct_columns[0], best_within, arm_keys)
    not_worse = pd.Series(False, index=summary.index, dtype=bool)
    for key, group in scores.groupby(arm_keys, sort=False):
        epoch = stats.earliest_not_worse(
            group, levels[0], seed=seed, resamples=resamples, confidence=confidence
        )
        if epoch is not None:
            key = key if isinstance(key, tuple) else (key,)
            hit = (summary["epoch"] == epoch) & np.logical_and.reduce(
                [summary[c] == v for c, v in zip(arm_keys, key, strict=True)]
            )
            not_worse[hit] = True
    summary["best_not_worse"] = not_worse
    return summary[columns + ci_columns + ["best_not_worse"]]


def _best_flags(
    summary: pd.DataFrame, column: str, within: float, arm_keys: Sequence[str] = ("arm",)
) -> pd.Series:
    """True on each arm's earliest epoch within ``within`` points of its maximum ``column``."""
    best = pd.Series(False, index=summary.index, dtype=bool)
    for _, group in summary.groupby(list(arm_keys), sort=False):
        values = group[column]
        if values.notna().any():
            # 1e-9 absorbs float noise so that "exactly 5 points below" counts as within.
            close = group[values >= values.max() - within - 1e-9]
            best[close["epoch"].idxmin()] = True
    return best
