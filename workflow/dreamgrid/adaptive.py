"""The adaptive grid (``search.method: successive_halving``): which arms stop at each look.

Every arm trains to the first look epoch and is rendered and scored; at each look the arms
still running are compared with the current best on the same seeds, and an arm that is worse
than the best by more than ``search.margin`` (the whole interval beyond it) stops training.
The rest train on to the next look. How (measured in ``benchmarks/bench_adaptive.py``):

- **Best so far.** Each arm is represented by its best epoch up to the look (lowest mean
  distance), so an arm that peaked early (overtrains) is judged by the checkpoint the final
  analysis would choose, not by its decline.
- **Select on one half.** The seeds are split as the final analysis splits them
  (:func:`dreamgrid.inference.split_seeds`): each arm's best epoch and the current best arm
  are picked on the selection half. The intervals use all seeds (``compare_on="all"``): on
  the estimation half alone they are sqrt(2) wider and the grid used 7 points more of its
  epochs in the benchmark, while the best's luck on its selection half (about 0.004 of
  distance among 12 equal arms, half of it in an all-seed mean) stays well inside the margin.
- **Still improving.** With ``search.extrapolate``, an arm whose best epoch is the look's
  own epoch is credited with closing its gap to the best at its recent rate (per-seed slopes
  over the last 3 epochs: their mean plus one standard error, never negative; all seeds) for
  every epoch left: a slow starter that gains fast is not stopped for being behind early.
- **Error over looks.** An arm stops when the lower end of the paired t interval of
  ``arm - best`` (per seed, seeds where both found a face) lies above the margin plus that
  credit. The chance of stopping an arm that is not worse by more than the margin is spent
  over the looks by a Lan-DeMets function (information fraction = look epoch / last look
  epoch, so the last look spends the rest of ``search.alpha``) and split over the arms
  compared at each look (Bonferroni), one-sided.
- **No faces.** An arm with fewer than ``min_faces`` faces in every epoch so far has no
  distance to compare; it stops when its face rate at the look is lower than the best's
  (exact McNemar test at the same level), else continues.

The t interval rather than a bootstrap: the looks' levels are extreme (a Bonferroni share of
an O'Brien-Fleming increment, 99.99% and beyond), where a BCa interval needs hundreds of
thousands of resamples and is least accurate; with 50+ seed pairs the t interval is the
field's standard and deterministic. With replicates (several training runs per arm) the run
is the unit: the interval is :func:`dreamgrid.inference.run_contrast`'s (seed-adjusted run
effects, t with run-to-run df), as in the verdict.

Pure tables in, tables out: the workflow's ``decide_look`` checkpoint writes
:func:`decide`'s table, and the plan reads :func:`still_running` from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dreamgrid import inference, stats
from dreamgrid.scoretable import face_matrix, seed_matrix

#: Columns of a look's decision table (``results/search/look-<epoch>.tsv``), in order.
DECISION_COLUMNS = (
    "look",
    "epoch",
    "arm",
    "decision",
    "best_arm",
    "n_pairs",
    "estimate",
    "ci_low",
    "ci_high",
    "confidence",
    "alpha_spent",
    "margin",
    "method",
    "reason",
    # added by the calibrated rule (after the contract's columns):
    "arm_epoch",
    "best_epoch",
    "credit",
    "face_rate",
)
CONTINUE, STOP, BEST = "continue", "stop", "best"
#: search.margin's default on VGG-Face/cosine's scale: a difference no one would call a
#: different likeness (render-to-render SD is about 0.05, recipe effects 0.02-0.05); other
#: models' defaults scale it by DeepFace's thresholds (:func:`default_margin`).
MARGIN = 0.01
MARGIN_SCALE = ("VGG-Face", "cosine")


def default_margin(model: str, metric: str) -> float | None:
    """:data:`MARGIN` on the scale of ``model``/``metric``: times the ratio of DeepFace's
    same-person thresholds (two significant digits); None where DeepFace has none."""
    from dreamgrid.scoring.deepface_adapter import verification_threshold

    own, reference = verification_threshold(model, metric), verification_threshold(*MARGIN_SCALE)
    if own is None or not reference:
        return None
    return float(f"{MARGIN * own / reference:.2g}")


#: Fewest seed pairs a distance comparison needs; below it the arm continues.
MIN_PAIRS = 10
#: Epochs (up to the look) over which a still-improving arm's rate of closing is measured.
CREDIT_WINDOW = 3
#: Standard errors of optimism in that rate: one change between two epochs is noisy (SE about
#: 0.007 an epoch on 200 seeds), and a slow starter's credit must not hang on one low draw.
CREDIT_SE = 1.0


def look_epochs(search: Mapping[str, Any], epochs: int) -> list[int]:
    """The epochs of the looks: ``search.looks`` sorted, or every epoch from the second to the
    one before last (every epoch is rendered anyway; the first has no rate of improvement to
    credit a slow starter with); never the last epoch (it is the final analysis)."""
    looks = search.get("looks") or range(2, epochs)
    return sorted({int(e) for e in looks if 1 <= int(e) < epochs})


def spending(t: float, alpha: float, rule: str) -> float:
    """Lan-DeMets cumulative alpha spent by information fraction ``t`` (0..1)."""
    if rule not in ("obrien_fleming", "pocock"):
        raise ValueError(f"unknown alpha-spending rule {rule!r} (obrien_fleming or pocock)")
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if rule == "obrien_fleming":
        from scipy import stats as sps  # here: config checks import this module in every env

        return float(2.0 * (1.0 - sps.norm.cdf(sps.norm.ppf(1.0 - alpha / 2.0) / math.sqrt(t))))
    return float(alpha * math.log(1.0 + (math.e - 1.0) * t))


def look_alphas(search: Mapping[str, Any], epochs: int) -> dict[int, float]:
    """Look epoch -> the alpha it may spend (the increment of the spending function), so the
    looks together spend ``search.alpha``. The information fraction is the look epoch over
    the last look's: no test is made at the final epoch, so nothing is kept for it."""
    alpha, rule = float(search.get("alpha", 0.05)), search.get("spending", "obrien_fleming")
    looks = look_epochs(search, epochs)
    out, spent = {}, 0.0
    for epoch in looks:
        total = spending(epoch / looks[-1], alpha, rule)
        out[epoch] = max(total - spent, 0.0)
        spent = total
    return out


def _best_epoch(
    matrix: pd.DataFrame, faces: pd.Series, arm: str, epochs: Sequence[int], min_faces: int
) -> tuple[int | None, float]:
    """(epoch, mean) of ``arm``'s lowest mean distance over ``epochs`` on ``matrix``'s seeds,
    among epochs with at least ``min_faces`` faces (all seeds); (None, NaN) when none has."""
    means = {
        e: float(matrix[(arm, e)].mean(skipna=True))
        for e in epochs
        if (arm, e) in matrix.columns and faces.get((arm, e), 0) >= min_faces
    }
    means = {e: m for e, m in means.items() if np.isfinite(m)}
    if not means:
        return None, math.nan
    epoch = min(means, key=lambda e: (means[e], e))
    return epoch, means[epoch]


def _credit(matrix: pd.DataFrame, arm: str, best: str, epochs: Sequence[int], left: int) -> float:
    """How much ``arm`` may still gain on ``best``: the rate at which its gap closed over
    the last :data:`CREDIT_WINDOW` ``epochs`` (per seed, the least-squares slope of the gap
    over those epochs; their mean plus :data:`CREDIT_SE` standard errors), never negative,
    times the ``left`` epochs still to train. On all seeds: a credit only ever keeps an arm
    running, so it cannot add false stops."""
    window = [e for e in epochs if (arm, e) in matrix.columns and (best, e) in matrix.columns]
    window = window[-CREDIT_WINDOW:]
    if len(window) < 2 or left <= 0:
        return 0.0
    gaps = np.column_stack([(matrix[(arm, e)] - matrix[(best, e)]).to_numpy() for e in window])
    gaps = gaps[np.isfinite(gaps).all(axis=1)]
    if len(gaps) < MIN_PAIRS:
        return 0.0
    x = np.asarray(window, dtype=float) - np.mean(window)
    rates = -(gaps - gaps.mean(axis=1, keepdims=True)) @ x / float(x @ x)
    rate = rates.mean() + CREDIT_SE * rates.std(ddof=1) / math.sqrt(len(rates))
    return max(float(rate), 0.0) * left


def t_interval(diff: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided t interval of the mean of ``diff`` at ``confidence`` (scipy.stats)."""
    if len(diff) < 2:
        return math.nan, math.nan
    if np.ptp(diff) == 0:
        return float(diff[0]), float(diff[0])
    from scipy import stats as sps

    ci = sps.ttest_1samp(diff, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def decide(
    scores: pd.DataFrame,
    *,
    epoch: int,
    active: Sequence[str],
    search: Mapping[str, Any],
    epochs: int,
    seed: int = stats.SEED,
    resamples: int = stats.RESAMPLES,
    min_faces: int = stats.MIN_FACES,
    compare_on: str = "all",
) -> pd.DataFrame:
    """The decision table of the look at ``epoch`` over the ``active`` arms.

    Args:
        scores: score table rows (``arm, epoch, seed, face_found, mean_distance``) of one
            face model and prompt set; rows of later epochs and other arms are ignored.
        active: arms still training before this look.
        search: the config's ``search`` section; epochs: ``training.epochs``.
        seed: ``report.seed`` (the seed split, as the final analysis splits them).
        resamples: accepted for the contract; the t interval draws nothing.
        min_faces: ``report.min_faces``: an epoch with fewer faces has no distance to compare.
        compare_on: ``all`` seeds (default) or the ``estimation`` half for the intervals.

    Returns:
        One row per active arm (:data:`DECISION_COLUMNS`): ``best`` for the current best,
        ``stop`` or ``continue`` for the others with the interval of ``arm - best`` (at their
        best epochs so far, ``arm_epoch`` and ``best_epoch``) and the ``credit`` for a gap
        still closing; the stop rule is ``ci_low > margin + credit``.

    With several training runs per arm (a ``replicate`` column), the seed matrices are the
    runs' means (selection, credit), and each interval is
    :func:`dreamgrid.inference.run_contrast`'s over every arm's checkpoint (the run-to-run
    variance pooled over the arms): the run is the unit, as in the verdict.

    Raises:
        ValueError: ``epoch`` is not a look.
    """
    del resamples  # the t interval is exact for its model and draws nothing
    alphas = look_alphas(search, epochs)
    if epoch not in alphas:
        raise ValueError(f"epoch {epoch} is not a look (looks: {sorted(alphas)})")
    replicated = "replicate" in scores.columns and scores["replicate"].nunique() > 1
    look = sorted(alphas).index(epoch) + 1
    margin = float(search.get("margin", MARGIN))
    extrapolate = bool(search.get("extrapolate", True))
    active = [str(a) for a in active]
    frame = scores.loc[(scores["epoch"] <= epoch) & scores["arm"].astype(str).isin(active)]
    frame = frame.assign(arm=frame["arm"].astype(str))
    matrix = seed_matrix(frame) if not frame.empty else pd.DataFrame()
    found = face_matrix(frame) if not frame.empty else pd.DataFrame()
    faces = found.sum() if not found.empty else pd.Series(dtype=float)
    selection_seeds, estimation_seeds = inference.split_seeds(matrix.index, seed)
    selection = matrix.loc[matrix.index.isin(selection_seeds)]
    if compare_on not in ("all", "estimation"):
        raise ValueError(f"compare_on is {compare_on!r}; use all or estimation")
    if compare_on == "all":
        estimation_seeds = list(matrix.index)
    estimation = matrix.loc[matrix.index.isin(estimation_seeds)]
    found_est = found.loc[found.index.isin(estimation_seeds)]
    have = sorted({int(e) for e in frame["epoch"].unique()})
    runs = inference.run_means(frame) if replicated else None
    fits: dict = {}

    chosen = {a: _best_epoch(selection, faces, a, have, min_faces) for a in active}
    ranked = sorted((m, a) for a, (e, m) in chosen.items() if e is not None)
    best = ranked[0][1] if ranked else None
    best_epoch = chosen[best][0] if best else None
    # Every arm's checkpoint in one run-effects fit: one pooled run-to-run variance (more df).
    cells = sorted((a, e) for a, (e, _) in chosen.items() if e is not None)
    compared = max(len(active) - 1, 1)
    one_sided = alphas[epoch] / compared
    confidence = 1.0 - 2.0 * one_sided  # two-sided interval whose lower tail is one_sided
    rows = []
    for arm in active:
        row = dict.fromkeys(DECISION_COLUMNS, math.nan)
        row.update(look=look, epoch=epoch, arm=arm, best_arm=best or "", margin=margin)
        row.update(alpha_spent=alphas[epoch], confidence=confidence, method="", reason="")
        row.update(arm_epoch=chosen[arm][0], best_epoch=best_epoch, credit=0.0)
        if (arm, epoch) in found.columns:
            row["face_rate"] = float(found[(arm, epoch)].mean(skipna=True))
        if best is None or arm == best:
            row["decision"] = BEST if arm == best else CONTINUE
            if best is None:
                row["reason"] = f"no arm has {min_faces} faces in an epoch yet: nothing to compare"
            rows.append(row)
            continue
        arm_epoch = chosen[arm][0]
        if arm_epoch is None:
            rows.append(_face_row(row, found_est, arm, best, epoch, best_epoch, one_sided))
            continue
        diff = stats.finite(
            estimation[(arm, arm_epoch)].to_numpy() - estimation[(best, best_epoch)].to_numpy()
        )
        credit = 0.0
        if extrapolate and arm_epoch == epoch:
            credit = _credit(matrix, arm, best, have, epochs - epoch)
        if replicated:
            result = inference.run_contrast(
                runs,
                {(arm, arm_epoch): 1.0, (best, best_epoch): -1.0},
                set(estimation_seeds),
                confidence,
                cells=cells,
                fits=fits,
            )
            low, high, estimate = result["ci_low"], result["ci_high"], result["estimate"]
            n_pairs = len(diff)
            method = result["method"] + " (best and epochs picked on the selection half)"
            enough = np.isfinite(low)
        else:
            low, high = t_interval(diff, confidence)
            estimate = float(diff.mean()) if len(diff) else math.nan
            n_pairs = len(diff)
            method = (
                f"seed-paired t interval at {100 * confidence:.4g}% ({compare_on} seeds; "
                "best and epochs picked on the selection half)"
            )
            enough = len(diff) >= MIN_PAIRS
        stop = bool(enough and np.isfinite(low) and low > margin + credit)
        row.update(
            decision=STOP if stop else CONTINUE,
            n_pairs=n_pairs,
            estimate=estimate,
            ci_low=low,
            ci_high=high,
            credit=credit,
            method=method,
        )
        if stop:
            row["reason"] = (
                f"epoch {arm_epoch} worse than {best}@{best_epoch} by {low:.4g} or more "
                f"(> margin {margin:g}" + (f" + {credit:.4g} still closing)" if credit else ")")
            )
        elif not enough:
            row["reason"] = (
                "too few training runs for a run-to-run interval"
                if replicated
                else f"{len(diff)} seed pairs with a face in both (< {MIN_PAIRS})"
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(DECISION_COLUMNS))


def _face_row(
    row: dict,
    found: pd.DataFrame,
    arm: str,
    best: str,
    epoch: int,
    best_epoch: int,
    one_sided: float,
) -> dict:
    """An arm with too few faces in every epoch: stop when its face rate at the look is
    lower than the best's (exact McNemar on the compared seeds, one-sided level)."""
    a = found[(arm, epoch)] if (arm, epoch) in found.columns else pd.Series(dtype=float)
    b = found[(best, best_epoch)]
    both = a.notna() & b.reindex(a.index).notna()
    fa, fb = a[both].to_numpy() > 0.5, b.reindex(a.index)[both].to_numpy() > 0.5
    p = stats.mcnemar_p(fa, fb) if len(fa) else 1.0
    lower = len(fa) > 0 and fa.mean() < fb.mean()
    stop = bool(lower and p / 2.0 < one_sided)
    row.update(
        decision=STOP if stop else CONTINUE,
        n_pairs=len(fa),
        estimate=float(fa.mean() - fb.mean()) if len(fa) else math.nan,
        method="exact McNemar test of face rates, one-sided",
        reason=(
            f"too few faces: face rate {fa.mean():.2f} against {best}'s {fb.mean():.2f} "
            f"(p = {p / 2.0:.2g})"
            if stop
            else "too few faces to compare distances; face rate not shown lower"
        ),
    )
    return row


def still_running(decisions: pd.DataFrame) -> list[str]:
    """Arms of a look's decision table that train on (every decision but ``stop``)."""
    return decisions.loc[decisions["decision"] != STOP, "arm"].astype(str).tolist()
