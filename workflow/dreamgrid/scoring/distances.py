"""Distances of faces to the references, the score table they make, and its metadata.

Distances are deepface's own ``find_distance``, one pair at a time, so each number is
bit-for-bit the ``distance`` that ``DeepFace.verify(image, reference, ...)`` returns for the
same model, detector, metric and alignment (including verify's rounding to 6 decimals and its
choice of the closest pair when an image shows several faces). An image without a detected
face is recorded as ``face_found=False`` with NaN distances: never as distance 0, never
silently dropped, and never embedded whole (deepface's ``enforce_detection=False`` would do
that and give an ordinary-looking distance).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.scoring import deepface_adapter
from dreamgrid.scoring.deepface_adapter import Face
from dreamgrid.scoring.embedding import EmbeddingCache, embed_images
from dreamgrid.scoring.settings import FaceSettings

logger = logging.getLogger(__name__)

#: Columns of a score table before its ``d:<reference>`` columns.
COLUMNS = ("image", "face_found", "n_faces", "mean_distance")
DISTANCE_PREFIX = "d:"

#: How to score an image in which several faces were found: ``closest`` is what
#: ``DeepFace.verify`` does (the smallest distance over the image's faces, per reference),
#: ``largest`` scores only the face with the largest detected box.
MULTIPLE_FACES = ("closest", "largest")


def distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """deepface's own ``find_distance`` of two embeddings, rounded to 6 decimals as
    ``DeepFace.verify`` rounds it (call
    :func:`~dreamgrid.scoring.deepface_adapter.setup_deepface` first)."""
    return float(np.round(deepface_adapter.find_distance(a, b, metric), 6))


def face_distances(
    found: Sequence[Face],
    references: dict[str, np.ndarray],
    metric: str,
    multiple_faces: str,
) -> list[float]:
    """Distance of one image to each reference; NaN for each when no face was found.

    With ``closest`` (``DeepFace.verify``'s rule) the distance to a reference is the smallest
    over the image's faces; with ``largest`` only the face with the largest box counts (ties:
    the first detected). Each distance is deepface's own ``find_distance`` of one pair, in
    verify's argument order, rounded to 6 decimals as verify rounds it: the 2-D batched path
    normalises with an epsilon and can differ in the 6th decimal after rounding.
    """
    if multiple_faces not in MULTIPLE_FACES:
        raise SpecError(
            f"multiple_faces must be one of {', '.join(MULTIPLE_FACES)}, got {multiple_faces!r}."
        )
    if not found:
        return [math.nan] * len(references)
    if multiple_faces == "largest" and len(found) > 1:
        found = [max(found, key=lambda f: f.area)]
    return [
        min(deepface_adapter.find_distance(f.embedding, ref, metric) for f in found)
        for ref in references.values()
    ]


def score_table(
    names: Sequence[str],
    found: Sequence[Sequence[Face]],
    references: dict[str, np.ndarray],
    metric: str,
    multiple_faces: str,
) -> pd.DataFrame:
    """Rows ``image, face_found, n_faces, mean_distance, d:<reference>...`` from faces."""
    columns = [DISTANCE_PREFIX + name for name in references]
    rows = []
    for name, faces_ in zip(names, found, strict=True):
        distances = face_distances(faces_, references, metric, multiple_faces)
        rows.append(
            {
                "image": name,
                "face_found": bool(faces_),
                "n_faces": len(faces_),
                "mean_distance": float(np.mean(distances)) if faces_ else math.nan,
                **dict(zip(columns, distances, strict=True)),
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *columns])
    return frame.astype({"face_found": bool, "n_faces": int, "mean_distance": float})


def score_images(
    images: Sequence[Path],
    references: dict[str, np.ndarray],
    settings: FaceSettings,
    progress: bool = True,
    *,
    multiple_faces: str = "closest",
    cache: EmbeddingCache | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Distance of every image to every reference.

    Args:
        images: images to score (renders, or real photos).
        references: reference file name -> embedding (from
            :func:`~dreamgrid.scoring.embedding.embed_reference_photos`).
        settings: face settings (the ones the references were embedded with).
        progress: show a tqdm bar.
        multiple_faces: ``closest`` (as ``DeepFace.verify``) or ``largest``; see
            :func:`face_distances`.
        cache: reuse and store embeddings by file content (:class:`EmbeddingCache`).
        workers: processes that detect and embed.

    Returns:
        One row per image: ``image`` (file name), ``face_found``, ``n_faces``,
        ``mean_distance`` (mean over references) and ``d:<reference>`` per reference. With
        ``closest`` the distance to a reference equals
        ``DeepFace.verify(image, reference)["distance"]``. NaN where no face was found.
    """
    if not references:
        raise SpecError("no reference embeddings given; add reference photos of the subject.")
    deepface_adapter.check_settings(settings)
    images = [Path(p) for p in images]
    found = embed_images(images, settings, cache=cache, workers=workers, progress=progress)
    frame = score_table(
        [p.name for p in images], found, references, settings.metric, multiple_faces
    )
    logger.info(
        "scored %d image(s); a face was found in %d", len(frame), int(frame["face_found"].sum())
    )
    return frame


def metadata(settings: FaceSettings, thresholds: Sequence[float]) -> dict[str, Any]:
    """What a score file's numbers depend on (distances differ across deepface versions).

    Args:
        settings: the face settings used.
        thresholds: the distance cut-offs the report uses.

    Returns:
        deepface_version, model, detector, metric, align, deepface_threshold, thresholds.
    """
    return {
        "deepface_version": deepface_adapter.deepface_version(),
        **asdict(settings),
        **deepface_adapter.compute_info(),
        "deepface_threshold": deepface_adapter.deepface_threshold(settings),
        "thresholds": [float(t) for t in thresholds],
    }


def meta_path(out: str | Path) -> Path:
    """The metadata sidecar of a score file: ``scores.csv`` -> ``scores.meta.json``."""
    return Path(out).with_suffix(".meta.json")


def write_scores(frame: pd.DataFrame, meta: dict[str, Any], out: Path) -> None:
    """Write a score table as CSV (``face_found`` as true/false, empty cells for NaN) and its
    metadata sidecar (:func:`meta_path`), each atomically."""
    table = frame.assign(face_found=frame["face_found"].map({True: "true", False: "false"}))
    with atomic_path(meta_path(out)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, na_rep="")


#: Metadata keys that must agree for two score tables' distances to be comparable.
COMPARABLE_KEYS = ("deepface_version", "model", "detector", "metric", "align")


def compare_metadata(metas: dict[str, dict[str, Any]]) -> list[str]:
    """Warn (log and return the messages) where score tables were made differently.

    Distances change across deepface versions, models, detectors, metrics and alignment, so
    comparing such tables is misleading.

    Args:
        metas: a label per table (e.g. its path) -> its metadata (``scores.meta.json``).

    Returns:
        One message per key whose values differ; empty when all agree.
    """
    messages = []
    for key in COMPARABLE_KEYS:
        values: dict[str, list[str]] = {}
        for label, meta in metas.items():
            values.setdefault(repr(meta.get(key)), []).append(str(label))
        if len(values) > 1:
            detail = "; ".join(
                f"{value} in {', '.join(labels[:3])}{' ...' if len(labels) > 3 else ''}"
                for value, labels in values.items()
            )
            messages.append(f"score tables differ in {key} ({detail}): distances not comparable")
    for message in messages:
        logger.warning(message)
    return messages
