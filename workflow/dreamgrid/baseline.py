"""The real-photos baseline: how alike real photos of the person are.

The scoring side (the reference_baseline rule, in the score env) scores each reference
against the others and each training photo like a render; the report side reads the table
back as the "as alike as real photos" line and its interval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid import photos, stats
from dreamgrid.errors import SpecError
from dreamgrid.io import list_images
from dreamgrid.scoretable import _write_csv
from dreamgrid.scoring import codec, deepface_adapter
from dreamgrid.scoring.distances import DISTANCE_PREFIX, distance, score_table
from dreamgrid.scoring.settings import EmbedSettings, FaceSettings, embed_settings_from

log = logging.getLogger(__name__)


# ---- reference baseline -------------------------------------------------------------------
def leave_one_out(embeddings: Mapping[str, np.ndarray], metric: str) -> pd.DataFrame:
    """Leave-one-out scores of the reference photos: how alike real photos of the person are.

    Each reference is scored like a render, against the *other* references: the mean of its
    distances to them. A render as alike as the references themselves scores like these.

    Returns:
        Columns ``reference, mean_distance, n_others``, one row per reference (no rows with
        fewer than two references).
    """
    names = sorted(embeddings)
    rows = []
    if len(names) >= 2:
        for name in names:
            others = [distance(embeddings[name], embeddings[o], metric) for o in names if o != name]
            rows.append(
                {
                    "reference": name,
                    "mean_distance": float(np.mean(others)),
                    "n_others": len(others),
                }
            )
    return pd.DataFrame(rows, columns=["reference", "mean_distance", "n_others"])


#: Columns of the baseline table (:func:`reference_baseline`).
BASELINE_COLUMNS = ("source", "photo", "face_found", "mean_distance", "n_compared", "excluded")


def reference_rows(embeddings: dict[str, np.ndarray], metric: str) -> pd.DataFrame:
    """Each reference scored against the *other* references (leave-one-out)."""
    loo = leave_one_out(embeddings, metric)
    return pd.DataFrame(
        {
            "source": "reference",
            "photo": loo["reference"],
            "face_found": True,
            "mean_distance": loo["mean_distance"],
            "n_compared": loo["n_others"],
            "excluded": "",
        },
        columns=list(BASELINE_COLUMNS),
    )


def training_rows(
    photos: Sequence[Path],
    embeddings: dict[str, np.ndarray],
    settings: FaceSettings | EmbedSettings,
    metric: str,
    multiple_faces: str,
    cut_from: dict[str, list[str]],
) -> pd.DataFrame:
    """Each training photo scored like a render against the references, leaving out the
    references cut from that photo (``cut_from``: photo name -> reference names).

    A photo without a face, or whose only references were cut from it, gets no distance.
    """
    photos = list(map(Path, photos))
    found = [deepface_adapter.detect_and_embed(photo, settings) for photo in photos]
    table = score_table([p.name for p in photos], found, embeddings, metric, multiple_faces)
    rows = []
    for _, row in table.iterrows():
        excluded = [r for r in cut_from.get(row["image"], []) if r in embeddings]
        distances = [row[DISTANCE_PREFIX + name] for name in embeddings if name not in excluded]
        face = bool(row["face_found"])
        rows.append(
            {
                "source": "training",
                "photo": row["image"],
                "face_found": face,
                "mean_distance": float(np.mean(distances)) if face and distances else math.nan,
                "n_compared": len(distances) if face else 0,
                "excluded": ";".join(excluded),
            }
        )
    return pd.DataFrame(rows, columns=list(BASELINE_COLUMNS))


def baseline_value(baseline: pd.DataFrame | None) -> float:
    """The "as alike as real photos" line: mean of the references' leave-one-out scores."""
    if baseline is None or baseline.empty:
        return math.nan
    return float(pd.to_numeric(baseline["mean_distance"], errors="coerce").mean())


def baseline_interval(
    baseline: pd.DataFrame | None, confidence: float = 0.95
) -> tuple[float, float]:
    """BCa bootstrap interval of the baseline over its photos (NaN with fewer than two): with
    7 references its SD is about 0.024, as large as differences between arms."""
    if baseline is None or baseline.empty:
        return math.nan, math.nan
    values = pd.to_numeric(baseline["mean_distance"], errors="coerce").to_numpy(dtype=float)
    return stats.mean_interval(values, rng=stats.rng_for(0, "baseline"), confidence=confidence)


def reference_baseline(
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
        out: CSV with :data:`BASELINE_COLUMNS`.
        training_photos: folder of the subject's training photos, or None.
        reference_photos: folder of the reference photos (needed with ``training_photos``).
        multiple_faces: rule for photos with several faces (as for renders).
    """
    embeddings, meta = codec.load_references(references)
    frames = [reference_rows(embeddings, metric)]
    if training_photos is not None:
        if reference_photos is None:
            raise SpecError("the training-photo baseline needs the reference photos' folder.")
        training = list_images(training_photos)
        cut = photos.cut_from(list_images(reference_photos), training)
        settings = embed_settings_from(meta)
        frames.append(training_rows(training, embeddings, settings, metric, multiple_faces, cut))
    baseline = pd.concat(frames, ignore_index=True)
    _write_csv(baseline, out)
    for source, group in baseline.groupby("source", sort=False):
        log.info(
            "real-photos baseline, %s photos: %d, mean distance %.4f",
            source,
            len(group),
            baseline_value(group),
        )
    return baseline


def read_baseline(path: str | Path | None) -> pd.DataFrame | None:
    """The baseline CSV from :func:`reference_baseline`, or None."""
    if path is None:
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(BASELINE_COLUMNS))


def baseline_mean(path: str | Path | None) -> float:
    """The real-photos distance from a baseline CSV (NaN when unknown)."""
    return baseline_value(read_baseline(path))
