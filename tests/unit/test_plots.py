"""Histograms: a PNG of the documented size, with faces and without any."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamgrid.errors import SpecError
from dreamgrid.plots import DPI, FIGSIZE, histogram, histograms

EXPECTED_SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def checkpoint(arm: str, epoch: int, n: int, faces: bool, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    distance = rng.normal(0.62, 0.05, n) if faces else np.full(n, np.nan)
    return pd.DataFrame(
        {
            "arm": arm,
            "epoch": epoch,
            "steps": 625 * epoch,
            "seed": range(n),
            "face_found": faces,
            "mean_distance": distance,
        }
    )


def test_histogram_with_faces(tmp_path):
    scores = checkpoint("a", 1, 200, faces=True)
    scores.loc[:9, "face_found"] = False
    scores.loc[:9, "mean_distance"] = np.nan
    out = tmp_path / "plots" / "a.png"
    assert histogram(scores, [0.7, 0.6], out, "a, epoch 1") == out
    assert out.stat().st_size > 5_000
    assert png_size(out) == EXPECTED_SIZE
    assert [p.name for p in out.parent.iterdir()] == ["a.png"], "temp files left"


def test_histogram_without_faces(tmp_path):
    out = tmp_path / "none.png"
    histogram(checkpoint("a", 1, 8, faces=False), [0.6, 0.7], out, "demo")
    assert out.stat().st_size > 5_000
    assert png_size(out) == EXPECTED_SIZE


def test_histogram_no_face_text(tmp_path, monkeypatch):
    """The faceless figure says how many renders had no face, inside the axes."""
    from matplotlib.axes import Axes

    texts = []
    original = Axes.text

    def spy(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "text", spy)
    histogram(checkpoint("a", 1, 8, faces=False), [0.6], tmp_path / "x.png", "demo")
    assert "no face found in 8 renders" in texts


def test_histogram_single_face_and_string_flags(tmp_path):
    scores = checkpoint("a", 1, 3, faces=False)
    scores["face_found"] = ["false", "true", "false"]
    scores.loc[1, "mean_distance"] = 0.55
    out = tmp_path / "one.png"
    histogram(scores, [0.6, 0.7], out, "one face")
    assert png_size(out) == EXPECTED_SIZE


def test_histogram_rejects_several_checkpoints(tmp_path):
    scores = pd.concat([checkpoint("a", 1, 5, True), checkpoint("a", 2, 5, True)])
    with pytest.raises(SpecError, match="epoch"):
        histogram(scores, [0.6], tmp_path / "x.png", "x")


def test_histograms_one_file_per_checkpoint(tmp_path):
    scores = pd.concat(
        [
            checkpoint("celebrity-noreg-captions", 1, 20, True, seed=1),
            checkpoint("celebrity-noreg-captions", 2, 20, True, seed=2),
            checkpoint("ohwx-genreg-none", 1, 6, False),
        ],
        ignore_index=True,
    )
    out_dir = tmp_path / "plots"
    paths = histograms(scores, [0.6, 0.7], out_dir)
    assert paths == [
        out_dir / "celebrity-noreg-captions" / "epoch-1.png",
        out_dir / "celebrity-noreg-captions" / "epoch-2.png",
        out_dir / "ohwx-genreg-none" / "epoch-1.png",
    ]
    assert sorted(p.relative_to(out_dir) for p in out_dir.rglob("*.png")) == [
        p.relative_to(out_dir) for p in paths
    ]
    for path in paths:
        assert png_size(path) == EXPECTED_SIZE


def test_curves_arm_histograms_and_contact_sheet(tmp_path):
    from PIL import Image

    from dreamgrid.plots import arm_histograms, contact_sheet, curves
    from dreamgrid.summary import summarize

    scores = pd.concat(
        [checkpoint(arm, e, 40, faces=True, seed=e) for arm in ("a", "b") for e in (1, 2, 3)],
        ignore_index=True,
    )
    summary = summarize(scores)
    baseline = pd.DataFrame({"reference": ["x", "y"], "mean_distance": [0.4, 0.5]})
    for x in ("epoch", "steps"):
        out = curves(summary, tmp_path / f"{x}.png", x=x, baseline=baseline)
        assert png_size(out)[0] > 600
    out = arm_histograms(scores[scores["arm"] == "a"], [0.6, 0.7], tmp_path / "a.png", "a", 0.45)
    width, height = png_size(out)
    assert width > 2 * EXPECTED_SIZE[0] * 0.6  # three panels side by side
    renders = tmp_path / "renders" / "shard-0"
    renders.mkdir(parents=True)
    one = scores[(scores["arm"] == "a") & (scores["epoch"] == 1)].copy()
    one["image"] = [f"render-{s}.png" for s in one["seed"]]
    one.loc[one.index[:3], ["face_found", "mean_distance"]] = [False, np.nan]
    for name in one["image"]:
        Image.new("RGB", (32, 32), "gray").save(renders / name)
    out = contact_sheet(one, [renders.parent], tmp_path / "sheet.png", "a, epoch 1", per_group=4)
    # The score stage names renders relative to renders/ ("shard-0/render-0.png") and the
    # rule passes the shard folders.
    one["image"] = "shard-0/" + one["image"]
    contact_sheet(one, [renders], tmp_path / "sheet2.png", "a, epoch 1", per_group=4)
    width, height = png_size(out)
    assert height > 4 * 150  # best, median, worst and no-face rows
    faceless = checkpoint("a", 1, 8, faces=False)
    empty = summarize(faceless)
    assert png_size(curves(empty, tmp_path / "empty.png", x="steps"))[0] > 600
