"""Aggregate stage: per-render scores → one tidy table, a per-checkpoint summary and a note.

The summary has one row per checkpoint (arm, epoch) with the numbers the original study
reported (average distance, % of renders below each threshold, best epoch) plus the face
rate. Renders in which no face was found count towards ``renders`` and ``face_rate`` only:
they never enter the average or the percentages (they are not distance 0), and a checkpoint
without any face has NaN there, not a number that looks like a result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path

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
) -> pd.DataFrame:
    """One row per checkpoint (arm, epoch) with face rate, average and % below thresholds.

    Args:
        scores: one row per render with arm, epoch, face_found (bool or "true"/"false"),
            mean_distance and optionally steps.
        thresholds: distance thresholds, any order; columns come out ascending.
        best_within: the best epoch of an arm is the earliest whose % below the lowest
            threshold is within this many percentage points of the arm's maximum.

    Returns:
        Columns ``arm, epoch, [steps], renders, face_rate, average, pct_below_<t>..., best``,
        sorted by arm then epoch. ``face_rate`` is a fraction (0..1); the percentages
        (0..100) and the average are over renders with a face and NaN when there is none.
        An arm without any face has no best epoch.

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
    keys = ["arm", "epoch"]
    has_steps = "steps" in scores.columns
    columns = keys + (["steps"] if has_steps else []) + ["renders", "face_rate", "average"]
    columns += [*pct_columns, "best"]

    rows = []
    for (arm, epoch), group in scores.groupby(keys, sort=True):
        row: dict[str, object] = {"arm": arm, "epoch": int(epoch)}
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
        rows.append(row)
    summary = pd.DataFrame(rows, columns=columns[:-1])
    if summary.empty:
        summary = summary.astype({"epoch": "int64", "renders": "int64"})
    summary["best"] = _best_flags(summary, pct_columns[0], best_within)
    return summary[columns]


def _best_flags(summary: pd.DataFrame, column: str, within: float) -> pd.Series:
    """True on each arm's earliest epoch within ``within`` points of its maximum ``column``."""
    best = pd.Series(False, index=summary.index, dtype=bool)
    for _, group in summary.groupby("arm", sort=False):
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


def _markdown_table(summary: pd.DataFrame) -> str:
    digits = {"face_rate": 2, "average": 4}
    header = "| " + " | ".join(summary.columns) + " |"
    rule = "|" + "|".join("---" if c == "arm" else "---:" for c in summary.columns) + "|"
    lines = [header, rule]
    for row in summary.itertuples(index=False):
        cells = [_fmt(v, digits.get(c, 2)) for c, v in zip(summary.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DEMO_WARNING = (
    "> **Warning: demo run.** The demo trains tiny models with random weights, so the "
    "renders are noise and these numbers mean nothing about any training recipe. "
    "Run the real study with `--configfile config/experiment.yaml`."
)


def markdown(
    summary: pd.DataFrame, scores: pd.DataFrame, demo: bool, best_within: float | None = None
) -> str:
    """Human summary: warning (demo), table, face-rate note and best epoch per arm."""
    pct_columns = [c for c in summary.columns if c.startswith("pct_below_")]
    lowest = pct_columns[0] if pct_columns else None
    parts = []
    if demo:
        parts.append(DEMO_WARNING)
    parts.append("# dreamgrid summary")
    parts.append(
        f"{len(scores)} renders, {summary['arm'].nunique()} arms, {len(summary)} checkpoints. "
        "Distances are DeepFace distances to the reference photos, averaged per render: "
        "lower means more alike."
    )
    parts.append(_markdown_table(summary))

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

    lines = ["## Best epoch per arm", ""]
    if lowest is not None:
        margin = "the configured margin" if best_within is None else f"{best_within:g} points"
        lines += [f"The earliest epoch whose `{lowest}` is within {margin} of the arm's best.", ""]
    for arm, group in summary.groupby("arm", sort=True):
        best = group[group["best"]]
        if best.empty:
            lines.append(f"- **{arm}**: no face found in any render, so no best epoch.")
            continue
        row = best.iloc[0]
        steps = f", {int(row['steps'])} steps" if "steps" in row.index else ""
        detail = f"{lowest} = {row[lowest]:.2f}%, " if lowest else ""
        lines.append(
            f"- **{arm}**: epoch {int(row['epoch'])}{steps} "
            f"({detail}average {row['average']:.4f}, face rate {row['face_rate']:.2f})"
        )
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def run(
    score_files: Sequence[Path],
    thresholds: Sequence[float],
    best_within: float,
    out_scores: Path,
    out_summary: Path,
    out_markdown: Path,
    demo: bool,
) -> pd.DataFrame:
    """Aggregate all checkpoints' scores.

    Args:
        score_files: per-checkpoint score tables from the score stage.
        thresholds: distance thresholds for the ``pct_below_*`` columns.
        best_within: margin in percentage points for the best epoch (see :func:`summarize`).
        out_scores: tidy table of all renders (TSV).
        out_summary: per-checkpoint summary (CSV).
        out_markdown: human summary (markdown).
        demo: start the markdown with a warning that demo numbers mean nothing.

    Returns:
        The summary table.
    """
    scores = collect_scores(score_files)
    summary = summarize(scores, thresholds=thresholds, best_within=best_within)
    _write_csv(scores, Path(out_scores), sep="\t")
    _write_csv(summary, Path(out_summary))
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(markdown(summary, scores, demo, best_within), encoding="utf-8")
    if not scores["face_found"].any():
        log.warning("no face found in any of %d renders; the summary has no scores", len(scores))
    log.info("summarized %d checkpoints into %s", len(summary), out_summary)
    return summary
