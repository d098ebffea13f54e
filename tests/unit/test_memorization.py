"""Memorization signal on real photos: a training photo given back as a "render" is flagged, a
photo of another person is not, and every distance equals deepface's own computed here."""

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deepface.modules.verification import find_distance

from dreamgrid import memorization, stats
from dreamgrid.scoring import codec, deepface_adapter, steps

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TRAIN = DEMO / "train"


@pytest.fixture(scope="module")
def references(home, settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("refs") / "refs.json"
    steps.embed_references(DEMO / "references", settings, out)
    return out


def _shard(tmp_path, images, settings, name):
    found = [deepface_adapter.detect_and_embed(p, settings) for p in images]
    out = tmp_path / f"{name}.json"
    codec.save_faces([p.name for p in images], ["x"] * len(images), found, settings.embedding, out)
    return out, found


def test_copies_of_training_photos_are_flagged_and_others_are_not(tmp_path, references, settings):
    copies = [TRAIN / "obama.jpg", TRAIN / "obama2.jpg"]
    others = sorted((DEMO / "ground_truth").glob("*.jpg"))
    copied, _ = _shard(tmp_path, copies, settings, "copies")
    other, _ = _shard(tmp_path, others, settings, "others")
    out = {k: tmp_path / f"{k}.csv" for k in ("renders", "summary", "pairs")}
    summary = memorization.run_memorization(
        TRAIN,
        references,
        [[copied], [other]],
        [
            {"arm": "copy", "epoch": 1, "prompt_set": "main"},
            {"arm": "other", "epoch": 1, "prompt_set": "main"},
        ],
        "cosine",
        "closest",
        out["renders"],
        out["summary"],
        out["pairs"],
    ).set_index("arm")

    # the yardstick from deepface directly: each photo's subject face, every pair
    refs, _ = codec.load_references(references)
    embedded = {}
    for photo in sorted(TRAIN.glob("*.jpg")):
        found = deepface_adapter.detect_and_embed(photo, settings)
        if found:
            embedded[photo.name] = min(
                found,
                key=lambda f: np.mean(
                    [
                        round(float(find_distance(f.embedding, r, "cosine")), 6)
                        for r in refs.values()
                    ]
                ),
            ).embedding
    pair = {
        (a, b): round(float(find_distance(embedded[a], embedded[b], "cosine")), 6)
        for a, b in itertools.combinations(embedded, 2)
    }
    closest = min(pair.values())
    assert summary.loc["copy", "closest_pair"] == pytest.approx(closest, abs=1e-9)
    a, b = min(pair, key=pair.get)
    assert summary.loc["copy", "closest_pair_photos"] == f"{a} + {b}"
    assert len(pd.read_csv(out["pairs"])) == len(pair)

    renders = pd.read_csv(out["renders"], sep="\t").set_index("image")
    # a training photo given back is at distance 0 from itself, closer than any real pair
    for photo in copies:
        assert renders.loc[photo.name, "nearest_training"] == pytest.approx(0.0, abs=1e-6)
        assert renders.loc[photo.name, "nearest_photo"] == photo.name
        assert bool(renders.loc[photo.name, "closer_than_pairs"])
    assert summary.loc["copy", "pct_closer_than_pairs"] == 100.0
    # another person is farther from every training photo than the closest real pair
    for photo in others:
        got = renders.loc[photo.name, "nearest_training"]
        found = deepface_adapter.detect_and_embed(photo, settings)
        expected = min(
            round(float(find_distance(f.embedding, e, "cosine")), 6)
            for f in found
            for e in embedded.values()
        )
        assert got == pytest.approx(expected, abs=1e-9)
        assert got > closest
    assert summary.loc["other", "pct_closer_than_pairs"] == 0.0
    assert summary.loc["other", "pct_closer_ci_high"] > 0  # Wilson, not a collapsed [0, 0]


def test_yardsticks_from_pairs():
    pairs = pd.DataFrame(
        {"a": ["x", "x", "y"], "b": ["y", "z", "z"], "distance": [0.30, 0.50, 0.40]}
    )
    closest, median_nearest = memorization.yardsticks(pairs)
    assert closest == 0.30
    # nearest other photo: x 0.30, y 0.30, z 0.40 -> median 0.30
    assert median_nearest == 0.30
    assert all(math.isnan(v) for v in memorization.yardsticks(pairs.iloc[:0]))


def test_a_render_without_a_face_is_not_flagged():
    rows = memorization.render_rows(
        {"arm": "a", "epoch": 1, "prompt_set": "main"},
        {"x.png": []},
        {"t.jpg": np.ones(4)},
        0.2,
        "cosine",
        "closest",
    )
    assert rows[0]["face_found"] is False and rows[0]["closer_than_pairs"] is False
    summary = memorization.summarize(pd.DataFrame(rows), 0.2, 0.3)
    assert summary.loc[0, "faces"] == 0 and math.isnan(summary.loc[0, "pct_closer_than_pairs"])


def test_summary_md_section_reads_the_table():
    from dreamgrid import verdict

    table = memorization.summarize(
        pd.DataFrame(
            {
                "arm": ["a"] * 4 + ["b"] * 4,
                "epoch": [1] * 8,
                "prompt_set": ["main"] * 8,
                "image": list("abcdefgh"),
                "face_found": [True] * 8,
                "nearest_training": [0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                "nearest_photo": ["t.jpg"] * 8,
                "closer_than_pairs": [True, True, False, False] + [False] * 4,
            }
        ),
        0.2,
        0.3,
    )
    text = verdict.memorization_markdown(table, 0.95)
    assert "2 of 8 renders" in text and "near-duplicates" not in text
    # a pair of crops of one photo makes the yardstick strict, and the summary says so
    crops = table.assign(closest_pair=0.01, closest_pair_photos="x.jpg + x_crop.jpg")
    text_crops = verdict.memorization_markdown(crops, 0.95)
    assert "(x.jpg + x_crop.jpg)" in text_crops and "near-duplicates" in text_crops
    # the most often closer checkpoint first, with the table's own interval
    first = text.index("- a epoch 1: 50.0% of 4")
    assert first < text.index("- b epoch 1: 0.0% of 4")
    low, high = (100 * v for v in stats.wilson(2, 4, 0.95))
    assert f"[{low:.1f}, {high:.1f}]" in text
    assert "not measured" in verdict.memorization_markdown(
        table.assign(closest_pair=math.nan), 0.95
    )
