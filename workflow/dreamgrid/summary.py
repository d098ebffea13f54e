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

from dreamgrid import inference, stats
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
    thresholds: Sequence[float] = stats.THRESHOLDS,
    best_margin: float = stats.BEST_MARGIN,
    *,
    best_margin_relative: float = stats.BEST_MARGIN_RELATIVE,
    min_faces: int = stats.MIN_FACES,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
    describe: bool = True,
) -> pd.DataFrame:
    """One row per checkpoint (arm, epoch) with face rate, average and % below thresholds.

    Args:
        scores: one row per render with arm, epoch, face_found (bool or "true"/"false"),
            mean_distance and optionally seed and steps (without ``seed``, renders are
            paired across epochs by their order).
        thresholds: distance thresholds, any order; columns come out ascending.
        best_margin: non-inferiority margin of the best epoch, in points of the share below
            the lowest threshold (see :func:`dreamgrid.inference.choose_epoch`).
        best_margin_relative: the margin is at most this fraction of the arm's best share.
        min_faces: a checkpoint with fewer faces gets ``few_faces`` and cannot be best.
        confidence, resamples, seed: of the intervals.
        describe: False leaves out what decides nothing (the BCa interval of each average
            and ``best_not_worse``: NaN and False); the calibration benchmark uses it.

    Returns:
        Columns ``arm, epoch, [model], [prompt_set], [steps], renders, face_rate, average,
        pct_below_<t>..., best``, then (appended, so scripts reading the first columns keep
        working) ``median, average_ci_low, average_ci_high, pct_below_<t>_ci_low,
        pct_below_<t>_ci_high..., best_not_worse, faces, face_rate_ci_low,
        face_rate_ci_high, pct_below_<t>_all, pct_below_<t>_all_ci_low,
        pct_below_<t>_all_ci_high..., few_faces``; sorted by arm then epoch.

        ``face_rate`` is a fraction (0..1); ``average``, ``median`` and ``pct_below_<t>``
        count renders with a face only (NaN without one); ``pct_below_<t>_all`` counts every
        render, a render without a face as not below. Intervals: BCa bootstrap of the average
        (renders with a face), Wilson for face rate and shares. ``best`` is each arm's
        epoch chosen by the non-inferiority rule on the selection half of the seeds
        (:func:`dreamgrid.inference.split_seeds`; the planned contrasts at chosen epochs are
        estimated on the other half); ``best_not_worse`` is the same rule on every seed.
        Both read the all-renders share below the lowest threshold and skip checkpoints
        with ``few_faces``; an arm without such a checkpoint has neither flag.

    Raises:
        SpecError: a missing column, bad values, bad thresholds or a negative margin.
    """
    _require(scores, SUMMARY_INPUT_COLUMNS, "scores")
    levels = _check_thresholds(thresholds)
    for name, value in (
        ("best_margin", best_margin),
        ("best_margin_relative", best_margin_relative),
    ):
        if not math.isfinite(value) or value < 0:
            raise SpecError(f"{name} must be a non-negative number, got {value!r}.")
    scores = _normalise(scores, "scores")
    if "seed" not in scores.columns:
        scores = scores.assign(seed=scores.groupby(["arm", "epoch"]).cumcount())
    pct_columns = [pct_column(t) for t in levels]
    extra = group_columns(scores)
    keys = ["arm", "epoch", *extra]
    has_steps = "steps" in scores.columns
    columns = keys + (["steps"] if has_steps else []) + ["renders", "face_rate", "average"]
    columns += [*pct_columns, "best"]
    appended = ["median", "average_ci_low", "average_ci_high"]
    appended += [f"{c}_ci_{end}" for c in pct_columns for end in ("low", "high")]
    appended += ["best_not_worse", "faces", "face_rate_ci_low", "face_rate_ci_high"]
    appended += [f"{c}_all{end}" for c in pct_columns for end in ("", "_ci_low", "_ci_high")]
    appended += ["few_faces"]

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
        n, k = len(group), len(faces)
        row["renders"] = n
        row["faces"] = k
        row["face_rate"] = k / n
        low, high = stats.wilson(k, n, confidence)
        row["face_rate_ci_low"], row["face_rate_ci_high"] = low, high
        row["average"] = float(faces.mean()) if k else math.nan
        row["median"] = float(np.median(faces)) if k else math.nan
        row["average_ci_low"], row["average_ci_high"] = (
            stats.mean_interval(
                faces,
                rng=stats.rng_for(seed, "checkpoint", *key),
                confidence=confidence,
                resamples=resamples,
            )
            if describe
            else (math.nan, math.nan)
        )
        for level, name in zip(levels, pct_columns, strict=True):
            below = int((faces < level).sum())
            row[name] = 100.0 * below / k if k else math.nan
            low, high = stats.wilson(below, k, confidence)
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = 100.0 * low, 100.0 * high
            row[f"{name}_all"] = 100.0 * below / n
            low, high = stats.wilson(below, n, confidence)
            row[f"{name}_all_ci_low"], row[f"{name}_all_ci_high"] = 100.0 * low, 100.0 * high
        row["few_faces"] = k < min_faces
        rows.append(row)
    summary = pd.DataFrame(rows, columns=[c for c in columns if c != "best"] + appended)
    summary = summary.astype({"epoch": "int64", "renders": "int64", "faces": "int64"})
    summary["few_faces"] = summary["few_faces"].astype(bool)
    summary["best"] = False
    summary["best_not_worse"] = False
    options = {
        "margin": best_margin,
        "relative": best_margin_relative,
        "min_faces": min_faces,
        "seed": seed,
        "confidence": confidence,
        "resamples": resamples,
    }
    groups = scores.groupby(extra, sort=True) if extra else [((), scores)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        selection, _ = inference.split_seeds(group["seed"].unique(), seed)
        in_group = np.logical_and.reduce(
            [summary[c] == v for c, v in zip(extra, key, strict=True)]
            + [np.ones(len(summary), dtype=bool)]
        )
        flags = (("best", selection), ("best_not_worse", None))
        for flag, seeds in flags if describe else flags[:1]:
            chosen = inference.best_epochs(group, levels[0], seeds=seeds, key=key, **options)
            for arm, (epoch, _) in chosen.items():
                if epoch is not None:
                    hit = in_group & (summary["arm"] == arm) & (summary["epoch"] == epoch)
                    summary.loc[hit, flag] = True
    return summary[columns + appended]
