"""dreamgrid.scoring.distances: distances equal DeepFace.verify's, no face is never a score,
several faces, metadata (real Dlib on the demo photos, offline)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamgrid.errors import SpecError
from dreamgrid.scoring import deepface_adapter, distances
from dreamgrid.scoring.distances import score_images

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TRAIN = sorted((DEMO / "train").glob("*.jpg"))
REFERENCES = sorted((DEMO / "references").glob("*.jpg"))
OTHER = sorted((DEMO / "ground_truth").glob("*.jpg"))


@pytest.fixture(scope="module")
def scores(settings, references, extra):
    images = [*TRAIN, *OTHER, extra / "gray.png", extra / "noise.png", extra / "two_faces.png"]
    return score_images(images, references, settings, progress=False).set_index("image")


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


def test_closest_matches_verify_and_largest_scores_the_big_face(settings, references, two_faces):
    from deepface import DeepFace

    closest = score_images([two_faces], references, settings, progress=False)
    largest = score_images(
        [two_faces], references, settings, progress=False, multiple_faces="largest"
    )
    assert closest.loc[0, "n_faces"] == largest.loc[0, "n_faces"] == 2
    ref = REFERENCES[1]
    expected = DeepFace.verify(str(two_faces), str(ref), model_name="Dlib", detector_backend="dlib")
    assert closest.loc[0, f"d:{ref.name}"] == pytest.approx(expected["distance"], abs=1e-6)
    # The large face is the other person: farther than the closest (the subject's) face.
    assert largest.loc[0, "mean_distance"] > closest.loc[0, "mean_distance"] + 0.1
    with pytest.raises(SpecError, match="multiple_faces"):
        score_images([two_faces], references, settings, progress=False, multiple_faces="x")


def test_metadata(settings):
    meta = distances.metadata(settings, [0.7, 0.6])
    assert meta == {
        "deepface_version": "0.0.103",
        "model": "Dlib",
        "detector": "dlib",
        "metric": "cosine",
        "align": True,
        "deepface_backend": "onnx",  # chosen before deepface starts; every scoring env has it
        "device": "cpu",  # no GPU is visible to scoring (test_scoring_deepface_adapter.py)
        "deepface_threshold": 0.07,
        "thresholds": [0.7, 0.6],
    }
    assert deepface_adapter.deepface_threshold(settings) == 0.07


def test_compare_metadata_warns_on_other_versions(caplog):
    base = {"deepface_version": "0.0.103", "model": "Dlib", "detector": "dlib", "metric": "cosine"}
    assert distances.compare_metadata({"a": base, "b": dict(base)}) == []
    messages = distances.compare_metadata({"a": base, "b": {**base, "deepface_version": "0.0.93"}})
    assert len(messages) == 1 and "deepface_version" in messages[0]
    assert "not comparable" in caplog.text
