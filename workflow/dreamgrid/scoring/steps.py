"""The score stage's workflow steps, each named after its rule, and ``dreamgrid score``.

- :func:`embed_references`: the subject's reference photos, once per (model, detector);
- :func:`embed_renders`: one shard's renders, once per (model, detector);
- :func:`score_faces`: one checkpoint's shards merged and scored with every face model;
- :func:`run_score_cli`: a folder of images against a folder of reference photos.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dreamgrid.io import file_hash, list_images
from dreamgrid.prompts import MAIN_PROMPT_SET
from dreamgrid.scoring import codec, deepface_adapter
from dreamgrid.scoring.deepface_adapter import Face
from dreamgrid.scoring.distances import metadata, score_images, score_table, write_scores
from dreamgrid.scoring.embedding import (
    EmbeddingCache,
    default_workers,
    embed_images,
    embed_reference_photos,
)
from dreamgrid.scoring.settings import EmbedSettings, FaceSettings

logger = logging.getLogger(__name__)


def embed_references(references: Path, settings: FaceSettings | EmbedSettings, out: Path) -> None:
    """Workflow step: embed the subject's reference photos once per (model, detector)."""
    embeddings = embed_reference_photos(list_images(references), settings)
    codec.save_references(embeddings, settings, out)


def embed_renders(
    renders_table: Path,
    renders_dir: Path,
    settings: EmbedSettings,
    out: Path,
    *,
    cache_dir: Path | None,
    workers: int,
) -> None:
    """Workflow step: detect and embed one shard's renders once for one (model, detector).

    ``cache_dir`` holds embeddings by file content (:class:`EmbeddingCache`), so a re-rendered
    shard whose images did not change, or any other job seeing the same bytes, is not
    embedded again.
    """
    names = list(pd.read_csv(renders_table)["image"])
    paths = [Path(renders_dir) / name for name in names]
    cache = EmbeddingCache(cache_dir, settings) if cache_dir is not None else None
    found = embed_images(paths, settings, cache=cache, workers=workers)
    codec.save_faces(names, [file_hash(p) for p in paths], found, settings, out)
    logger.info(
        "%d render(s), %d with a face, %s/%s -> %s",
        len(names),
        sum(bool(f) for f in found),
        settings.model,
        settings.detector,
        out,
    )


def score_faces(
    renders_tables: Sequence[Path],
    faces_files: dict[str, Sequence[Path]],
    references: dict[str, Path],
    checkpoint_meta: Path,
    settings: FaceSettings,
    multiple_faces: str,
    arm: str,
    epoch: int,
    out: Path,
    prompt_set: str = MAIN_PROMPT_SET,
) -> pd.DataFrame:
    """Workflow step: merge one checkpoint's shards and score them with every model.

    Args:
        renders_tables: the shards' render tables (``image`` relative to ``renders/``).
        faces_files: model -> that model's faces file per shard, in the order of
            ``renders_tables``.
        references: model -> its reference embeddings file.
        checkpoint_meta: the checkpoint's JSON (``steps``).
        settings: detector, metric, alignment (``model`` is the primary model, listed first).
        multiple_faces: ``closest`` or ``largest``.
        arm: arm id.
        epoch: epoch number.
        prompt_set: the renders' prompt set (a column of the table).
        out: ``scores.csv``; its sidecar ``scores.meta.json`` records for every model the
            deepface version, detector, metric, alignment and DeepFace's own threshold.

    Returns:
        One row per render and model: ``arm, epoch, steps, seed, image, model, prompt_set,
        face_found, n_faces, mean_distance, d:<reference>...``, sorted by model (as listed)
        then seed.
    """
    renders = pd.concat([pd.read_csv(t) for t in renders_tables], ignore_index=True)
    steps = json.loads(Path(checkpoint_meta).read_text())["steps"]
    tables, models_meta = [], {}
    for model, files in faces_files.items():
        model_settings = dataclasses.replace(settings, model=model)
        embeddings, ref_meta = codec.load_references(references[model])
        codec.check_references_match(ref_meta, model_settings)
        found: dict[str, list[Face]] = {}
        for path in files:
            shard_faces, meta = codec.load_faces(path)
            codec.check_references_match(meta, model_settings)
            found.update(shard_faces)
        scores = score_table(
            list(renders["image"]),
            [found[name] for name in renders["image"]],
            embeddings,
            settings.metric,
            multiple_faces,
        )
        head = pd.DataFrame({"arm": arm, "epoch": epoch, "steps": steps, "seed": renders["seed"]})
        frame = pd.concat([head, scores], axis=1)
        frame.insert(frame.columns.get_loc("image") + 1, "model", model)
        frame.insert(frame.columns.get_loc("model") + 1, "prompt_set", prompt_set)
        tables.append(frame.sort_values("seed", kind="stable"))
        models_meta[model] = {
            "deepface_threshold": deepface_adapter.deepface_threshold(model_settings),
            "face_rate": float(scores["face_found"].mean()) if len(scores) else math.nan,
        }
        logger.info(
            "%s: %d render(s), face rate %.3f", model, len(scores), models_meta[model]["face_rate"]
        )
    frame = pd.concat(tables, ignore_index=True)
    meta = {
        **metadata(settings, ()),
        "multiple_faces": multiple_faces,
        "models": models_meta,
    }
    write_scores(frame, meta, out)
    return frame


def run_score_cli(
    references: Path,
    images: Path,
    model: str,
    detector: str,
    metric: str,
    out: Path,
    *,
    align: bool = True,
    thresholds: Sequence[float] = (),
    multiple_faces: str = "closest",
    workers: int | None = None,
    cache: Path | None = None,
) -> pd.DataFrame:
    """``dreamgrid score``: distances of a folder of images to a folder of reference photos.

    Writes ``out`` (CSV: image, face_found, n_faces, mean_distance, d:<reference>...) and
    ``out`` with suffix ``.meta.json`` (:func:`~dreamgrid.scoring.distances.metadata`).
    Images are embedded in ``workers`` processes (default: every CPU); with ``cache``,
    embeddings are reused by file content.

    Raises:
        SpecError: a folder is missing or empty, a setting is unknown, or a reference shows
            several faces.
        NoFaceError: a reference shows no face.
    """
    settings = FaceSettings(model=model, detector=detector, metric=metric, align=align)
    deepface_adapter.check_settings(settings)
    image_paths = list_images(images)
    embeddings = embed_reference_photos(list_images(references), settings)
    frame = score_images(
        image_paths,
        embeddings,
        settings,
        multiple_faces=multiple_faces,
        cache=EmbeddingCache(cache, settings) if cache is not None else None,
        workers=workers or default_workers(),
    )
    meta = {**metadata(settings, thresholds), "multiple_faces": multiple_faces}
    write_scores(frame, meta, Path(out))
    return frame
