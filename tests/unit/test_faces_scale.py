"""The scorer at scale: embed once (content-hash cache, worker processes), several models,
several faces, per-shard faces files merged into one checkpoint table (real Dlib, offline)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid import faces
from dreamgrid.errors import SpecError

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TRAIN = sorted((DEMO / "train").glob("*.jpg"))
REFERENCES = sorted((DEMO / "references").glob("*.jpg"))
OTHER = sorted((DEMO / "ground_truth").glob("*.jpg"))


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    """The subject (small) beside another person (large): closest and largest disagree."""
    folder = tmp_path_factory.mktemp("two")
    subject = Image.open(REFERENCES[0]).convert("RGB").resize((256, 256))
    other = Image.open(OTHER[-1]).convert("RGB").resize((512, 512))
    pair = Image.new("RGB", (768, 512))
    pair.paste(subject, (0, 128))
    pair.paste(other, (256, 0))
    pair.save(folder / "pair.png")
    return folder / "pair.png"


@pytest.fixture(scope="module")
def references(settings):
    return faces.embed_references(REFERENCES, settings)


def test_cache_hit_skips_detection_and_gives_same_scores(settings, references, tmp_path):
    images = [tmp_path / p.name for p in TRAIN[:3]]
    for src, dst in zip(TRAIN[:3], images, strict=True):
        shutil.copy(src, dst)
    cache = faces.EmbeddingCache(tmp_path / "cache", settings)
    first = faces.score_images(images, references, settings, progress=False, cache=cache)
    stored = sorted(cache.folder.rglob("*.json"))
    assert len(stored) == 3
    assert "Dlib-dlib-align1-deepface0.0.103" in str(cache.folder)

    calls = []
    original = faces.detect_and_embed
    faces.detect_and_embed = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        # Same bytes under another name hit the cache too; a metric change re-embeds nothing.
        shutil.copy(images[0], tmp_path / "renamed.jpg")
        other_metric = faces.FaceSettings("Dlib", "dlib", "euclidean_l2", True)
        again = faces.score_images(
            [*images, tmp_path / "renamed.jpg"],
            references,
            other_metric,
            progress=False,
            cache=faces.EmbeddingCache(tmp_path / "cache", other_metric),
        )
        same = faces.score_images(images, references, settings, progress=False, cache=cache)
    finally:
        faces.detect_and_embed = original
    assert calls == []
    pd.testing.assert_frame_equal(first, same)
    assert again.loc[3, "mean_distance"] == again.loc[0, "mean_distance"]
    assert not np.allclose(again.loc[:2, "mean_distance"], first["mean_distance"])
    # Another alignment is another cache folder.
    assert (
        faces.EmbeddingCache(tmp_path / "cache", faces.EmbedSettings("Dlib", "dlib", False)).folder
        != cache.folder
    )


def test_worker_processes_give_identical_scores(settings, references, monkeypatch):
    monkeypatch.setattr(faces, "MIN_IMAGES_PER_WORKER", 1)
    images = [*TRAIN, *OTHER]
    serial = faces.score_images(images, references, settings, progress=False)
    parallel = faces.score_images(images, references, settings, progress=False, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


def _die(image):
    os._exit(1)  # a worker killed mid-image (e.g. by the OOM killer)


def test_a_dying_worker_falls_back_to_one_process(settings, references, monkeypatch):
    images = faces.list_images(DEMO / "train")[:4] * 2
    serial = faces.score_images(images, references, settings, progress=False, workers=1)
    monkeypatch.setattr(faces, "_embed_in_worker", _die)
    fallback = faces.score_images(images, references, settings, progress=False, workers=2)
    pd.testing.assert_frame_equal(serial, fallback)


def test_closest_matches_verify_and_largest_scores_the_big_face(settings, references, two_faces):
    from deepface import DeepFace

    closest = faces.score_images([two_faces], references, settings, progress=False)
    largest = faces.score_images(
        [two_faces], references, settings, progress=False, multiple_faces="largest"
    )
    assert closest.loc[0, "n_faces"] == largest.loc[0, "n_faces"] == 2
    ref = REFERENCES[1]
    expected = DeepFace.verify(str(two_faces), str(ref), model_name="Dlib", detector_backend="dlib")
    assert closest.loc[0, f"d:{ref.name}"] == pytest.approx(expected["distance"], abs=1e-6)
    # The large face is the other person: farther than the closest (the subject's) face.
    assert largest.loc[0, "mean_distance"] > closest.loc[0, "mean_distance"] + 0.1
    with pytest.raises(SpecError, match="multiple_faces"):
        faces.score_images([two_faces], references, settings, progress=False, multiple_faces="x")


def test_compare_metadata_warns_on_other_versions(caplog):
    base = {"deepface_version": "0.0.103", "model": "Dlib", "detector": "dlib", "metric": "cosine"}
    assert faces.compare_metadata({"a": base, "b": dict(base)}) == []
    messages = faces.compare_metadata({"a": base, "b": {**base, "deepface_version": "0.0.93"}})
    assert len(messages) == 1 and "deepface_version" in messages[0]
    assert "not comparable" in caplog.text


def test_shard_faces_merge_into_one_table_per_model(settings, references, tmp_path):
    """Two shards, Dlib listed twice under two names (only Dlib has weights offline)."""
    renders = tmp_path / "renders"
    tables = []
    for k, group in enumerate([TRAIN[:2], [*TRAIN[2:3], *OTHER[:1]]]):
        shard = renders / f"shard-{k}"
        shard.mkdir(parents=True)
        rows = []
        for j, src in enumerate(group):
            seed = 2 * k + j
            shutil.copy(src, shard / f"render-{seed}.jpg")
            rows.append({"seed": seed, "image": f"shard-{k}/render-{seed}.jpg"})
        table = tmp_path / f"shard-{k}.csv"
        pd.DataFrame(rows).to_csv(table, index=False)
        tables.append(table)
    refs = tmp_path / "refs.json"
    faces.save_references(references, settings, refs)
    meta = tmp_path / "ckpt.json"
    meta.write_text(json.dumps({"steps": 10}))

    files = []
    for k, table in enumerate(tables):
        out = tmp_path / "faces" / f"shard-{k}.json"
        faces.run_embed_renders(
            table, renders, settings.embedding, out, cache_dir=tmp_path / "cache", workers=1
        )
        files.append(out)

    # Only Dlib has weights offline: "Dlib2" stands for a second model. Its faces and
    # references files are Dlib's relabelled; deepface's model check and threshold lookup are
    # mocked for that name alone.
    def relabel(path: Path) -> Path:
        payload = json.loads(path.read_text())
        payload["metadata"]["model"] = "Dlib2"
        copy = path.with_name("Dlib2-" + path.name)
        copy.write_text(json.dumps(payload))
        return copy

    real_threshold, real_check = faces.deepface_threshold, faces._check

    def threshold(s):
        return 0.5 if s.model == "Dlib2" else real_threshold(s)

    def check(s):
        return None if s.model == "Dlib2" else real_check(s)

    out = tmp_path / "scores.csv"
    kwargs = {
        "renders_tables": tables,
        "checkpoint_meta": meta,
        "settings": settings,
        "multiple_faces": "closest",
        "arm": "a",
        "epoch": 2,
        "out": out,
        "prompt_set": "bleed",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(faces, "deepface_threshold", threshold)
        mp.setattr(faces, "_check", check)
        # Embeddings record their model: a faces file of another model is refused.
        with pytest.raises(SpecError, match="model"):
            faces.run_score_checkpoint(
                faces_files={"Dlib": files, "Dlib2": files},
                references={"Dlib": refs, "Dlib2": relabel(refs)},
                **kwargs,
            )
        frame = faces.run_score_checkpoint(
            faces_files={"Dlib": files, "Dlib2": [relabel(f) for f in files]},
            references={"Dlib": refs, "Dlib2": relabel(refs)},
            **kwargs,
        )
    written = pd.read_csv(out)
    assert list(written.columns[:11]) == [
        "arm", "epoch", "steps", "seed", "image", "model", "prompt_set", "face_found", "n_faces",
        "mean_distance", f"d:{REFERENCES[0].name}",
    ]  # fmt: skip
    assert written["image"].tolist()[:4] == [
        "shard-0/render-0.jpg",
        "shard-0/render-1.jpg",
        "shard-1/render-2.jpg",
        "shard-1/render-3.jpg",
    ]
    # One row per render and model, models in the order given, seeds in order within each.
    assert written["model"].tolist() == ["Dlib"] * 4 + ["Dlib2"] * 4
    assert set(written["prompt_set"]) == {"bleed"}
    assert written["seed"].tolist() == [0, 1, 2, 3] * 2
    assert written["image"].tolist()[:4] == written["image"].tolist()[4:]
    direct = faces.score_images(
        [renders / name for name in written["image"][:4]], references, settings, progress=False
    )
    for model in ("Dlib", "Dlib2"):
        got = frame.loc[frame["model"] == model, "mean_distance"].to_numpy()
        assert np.array_equal(got, direct["mean_distance"].to_numpy(), equal_nan=True)
    sidecar = json.loads(faces.meta_path(out).read_text())
    assert sidecar["deepface_version"] == "0.0.103"
    assert sidecar["models"]["Dlib"]["deepface_threshold"] == 0.07
    assert sidecar["multiple_faces"] == "closest"
    assert sidecar["models"]["Dlib2"]["deepface_threshold"] == 0.5
    assert sidecar["models"]["Dlib"]["face_rate"] == 1.0
