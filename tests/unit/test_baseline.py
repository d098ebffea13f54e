"""The real-photos baseline on real photos: references leave-one-out, training photos without
their own crops."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid import baseline as baseline_mod
from dreamgrid import photos, verdict
from dreamgrid.io import list_images
from dreamgrid.scoring import codec, deepface_adapter
from dreamgrid.scoring.distances import score_images
from dreamgrid.scoring.embedding import embed_reference_photos

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TRAIN, REFERENCES, OTHERS = DEMO / "train", DEMO / "references", DEMO / "ground_truth"


def test_crops_are_found_from_pixels_not_likeness():
    cut = photos.cut_from(list_images(REFERENCES), list_images(TRAIN) + list_images(OTHERS))
    assert cut == {
        "obama.jpg": ["obama_closeup.jpg"],
        "obama2.jpg": ["obama2_closeup.jpg"],
        "obama3.jpg": ["obama3_closeup.jpg"],
        # Both partial faces are crops of obama.jpg, as is obama_closeup.jpg.
        "obama_partial_face.jpg": ["obama_closeup.jpg"],
        "obama_partial_face2.jpg": ["obama_closeup.jpg"],
        # Another person's photo shares no pixels with the subject's close-ups...
        "biden.jpg": [],
        "biden_closeup.jpg": [],
    }
    # ...but its own close-up is found, whoever is in it.
    assert photos.cut_from([OTHERS / "biden_closeup.jpg"], [OTHERS / "biden.jpg"]) == {
        "biden.jpg": ["biden_closeup.jpg"]
    }


def test_a_resized_and_recompressed_crop_is_still_found(tmp_path):
    with Image.open(TRAIN / "obama2.jpg") as image:
        crop = image.crop((40, 90, 260, 310)).resize((150, 150), Image.LANCZOS)
        crop.save(tmp_path / "crop.jpg", quality=70)
    found = photos.cut_from([tmp_path / "crop.jpg"], [TRAIN / "obama2.jpg", TRAIN / "obama3.jpg"])
    assert found == {"obama2.jpg": ["crop.jpg"], "obama3.jpg": []}


def test_training_photos_are_scored_without_their_own_crops(tmp_path, settings, home):
    embeddings = embed_reference_photos(list_images(REFERENCES), settings)
    references = tmp_path / "refs.json"
    codec.save_references(embeddings, settings, references)
    out = tmp_path / "baseline.csv"
    baseline = baseline_mod.reference_baseline(
        references, "cosine", out, training_photos=TRAIN, reference_photos=REFERENCES
    )
    assert list(baseline.columns) == list(baseline_mod.BASELINE_COLUMNS)
    assert pd.read_csv(out).shape == baseline.shape
    refs = baseline[baseline["source"] == "reference"]
    assert sorted(refs["photo"]) == sorted(embeddings) and (refs["n_compared"] == 2).all()

    training = baseline[baseline["source"] == "training"].set_index("photo")
    assert sorted(training.index) == sorted(p.name for p in list_images(TRAIN))
    # Independently: every training photo against every reference, exactly as renders are
    # scored (DeepFace.verify's distances), then the photo's own crop left out by hand.
    full = score_images(list_images(TRAIN), embeddings, settings, progress=False)
    full = full.set_index("image")
    own = {"obama.jpg": "obama_closeup.jpg", "obama2.jpg": "obama2_closeup.jpg"}
    own |= {"obama3.jpg": "obama3_closeup.jpg", "obama_partial_face.jpg": "obama_closeup.jpg"}
    own |= {"obama_partial_face2.jpg": "obama_closeup.jpg"}
    for photo, crop in own.items():
        row = training.loc[photo]
        assert row["excluded"] == crop
        if not full.loc[photo, "face_found"]:
            assert not row["face_found"] and np.isnan(row["mean_distance"])
            continue
        others = [full.loc[photo, f"d:{r}"] for r in embeddings if r != crop]
        assert row["mean_distance"] == pytest.approx(np.mean(others), abs=1e-12)
        assert row["n_compared"] == 2
        # Leaving the crop out matters: the self-match is the closest reference.
        assert full.loc[photo, f"d:{crop}"] < row["mean_distance"]
    text = verdict._baseline_markdown(baseline, baseline_mod.baseline_value(baseline))
    assert "obama.jpg ↔ obama_closeup.jpg" in text and "Pooled:" in text


def test_reference_baseline_matches_deepface_find_distance():
    deepface_adapter.setup_deepface()
    from deepface.modules.verification import find_distance

    rng = np.random.default_rng(0)
    embeddings = {name: rng.normal(size=128) for name in ("a.jpg", "b.jpg", "c.jpg")}
    for metric in ("cosine", "euclidean", "euclidean_l2", "angular"):
        table = baseline_mod.leave_one_out(embeddings, metric)
        assert list(table["reference"]) == ["a.jpg", "b.jpg", "c.jpg"]
        for name, value in table[["reference", "mean_distance"]].to_numpy():
            others = [o for o in embeddings if o != name]
            expected = np.mean(
                [float(find_distance(embeddings[name], embeddings[o], metric)) for o in others]
            )
            assert value == pytest.approx(expected, abs=1e-12)
    assert baseline_mod.leave_one_out({"a": np.ones(3)}, "cosine").empty
