"""Score tables: their columns, reading and typing them, and picking the rows a view reads.

One row per render: ``arm, epoch, seed, image, face_found, mean_distance`` (plus ``steps``,
``model``, ``prompt_set``, ``replicate`` and ``d:<reference>`` columns where present). A render
without a face has ``face_found`` false and a NaN distance: it is never a score of 0.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.prompts import MAIN_PROMPT_SET
from dreamgrid.scoring.distances import DISTANCE_PREFIX, compare_metadata, meta_path

log = logging.getLogger(__name__)

#: Columns every score file must have (the score stage writes more: n_faces, d:<reference>).
SCORE_COLUMNS = ("arm", "epoch", "seed", "image", "face_found", "mean_distance")

#: Columns :func:`summarize` needs (``steps`` is passed through when present).
SUMMARY_INPUT_COLUMNS = ("arm", "epoch", "face_found", "mean_distance")

#: Optional columns of score tables that split an arm into separate questions.
GROUP_COLUMNS = ("model", "prompt_set")

#: The arm axis whose levels are base models (``axes.base_model``); summary tables carry it as
#: a column when it has more than one level, and figures facet by it.
BASE_MODEL = "base_model"

_TRUE = {"true", "1", "yes"}

_FALSE = {"false", "0", "no"}


def pct_column(threshold: float) -> str:
    """Summary column name for a threshold: ``0.6`` → ``"pct_below_0.6"``."""
    return "pct_below_" + np.format_float_positional(float(threshold), trim="-")


def share_columns(columns) -> list[str]:
    """The faces-only share columns ``pct_below_<t>`` among ``columns`` (not their intervals,
    not the all-renders ``_all`` shares), by threshold, lowest first."""
    found = [
        c
        for c in columns
        if c.startswith("pct_below_") and "_ci_" not in c and not c.endswith("_all")
    ]
    return sorted(found, key=lambda c: float(c.removeprefix("pct_below_")))


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
    for column in ("steps", "replicate"):
        if column in scores.columns:
            scores[column] = _as_int(scores[column], column, source)
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


def _write_csv(frame: pd.DataFrame, path: Path, sep: str = ",") -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep=sep, index=False)


def group_columns(scores: pd.DataFrame) -> list[str]:
    """The optional grouping columns (model, prompt_set) present in ``scores``."""
    return [c for c in GROUP_COLUMNS if c in scores.columns]


def _per_seed(scores: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
    """``values`` per seed (rows) and (arm, epoch) (columns); with a ``replicate`` column the
    mean over the arm's runs (NaNs skipped).

    Raises:
        ValueError: a seed appears twice in one checkpoint (of one run).
    """
    keys = ["arm", "epoch", "seed"] + (["replicate"] if "replicate" in scores.columns else [])
    if scores.duplicated(keys).any():
        raise ValueError("scores: a seed appears twice in one checkpoint; seeds must be unique.")
    frame = scores[["arm", "epoch", "seed"]].assign(value=values.astype(float))
    if "replicate" not in scores.columns:
        return frame.pivot(index="seed", columns=["arm", "epoch"], values="value")
    return frame.pivot_table(
        index="seed", columns=["arm", "epoch"], values="value", aggfunc="mean", dropna=False
    )


def seed_matrix(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean distance per seed (rows) and (arm, epoch) (columns), NaN where no face; with
    replicates, the mean over the arm's runs that found a face on that seed."""
    return _per_seed(scores, scores["mean_distance"].where(scores["face_found"].astype(bool)))


def face_matrix(scores: pd.DataFrame) -> pd.DataFrame:
    """1.0 / 0.0 per seed (rows) and (arm, epoch) (columns) whether a face was found (with
    replicates: the share of runs); NaN where that checkpoint did not render the seed."""
    return _per_seed(scores, scores["face_found"].astype(bool).astype(float))


def replicates(scores: pd.DataFrame) -> int:
    """Training runs per arm (the fewest of any arm); 1 without a ``replicate`` column."""
    if "replicate" not in scores.columns or scores.empty:
        return 1
    return int(scores.groupby("arm")["replicate"].nunique().min())


def check_score_metadata(score_files: Sequence[Path]) -> list[str]:
    """Warnings where the score tables' sidecars disagree (DeepFace version, model, ...)."""
    metas = {}
    for path in map(Path, score_files):
        sidecar = meta_path(path)
        if sidecar.is_file():
            metas[str(path)] = json.loads(sidecar.read_text())
    return compare_metadata(metas)


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
