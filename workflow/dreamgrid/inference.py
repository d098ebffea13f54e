"""Inference on score tables: best epochs, the planned contrasts, the exploratory table.

Every arm and epoch renders the same seeds, so seed s of arm A and seed s of arm B share prompt
and initial noise: every comparison is paired on seeds (:mod:`dreamgrid.stats` holds the tests).

Two families of tests, each with its own correction, per face model and prompt set:

- **planned** (``effects.csv``): factorial main effects and two-way interactions of the axes,
  and each arm against the top arm, at each arm's chosen epoch and at equal training steps.
  With several base models, also each other axis's main effect within each base model (term
  ``within``, axis ``<axis> | base_model=<name>``): a recipe may help on one model only.
  Bonferroni over the family, and simultaneous intervals to match: each interval has coverage
  ``1 - (1 - confidence) / m`` for a family of m contrasts, so all hold together with at least
  ``confidence``. The verdict's claims come from this family only.
- **exploratory** (``comparisons.csv``): every pair of arms at every epoch both have; Holm
  over that table; intervals unadjusted. Nothing in it is stated as established.

Choosing and estimating on separate renders: the seeds are split in two random halves (seeded). The chosen epoch of each arm and the top arm are picked on the *selection* half;
every contrast that involves a choice (the chosen-epoch view, and each arm against the top arm)
is estimated on the *estimation* half only. Factorial effects at equal steps involve no choice
and use every seed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dreamgrid import stats
from dreamgrid.scoretable import (
    BASE_MODEL,
    _per_seed,
    face_matrix,
    group_columns,
    replicates,
    seed_matrix,
)

#: Columns of :func:`compare_arms` (the ``dreamgrid compare`` contract), in order.
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
    "share_a_better",
    "face_diff",
    "face_p",
    "method",
    "median_diff",
)
#: Columns of :func:`planned_contrasts` (``effects.csv``), in order.
EFFECT_COLUMNS = (
    "family",
    "view",
    "term",
    "axis",
    "contrast",
    "n_seeds",
    "estimate",
    "ci_low",
    "ci_high",
    "confidence",
    "p_value",
    "p_adjusted",
    "face_diff",
    "face_p",
    "seeds",
    "checkpoints",
    "method",
    "run_sd",
)
#: Score-table columns that name an arm's factors (``dreamgrid report`` input).
AXIS_COLUMNS = ("token", "regularization", "captions", "method", BASE_MODEL)
#: Axis levels in the order used as the reference level (first) of a contrast.
AXIS_ORDER = {
    "regularization": ("none", "noreg", "generated", "genreg", "ground_truth", "gtreg"),
    "captions": ("none", "nocap", "blip"),
    "method": ("full", "lora"),
    BASE_MODEL: ("sd15", "sdxl", "flux"),  # the oldest family is the reference
}
VIEWS = ("chosen", "equal_steps")


# ---- seeds --------------------------------------------------------------------------------
def split_seeds(seeds: Sequence[int], seed: int = stats.SEED) -> tuple[list[int], list[int]]:
    """(selection, estimation): the seeds shuffled by a seeded generator and cut in half, so
    that no pattern in the seed numbers (odd and even prompts, say) lines up with the halves."""
    ordered = np.array(sorted({int(s) for s in seeds}), dtype=np.int64)
    shuffled = stats.rng_for(seed, "split").permutation(ordered)
    half = (len(shuffled) + 1) // 2
    return sorted(shuffled[:half].tolist()), sorted(shuffled[half:].tolist())


def below_matrix(scores: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """1.0 where a render has a face below ``threshold``, 0.0 otherwise (no face counts as
    not below), NaN where the seed was not rendered; rows seed, columns (arm, epoch)."""
    hit = scores["face_found"].astype(bool) & (scores["mean_distance"] < threshold)
    return _per_seed(scores, hit)


# ---- best epoch ---------------------------------------------------------------------------
def effective_margin(best_share: float, margin: float, relative: float) -> float:
    """The non-inferiority margin in points: ``margin``, or ``relative`` × the arm's best
    share when that is smaller (an arm that peaks at 8% may lose at most 2 points, not 5)."""
    return min(float(margin), float(relative) * float(best_share))


def choose_epoch(
    below: pd.DataFrame,
    faces: Mapping[int, int],
    *,
    margin: float,
    relative: float,
    min_faces: int,
    rng_key: tuple,
    seed: int = stats.SEED,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
) -> tuple[int | None, float]:
    """Earliest epoch of one arm that is not worse than its best by more than the margin.

    The arm's best is the epoch with the highest share of renders below the threshold (all
    renders count; no face = not below) among epochs with at least ``min_faces`` faces. An
    earlier epoch e is chosen when the lower end of the BCa interval of the paired difference
    (share at e minus share at best, per seed) is not below ``-margin`` (non-inferiority, at
    :func:`effective_margin`): "not significantly worse" is not enough.

    Args:
        below: rows seed, one column per epoch (from :func:`below_matrix`).
        faces: epoch -> number of renders with a face (of all seeds, not only ``below``'s).

    Returns:
        (epoch, best share in points); (None, NaN) when no epoch has ``min_faces`` faces.
    """
    eligible = [e for e in sorted(below.columns) if faces.get(e, 0) >= min_faces]
    if not eligible:
        return None, math.nan
    shares = below[eligible].mean()
    best = int(shares.idxmax())
    best_share = 100.0 * float(shares[best])
    allowed = effective_margin(best_share, margin, relative) / 100.0
    for epoch in eligible:
        if epoch == best:
            break
        diff = (below[epoch] - below[best]).dropna().to_numpy()
        low, _ = stats.mean_interval(
            diff,
            rng=stats.rng_for(seed, "best", *rng_key, epoch, best),
            confidence=confidence,
            resamples=resamples,
        )
        if np.isfinite(low) and low >= -allowed - 1e-12:
            return int(epoch), best_share
    return best, best_share


def best_epochs(
    scores: pd.DataFrame,
    threshold: float,
    *,
    margin: float,
    relative: float,
    min_faces: int,
    seeds: Sequence[int] | None = None,
    seed: int = stats.SEED,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    key: tuple = (),
) -> dict[str, tuple[int | None, float]]:
    """:func:`choose_epoch` for every arm of one (model, prompt set), on ``seeds`` (all seeds
    when None). Returns arm -> (epoch, best share in points)."""
    below = below_matrix(scores, threshold)
    if seeds is not None:
        below = below.loc[below.index.isin(list(seeds))]
    faces = scores.groupby(["arm", "epoch"])["face_found"].sum()
    out = {}
    for arm in sorted(scores["arm"].unique()):
        table = below[arm] if arm in below.columns.get_level_values(0) else pd.DataFrame()
        counts = {int(e): int(n) for e, n in faces[arm].items()}
        out[str(arm)] = choose_epoch(
            table,
            counts,
            margin=margin,
            relative=relative,
            min_faces=min_faces,
            rng_key=(*key, arm, "selection" if seeds is not None else "all"),
            seed=seed,
            confidence=confidence,
            resamples=resamples,
        )
    return out


def equal_steps(summary: pd.DataFrame) -> tuple[dict[str, int], int | None]:
    """Each arm's checkpoint at the largest step count that every arm has exactly.

    Returns:
        (arm -> epoch, steps); ({}, None) without a ``steps`` column or a common step count.
    """
    if "steps" not in summary.columns or summary.empty:
        return {}, None
    per_arm = {a: set(g["steps"].astype(int)) for a, g in summary.groupby("arm")}
    common = set.intersection(*per_arm.values())
    if not common:
        return {}, None
    steps = max(common)
    rows = summary.loc[summary["steps"].astype(int) == steps]
    chosen = rows.groupby("arm")["epoch"].min()
    return {str(a): int(e) for a, e in chosen.items()}, steps


# ---- factorial axes -----------------------------------------------------------------------
def arm_axes(
    arms: Sequence[str], table: Mapping[str, Mapping[str, str]] | None = None
) -> pd.DataFrame:
    """Axis levels per arm, from ``table`` (arm -> {axis: level}).

    Returns:
        One row per arm (index), one column per axis with more than one level; arms not in
        ``table`` are left out.
    """
    rows = {arm: dict(table[arm]) for arm in arms if table is not None and arm in table}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if frame.empty:
        return frame
    keep = [c for c in frame.columns if frame[c].nunique() > 1]
    # A settings axis (column: a dotted config key) keeps its levels in config order, the
    # first one the reference (:func:`axis_levels` takes levels as first seen): rows sorted
    # stably by the order each level first appears in ``table``.
    dotted = [c for c in keep if "." in c]
    if dotted and table is not None:
        order = {
            c: list(dict.fromkeys(str(v[c]) for v in table.values() if c in v)) for c in dotted
        }
        rank = pd.DataFrame({c: frame[c].astype(str).map(order[c].index) for c in dotted})
        frame = frame.loc[rank.sort_values(dotted, kind="stable").index]
    return frame[keep].astype(str)


def axes_from_scores(scores: pd.DataFrame) -> dict[str, dict[str, str]] | None:
    """arm -> {axis: level} from the score table's axis columns (:data:`AXIS_COLUMNS`)."""
    columns = [c for c in AXIS_COLUMNS if c in scores.columns]
    if not columns:
        return None
    levels = scores[["arm", *columns]].drop_duplicates("arm")
    return {str(row["arm"]): {c: str(row[c]) for c in columns} for _, row in levels.iterrows()}


def base_models(arms: Mapping[str, Mapping[str, object]] | None) -> dict[str, str]:
    """arm -> base model name when the arms span more than one base model, else ``{}`` (one
    base model is no factor, and the outputs stay as they were)."""
    levels = {str(a): str(v[BASE_MODEL]) for a, v in (arms or {}).items() if BASE_MODEL in v}
    return levels if len(set(levels.values())) > 1 else {}


def axis_levels(axis: str, values: Sequence[str]) -> list[str]:
    """The distinct ``values`` of ``axis``, reference level first (:data:`AXIS_ORDER`, then
    as first seen)."""
    seen = list(dict.fromkeys(values))
    order = AXIS_ORDER.get(axis)
    if order:
        seen.sort(key=lambda v: order.index(v) if v in order else len(order))
    return seen


def design_of(axes: pd.DataFrame) -> str:
    """``one_at_a_time`` when the arms are a baseline plus arms that each change one axis
    (``axes.design: one_at_a_time``, two axes or more: no interaction can be estimated),
    else ``full`` (every combination, or any other set of arms)."""
    return "full" if baseline_arm(axes) is None else "one_at_a_time"


def baseline_arm(axes: pd.DataFrame) -> str | None:
    """The arm every other arm differs from on at most one axis, when the arms are a one at a
    time design (two axes or more, not every combination); else None."""
    if axes is None or axes.shape[1] < 2 or len(axes) < 2:
        return None
    rows = [tuple(r) for r in axes.itertuples(index=False)]
    if len(set(rows)) >= math.prod(axes[c].nunique() for c in axes.columns):
        return None
    for arm, base in zip(axes.index, rows, strict=True):
        if all(sum(a != b for a, b in zip(row, base, strict=True)) <= 1 for row in rows):
            return str(arm)
    return None


def _factorial_series(
    data: pd.DataFrame, axes: pd.DataFrame
) -> list[tuple[str, str, str, pd.Series]]:
    """(term, axis, contrast, per-seed values) of every main effect and two-way interaction.

    A main effect of axis X, level x against the reference level x0 (the first: no
    regularization, no captions, the first token), is per seed the mean over matched arm pairs
    (equal on every other axis) of ``d(x) - d(x0)``. An interaction X×Y is per seed
    ``[d(x,y) - d(x0,y)] - [d(x,y0) - d(x0,y0)]``, averaged over the other axes.
    """
    lookup = {tuple(row): arm for arm, row in axes.iterrows()}
    names = list(axes.columns)
    levels = {n: axis_levels(n, axes[n].tolist()) for n in names}
    points = list(lookup)

    def arm_at(base: tuple, **changes: str) -> str | None:
        point = list(base)
        for axis, level in changes.items():
            point[names.index(axis)] = level
        arm = lookup.get(tuple(point))
        return arm if arm in data.columns else None

    def per_seed(parts: list[pd.Series]) -> pd.Series:
        return pd.concat(parts, axis=1).mean(axis=1, skipna=True)

    out = []
    for axis in names:
        ref = levels[axis][0]
        for level in levels[axis][1:]:
            parts = []
            for point in points:
                if point[names.index(axis)] != ref:
                    continue
                a0, a1 = arm_at(point), arm_at(point, **{axis: level})
                if a0 and a1:
                    parts.append(data[a1] - data[a0])
            if parts:  # no matched pair (arms without a chosen epoch): nothing to estimate
                out.append(("main", axis, f"{level} vs {ref}", per_seed(parts)))
    for x, y in itertools.combinations(names, 2):
        x0, y0 = levels[x][0], levels[y][0]
        for xl, yl in itertools.product(levels[x][1:], levels[y][1:]):
            parts = []
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
                    parts.append((d11 - d01) - (d10 - d00))
            term = f"({xl} vs {x0}) x ({yl} vs {y0})"
            if parts:
                out.append(("interaction", f"{x} x {y}", term, per_seed(parts)))
    return out


def _within_axes(axes: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(base model, its arms' other axes) per base model, when base model is an axis beside
    others: the arms of one base model, with the axes that vary among them."""
    if BASE_MODEL not in axes.columns or axes.shape[1] < 2:
        return []
    out = []
    for level in axis_levels(BASE_MODEL, axes[BASE_MODEL].tolist()):
        sub = axes.loc[axes[BASE_MODEL] == level].drop(columns=BASE_MODEL)
        sub = sub[[c for c in sub.columns if sub[c].nunique() > 1]]
        if len(sub) >= 2 and not sub.empty:
            out.append((level, sub))
    return out


def _planned_series(
    data: pd.DataFrame, axes: pd.DataFrame
) -> list[tuple[str, str, str, pd.Series]]:
    """:func:`_factorial_series` of every axis, then (several base models) each other axis's
    main effect among the arms of one base model: term ``within``, axis
    ``<axis> | base_model=<name>``, the same per-seed estimate on those arms only."""
    out = _factorial_series(data, axes)
    if design_of(axes) == "one_at_a_time":
        return out  # within the baseline's base model the same pairs again; elsewhere none
    for level, sub in _within_axes(axes):
        for term, axis, contrast, values in _factorial_series(data[list(sub.index)], sub):
            if term == "main":
                out.append(("within", f"{axis} | {BASE_MODEL}={level}", contrast, values))
    return out


def top_arm(
    matrix: pd.DataFrame, chosen: Mapping[str, int], seeds: Sequence[int] | None = None
) -> str | None:
    """The arm whose chosen checkpoint is most alike on paired evidence: the lowest mean, over
    the other arms, of the paired mean difference (seeds where both found a face)."""
    arms = sorted(a for a, e in chosen.items() if (a, e) in matrix.columns)
    if not arms:
        return None
    data = matrix if seeds is None else matrix.loc[matrix.index.isin(list(seeds))]
    scores = {}
    for a in arms:
        diffs = [
            (data[(a, chosen[a])] - data[(b, chosen[b])]).mean(skipna=True) for b in arms if b != a
        ]
        diffs = [d for d in diffs if np.isfinite(d)]
        scores[a] = float(np.mean(diffs)) if diffs else (0.0 if len(arms) == 1 else math.inf)
    best = min(arms, key=lambda a: (scores[a], a))
    return best if np.isfinite(scores[best]) else None


def _describe(arms: Sequence[str], chosen: Mapping[str, int], steps: Mapping) -> str:
    parts = []
    for arm in arms:
        at = f"{arm}@{chosen[arm]}"
        if (arm, chosen[arm]) in steps:
            at += f"({steps[(arm, chosen[arm])]} steps)"
        parts.append(at)
    return "; ".join(parts)


def run_means(scores: pd.DataFrame) -> pd.DataFrame:
    """Per training run (arm, epoch, replicate) and seed: the distance (NaN without a face)."""
    face = scores["mean_distance"].where(scores["face_found"].astype(bool))
    frame = scores[["arm", "epoch", "replicate", "seed"]].assign(d=face.astype(float))
    return frame


def run_contrast(
    runs: pd.DataFrame,
    weights: Mapping[tuple[str, int], float],
    seeds: set | None,
    level: float,
    *,
    cells: Sequence[tuple[str, int]] | None = None,
    fits: dict | None = None,
) -> dict[str, float | str]:
    """A contrast of checkpoints with the training run as the unit (replicates): a random
    effect of run, analysed in two stages.

    1. Each run's effect adjusted for seeds: an OLS (statsmodels) of every render's distance
       (where a face was found, over ``seeds``; all when None) on one indicator per run and
       per seed. With every face found this is the run's mean; when a run lost faces on some
       seeds, the seeds' effects (estimated from the other runs) are taken out, so a run
       that found faces only on easy seeds does not look better.
    2. An OLS of those run effects on one indicator per checkpoint of ``cells`` (default: the
       checkpoints ``weights`` names), and the t test of ``weights`` · coefficients with the
       run-to-run residual variance (df = runs − checkpoints). Every recipe difference is
       judged against how much runs of one recipe differ.

    ``fits`` caches stage 1 per (checkpoints, seeds), so every contrast of a view shares it.

    Returns:
        ``estimate, ci_low, ci_high`` (at ``level``), ``p_value``, ``method``, ``run_sd``
        (the SD of run effects around their checkpoint's mean).
    """
    import statsmodels.api as sm

    nan = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    keys = list(cells) if cells is not None else list(weights)
    if set(weights) - set(keys):
        raise ValueError("run_contrast: every weighted checkpoint must be one of the cells")
    frame = runs if seeds is None else runs.loc[runs["seed"].isin(seeds)]
    wanted = set(keys)
    frame = frame.loc[
        [(a, e) in wanted for a, e in zip(frame["arm"], frame["epoch"], strict=True)]
    ].dropna(subset=["d"])
    if frame.empty:
        return {**nan, "method": "run effects (no face)", "run_sd": math.nan}
    cache_key = (tuple(keys), None if seeds is None else frozenset(seeds))
    if fits is not None and cache_key in fits:
        effects = fits[cache_key]
    else:
        effects = seed_adjusted_run_effects(frame)
        if fits is not None:
            fits[cache_key] = effects
    cells_of_runs = list(zip(effects["arm"], effects["epoch"], strict=True))
    df = len(effects) - len(keys)
    if wanted - set(cells_of_runs) or df < 1:
        return {**nan, "method": "run effects (too few runs)", "run_sd": math.nan}
    design = np.array([[float(c == k) for k in keys] for c in cells_of_runs])
    fit = sm.OLS(effects["effect"].to_numpy(), design).fit()
    test = fit.t_test(np.array([weights.get(k, 0.0) for k in keys]))
    low, high = test.conf_int(alpha=1 - level)[0]
    return {
        "estimate": float(np.squeeze(test.effect)),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(np.squeeze(test.pvalue)),
        "method": (
            "t test of seed-adjusted run effects (run is the unit; two-stage OLS, "
            f"{df} df), interval at {100 * level:.4g}%"
        ),
        "run_sd": float(np.sqrt(fit.scale)),
    }


def seed_adjusted_run_effects(frame: pd.DataFrame) -> pd.DataFrame:
    """Stage 1 of :func:`run_contrast`: each run's (arm, epoch, replicate) mean distance at
    the average seed, from an OLS of ``d`` on run indicators and sum-to-zero seed effects."""
    import statsmodels.api as sm

    run_keys = frame[["arm", "epoch", "replicate"]].apply(tuple, axis=1)
    order = list(dict.fromkeys(run_keys))
    run_index = run_keys.map({k: i for i, k in enumerate(order)}).to_numpy()
    seed_dummies = pd.get_dummies(frame["seed"]).astype(float).to_numpy()
    # sum-to-zero coding: run coefficients are run means at the average seed
    seed_part = seed_dummies[:, 1:] - seed_dummies[:, :1]
    run_part = np.eye(len(order))[run_index]
    exog = np.hstack([run_part, seed_part])
    fit = sm.OLS(frame["d"].to_numpy(), exog).fit()
    return pd.DataFrame(
        [
            {"arm": a, "epoch": e, "replicate": r, "effect": float(fit.params[i])}
            for i, (a, e, r) in enumerate(order)
        ]
    )


def planned_contrasts(
    scores: pd.DataFrame,
    summary: pd.DataFrame,
    axes: pd.DataFrame,
    views: Mapping[str, Mapping[str, int]],
    top: str | None,
    estimation: Sequence[int],
    *,
    seed: int = stats.SEED,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    key: tuple = (),
) -> pd.DataFrame:
    """The planned family of one (model, prompt set): factorial effects and each arm against
    the top arm, per view (``chosen``: each arm's chosen epoch; ``equal_steps``).

    Estimates are means over seeds of per-seed differences (seeds where the arms compared
    found a face), negative = the first-named level or arm is more alike. The family is
    Bonferroni-corrected; intervals are BCa at the matching simultaneous coverage
    (column ``confidence``); ``p_value`` is the sign-flip permutation test of the same mean.

    Args:
        views: view -> (arm -> epoch); a view missing or empty is left out.
        top: the top arm (chosen on the selection seeds), or None.
        estimation: the seeds every contrast involving a choice is estimated on.

    Returns:
        :data:`EFFECT_COLUMNS`.
    """
    matrix = seed_matrix(scores)
    found = face_matrix(scores)
    steps = {}
    if "steps" in summary.columns:
        steps = {(a, int(e)): int(s) for a, e, s in summary[["arm", "epoch", "steps"]].to_numpy()}
    estimation = set(estimation)
    pending = []  # (row, per-seed values, (found_a, found_b) or None)
    for view in VIEWS:
        chosen = {a: e for a, e in views.get(view, {}).items() if (a, e) in matrix.columns}
        if not chosen:
            continue
        data = pd.DataFrame({a: matrix[(a, e)] for a, e in chosen.items()})
        if view == "chosen":
            data = data.loc[data.index.isin(estimation)]
        arms = [a for a in axes.index if a in data.columns]
        if len(arms) >= 2 and not axes.empty:
            # the same terms on an identity table: each term's weight on each arm
            identity = pd.DataFrame(np.eye(len(arms)), index=arms, columns=arms)
            weights = _planned_series(identity, axes.loc[arms])
            series = _planned_series(data[arms], axes.loc[arms])
            for (term, axis, contrast, values), (*_, w) in zip(series, weights, strict=True):
                row = {"view": view, "term": term, "axis": axis, "contrast": contrast}
                row["seeds"] = "estimation half" if view == "chosen" else "all"
                row["checkpoints"] = _describe(arms, chosen, steps)
                row["_weights"] = {(a, chosen[a]): float(w[a]) for a in arms if w[a] != 0}
                row["_seeds"] = estimation if view == "chosen" else None
                row["_cells"] = [(a, chosen[a]) for a in sorted(chosen)]
                pending.append((row, values.to_numpy(dtype=float), None))
        if top is not None and top in chosen:
            rows = data.index.isin(estimation)
            for arm in sorted(chosen):
                if arm == top:
                    continue
                row = {"view": view, "term": "vs_top", "axis": "arm"}
                row["contrast"] = f"{arm} vs {top}"
                row["seeds"] = "estimation half"
                row["checkpoints"] = _describe([arm, top], chosen, steps)
                row["_weights"] = {(arm, chosen[arm]): 1.0, (top, chosen[top]): -1.0}
                row["_seeds"] = estimation
                row["_cells"] = [(a, chosen[a]) for a in sorted(chosen)]
                faces = (
                    found[(arm, chosen[arm])].reindex(data.index)[rows],
                    found[(top, chosen[top])].reindex(data.index)[rows],
                )
                values = (data[arm] - data[top])[rows].to_numpy(dtype=float)
                pending.append((row, values, faces))
    family = sum(1 for _, v, _ in pending if np.isfinite(v).sum() >= 2)
    level = stats.simultaneous_confidence(confidence, family)
    runs = run_means(scores) if replicates(scores) > 1 else None
    fits: dict = {}  # stage 1 per view and seed set, shared by its contrasts
    rows = []
    for row, values, faces in pending:
        weights, seeds, row_cells = row.pop("_weights"), row.pop("_seeds"), row.pop("_cells")
        values = stats.finite(values)
        face_diff = face_p = math.nan
        if faces is not None:
            fa, fb = (f.to_numpy(dtype=float) for f in faces)
            both = np.isfinite(fa) & np.isfinite(fb)
            if both.any():
                face_diff = float(fa[both].mean() - fb[both].mean())
                face_p = stats.mcnemar_p(fa[both] > 0.5, fb[both] > 0.5)
        result = {
            "family": "planned",
            **row,
            "n_seeds": len(values),
            "confidence": level,
            "face_diff": face_diff,
            "face_p": face_p,
        }
        if runs is not None:
            result.update(run_contrast(runs, weights, seeds, level, cells=row_cells, fits=fits))
            result["method"] += f" (Bonferroni, family of {family})"
        else:
            rng = stats.rng_for(seed, "planned", *key, row["view"], row["axis"], row["contrast"])
            low, high = stats.mean_interval(values, rng=rng, confidence=level, resamples=resamples)
            p, how = stats.sign_flip_test(
                values,
                rng=rng,
                resamples=resamples,
                refine_below=10 * (1 - level),
                refine_resamples=stats.resamples_for(level, resamples),
            )
            result.update(
                {
                    "estimate": float(values.mean()) if len(values) else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": p,
                    "method": (
                        f"sign-flip permutation ({how}); BCa interval at {100 * level:.4g}% "
                        f"(Bonferroni, family of {family})"
                    ),
                }
            )
        rows.append(result)
    table = pd.DataFrame(rows, columns=[c for c in EFFECT_COLUMNS if c != "p_adjusted"])
    table["p_adjusted"] = stats.adjust(table["p_value"].to_numpy(dtype=float), "bonferroni")
    return table[list(EFFECT_COLUMNS)]


# ---- exploratory: every pair at every epoch -----------------------------------------------
def compare_arms(
    scores: pd.DataFrame,
    *,
    seed: int = stats.SEED,
    resamples: int = stats.RESAMPLES,
    confidence: float = stats.CONFIDENCE,
) -> pd.DataFrame:
    """Every pair of arms at every epoch both have, paired on seeds (the exploratory family).

    Args:
        scores: one row per render with arm, epoch, seed, face_found (bool), mean_distance,
            and optionally model and prompt_set (compared only within equal values).

    Returns:
        :data:`COMPARE_COLUMNS` (plus model/prompt_set when present, at the end):
        ``mean_diff`` is the mean of ``a - b`` over seeds where both found a face with its
        BCa interval (unadjusted), ``p_value`` the sign-flip permutation test of that mean,
        ``p_adjusted`` Holm over the rows of each model and prompt set, ``share_a_better``
        the fraction of those seeds where a is more alike, ``face_diff`` a's face rate minus
        b's over all seeds and ``face_p`` its exact McNemar test.
    """
    extra = group_columns(scores)
    rows = []
    groups = scores.groupby(extra, sort=True) if extra else [((), scores)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        matrix = seed_matrix(group)
        found = face_matrix(group)
        arms = sorted(group["arm"].unique())
        for arm_a, arm_b in itertools.combinations(arms, 2):
            for epoch in sorted(set(group.loc[group["arm"] == arm_a, "epoch"])):
                if (arm_b, epoch) not in matrix.columns:
                    continue
                result = stats.paired(
                    matrix[(arm_a, epoch)],
                    matrix[(arm_b, epoch)],
                    found_a=found[(arm_a, epoch)],
                    found_b=found[(arm_b, epoch)],
                    rng=stats.rng_for(seed, "compare", *key, arm_a, arm_b, epoch),
                    resamples=resamples,
                    confidence=confidence,
                )
                how = result.pop("test")
                result["method"] = (
                    f"sign-flip permutation ({how}); BCa {100 * confidence:g}% interval, "
                    "unadjusted; Holm over all pairs x epochs (exploratory)"
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
    names = [c for c in COMPARE_COLUMNS if c != "p_adjusted"]
    table = pd.DataFrame(rows, columns=[*names, *extra])
    p_values = table["p_value"].astype(float)
    if extra and len(table):
        table["p_adjusted"] = p_values.groupby([table[c] for c in extra]).transform(
            lambda p: pd.Series(stats.adjust(p.to_numpy(), "holm"), index=p.index)
        )
    else:
        table["p_adjusted"] = stats.adjust(p_values.to_numpy(), "holm") if len(table) else []
    table = table.astype({"epoch": "int64", "n_pairs": "int64"})
    return table[[*COMPARE_COLUMNS, *extra]]


# ---- one call for the workflow and ``dreamgrid report`` -----------------------------------
def analyse(
    scores: pd.DataFrame,
    summary: pd.DataFrame,
    arms: Mapping[str, Mapping[str, str]] | None = None,
    *,
    seed: int = stats.SEED,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    exploratory: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """The exploratory table, the planned family and what was chosen, per (model, prompt set).

    Args:
        scores: every render (typed, see :mod:`dreamgrid.scoretable`).
        summary: from :func:`dreamgrid.summary.summarize` (its ``best`` flags are the chosen
            epochs, picked on the selection half of the seeds).
        arms: arm -> {axis: level}; default: the score table's axis columns.
        exploratory: compute the all-pairs table (False: an empty one; it makes no claim,
            so the calibration benchmark skips it).

    Returns:
        (comparisons, effects, decisions): one decision per (model, prompt set) with ``key``
        ({column: value}), ``chosen`` (arm -> epoch), ``top``, ``equal_steps`` (arm ->
        epoch), ``steps`` (the common step count or None) and ``seeds`` (selection,
        estimation).
    """
    options = {"seed": seed, "resamples": resamples, "confidence": confidence}
    comparisons = compare_arms(scores if exploratory else scores.iloc[0:0], **options)
    if arms is None:
        arms = axes_from_scores(scores)
    axes = arm_axes(sorted(scores["arm"].unique()), arms)
    extra = group_columns(scores)
    frames, decisions = [], []
    groups = scores.groupby(extra, sort=True) if extra else [((), scores)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(extra, key, strict=True))
        part = summary
        for column, value in where.items():
            part = part.loc[part[column] == value]
        best = part.loc[part["best"].astype(bool)]
        chosen = {str(a): int(e) for a, e in best[["arm", "epoch"]].itertuples(index=False)}
        selection, estimation = split_seeds(group["seed"].unique(), seed)
        matrix = seed_matrix(group)
        top = top_arm(matrix, chosen, selection)
        at_steps, steps = equal_steps(part)
        table = planned_contrasts(
            group,
            part,
            axes,
            {"chosen": chosen, "equal_steps": at_steps},
            top,
            estimation,
            key=key,
            **options,
        )
        for column, value in where.items():
            table[column] = value
        frames.append(table)
        decisions.append(
            {
                "key": where,
                "chosen": chosen,
                "top": top,
                "equal_steps": at_steps,
                "steps": steps,
                "seeds": (selection, estimation),
            }
        )
    frames = [f for f in frames if len(f)]
    effects = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*EFFECT_COLUMNS, *extra])
    )
    return comparisons, effects, decisions


# ---- power --------------------------------------------------------------------------------
POWER = 0.8


def family_size(arms: int, axes: pd.DataFrame | None = None, views: int = len(VIEWS)) -> int:
    """Planned contrasts per face model and prompt set: per view, every main-effect level,
    every two-way interaction cell, each main-effect level within each base model, and each
    arm against the top arm, as far as the arms allow (one at a time: no interactions)."""
    terms = arms - 1
    if axes is not None and not axes.empty:
        # the terms :func:`planned_contrasts` estimates, counted on an identity table
        identity = pd.DataFrame(np.eye(len(axes)), columns=axes.index)
        terms += len(_planned_series(identity, axes))
    return max(1, views * terms)


def paired_sd(scores: pd.DataFrame, column: str = "mean_distance") -> tuple[float, float]:
    """Pooled SD of per-seed differences between arms at equal epochs, and the mean share of
    seeds on which both found a face (``column`` may be ``below`` for share indicators)."""
    matrix = seed_matrix(scores) if column == "mean_distance" else scores
    variances, both = [], []
    for epoch in sorted({e for _, e in matrix.columns}):
        arms = [a for a, e in matrix.columns if e == epoch]
        for a, b in itertools.combinations(arms, 2):
            diff = (matrix[(a, epoch)] - matrix[(b, epoch)]).dropna()
            both.append(len(diff) / max(len(matrix), 1))
            if len(diff) >= 2:
                variances.append(float(diff.var(ddof=1)))
    if not variances:
        return math.nan, float(np.mean(both)) if both else math.nan
    return math.sqrt(float(np.mean(variances))), float(np.mean(both))


def _z_sum(alpha: float, power: float) -> float:
    from scipy import stats as sps

    return float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))


def pairs_needed(effect: float, sd: float, alpha: float, power: float = POWER) -> int:
    """Paired seeds for a two-sided one-sample t test of the mean difference
    (``statsmodels`` ``TTestPower``) to reach ``power`` for ``effect`` at ``alpha``."""
    from statsmodels.stats.power import TTestPower

    if not (np.isfinite(sd) and sd > 0 and effect > 0):
        return 0 if np.isfinite(sd) else -1
    n = TTestPower().solve_power(effect_size=effect / sd, alpha=alpha, power=power)
    return math.ceil(float(np.squeeze(n)))


def detectable(n_pairs: int, sd: float, alpha: float, power: float = POWER) -> float:
    """The smallest mean difference ``n_pairs`` paired seeds detect with ``power``."""
    from statsmodels.stats.power import TTestPower

    if n_pairs < 2 or not np.isfinite(sd):
        return math.nan
    size = TTestPower().solve_power(nobs=n_pairs, alpha=alpha, power=power)
    return float(np.squeeze(size)) * sd


def power_plan(
    scores: pd.DataFrame,
    effect: float,
    share_effect: float | None = None,
    *,
    threshold: float = 0.6,
    confidence: float = stats.CONFIDENCE,
    power: float = POWER,
    run_sd: float | None = None,
    arms: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, object]:
    """Renders per checkpoint and training runs per arm for ``power`` at the planned family.

    From a pilot's scores: the per-seed SD of paired differences between arms (pooled), the
    share of seeds where both found a face, and the run-to-run SD (from ``replicate`` when the
    pilot has several runs per arm, else ``run_sd`` or unknown). Contrasts involving a choice
    use half the seeds (the estimation half), so renders are doubled.

    Returns:
        A dict of the inputs and ``renders_per_checkpoint`` (distance), ``renders_for_share``
        (share below ``threshold``, when ``share_effect`` is given) and ``replicates``.
    """
    arm_names = sorted(scores["arm"].unique())
    axes = arm_axes(arm_names, arms if arms is not None else axes_from_scores(scores))
    m = family_size(len(arm_names), axes)
    alpha = (1 - confidence) / m
    sd, both = paired_sd(scores)
    out: dict[str, object] = {
        "family": m,
        "alpha_per_contrast": alpha,
        "power": power,
        "effect": effect,
        "paired_sd": sd,
        "both_faces": both,
    }
    pairs = pairs_needed(effect, sd, alpha, power)
    out["pairs_needed"] = pairs
    out["renders_per_checkpoint"] = math.ceil(2 * pairs / both) if pairs > 0 and both > 0 else None
    if share_effect is not None:
        below = below_matrix(scores, threshold)
        share_sd, _ = paired_sd(below, column="below")
        share_pairs = pairs_needed(share_effect / 100.0, share_sd, alpha, power)
        out["share_effect"] = share_effect
        out["share_paired_sd"] = share_sd
        out["renders_for_share"] = 2 * share_pairs if share_pairs > 0 else None
    if run_sd is None and "replicate" in scores.columns:
        means = scores.groupby(["arm", "epoch", "replicate"])["mean_distance"].mean()
        spread = means.groupby(["arm", "epoch"]).std(ddof=1).dropna()
        run_sd = float(np.sqrt(np.mean(spread**2))) if len(spread) else None
    out["run_sd"] = run_sd
    if run_sd is not None and pairs > 0:
        # difference of two recipe means over r runs each: variance 2 (run_sd² + sd²/(2n)) / r
        n = max(pairs, 1)
        per_run = 2 * run_sd**2 + sd**2 / n
        out["replicates"] = max(1, math.ceil(_z_sum(alpha, power) ** 2 * per_run / effect**2))
    else:
        out["replicates"] = None
    return out
