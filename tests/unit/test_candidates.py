"""Look-alike ranking on real photos standing in for base-model renders."""

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid import candidates, cli
from dreamgrid.errors import SpecError
from dreamgrid.io import list_images
from dreamgrid.scoring.distances import score_images
from dreamgrid.scoring.embedding import embed_reference_photos
from dreamgrid.scoring.settings import FaceSettings

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def contract(threshold: str) -> list[str]:
    return ["candidate", "renders", "face_rate", "average", f"pct_below_{threshold}",
            "consistency", "rank"]  # fmt: skip


# rank-candidates' default threshold is the stricter one fitted to its model (Dlib: 0.06).
CONTRACT = contract("0.06")


@pytest.fixture(scope="module")
def candidate_dir(tmp_path_factory):
    """Stand-ins for renders of four names: the subject, another man, a mix, and noise."""
    root = tmp_path_factory.mktemp("candidates")
    folders = {
        "subject": [DEMO / "train" / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")],
        "other man": [DEMO / "ground_truth" / n for n in ("biden.jpg", "biden_closeup.jpg")],
        "unknown name": [DEMO / "train" / "obama2.jpg", DEMO / "ground_truth" / "biden.jpg"],
    }
    for name, files in folders.items():
        (root / name).mkdir()
        for f in files:
            shutil.copy(f, root / name / f.name)
    (root / "noise").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "noise" / f"render-{i}.png")
    return root


def test_consistency_is_mean_pairwise_distance_and_does_not_grow_with_faces(home):
    a, b, c = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 0.0])
    expected = (math.sqrt(2) + 1 + 1) / 3
    assert candidates.consistency([a, b, c], "euclidean") == pytest.approx(expected)
    assert math.isnan(candidates.consistency([a], "cosine"))
    # the issue: distance to the centroid grew with the number of faces (0.14 with 2 faces,
    # 0.29 with 50, same distribution); the pairwise mean does not
    rng = np.random.default_rng(0)
    few = [candidates.consistency(list(rng.normal(size=(2, 16))), "cosine") for _ in range(300)]
    many = candidates.consistency(list(rng.normal(size=(50, 16))), "cosine")
    assert np.mean(few) == pytest.approx(many, rel=0.05)


def test_a_name_with_one_face_cannot_outrank_one_with_twenty():
    rows = [
        {"candidate": "steady", "renders": 20, "face_rate": 1.0, "average": 0.55,
         "pct_below_0.6": 70.0, "consistency": 0.2, "faces": 20},
        {"candidate": "lucky", "renders": 20, "face_rate": 0.05, "average": 0.40,
         "pct_below_0.6": 100.0, "consistency": math.nan, "faces": 1},
    ]  # fmt: skip
    table = candidates.rank(rows, 0.6)
    assert list(table["candidate"]) == ["steady", "lucky"]
    assert list(table.columns[: len(CONTRACT)]) == contract("0.6")


def test_the_subject_ranks_first_and_noise_last(candidate_dir, tmp_path, home):
    out = tmp_path / "ranking.csv"
    argv = ["rank-candidates", "--references", str(DEMO / "references")]
    argv += ["--candidates", str(candidate_dir), "--out", str(out)]
    assert cli.main(argv) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == [*CONTRACT, "faces", "average_ci_low", "average_ci_high"]
    assert list(table["candidate"]) == ["subject", "unknown name", "other man", "noise"]
    assert list(table["rank"]) == [1, 2, 3, 4]
    by_name = table.set_index("candidate")
    assert by_name.loc["noise", "face_rate"] == 0 and math.isnan(by_name.loc["noise", "average"])
    assert by_name.loc["subject", "face_rate"] == 1 and by_name.loc["subject", "renders"] == 3
    # Two different men rendered for one name scatter more than photos of one man.
    assert by_name.loc["unknown name", "consistency"] > 2 * by_name.loc["subject", "consistency"]
    # Same numbers as scoring the folder like renders (distances equal DeepFace.verify's).
    settings = FaceSettings(model="Dlib", detector="dlib", metric="cosine", align=True)
    refs = embed_reference_photos(list_images(DEMO / "references"), settings)
    direct = score_images(list_images(candidate_dir / "subject"), refs, settings, False)
    assert by_name.loc["subject", "average"] == pytest.approx(direct["mean_distance"].mean())
    below = 100 * (direct["mean_distance"] < 0.06).mean()
    assert by_name.loc["subject", "pct_below_0.06"] == pytest.approx(below)


def test_ties_keep_the_list_order_and_faceless_come_last():
    rows = [
        {"candidate": "b", "renders": 2, "face_rate": 0.0, "average": math.nan,
         "pct_below_0.6": math.nan, "consistency": math.nan},
        {"candidate": "a", "renders": 2, "face_rate": 1.0, "average": 0.5,
         "pct_below_0.6": 100.0, "consistency": 0.1},
        {"candidate": "c", "renders": 2, "face_rate": 0.5, "average": 0.5,
         "pct_below_0.6": 100.0, "consistency": 0.1},
    ]  # fmt: skip
    table = candidates.rank(rows, 0.6)
    assert list(table["candidate"]) == ["a", "c", "b"]  # face rate breaks the tie


def test_bad_candidate_folders_name_the_path(tmp_path):
    with pytest.raises(SpecError, match="not a folder"):
        candidates.candidate_dirs(tmp_path / "missing")
    with pytest.raises(SpecError, match="no sub-folders"):
        candidates.candidate_dirs(tmp_path)
    (tmp_path / "empty name").mkdir()
    with pytest.raises(SpecError, match="empty name"):
        candidates.candidate_dirs(tmp_path)
