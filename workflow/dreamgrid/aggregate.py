"""Aggregate stage: per-render scores → one tidy table, a per-checkpoint summary and a note.

The summary has one row per checkpoint (arm, epoch) with the numbers the original study
reported (average distance, % of renders below each threshold, best epoch) plus the face
rate. Renders in which no face was found count towards ``renders`` and ``face_rate`` only:
they never enter the average or the percentages (they are not distance 0), and a checkpoint
without any face has NaN there, not a number that looks like a result.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid import candidates, flexibility, stats
from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.prompts import AUTO_TOKEN, MAIN_PROMPT_SET

log = logging.getLogger(__name__)

#: Columns every score file must have (the score stage writes more: n_faces, d:<reference>).
SCORE_COLUMNS = ("arm", "epoch", "seed", "image", "face_found", "mean_distance")
#: Columns :func:`summarize` needs (``steps`` is passed through when present).
SUMMARY_INPUT_COLUMNS = ("arm", "epoch", "face_found", "mean_distance")
#: Prefix of the per-reference distance columns.
DISTANCE_PREFIX = "d:"

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def pct_column(threshold: float) -> str:
    """Summary column name for a threshold: ``0.6`` → ``"pct_below_0.6"``."""
    return "pct_below_" + np.format_float_positional(float(threshold), trim="-")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a score table by suffix: ``.parquet``, ``.tsv`` or (anything else) CSV.

    Raises:
        SpecError: the file is missing, empty or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: score file not found. Run the score stage first or fix the path.")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as err:
        raise SpecError(
            f"{path}: cannot be read as a score table ({err}). Delete it and rerun the score stage."
        ) from err


def _require(df: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SpecError(
            f"{source}: missing column(s) {', '.join(missing)} "
            f"(has: {', '.join(map(str, df.columns))}). "
            "Score tables come from the score stage; rerun it or add the column(s)."
        )


def as_bool(values: pd.Series, source: str) -> pd.Series:
    """``face_found`` as bool, whether it arrives as bool, 0/1 or CSV strings."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    text = values.astype("string").str.strip().str.lower()
    bad = text.isna() | ~text.isin(_TRUE | _FALSE)
    if bad.any():
        examples = ", ".join(sorted({repr(v) for v in values[bad].head(5)}))
        raise SpecError(
            f"{source}: column face_found must be true/false, found {examples}. "
            "Rerun the score stage or fix those rows."
        )
    return text.isin(_TRUE).astype(bool)


def _as_int(values: pd.Series, column: str, source: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        examples = ", ".join(sorted({repr(v) for v in values[bad].head(5)}))
        raise SpecError(f"{source}: column {column} must hold whole numbers, found {examples}.")
    return numbers.astype("int64")


def _normalise(scores: pd.DataFrame, source: str) -> pd.DataFrame:
    """Typed copy: bool face_found, int epoch/steps, float distances, NaN where no face."""
    scores = scores.copy()
    scores["arm"] = scores["arm"].astype(str)
    scores["face_found"] = as_bool(scores["face_found"], source)
    scores["epoch"] = _as_int(scores["epoch"], "epoch", source)
    if "steps" in scores.columns:
        scores["steps"] = _as_int(scores["steps"], "steps", source)
    distance = pd.to_numeric(scores["mean_distance"], errors="coerce").astype(float)
    unexplained = scores["face_found"] & ~np.isfinite(distance)
    if unexplained.any():
        rows = scores.loc[unexplained, ["arm", "epoch"]].drop_duplicates().head(3)
        where = "; ".join(f"arm {a} epoch {e}" for a, e in rows.itertuples(index=False))
        raise SpecError(
            f"{source}: {int(unexplained.sum())} row(s) have face_found true but no numeric "
            f"mean_distance ({where}). Rerun the score stage for those checkpoints."
        )
    stray = ~scores["face_found"] & distance.notna()
    if stray.any():
        log.warning(
            "%s: %d render(s) without a face carry a distance; ignored (no face is not a score)",
            source,
            int(stray.sum()),
        )
    scores["mean_distance"] = distance.where(scores["face_found"])
    for column in scores.columns:
        if str(column).startswith(DISTANCE_PREFIX):
            scores[column] = pd.to_numeric(scores[column], errors="coerce").astype(float)
    return scores


def collect_scores(score_files: Sequence[Path]) -> pd.DataFrame:
    """Concatenate per-checkpoint score files into one tidy table (one row per render).

    Args:
        score_files: score tables from the score stage (CSV, TSV or parquet).

    Returns:
        All rows, sorted by arm, epoch, seed; ``face_found`` bool, ``mean_distance`` NaN
        where no face was found.

    Raises:
        SpecError: no files, an unreadable file, a missing column (naming the file), or
            files scored against different reference photos.
    """
    if not score_files:
        raise SpecError("no score files given; the aggregate stage needs at least one checkpoint.")
    frames: list[pd.DataFrame] = []
    references: tuple[str, ...] | None = None
    first: Path | None = None
    for path in map(Path, score_files):
        frame = read_table(path)
        _require(frame, SCORE_COLUMNS, str(path))
        refs = tuple(c for c in frame.columns if str(c).startswith(DISTANCE_PREFIX))
        if references is None:
            references, first = refs, path
        elif set(refs) != set(references):
            raise SpecError(
                f"{path}: distance columns {list(refs)} differ from {list(references)} in {first}. "
                "All checkpoints must be scored against the same reference photos; "
                "rerun the score stage."
            )
        frames.append(_normalise(frame, str(path)))
    scores = pd.concat(frames, ignore_index=True)
    scores = scores.sort_values(["arm", "epoch", "seed"], kind="stable", ignore_index=True)
    log.info("collected %d renders from %d score file(s)", len(scores), len(frames))
    return scores


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    try:
        values = sorted({float(t) for t in thresholds})
    except (TypeError, ValueError) as err:
        raise SpecError(f"thresholds must be numbers, got {list(thresholds)!r}.") from err
    if not values or not all(math.isfinite(t) for t in values):
        raise SpecError(f"thresholds must be one or more finite numbers, got {list(thresholds)!r}.")
    return values


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
    extra = stats.group_columns(scores)
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


def run_summarize_cli(
    scores: Path, out: Path, thresholds: Sequence[float], best_within: float
) -> pd.DataFrame:
    """``dreamgrid summarize --scores FILE --out summary.csv``: summarize one score table.

    Args:
        scores: a score table (CSV, TSV or parquet) with the columns :func:`summarize` needs.
        out: summary CSV to write.
        thresholds: distance thresholds.
        best_within: see :func:`summarize`.

    Returns:
        The summary that was written.

    Raises:
        SpecError: the file is unreadable or lacks a column (the message names the file).
    """
    table = read_table(scores)
    _require(table, SUMMARY_INPUT_COLUMNS, str(scores))
    try:
        summary = summarize(table, thresholds=thresholds, best_within=best_within)
    except SpecError as err:
        raise SpecError(f"{scores}: {err}") from err
    _write_csv(summary, out)
    log.info("wrote %s (%d checkpoints)", out, len(summary))
    return summary


def _write_csv(frame: pd.DataFrame, path: Path, sep: str = ",") -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep=sep, index=False)


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _markdown_table(frame: pd.DataFrame, digits: dict[str, int]) -> str:
    """A markdown table, numbers right-aligned; ``digits`` per column (default 2)."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if c == "arm" else "---:" for c in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [_fmt(v, digits.get(c, 2)) for c, v in zip(frame.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DEMO_WARNING = (
    "> **Warning: demo run.** The demo trains tiny models with random weights, so the "
    "renders are noise and these numbers mean nothing about any training recipe. "
    "Run the real study with `--configfile config/experiment.yaml`."
)


def _contract_pct_columns(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c.startswith("pct_below_") and "_ci_" not in c]


def _with_ci(value: float, low: float, high: float, digits: int) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _summary_markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a compact table: intervals in brackets beside their estimate."""
    pct_columns = _contract_pct_columns(summary)
    keys = [c for c in ("arm", "epoch", *stats.GROUP_COLUMNS, "steps") if c in summary.columns]
    view = summary[keys + ["renders", "face_rate"]].copy()
    if "average_ci_low" in summary.columns:
        view["average [CI]"] = [
            _with_ci(v, lo, hi, 4)
            for v, lo, hi in summary[["average", "average_ci_low", "average_ci_high"]].to_numpy()
        ]
        view["median"] = summary["median"]
        for c in pct_columns:
            view[f"{c} [CI]"] = [
                _with_ci(v, lo, hi, 1)
                for v, lo, hi in summary[[c, f"{c}_ci_low", f"{c}_ci_high"]].to_numpy()
            ]
    else:
        view["average"] = summary["average"]
        for c in pct_columns:
            view[c] = summary[c]
    view["best"] = summary["best"].astype(bool)
    if "best_not_worse" in summary.columns:
        view["best_not_worse"] = summary["best_not_worse"].astype(bool)
    return _markdown_table(view, {"face_rate": 2, "average": 4, "median": 4})


def _baseline_markdown(baseline: pd.DataFrame, pooled: float) -> str:
    """The real-photos baseline in words: each source's photos, then the pooled line."""
    if not np.isfinite(pooled):
        return (
            "**As alike as real photos.** Needs at least two reference photos (or training "
            "photos with a face); not shown."
        )
    if "source" not in baseline.columns:  # a table written before training photos counted
        baseline = baseline.assign(source="reference", photo=baseline["reference"])
    sentences = []
    for source, group in baseline.groupby("source", sort=False):
        scored = group.loc[pd.to_numeric(group["mean_distance"], errors="coerce").notna()]
        listed = ", ".join(f"{p} {d:.4f}" for p, d in scored[["photo", "mean_distance"]].to_numpy())
        if source == "reference":
            how = "Each reference photo scored like a render against the other references"
        else:
            how = (
                "Each training photo scored like a render against the references, leaving "
                "out any reference cut from that photo (a near self-match)"
            )
        sentence = f"{how}: {listed or 'none'} (mean {stats.baseline_value(group):.4f})"
        if "excluded" in group.columns:
            pairs = [
                f"{p} ↔ {e}" for p, e in group[["photo", "excluded"]].fillna("").to_numpy() if e
            ]
            if pairs:
                sentence += "; left out as cut from the same photo: " + ", ".join(pairs)
        faceless = group.loc[~group.get("face_found", pd.Series(True, index=group.index))]
        if len(faceless):
            sentence += f"; no face found in {', '.join(map(str, faceless['photo']))}"
        sentences.append(sentence + ".")
    return (
        "**As alike as real photos.** "
        + " ".join(sentences)
        + f" Pooled: {pooled:.4f}. Plots draw this as the real-photos line."
    )


def _frame_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            if isinstance(value, (float, np.floating)) and str(column).startswith("p_"):
                cells.append("n/a" if math.isnan(value) else f"{value:.3g}")
            else:
                cells.append(_fmt(value, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


VIEW_NAMES = {"equal_steps": "at equal training steps", "best": "at each arm's best epoch"}


def _effect_sentence(row: pd.Series, alpha: float, confidence: float) -> str:
    level, ref = str(row["contrast"]).split(" vs ", 1)
    pct = f"{100 * confidence:g}%"
    est, low, high = row["estimate"], row["ci_low"], row["ci_high"]
    if not np.isfinite(est):
        return f"{row['axis']} ({row['contrast']}): no paired faces, nothing to conclude"
    if stats.significant(row["p_adjusted"], alpha):
        better, worse = (level, ref) if est < 0 else (ref, level)
        half = (high - low) / 2
        return (
            f"{row['axis']}: {better} beats {worse} by {abs(est):.3f} ± {half:.3f} "
            f"({pct} CI of {level} minus {ref}: {low:.3f} to {high:.3f}; "
            f"Holm p = {row['p_adjusted']:.3g})"
        )
    return (
        f"{row['axis']} ({level} vs {ref}): no significant effect "
        f"(difference {est:+.3f}, {pct} CI {low:.3f} to {high:.3f}; Holm p = "
        f"{row['p_adjusted']:.3g})"
    )


def tokens_markdown(
    tokens: Mapping[str, str], ranking: pd.DataFrame | None, source: str = "ranking.csv"
) -> str:
    """The tokens section: each token's string, and for ``auto`` the name the finder chose.

    Args:
        tokens: token name (as in arm ids) -> configured string (``auto`` asks the finder).
        ranking: the token finder's ranking (:func:`dreamgrid.candidates.rank`), or None.
        source: what to call the ranking file in the text.
    """
    lines = ["## Tokens", ""]
    pick = candidates.top(ranking, source) if ranking is not None else None
    for name, token in tokens.items():
        if token != AUTO_TOKEN:
            lines.append(f"- `{name}`: `{token}`.")
        elif pick is None:
            lines.append(f"- `{name}`: `auto`, but no token-finder ranking was given.")
        else:
            lines.append(
                f"- `{name}`: `auto`; the token finder chose **{pick['candidate']}**, rank "
                f"{int(pick['rank'])} of {len(ranking)} candidates in `{source}` (average "
                f"distance {_fmt(pick['average'], 4)}, face rate {_fmt(pick['face_rate'], 2)})."
            )
    if pick is not None:
        if AUTO_TOKEN not in tokens.values():
            lines.append(
                f"- The token finder ranked {len(ranking)} candidates (first: "
                f"**{pick['candidate']}**); no token is `auto`, so no arm trains on its pick."
            )
        if pd.to_numeric(ranking["average"], errors="coerce").isna().all():
            lines += [
                "",
                (
                    "No candidate's renders showed a face, so the ranking is only the order of "
                    "the candidate list: the pick was not measured."
                ),
            ]
    return "\n".join(lines)


def verdict(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame | None = None,
    effects: pd.DataFrame | None = None,
    baseline: float = math.nan,
    *,
    confidence: float = stats.CONFIDENCE,
    alpha: float = 0.05,
) -> str:
    """A plain-language paragraph from the numbers; it claims only what the intervals allow.

    Args:
        summary: from :func:`summarize` (with intervals).
        comparisons: from :func:`dreamgrid.stats.compare_arms`.
        effects: from :func:`dreamgrid.stats.factorial_effects` (views concatenated).
        baseline: mean leave-one-out distance among the reference photos (NaN if unknown).
        confidence: coverage of the intervals, for the wording.
        alpha: significance level applied to Holm-adjusted p-values.

    Returns:
        Markdown text (a few sentences and bullets).
    """
    pct = f"{100 * confidence:g}%"
    scored = summary.loc[summary["average"].notna()]
    if scored.empty:
        return (
            "**Nothing to conclude.** No render contained a face, so there is no distance to "
            "compare: no arm, epoch or axis can be said to be better or worse than another."
        )
    parts = []
    top = scored.loc[scored["average"].idxmin()]
    steps = f", {int(top['steps'])} steps" if "steps" in top.index else ""
    lowest = _contract_pct_columns(summary)[0]
    sentence = (
        f"The lowest average distance is **{top['arm']}** at epoch {int(top['epoch'])}{steps}: "
        f"{top['average']:.4f}"
    )
    if "average_ci_low" in top.index:
        sentence += f" ({pct} CI {top['average_ci_low']:.4f} to {top['average_ci_high']:.4f})"
    sentence += f", with {top[lowest]:.1f}% of faces {lowest.replace('pct_below_', 'below ')}."
    if np.isfinite(baseline):
        low = top.get("average_ci_low", top["average"])
        high = top.get("average_ci_high", top["average"])
        if low > baseline:
            sentence += (
                f" Real photos of the person score {baseline:.4f} against each other, so even "
                "this checkpoint is measurably less alike than the person's own photos."
            )
        elif high < baseline:
            sentence += (
                f" That is below the {baseline:.4f} that real photos of the person score "
                "against each other (the renders may resemble the references more than the "
                "photos resemble one another: check the contact sheets for copies)."
            )
        else:
            sentence += (
                f" That is as alike as real photos of the person are to each other "
                f"({baseline:.4f})."
            )
    parts.append(sentence)
    if comparisons is not None and len(comparisons):
        rows = comparisons.loc[
            (comparisons["epoch"] == top["epoch"])
            & ((comparisons["arm_a"] == top["arm"]) | (comparisons["arm_b"] == top["arm"]))
            & comparisons["p_value"].notna()
        ]
        if len(rows):
            ties = rows.loc[~rows["p_adjusted"].map(lambda p: stats.significant(p, alpha))]
            others = sorted(
                {b if a == top["arm"] else a for a, b in ties[["arm_a", "arm_b"]].to_numpy()}
            )
            if others:
                parts.append(
                    f"At epoch {int(top['epoch'])} it is not significantly different from "
                    f"{len(others)} of {len(rows)} other arm(s) after Holm correction: "
                    f"{', '.join(others)}."
                )
            else:
                parts.append(
                    f"At epoch {int(top['epoch'])} it is significantly more alike than each of "
                    f"the {len(rows)} other arm(s) (paired Wilcoxon, Holm-corrected)."
                )
    bullets = []
    if effects is not None and len(effects):
        for view, group in effects.groupby("view", sort=False):
            mains = group.loc[group["term"] == "main"]
            if mains.empty:
                continue
            label = VIEW_NAMES.get(str(view), str(view))
            text = "; ".join(_effect_sentence(r, alpha, confidence) for _, r in mains.iterrows())
            inter = group.loc[group["term"] == "interaction"]
            hits = inter.loc[inter["p_adjusted"].map(lambda p: stats.significant(p, alpha))]
            if len(inter):
                if len(hits):
                    text += "; significant interaction(s): " + ", ".join(
                        f"{r['axis']} {r['contrast']} ({r['estimate']:+.3f})"
                        for _, r in hits.iterrows()
                    )
                else:
                    text += "; no significant interaction"
            few = int(mains["n_seeds"].max()) if len(mains) else 0
            if few < 6:
                text += f" (only {few} paired seeds: too few for any test to reach significance)"
            bullets.append(f"- **{label[0].upper() + label[1:]}**: {text}.")
    parts = [" ".join(parts)]
    if bullets:
        parts.append("\n".join(bullets))
    parts.append(
        f"Significant means a Holm-adjusted p below {alpha:g} (Wilcoxon signed-rank on "
        f"per-seed differences); intervals are {pct} seeded bootstrap intervals. Lower "
        "distance = more alike."
    )
    return "\n\n".join(parts)


def markdown(
    summary: pd.DataFrame,
    scores: pd.DataFrame,
    demo: bool,
    best_within: float | None = None,
    *,
    comparisons: pd.DataFrame | None = None,
    effects: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    confidence: float = stats.CONFIDENCE,
    alpha: float = 0.05,
    primary_model: str | None = None,
    tokens: Mapping[str, str] | None = None,
    ranking: pd.DataFrame | None = None,
    ranking_source: str = "ranking.csv",
) -> str:
    """Human summary: warning (demo), verdict, tokens, table, face rate, best epochs, statistics.

    The verdict reads prompt set ``main`` and ``primary_model`` (default: the first model in
    the summary) only: other prompt sets ask other questions (class bleed, styles), and
    distances of different recognition models are not comparable. ``tokens`` (token name ->
    configured string) and the token finder's ``ranking`` add a section naming the token
    each arm trained on (:func:`tokens_markdown`; ``ranking_source`` names the file).
    """
    pct_columns = _contract_pct_columns(summary)
    lowest = pct_columns[0] if pct_columns else None
    baseline_mean = stats.baseline_value(baseline)
    pct = f"{100 * confidence:g}%"
    parts = []
    if demo:
        parts.append(DEMO_WARNING)
    parts.append("# dreamgrid summary")
    checkpoints = len(summary[["arm", "epoch"]].drop_duplicates())
    sets = summary["prompt_set"].nunique() if "prompt_set" in summary.columns else 1
    parts.append(
        f"{len(scores)} renders, {summary['arm'].nunique()} arms, {checkpoints} checkpoints"
        + (f" × {sets} prompt sets" if sets > 1 else "")
        + ". Distances are DeepFace distances to the reference photos, averaged per render: "
        "lower means more alike."
    )
    parts.append("## Verdict")
    if "model" in summary.columns and primary_model is None and len(summary):
        primary_model = str(summary["model"].iloc[0])
    if stats.group_columns(summary):
        scope = [f"prompt set `{MAIN_PROMPT_SET}`"] if "prompt_set" in summary.columns else []
        scope += [f"face model `{primary_model}`"] if "model" in summary.columns else []
        parts.append(
            f"Read from {' and '.join(scope)}; the tables below list every prompt set and model."
        )
    parts.append(
        verdict(
            headline(summary, primary_model),
            headline(comparisons, primary_model),
            headline(effects, primary_model),
            baseline_mean,
            confidence=confidence,
            alpha=alpha,
        )
    )
    if tokens:
        parts.append(tokens_markdown(tokens, ranking, ranking_source))
    parts.append("## Per checkpoint")
    if "average_ci_low" in summary.columns:
        parts.append(
            f"Brackets hold {pct} bootstrap intervals (seeded, resampling the renders with a "
            "face); `pct_below_*` are percent of those renders."
        )
    parts.append(_summary_markdown_table(summary))

    faces = int(scores["face_found"].sum())
    note = (
        f"**Face rate.** A face was found in {faces} of {len(scores)} renders "
        f"({100.0 * faces / max(len(scores), 1):.1f}%). `face_rate` is that fraction per "
        "checkpoint; `average` and the `pct_below_*` columns count only renders with a face "
        "(renders without one are not scored as distance 0)."
    )
    faceless = summary.loc[summary["face_rate"] == 0]
    if len(faceless):
        names = ", ".join(
            f"{a} epoch {e}" for a, e in faceless[["arm", "epoch"]].itertuples(index=False)
        )
        note += f" No face at all in {len(faceless)} checkpoint(s), shown as n/a: {names}."
    parts.append(note)

    if baseline is not None:
        parts.append(_baseline_markdown(baseline, baseline_mean))

    lines = ["## Best epoch per arm", ""]
    if lowest is not None:
        margin = "the configured margin" if best_within is None else f"{best_within:g} points"
        lines += [
            (
                f"The earliest epoch whose `{lowest}` is within {margin} of the arm's best "
                "(`best`), and the earliest whose share is not significantly below the arm's "
                f"highest ({pct} bootstrap over paired seeds; `best_not_worse`)."
            ),
            "",
        ]
    arm_keys = ["arm", *stats.group_columns(summary)]
    for key, group in summary.groupby(arm_keys, sort=True):
        name = " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        best = group[group["best"].astype(bool)]
        if best.empty:
            lines.append(f"- **{name}**: no face found in any render, so no best epoch.")
            continue
        row = best.iloc[0]
        steps = f", {int(row['steps'])} steps" if "steps" in row.index else ""
        detail = f"{lowest} = {row[lowest]:.2f}%, " if lowest else ""
        text = (
            f"- **{name}**: epoch {int(row['epoch'])}{steps} "
            f"({detail}average {row['average']:.4f}, face rate {row['face_rate']:.2f})"
        )
        if "best_not_worse" in group.columns and group["best_not_worse"].any():
            early = group.loc[group["best_not_worse"].astype(bool)].iloc[0]
            text += f"; not significantly worse from epoch {int(early['epoch'])}"
        lines.append(text)
    parts.append("\n".join(lines))

    if effects is not None and len(effects):
        parts.append("## Factorial effects")
        parts.append(
            "Per seed, the distance difference a level makes against the reference level "
            "(first level of the axis), averaged over arms equal on the other axes; "
            "interactions are differences of differences. Negative = the level is more alike."
        )
        shown = effects.drop(columns=["p_value"])
        parts.append(_frame_markdown(shown))
    if comparisons is not None and len(comparisons):
        parts.append("## Paired comparisons between arms")
        parts.append(
            "`mean_diff` = arm_a minus arm_b over seeds where both found a face; "
            "Wilcoxon signed-rank p, Holm-adjusted over the whole table. Full table: "
            "`results/comparisons.csv`."
        )
        parts.append(_frame_markdown(comparisons.head(60)))
    return "\n\n".join(parts) + "\n"


def comparisons_and_effects(
    scores: pd.DataFrame,
    summary: pd.DataFrame,
    arms: dict[str, dict[str, str]] | None = None,
    *,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paired arm comparisons and the factorial effects at equal steps and at best epochs."""
    options = {"seed": seed, "resamples": resamples, "confidence": confidence}
    comparisons = stats.compare_arms(scores, **options)
    axes = stats.arm_axes(sorted(scores["arm"].unique()), arms)
    frames = []
    extra = stats.group_columns(scores)
    groups = scores.groupby(extra, sort=True) if extra else [((), scores)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        part = summary
        for column, value in zip(extra, key, strict=True):
            part = part.loc[part[column] == value]
        for view in ("equal_steps", "best"):
            chosen = stats.select_checkpoints(part, view)
            table = stats.factorial_effects(group, axes, chosen, view=view, **options)
            for column, value in zip(extra, key, strict=True):
                table[column] = value
            frames.append(table)
    frames = [f for f in frames if len(f)]
    effects = (
        pd.concat(frames, ignore_index=True)
        if frames
        else stats.factorial_effects(scores, axes.iloc[0:0], {})
    )
    return comparisons, effects


def run_compare_cli(
    scores: Path,
    out: Path,
    *,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """``dreamgrid compare --scores FILE --out comparisons.csv``: paired arm comparisons.

    Args:
        scores: table with ``arm, epoch, seed, face_found, mean_distance`` (CSV/TSV/parquet).
        out: CSV with :data:`dreamgrid.stats.COMPARE_COLUMNS`.

    Returns:
        The table written.

    Raises:
        SpecError: unreadable file, a missing column or a repeated seed (naming the file).
    """
    table = read_table(scores)
    _require(table, (*SUMMARY_INPUT_COLUMNS, "seed"), str(scores))
    table = _normalise(table, str(scores))
    try:
        result = stats.compare_arms(table, seed=seed, resamples=resamples, confidence=confidence)
    except ValueError as err:
        raise SpecError(f"{scores}: {err}") from err
    _write_csv(result, out)
    log.info("wrote %s (%d comparisons)", out, len(result))
    return result


def run_baseline(
    references: Path,
    metric: str,
    out: Path,
    *,
    training_photos: Path | None = None,
    reference_photos: Path | None = None,
    multiple_faces: str = "closest",
) -> pd.DataFrame:
    """The real-photos baseline as CSV: how alike real photos of the person are.

    Each reference is scored against the other references (leave-one-out); with
    ``training_photos`` (and the ``reference_photos`` folder) each training photo is scored
    like a render against the references, leaving out those cut from it (found by matching
    pixels, :mod:`dreamgrid.photos`), which would be near self-matches.

    Args:
        references: reference embeddings from the embed_references rule (their model,
            detector and alignment are used for the training photos too).
        metric: the scoring metric.
        out: CSV with :data:`dreamgrid.faces.BASELINE_COLUMNS`.
        training_photos: folder of the subject's training photos, or None.
        reference_photos: folder of the reference photos (needed with ``training_photos``).
        multiple_faces: rule for photos with several faces (as for renders).
    """
    from dreamgrid import faces, photos
    from dreamgrid.io import list_images

    embeddings, meta = faces.load_references(references)
    frames = [faces.reference_rows(embeddings, metric)]
    if training_photos is not None:
        if reference_photos is None:
            raise SpecError("the training-photo baseline needs the reference photos' folder.")
        training = list_images(training_photos)
        cut = photos.cut_from(list_images(reference_photos), training)
        settings = faces.embed_settings_from(meta)
        frames.append(
            faces.training_rows(training, embeddings, settings, metric, multiple_faces, cut)
        )
    baseline = pd.concat(frames, ignore_index=True)
    _write_csv(baseline, out)
    for source, group in baseline.groupby("source", sort=False):
        log.info(
            "real-photos baseline, %s photos: %d, mean distance %.4f",
            source,
            len(group),
            stats.baseline_value(group),
        )
    return baseline


def read_baseline(path: str | Path | None) -> pd.DataFrame | None:
    """The baseline CSV from :func:`run_baseline`, or None."""
    if path is None:
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["reference", "mean_distance", "n_others"])


def check_score_metadata(score_files: Sequence[Path]) -> list[str]:
    """Warnings where the score tables' sidecars disagree (DeepFace version, model, ...)."""
    from dreamgrid import faces

    metas = {}
    for path in map(Path, score_files):
        sidecar = faces.meta_path(path)
        if sidecar.is_file():
            metas[str(path)] = json.loads(sidecar.read_text())
    return faces.compare_metadata(metas)


def run(
    score_files: Sequence[Path],
    thresholds: Sequence[float],
    best_within: float,
    out_scores: Path,
    out_summary: Path,
    out_markdown: Path,
    demo: bool,
    *,
    baseline: Path | None = None,
    arms: dict[str, dict[str, str]] | None = None,
    out_comparisons: Path | None = None,
    out_effects: Path | None = None,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
    alpha: float = 0.05,
    primary_model: str | None = None,
    prompt_sets: dict[str, str] | None = None,
    out_flexibility: Path | None = None,
    clip_files: Sequence[Path] = (),
    tokens: Mapping[str, str] | None = None,
    ranking: Path | None = None,
    warnings: Sequence[str] = (),
) -> pd.DataFrame:
    """Aggregate all checkpoints' scores.

    Args:
        score_files: per-checkpoint score tables from the score stage.
        thresholds: distance thresholds for the ``pct_below_*`` columns.
        best_within: margin in percentage points for the best epoch (see :func:`summarize`).
        out_scores: tidy table of all renders (TSV).
        out_summary: per-checkpoint summary (CSV).
        out_markdown: human summary (markdown) with the verdict.
        demo: start the markdown with a warning that demo numbers mean nothing.
        baseline: reference leave-one-out CSV (:func:`run_baseline`), for the verdict.
        arms: arm → {axis: level} for the factorial view (else parsed from the arm ids).
        out_comparisons: paired comparisons between arms (CSV), if wanted.
        out_effects: factorial main effects and interactions (CSV), if wanted.
        confidence, resamples, seed: bootstrap settings; alpha: significance level.
        primary_model: the face model the verdict reads (``score.model``).
        prompt_sets: the config's prompt sets (name -> template), for the likeness /
            class bleed / prompt following view (:mod:`dreamgrid.flexibility`).
        out_flexibility: that view as CSV, if wanted (needs ``prompt_sets``).
        clip_files: CLIPScore tables (:func:`dreamgrid.clip_score.run`); their mean per
            checkpoint and prompt set is appended to the summary as ``clip_score``.
        tokens: token name -> configured string (``axes.token``), for the tokens section.
        ranking: the token finder's ranking CSV, which names the pick of an ``auto`` token.
        warnings: sentences about the config for the summary's Warnings section (e.g.
            thresholds far above the face model's own).

    Returns:
        The summary table.
    """
    scores = collect_scores(score_files)
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    summary = summarize(scores, thresholds=thresholds, best_within=best_within, **options)
    if clip_files:
        from dreamgrid import clip_score

        clip = clip_score.summarize(clip_files)
        summary = summary.merge(clip, on=["arm", "epoch", "prompt_set"], how="left")
    comparisons, effects = comparisons_and_effects(scores, summary, arms, **options)
    reference = read_baseline(baseline)
    _write_csv(scores, Path(out_scores), sep="\t")
    _write_csv(summary, Path(out_summary))
    if out_comparisons is not None:
        _write_csv(comparisons, Path(out_comparisons))
    if out_effects is not None:
        _write_csv(effects, Path(out_effects))
    text = markdown(
        summary,
        scores,
        demo,
        best_within,
        comparisons=comparisons,
        effects=effects,
        baseline=reference,
        confidence=confidence,
        alpha=alpha,
        primary_model=primary_model,
        tokens=tokens,
        ranking=None if ranking is None else pd.read_csv(ranking),
        ranking_source=str(ranking),
    )
    if prompt_sets and "prompt_set" in summary.columns:
        flex = flexibility.table(summary, prompt_sets, best_within)
        if out_flexibility is not None:
            _write_csv(flex, Path(out_flexibility))
        if len(prompt_sets) > 1:
            text += "\n" + flexibility.markdown(flex, prompt_sets, best_within) + "\n"
    notes = [*warnings, *check_score_metadata(score_files)]
    if notes:
        text += "\n## Warnings\n\n" + "\n".join(f"- {m}" for m in notes) + "\n"
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if not scores["face_found"].any():
        log.warning("no face found in any of %d renders; the summary has no scores", len(scores))
    log.info("summarized %d checkpoints into %s", len(summary), out_summary)
    return summary


def headline(frame: pd.DataFrame | None, model: str | None) -> pd.DataFrame | None:
    """Rows the verdict reads: prompt set ``main`` and face ``model``, where those columns
    exist and hold them (a hand-made table without them is read whole)."""
    if frame is None:
        return None
    for column, value in (("prompt_set", MAIN_PROMPT_SET), ("model", model)):
        if value is not None and column in frame.columns:
            rows = frame.loc[frame[column].astype(str) == str(value)]
            if len(rows):
                frame = rows
    return frame


def primary(table: pd.DataFrame, model: str | None, prompt_set: str | None = None) -> pd.DataFrame:
    """Rows of one face model and one prompt set, where the table has those columns.

    Figures show one model's distances for one prompt set; they are never mixed. ``None``
    keeps every value of that column.
    """
    for column, value, what in (
        ("model", model, "face model"),
        ("prompt_set", prompt_set, "prompt set"),
    ):
        if value is None or column not in table.columns:
            continue
        rows = table.loc[table[column].astype(str) == str(value)]
        if rows.empty and len(table):
            raise SpecError(
                f"scores: no rows for {what} {value!r} (has {sorted(table[column].unique())}); "
                "rerun the score stage."
            )
        table = rows
    return table


def baseline_mean(path: str | Path | None) -> float:
    """The real-photos distance from a baseline CSV (NaN when unknown)."""
    return stats.baseline_value(read_baseline(path))
