"""dreamgrid.faces on the real demo photos with the real Dlib weights (offline, ~15 s)."""

from __future__ import annotations

import filecmp
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid import faces
from dreamgrid.errors import NoFaceError, SpecError

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TRAIN = sorted((DEMO / "train").glob("*.jpg"))
REFERENCES = sorted((DEMO / "references").glob("*.jpg"))
OTHER = sorted((DEMO / "ground_truth").glob("*.jpg"))


@pytest.fixture(scope="module")
def extra(tmp_path_factory):
    """Images that are not in resources/demo: no face (gray, noise) and two faces."""
    folder = tmp_path_factory.mktemp("extra")
    Image.new("RGB", (256, 256), (128, 128, 128)).save(folder / "gray.png")
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    left, right = Image.open(REFERENCES[0]), Image.open(OTHER[-1])
    pair = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    pair.save(folder / "two_faces.png")
    return folder


@pytest.fixture(scope="module")
def references(settings):
    return faces.embed_references(REFERENCES, settings)


@pytest.fixture(scope="module")
def scores(settings, references, extra):
    images = [*TRAIN, *OTHER, extra / "gray.png", extra / "noise.png", extra / "two_faces.png"]
    return faces.score_images(images, references, settings, progress=False).set_index("image")


def test_setup_copies_missing_weights_and_keeps_existing(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "unused"))
    weights = tmp_path / "home" / ".deepface" / "weights"
    weights.mkdir(parents=True)
    kept = weights / "shape_predictor_5_face_landmarks.dat"
    kept.write_bytes(b"user's own file")

    assert faces.setup_deepface(tmp_path / "home") == tmp_path / "home"
    assert kept.read_bytes() == b"user's own file"
    copied = weights / "dlib_face_recognition_resnet_model_v1.dat"
    assert filecmp.cmp(copied, faces._bundled_weights_dir() / copied.name, shallow=False)
    assert faces.os.environ["DEEPFACE_HOME"] == str(tmp_path / "home")

    mtime = copied.stat().st_mtime_ns
    faces.setup_deepface(tmp_path / "home")
    assert copied.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in weights.iterdir()) == sorted(faces.DLIB_WEIGHTS)


def test_setup_uses_existing_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    assert faces.setup_deepface() == tmp_path
    assert all((tmp_path / ".deepface" / "weights" / n).is_file() for n in faces.DLIB_WEIGHTS)


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        (TRAIN[0], REFERENCES[1]),  # same person
        (TRAIN[3], REFERENCES[2]),  # same person, partial face
        (OTHER[0], REFERENCES[0]),  # another person
        (None, REFERENCES[0]),  # two faces: verify keeps the closest pair
    ],
    ids=["same", "same-partial", "other", "two-faces"],
)
def test_distances_equal_deepface_verify(scores, settings, extra, image, reference):
    from deepface import DeepFace

    image = image or extra / "two_faces.png"
    expected = DeepFace.verify(
        str(image), str(reference), model_name="Dlib", detector_backend="dlib"
    )["distance"]
    got = scores.loc[image.name, "d:" + reference.name]
    assert got == pytest.approx(expected, abs=1e-6)
    assert got == expected  # in fact bit-identical


def test_no_face_is_recorded_not_scored(scores, extra):
    from deepface import DeepFace

    distances = scores.filter(like="d:")
    for name in ("gray.png", "noise.png"):
        assert not scores.loc[name, "face_found"]
        assert scores.loc[name, "n_faces"] == 0
        assert math.isnan(scores.loc[name, "mean_distance"])
        assert distances.loc[name].isna().all()
    from deepface.modules.exceptions import FaceNotDetected

    with pytest.raises(ValueError) as raised:
        DeepFace.verify(
            str(extra / "gray.png"), str(REFERENCES[0]), model_name="Dlib", detector_backend="dlib"
        )
    assert isinstance(raised.value.__cause__, FaceNotDetected)


def test_table_shape(scores, references):
    assert list(scores.columns) == [
        "face_found",
        "n_faces",
        "mean_distance",
        *("d:" + name for name in references),
    ]
    assert scores.loc["two_faces.png", "n_faces"] == 2
    found = scores[scores["face_found"]]
    assert (found.filter(like="d:") > 0).all().all()
    assert np.allclose(found["mean_distance"], found.filter(like="d:").mean(axis=1))


def test_subject_scores_closer_than_another_person(scores):
    subject = scores.loc[[p.name for p in TRAIN], "mean_distance"]
    other = scores.loc[[p.name for p in OTHER], "mean_distance"]
    assert subject.notna().all()
    assert subject.max() < other.min()


def test_embed_faces_matches_reference_embedding(settings, references):
    [embedding] = faces.embed_faces(REFERENCES[0], settings)
    assert embedding.shape == (128,)
    assert np.array_equal(embedding, references[REFERENCES[0].name])


def test_reference_without_face_raises_naming_file(settings, extra):
    with pytest.raises(NoFaceError, match="gray.png"):
        faces.embed_references([REFERENCES[0], extra / "gray.png"], settings)


def test_reference_with_two_faces_raises(settings, extra):
    with pytest.raises(SpecError, match="two_faces.png.*alone"):
        faces.embed_references([extra / "two_faces.png"], settings)


def test_duplicate_reference_names_raise(settings, tmp_path):
    (tmp_path / "a").mkdir()
    shutil.copy(REFERENCES[0], tmp_path / "a" / REFERENCES[1].name)
    with pytest.raises(SpecError, match="file name"):
        faces.embed_references([REFERENCES[1], tmp_path / "a" / REFERENCES[1].name], settings)


@pytest.mark.parametrize(
    "change", [{"model": "NoSuchNet"}, {"metric": "manhattan"}, {"detector": "skip"}]
)
def test_unknown_settings_raise_spec_error(settings, change):
    bad = faces.FaceSettings(**{**faces.asdict(settings), **change})
    with pytest.raises(SpecError, match=next(iter(change.values()))):
        faces.embed_faces(REFERENCES[0], bad)


def test_metadata(settings):
    meta = faces.metadata(settings, [0.7, 0.6])
    assert meta == {
        "deepface_version": "0.0.103",
        "model": "Dlib",
        "detector": "dlib",
        "metric": "cosine",
        "align": True,
        "deepface_backend": "onnx",  # chosen before deepface starts; every scoring env has it
        "device": "cpu",  # no GPU is visible to scoring (test_faces_cpu.py)
        "deepface_threshold": 0.07,
        "thresholds": [0.7, 0.6],
    }
    assert faces.deepface_threshold(settings) == 0.07


def test_save_load_references_round_trip(settings, references, tmp_path):
    out = tmp_path / "refs" / "references.json"
    faces.save_references(references, settings, out)
    loaded, meta = faces.load_references(out)
    assert list(loaded) == list(references)
    for name, embedding in references.items():
        assert loaded[name].dtype == np.float64
        assert np.array_equal(loaded[name], embedding)
    # Embeddings do not depend on the metric: the file records what they do depend on.
    assert meta == faces.embedding_metadata(settings)
    assert set(meta) == {
        "deepface_version",
        "model",
        "detector",
        "align",
        "deepface_backend",
        "device",
    }
    faces.check_references_match(meta, settings)
    faces.check_references_match(meta, faces.FaceSettings("Dlib", "dlib", "euclidean", True))
    with pytest.raises(SpecError, match="model"):
        faces.check_references_match(meta, faces.FaceSettings("ArcFace", "dlib", "cosine", True))
    assert [p.name for p in out.parent.iterdir()] == ["references.json"]  # no temp left


def test_load_references_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(SpecError, match="x.json"):
        faces.load_references(tmp_path / "x.json")


def test_run_score_cli_writes_csv_and_meta(home, extra, tmp_path):
    refs, images = tmp_path / "refs", tmp_path / "images"
    refs.mkdir()
    images.mkdir()
    for path in REFERENCES[:2]:
        shutil.copy(path, refs)
    shutil.copy(TRAIN[1], images)
    shutil.copy(extra / "gray.png", images)
    out = tmp_path / "scores" / "scores.csv"

    frame = faces.run_score_cli(refs, images, "Dlib", "dlib", "cosine", out)

    lines = out.read_text().splitlines()
    ref_columns = [f"d:{p.name}" for p in REFERENCES[:2]]
    assert lines[0].split(",") == ["image", "face_found", "n_faces", "mean_distance", *ref_columns]
    assert lines[1] == "gray.png,false,0,,,"
    assert lines[2].startswith(f"{TRAIN[1].name},true,1,0.0")
    table = pd.read_csv(out)
    assert table["face_found"].tolist() == [False, True]
    assert np.allclose(table.filter(like="d:"), frame.filter(like="d:"), equal_nan=True)
    meta = json.loads((tmp_path / "scores" / "scores.meta.json").read_text())
    assert meta["model"] == "Dlib" and meta["deepface_version"] == "0.0.103"
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv", "scores.meta.json"]


def test_run_score_cli_missing_folder(home, tmp_path):
    with pytest.raises(SpecError, match="not a directory"):
        faces.run_score_cli(
            tmp_path / "nope", DEMO / "train", "Dlib", "dlib", "cosine", tmp_path / "s.csv"
        )
    assert not (tmp_path / "s.csv").exists()
