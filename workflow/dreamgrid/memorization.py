"""Memorization: is a render closer to one training photo than real photos of the subject are
to each other?

Likeness alone cannot tell a good likeness from a copy of a training photo. The yardstick
here is the training photos themselves: two different real photos of the subject are never
closer than the closest pair among them. A render closer than that to one training photo
(``closer_than_pairs``) is nearer to that photo than any two photos of the person are to each
other, the sign of a reproduced photo rather than a new picture of the person.

Training photos and renders are compared with the primary face model's own embeddings (the
render embeddings already made for scoring) and deepface's ``find_distance``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid import stats
from dreamgrid.errors import SpecError
from dreamgrid.io import list_images
from dreamgrid.scoretable import _write_csv
from dreamgrid.scoring import codec, deepface_adapter
from dreamgrid.scoring.deepface_adapter import Face
from dreamgrid.scoring.distances import distance
from dreamgrid.scoring.settings import EmbedSettings, embed_settings_from

log = logging.getLogger(__name__)

RENDER_COLUMNS = (
    "arm",
    "epoch",
    "prompt_set",
    "image",
    "face_found",
    "nearest_training",
    "nearest_photo",
    "closer_than_pairs",
)
SUMMARY_COLUMNS = (
    "arm",
    "epoch",
    "prompt_set",
    "renders",
    "faces",
    "median_nearest",
    "closest_pair",
    "closest_pair_photos",
    "median_photo_nearest",
    "n_closer",
    "pct_closer_than_pairs",
    "pct_closer_ci_low",
    "pct_closer_ci_high",
)


def subject_face(
    found: Sequence[Face], references: Mapping[str, np.ndarray], metric: str
) -> Face | None:
    """The face of a training photo that is the subject: the one closest, on average, to the
    references (a photo may show other people too)."""
    if not found:
        return None
    return min(
        found,
        key=lambda f: np.mean([distance(f.embedding, r, metric) for r in references.values()]),
    )


def training_embeddings(
    photos: Sequence[Path],
    references: Mapping[str, np.ndarray],
    settings: EmbedSettings,
    metric: str,
) -> dict[str, np.ndarray]:
    """Photo name -> the subject's embedding, for the training photos that show a face."""
    embeddings = {}
    for photo in map(Path, photos):
        face = subject_face(deepface_adapter.detect_and_embed(photo, settings), references, metric)
        if face is None:
            log.warning("%s: no face found; left out of the memorization yardstick", photo)
            continue
        embeddings[photo.name] = face.embedding
    return embeddings


def pair_distances(training: Mapping[str, np.ndarray], metric: str) -> pd.DataFrame:
    """Every pair of distinct training photos and their distance (columns a, b, distance)."""
    rows = [
        {"a": a, "b": b, "distance": distance(training[a], training[b], metric)}
        for a, b in itertools.combinations(training, 2)
    ]
    return pd.DataFrame(rows, columns=["a", "b", "distance"])


def closest_pair_photos(pairs: pd.DataFrame) -> str:
    """The names of the closest two training photos, "a + b" ("" without pairs)."""
    if pairs.empty:
        return ""
    row = pairs.loc[pairs["distance"].idxmin()]
    return f"{row['a']} + {row['b']}"


def yardsticks(pairs: pd.DataFrame) -> tuple[float, float]:
    """The closest pair of training photos, and the median over photos of the distance to
    their nearest other photo (how close the training photos are to each other)."""
    if pairs.empty:
        return math.nan, math.nan
    both = pd.concat(
        [pairs[["a", "distance"]], pairs[["b", "distance"]].rename(columns={"b": "a"})]
    )
    nearest = both.groupby("a")["distance"].min()
    return float(pairs["distance"].min()), float(nearest.median())


def nearest_training(
    found: Sequence[Face],
    training: Mapping[str, np.ndarray],
    metric: str,
    multiple_faces: str,
) -> tuple[float, str]:
    """Distance from a render's face to the closest training photo, and that photo's name.

    The render's faces are chosen as scoring chooses them (``closest``: any face;
    ``largest``: the largest box); NaN and "" without a face or training embeddings.
    """
    if not found or not training:
        return math.nan, ""
    if multiple_faces == "largest" and len(found) > 1:
        found = [max(found, key=lambda f: f.area)]
    return min(
        (distance(f.embedding, emb, metric), name) for f in found for name, emb in training.items()
    )


def render_rows(
    checkpoint: Mapping[str, object],
    found: Mapping[str, Sequence[Face]],
    training: Mapping[str, np.ndarray],
    closest_pair: float,
    metric: str,
    multiple_faces: str,
) -> list[dict]:
    """One row per render of one checkpoint (``checkpoint``: arm, epoch, prompt_set)."""
    rows = []
    for image, faces_ in found.items():
        dist, photo = nearest_training(faces_, training, metric, multiple_faces)
        rows.append(
            {
                **checkpoint,
                "image": image,
                "face_found": bool(faces_),
                "nearest_training": dist,
                "nearest_photo": photo,
                "closer_than_pairs": bool(np.isfinite(dist) and dist < closest_pair),
            }
        )
    return rows


def summarize(
    renders: pd.DataFrame,
    closest_pair: float,
    median_photo_nearest: float,
    confidence: float = stats.CONFIDENCE,
    pair_photos: str = "",
) -> pd.DataFrame:
    """Per checkpoint: renders with a face, their median distance to the nearest training
    photo, and the share closer than the closest pair of training photos (percent of renders
    with a face, Wilson interval)."""
    rows = []
    for (arm, epoch, prompt_set), group in renders.groupby(
        ["arm", "epoch", "prompt_set"], sort=True
    ):
        with_face = group.loc[group["face_found"].astype(bool)]
        n, k = len(with_face), int(with_face["closer_than_pairs"].astype(bool).sum())
        low, high = stats.wilson(k, n, confidence) if n else (math.nan, math.nan)
        rows.append(
            {
                "arm": arm,
                "epoch": int(epoch),
                "prompt_set": prompt_set,
                "renders": len(group),
                "faces": n,
                "median_nearest": float(with_face["nearest_training"].median()) if n else math.nan,
                "closest_pair": closest_pair,
                "closest_pair_photos": pair_photos,
                "median_photo_nearest": median_photo_nearest,
                "n_closer": k,
                "pct_closer_than_pairs": 100.0 * k / n if n else math.nan,
                "pct_closer_ci_low": 100.0 * low,
                "pct_closer_ci_high": 100.0 * high,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def run_memorization(
    training_photos: Path,
    references: Path,
    faces_files: Sequence[Sequence[Path]],
    checkpoints: Sequence[Mapping[str, object]],
    metric: str,
    multiple_faces: str,
    out_renders: Path,
    out_summary: Path,
    out_pairs: Path,
) -> pd.DataFrame:
    """Workflow step (rule ``memorization``): every render's distance to the nearest training
    photo, per checkpoint the share closer than the closest pair of training photos.

    Args:
        training_photos: the subject's training photos.
        references: the primary model's reference embeddings (their settings embed the
            training photos, and pick the subject's face in a photo with several).
        faces_files: per checkpoint, its faces shards (:func:`dreamgrid.scoring.codec.save_faces`).
        checkpoints: per checkpoint (same order), its ``arm``, ``epoch`` and ``prompt_set``.
        out_renders, out_summary, out_pairs: per render (TSV), per checkpoint (CSV), and
            every pair of training photos (CSV).
    """
    if len(faces_files) != len(checkpoints):
        raise SpecError(
            f"memorization: {len(faces_files)} lists of faces files for {len(checkpoints)} "
            "checkpoints."
        )
    refs, meta = codec.load_references(references)
    settings = embed_settings_from(meta)
    training = training_embeddings(list_images(training_photos), refs, settings, metric)
    pairs = pair_distances(training, metric)
    closest, median_nearest = yardsticks(pairs)
    rows = []
    for checkpoint, files in zip(checkpoints, faces_files, strict=True):
        for path in files:
            found, shard_meta = codec.load_faces(Path(path))
            codec.check_references_match(shard_meta, settings)
            rows += render_rows(checkpoint, found, training, closest, metric, multiple_faces)
    renders = pd.DataFrame(rows, columns=list(RENDER_COLUMNS))
    summary = summarize(renders, closest, median_nearest, pair_photos=closest_pair_photos(pairs))
    _write_csv(renders, Path(out_renders), sep="\t")
    _write_csv(summary, Path(out_summary))
    _write_csv(pairs, Path(out_pairs))
    log.info(
        "%d training photos with a face (closest pair %.4f); %d of %d renders with a face are "
        "closer than that to one training photo",
        len(training),
        closest,
        int(renders["closer_than_pairs"].sum()),
        int(renders["face_found"].sum()),
    )
    return summary
