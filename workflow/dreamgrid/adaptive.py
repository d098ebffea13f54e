"""The adaptive grid (``search.method: successive_halving``): which arms stop at each look.

Every arm trains to the first look epoch and is rendered and scored; at each look the arms
still running are compared with the current best on the same seeds, and an arm whose mean
distance is worse than the best's by more than ``search.margin`` (the whole interval beyond
it) stops training. The rest train on to the next look. The error of stopping an arm that is
not that much worse is controlled over all looks by a Lan-DeMets alpha-spending rule, and at
each look split over the arms compared (Bonferroni).

Pure tables in, tables out: the workflow's ``decide_look`` checkpoint writes
:func:`decide`'s table, and the plan reads :func:`still_running` from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from dreamgrid import stats
from dreamgrid.scoretable import seed_matrix

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
)
CONTINUE, STOP, BEST = "continue", "stop", "best"


def look_epochs(search: Mapping[str, Any], epochs: int) -> list[int]:
    """The epochs of the looks: ``search.looks`` sorted, or about a third and two thirds of
    ``epochs``; never the last epoch (it is the final analysis, not a look)."""
    looks = search.get("looks") or [math.ceil(epochs / 3), math.ceil(2 * epochs / 3)]
    return sorted({int(e) for e in looks if 1 <= int(e) < epochs})


def spending(t: float, alpha: float, rule: str) -> float:
    """Lan-DeMets cumulative alpha spent by information fraction ``t`` (0..1)."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if rule == "obrien_fleming":
        return float(2.0 * (1.0 - sps.norm.cdf(sps.norm.ppf(1.0 - alpha / 2.0) / math.sqrt(t))))
    if rule == "pocock":
        return float(alpha * math.log(1.0 + (math.e - 1.0) * t))
    raise ValueError(f"unknown alpha-spending rule {rule!r} (obrien_fleming or pocock)")


def look_alphas(search: Mapping[str, Any], epochs: int) -> dict[int, float]:
    """Look epoch -> the alpha it may spend (the increment of the spending function), so the
    looks together spend at most ``search.alpha``."""
    alpha, rule = float(search.get("alpha", 0.05)), search.get("spending", "obrien_fleming")
    out, spent = {}, 0.0
    for epoch in look_epochs(search, epochs):
        total = spending(epoch / epochs, alpha, rule)
        out[epoch] = max(total - spent, 0.0)
        spent = total
    return out


def decide(
    scores: pd.DataFrame,
    *,
    epoch: int,
    active: Sequence[str],
    search: Mapping[str, Any],
    epochs: int,
    seed: int = stats.SEED,
    resamples: int = stats.RESAMPLES,
) -> pd.DataFrame:
    """The decision table of the look at ``epoch`` over the ``active`` arms.

    Args:
        scores: score table rows (``arm, epoch, seed, face_found, mean_distance``) of one
            face model and prompt set; rows of other epochs and arms are ignored.
        active: arms still training before this look.
        search: the config's ``search`` section; epochs: ``training.epochs``.

    Returns:
        One row per active arm (:data:`DECISION_COLUMNS`): ``best`` for the current best,
        ``stop`` or ``continue`` for the others with the interval of ``arm - best``.
    """
    alphas = look_alphas(search, epochs)
    if epoch not in alphas:
        raise ValueError(f"epoch {epoch} is not a look (looks: {sorted(alphas)})")
    look = sorted(alphas).index(epoch) + 1
    margin = float(search.get("margin", 0.0))
    frame = scores.loc[(scores["epoch"] == epoch) & scores["arm"].isin(active)]
    matrix = seed_matrix(frame) if not frame.empty else pd.DataFrame()
    means = {
        arm: float(np.nanmean(matrix[(arm, epoch)]))
        if (arm, epoch) in matrix.columns and matrix[(arm, epoch)].notna().any()
        else math.nan
        for arm in active
    }
    ranked = sorted((m, arm) for arm, m in means.items() if np.isfinite(m))
    best = ranked[0][1] if ranked else None
    compared = max(len(active) - 1, 1)
    confidence = 1.0 - alphas[epoch] / compared
    rows = []
    for arm in active:
        row = dict.fromkeys(DECISION_COLUMNS, math.nan)
        row.update(look=look, epoch=epoch, arm=arm, best_arm=best or "", margin=margin)
        row.update(alpha_spent=alphas[epoch], confidence=confidence)
        if best is None or arm == best:
            row.update(decision=BEST if arm == best else CONTINUE, method="", reason="")
            if best is None:
                row["reason"] = "no face at this look: nothing to compare"
            rows.append(row)
            continue
        result = stats.paired(
            matrix[(arm, epoch)].to_numpy(),
            matrix[(best, epoch)].to_numpy(),
            rng=stats.rng_for(seed, "look", epoch, arm, best),
            confidence=confidence,
            resamples=stats.resamples_for(confidence, resamples),
        )
        stop = np.isfinite(result["ci_low"]) and result["ci_low"] > margin
        row.update(
            decision=STOP if stop else CONTINUE,
            n_pairs=result["n_pairs"],
            estimate=result["mean_diff"],
            ci_low=result["ci_low"],
            ci_high=result["ci_high"],
            method=f"seed-paired BCa interval at {100 * confidence:.4g}%",
            reason=(
                f"worse than {best} by {result['ci_low']:.4g} or more (> margin {margin:g})"
                if stop
                else ""
            ),
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(DECISION_COLUMNS))


def still_running(decisions: pd.DataFrame) -> list[str]:
    """Arms of a look's decision table that train on (every decision but ``stop``)."""
    return decisions.loc[decisions["decision"] != STOP, "arm"].astype(str).tolist()
