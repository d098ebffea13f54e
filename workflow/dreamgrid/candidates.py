"""Rank look-alike names: which name does the base model already render closest to the subject?

Each candidate is a folder of renders (the base model prompted with that name, on paired
seeds). Every render is scored against the subject's references exactly as checkpoint renders
are; candidates are ranked by average distance (after a minimum face count). ``consistency``
is the mean pairwise distance among a name's faces: a name the model does not know gives
scattered faces.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid import stats
from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path, list_images, read_text
from dreamgrid.scoretable import pct_column
from dreamgrid.scoring import codec
from dreamgrid.scoring.distances import distance, score_table
from dreamgrid.scoring.embedding import EmbeddingCache, embed_images, embed_reference_photos
from dreamgrid.scoring.settings import FaceSettings

log = logging.getLogger(__name__)


def rank_columns(threshold: float) -> list[str]:
    """Columns of the ranking table (the ``rank-candidates`` contract)."""
    return [
        "candidate",
        "renders",
        "face_rate",
        "average",
        pct_column(threshold),
        "consistency",
        "rank",
    ]


def consistency(embeddings: Sequence[np.ndarray], metric: str) -> float:
    """Mean pairwise distance among a name's faces (NaN with fewer than two faces): it does
    not grow with the number of faces, as the distance to their centroid does."""
    if len(embeddings) < 2:
        return math.nan
    return float(
        np.mean([distance(a, b, metric) for a, b in itertools.combinations(embeddings, 2)])
    )


def candidate_row(
    name: str, scores: pd.DataFrame, faces: Sequence[Sequence], metric: str, threshold: float
) -> dict[str, object]:
    """One candidate's numbers from its renders' score rows and detected faces.

    ``faces`` holds each render's faces (:class:`dreamgrid.scoring.deepface_adapter.Face`);
    the largest face of a render stands for it in ``consistency``. ``average_ci_low``/``_high``:
    the BCa interval of the average (NaN with fewer than two faces).
    """
    distances = scores.loc[scores["face_found"], "mean_distance"].to_numpy(dtype=float)
    largest = [max(found, key=lambda f: f.area).embedding for found in faces if found]
    low, high = stats.mean_interval(distances, rng=stats.rng_for(stats.SEED, "finder", name))
    return {
        "candidate": name,
        "renders": len(scores),
        "face_rate": len(distances) / len(scores) if len(scores) else math.nan,
        "average": float(distances.mean()) if len(distances) else math.nan,
        pct_column(threshold): (
            100.0 * float((distances < threshold).mean()) if len(distances) else math.nan
        ),
        "consistency": consistency(largest, metric),
        "faces": len(distances),
        "average_ci_low": low,
        "average_ci_high": high,
    }


def rank(
    rows: Sequence[dict[str, object]], threshold: float, min_faces: int | None = None
) -> pd.DataFrame:
    """Rank candidates: those with at least ``min_faces`` faces (default: half the most
    renders any candidate has) first, by lowest average; ties by share below ``threshold``,
    face rate, then the order given. Then candidates with fewer faces, the same way; then
    those without any face, in the order given. A name with 1 face in 20 renders cannot
    outrank one with 20 of 20."""
    extra = ["faces", "average_ci_low", "average_ci_high"]
    table = pd.DataFrame(list(rows), columns=rank_columns(threshold)[:-1] + extra)
    if table["faces"].isna().all():
        table["faces"] = (table["face_rate"].fillna(0) * table["renders"]).round()
    if min_faces is None:
        most = int(table["renders"].max()) if len(table) else 0
        min_faces = max(1, math.ceil(most / 2))
    table["_few"] = table["faces"].fillna(0) < min_faces
    table["_order"] = range(len(table))
    table = table.sort_values(
        ["_few", "average", pct_column(threshold), "face_rate", "_order"],
        ascending=[True, True, False, False, True],
        na_position="last",
        kind="stable",
    )
    table["rank"] = range(1, len(table) + 1)
    columns = rank_columns(threshold) + extra
    return table[columns].reset_index(drop=True)


def candidate_dirs(candidates: Path) -> list[Path]:
    """The candidate sub-folders (sorted by name), each with at least one image.

    Raises:
        SpecError: the folder is missing, has no sub-folders, or a sub-folder has no image.
    """
    candidates = Path(candidates)
    if not candidates.is_dir():
        raise SpecError(
            f"{candidates}: not a folder. Give a folder with one sub-folder of renders per "
            "candidate name."
        )
    folders = sorted(p for p in candidates.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise SpecError(
            f"{candidates}: no sub-folders. Put each candidate's renders in its own sub-folder "
            "named after the candidate."
        )
    for folder in folders:
        list_images(folder)  # names an empty folder
    return folders


def rank_folders(
    references: dict[str, np.ndarray],
    folders: Sequence[Path],
    settings,
    threshold: float,
    *,
    names: Sequence[str] | None = None,
    multiple_faces: str = "closest",
    cache=None,
    workers: int = 1,
) -> pd.DataFrame:
    """Score every candidate folder's images against ``references`` and rank them.

    Args:
        references: reference name -> embedding
            (:func:`dreamgrid.scoring.embedding.embed_reference_photos`).
        folders: one folder of renders per candidate.
        settings: :class:`dreamgrid.scoring.settings.FaceSettings` the references were
            embedded with.
        threshold: distance for the ``pct_below_<t>`` column.
        names: candidate names (default: the folder names).
        multiple_faces, cache, workers: as for :func:`dreamgrid.scoring.distances.score_images`.
    """
    names = [f.name for f in folders] if names is None else list(names)
    rows = []
    for name, folder in zip(names, folders, strict=True):
        images = list_images(folder)
        found = embed_images(images, settings, cache=cache, workers=workers, progress=False)
        scores = score_table(
            [p.name for p in images], found, references, settings.metric, multiple_faces
        )
        row = candidate_row(name, scores, found, settings.metric, threshold)
        log.info(
            "%s: %d render(s), face rate %.2f, average %.4f",
            name,
            row["renders"],
            row["face_rate"],
            row["average"],
        )
        rows.append(row)
    table = rank(rows, threshold)
    if table["average"].isna().all():
        log.warning("no candidate's renders show a face: the ranking is only the list order")
    return table


def write_ranking(table: pd.DataFrame, out: Path) -> None:
    with atomic_path(Path(out)) as tmp:
        table.to_csv(tmp, index=False)


def rank_candidates(
    references: Path,
    folders: Sequence[Path],
    names: Sequence[str],
    settings,
    threshold: float,
    multiple_faces: str,
    cache: Path,
    workers: int,
    out: Path,
) -> pd.DataFrame:
    """Workflow step: rank the candidates' renders against the reference embeddings.

    Render embeddings go through the shared content cache, so adding names to the list
    embeds only the new names' renders.
    """
    embeddings, meta = codec.load_references(references)
    codec.check_references_match(meta, settings)
    table = rank_folders(
        embeddings,
        folders,
        settings,
        threshold,
        names=names,
        multiple_faces=multiple_faces,
        cache=EmbeddingCache(cache, settings.embedding),
        workers=workers,
    )
    write_ranking(table, out)
    top = table.iloc[0]
    log.info(
        "ranked %d candidates; first: %s (average %.4f)",
        len(table),
        top["candidate"],
        top["average"],
    )
    return table


def run_rank_cli(
    references: Path,
    candidates: Path,
    out: Path,
    model: str,
    detector: str,
    metric: str,
    threshold: float,
) -> pd.DataFrame:
    """``dreamgrid rank-candidates``: rank the candidate folders under ``candidates``."""
    if not math.isfinite(threshold) or threshold <= 0:
        raise SpecError(f"--threshold must be a positive distance, got {threshold!r}.")
    folders = candidate_dirs(candidates)
    settings = FaceSettings(model=model, detector=detector, metric=metric, align=True)
    embeddings = embed_reference_photos(list_images(references), settings)
    table = rank_folders(embeddings, folders, settings, threshold)
    write_ranking(table, out)
    return table


# ---- the candidate list and the chosen token (workflow side) ----------------------------------

#: Lists shipped with dreamgrid, one per class word (``<class_word>.txt``).
SHIPPED = Path(__file__).resolve().parents[2] / "resources" / "candidates"


def list_path(finder: dict, class_word: str) -> Path:
    """The candidate list file: ``token_finder.candidates`` or the shipped one for the class."""
    if finder.get("candidates"):
        return Path(finder["candidates"])
    return SHIPPED / f"{class_word}.txt"


def read_names(path: Path) -> list[str]:
    """Candidate names, one per line; blank lines and ``#`` comments are skipped.

    Raises:
        SpecError: the file is missing, empty, or names one candidate twice (after slugging).
    """
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.txt")))
        raise SpecError(
            f"{path}: candidate list not found. Set token_finder.candidates to a text file "
            f"with one name per line (lists ship for class words: {shipped})."
        )
    names = []
    seen: dict[str, str] = {}
    for number, line in enumerate(read_text(path, "candidate list").splitlines(), 1):
        name = " ".join(line.split("#", 1)[0].split())
        if not name:
            continue
        key = slug(name)
        if not key:
            raise SpecError(f"{path}:{number}: {name!r} has no letter or digit; fix the line.")
        if key in seen:
            raise SpecError(
                f"{path}:{number}: {name!r} repeats {seen[key]!r} (same folder name {key!r}); "
                "remove one."
            )
        seen[key] = name
        names.append(name)
    if not names:
        raise SpecError(f"{path}: no candidate names. Add one name per line.")
    return names


def slug(name: str) -> str:
    """Folder-safe id of a name: ``Denzel Washington`` -> ``denzel-washington``."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def chosen(ranking: Path) -> str:
    """The name ranked first in a ranking table (what ``token: auto`` trains on)."""
    return str(top(pd.read_csv(ranking), str(ranking))["candidate"])


def top(table: pd.DataFrame, source: str = "ranking") -> pd.Series:
    """The row ranked first (rank 1) of a ranking table.

    Raises:
        SpecError: the table has no rows.
    """
    if table.empty:
        raise SpecError(f"{source}: no candidates ranked; rerun the token finder.")
    return table.sort_values("rank", kind="stable").iloc[0]
