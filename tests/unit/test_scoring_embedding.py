"""dreamgrid.scoring.embedding: reference photos (one face each), and many images embedded once
(content-hash cache, worker processes) (real Dlib, offline)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamgrid.errors import NoFaceError, SpecError
from dreamgrid.io import list_images
from dreamgrid.scoring import deepface_adapter, embedding
from dreamgrid.scoring.distances import score_images
from dreamgrid.scoring.embedding import EmbeddingCache, embed_reference_photos
from dreamgrid.scoring.settings import EmbedSettings, FaceSettings

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TRAIN = sorted((DEMO / "train").glob("*.jpg"))
REFERENCES = sorted((DEMO / "references").glob("*.jpg"))
OTHER = sorted((DEMO / "ground_truth").glob("*.jpg"))


def test_reference_without_face_raises_naming_file(settings, extra):
    with pytest.raises(NoFaceError, match="gray.png"):
        embed_reference_photos([REFERENCES[0], extra / "gray.png"], settings)


def test_reference_with_two_faces_raises(settings, extra):
    with pytest.raises(SpecError, match="two_faces.png.*alone"):
        embed_reference_photos([extra / "two_faces.png"], settings)


def test_duplicate_reference_names_raise(settings, tmp_path):
    (tmp_path / "a").mkdir()
    shutil.copy(REFERENCES[0], tmp_path / "a" / REFERENCES[1].name)
    with pytest.raises(SpecError, match="file name"):
        embed_reference_photos([REFERENCES[1], tmp_path / "a" / REFERENCES[1].name], settings)


def test_cache_hit_skips_detection_and_gives_same_scores(settings, references, tmp_path):
    images = [tmp_path / p.name for p in TRAIN[:3]]
    for src, dst in zip(TRAIN[:3], images, strict=True):
        shutil.copy(src, dst)
    cache = EmbeddingCache(tmp_path / "cache", settings)
    first = score_images(images, references, settings, progress=False, cache=cache)
    stored = sorted(cache.folder.rglob("*.json"))
    assert len(stored) == 3
    assert "Dlib-dlib-align1-deepface0.0.103" in str(cache.folder)

    calls = []
    original = deepface_adapter.detect_and_embed
    deepface_adapter.detect_and_embed = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        # Same bytes under another name hit the cache too; a metric change re-embeds nothing.
        shutil.copy(images[0], tmp_path / "renamed.jpg")
        other_metric = FaceSettings("Dlib", "dlib", "euclidean_l2", True)
        again = score_images(
            [*images, tmp_path / "renamed.jpg"],
            references,
            other_metric,
            progress=False,
            cache=EmbeddingCache(tmp_path / "cache", other_metric),
        )
        same = score_images(images, references, settings, progress=False, cache=cache)
    finally:
        deepface_adapter.detect_and_embed = original
    assert calls == []
    pd.testing.assert_frame_equal(first, same)
    assert again.loc[3, "mean_distance"] == again.loc[0, "mean_distance"]
    assert not np.allclose(again.loc[:2, "mean_distance"], first["mean_distance"])
    # Another alignment is another cache folder.
    assert (
        EmbeddingCache(tmp_path / "cache", EmbedSettings("Dlib", "dlib", False)).folder
        != cache.folder
    )


def test_worker_processes_give_identical_scores(settings, references, monkeypatch):
    monkeypatch.setattr(embedding, "MIN_IMAGES_PER_WORKER", 1)
    images = [*TRAIN, *OTHER]
    serial = score_images(images, references, settings, progress=False)
    parallel = score_images(images, references, settings, progress=False, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


def _die(image):
    os._exit(1)  # a worker killed mid-image (e.g. by the OOM killer)


def test_a_dying_worker_falls_back_to_one_process(settings, references, monkeypatch):
    images = list_images(DEMO / "train")[:4] * 2
    serial = score_images(images, references, settings, progress=False, workers=1)
    monkeypatch.setattr(embedding, "_embed_in_worker", _die)
    fallback = score_images(images, references, settings, progress=False, workers=2)
    pd.testing.assert_frame_equal(serial, fallback)
