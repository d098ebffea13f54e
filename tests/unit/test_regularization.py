"""Regularization stage: generated class images (tiny SD, CPU) and ground-truth photos."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid.config import validate
from dreamgrid.errors import SpecError
from dreamgrid.io import resize_center_crop
from dreamgrid.regularization import generate_class_images, prepare_ground_truth
from dreamgrid.tiny import build_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "sd")


def generate(model: Path, out_dir: Path, batch_size: int, count: int = 3):
    return generate_class_images(
        model=model,
        prompt="photo of a woman",
        negative="cartoon",
        count=count,
        seed=7,
        steps=3,
        cfg=7.5,
        size=64,
        batch_size=batch_size,
        out_dir=out_dir,
    )


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generate_class_images(tiny_sd, tmp_path):
    out = tmp_path / "reg" / "woman"
    index = generate(tiny_sd, out, batch_size=2)
    assert list(index.columns) == ["image", "seed", "prompt"]
    assert list(index.image) == ["class-00000.png", "class-00001.png", "class-00002.png"]
    assert list(index.seed) == [7, 8, 9]
    assert set(index.prompt) == {"photo of a woman"}
    pd.testing.assert_frame_equal(pd.read_csv(out / "index.csv"), index)
    assert sorted(p.name for p in out.iterdir()) == [*index.image, "index.csv"]
    # No temporary folder is left beside the output.
    assert [p.name for p in out.parent.iterdir()] == ["woman"]
    image = Image.open(out / "class-00001.png")
    assert image.size == (64, 64)
    assert image.text["seed"] == "8"
    assert image.text["scheduler"] == "euler"


def test_class_images_do_not_depend_on_batch_size(tiny_sd, tmp_path):
    one = generate(tiny_sd, tmp_path / "one", batch_size=1)
    three = generate(tiny_sd, tmp_path / "three", batch_size=3)
    pd.testing.assert_frame_equal(one, three)
    for name in one.image:
        # Same noise per seed; CPU kernels may round a pixel one level apart across batch shapes.
        diff = np.abs(pixels(tmp_path / "one" / name) - pixels(tmp_path / "three" / name))
        assert diff.max() <= 2, name
    a, b = (pixels(tmp_path / "one" / n) for n in one.image[:2])
    assert np.abs(a - b).mean() > 5


def test_a_bad_size_is_refused_before_any_class_image_job():
    # The class images' size is training.resolution: the config schema refuses 60 (and
    # regularization.count/steps/batch_size 0, test_config.py) before any job runs.
    config = {
        "subject": {"class_word": "woman", "train_images": "a", "references": "b"},
        "base_model": "tiny",
        "axes": {"token": {"rare": "ohwx"}, "regularization": ["generated"]},
        "training": {"resolution": 60},
    }
    with pytest.raises(SpecError, match=r"at training\.resolution: 60 is not a multiple of 8"):
        validate(config)


def make_photos(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    wide = Image.new("RGB", (120, 60), (255, 0, 0))
    wide.paste((0, 0, 255), (30, 0, 90, 60))  # the centre square is blue
    wide.save(folder / "wide.jpg", quality=95)
    Image.new("RGB", (50, 90), (0, 255, 0)).save(folder / "tall.png")
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # transparent → white
    rgba.save(folder / "clear.png")
    (folder / "notes.md").write_text("not an image, not listed")
    return {p.name: p for p in folder.iterdir()}


def test_prepare_ground_truth(tmp_path):
    src = tmp_path / "others"
    photos = make_photos(src)
    before = {name: digest(p) for name, p in photos.items()}
    out = tmp_path / "gt"
    index = prepare_ground_truth(src, 32, out)
    assert list(index.columns) == ["image", "source"]
    assert list(index.image) == ["clear.png", "tall.png", "wide.png"]
    assert list(index.source) == [str(src / n) for n in ("clear.png", "tall.png", "wide.jpg")]
    pd.testing.assert_frame_equal(pd.read_csv(out / "index.csv"), index)
    for name in index.image:
        assert Image.open(out / name).size == (32, 32)
    assert np.asarray(Image.open(out / "clear.png")).min() == 255  # white, not black
    wide = np.asarray(Image.open(out / "wide.png")).astype(int)
    assert wide[:, :, 2].mean() > 240 and wide[:, :, 0].mean() < 15  # centre crop: all blue
    # Sources untouched.
    assert {p.name: digest(p) for p in src.iterdir()} == before


def test_ground_truth_for_buckets_keeps_each_photos_shape(tmp_path):
    src = tmp_path / "others"
    make_photos(src)
    index = prepare_ground_truth(src, 32, tmp_path / "gt", max_side=100)
    sizes = {name: Image.open(tmp_path / "gt" / name).size for name in index.image}
    # Training fits each to its bucket; here only the 120 px wide photo is shrunk.
    assert sizes == {"clear.png": (40, 40), "tall.png": (50, 90), "wide.png": (100, 50)}
    wide = np.asarray(Image.open(tmp_path / "gt" / "wide.png")).astype(int)
    assert wide[:, :10, 0].mean() > 240  # the red sides are still there: nothing cropped


def test_ground_truth_bad_file_is_named(tmp_path):
    src = tmp_path / "others"
    make_photos(src)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SpecError, match="broken.jpg"):
        prepare_ground_truth(src, 32, tmp_path / "gt")
    assert not (tmp_path / "gt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["others"]


def test_ground_truth_errors(tmp_path):
    with pytest.raises(SpecError, match="not a directory"):
        prepare_ground_truth(tmp_path / "missing", 32, tmp_path / "gt")
    src = tmp_path / "dup"
    src.mkdir()
    Image.new("RGB", (10, 10)).save(src / "a.png")
    Image.new("RGB", (10, 10)).save(src / "a.jpg")
    with pytest.raises(SpecError, match="share the name"):
        prepare_ground_truth(src, 32, tmp_path / "gt")


def test_resize_center_crop_matches_training_preprocess(tmp_path):
    from dreamgrid.train.data import preprocess

    rng = np.random.default_rng(1)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (70, 123, 3), dtype=np.uint8)).save(path)
    ours = np.asarray(resize_center_crop(Image.open(path).convert("RGB"), 48), np.float32)
    train = (preprocess(path, (48, 48)).permute(1, 2, 0).numpy() + 1.0) * 127.5
    assert np.abs(ours - train).max() < 1e-3


def test_resize_center_crop_upscales_small_and_keeps_exact():
    small = Image.new("RGB", (20, 10))
    assert resize_center_crop(small, 32).size == (32, 32)
    exact = Image.new("RGB", (32, 32), (1, 2, 3))
    assert resize_center_crop(exact, 32).tobytes() == exact.tobytes()
    odd = Image.new("RGB", (1000, 333))
    assert resize_center_crop(odd, 64).size == (64, 64)
