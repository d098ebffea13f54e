"""Aspect-ratio buckets (training.aspect_ratio: buckets): Kohya's bucket list and choice,
bucketed batches, and a tiny model trained on photos of several shapes."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dreamgrid.buckets import bucket_resolutions, image_size, select_bucket
from dreamgrid.errors import SpecError
from dreamgrid.tiny import build_tiny_sd
from dreamgrid.train.data import bucket_steps, epoch_batches, preprocess
from dreamgrid.train.export import read_metadata
from dreamgrid.train.testing import tiny_train_spec

# The tiny VAE halves the size; these buckets of about 64² px suit it as Kohya's suit SD.
TINY_BUCKETS = {
    "aspect_ratio": "buckets",
    "bucket_min_size": 32,
    "bucket_max_size": 128,
    "bucket_step": 16,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("model") / "tiny-sd")


def write_image(path: Path, width: int, height: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    """Training photos: two portraits, a landscape and a square; class images all square."""
    root = tmp_path_factory.mktemp("shapes")
    for i, (name, size) in enumerate(
        {"tall1": (60, 100), "tall2": (66, 110), "wide": (120, 72), "square": (90, 90)}.items()
    ):
        write_image(root / "instance" / f"{name}.png", *size, seed=i)
    for i in range(2):
        write_image(root / "reg" / f"r{i}.png", 64, 64, seed=10 + i)
    return {"instance": root / "instance", "reg": root / "reg"}


def spec_for(tiny_model: Path, shapes: dict[str, Path], out: Path, **changes):
    return tiny_train_spec(tiny_model, shapes["instance"], out, **{**TINY_BUCKETS, **changes})


# --- the bucket list and the choice ---------------------------------------------------------


def test_sd15_buckets_are_kohyas_list():
    buckets = bucket_resolutions(512, 256, 1024, 64)
    # What sd-scripts prints for --resolution 512 --enable_bucket (the default bounds).
    kohya = [
        (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640),
        (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256),
        (896, 256), (960, 256), (1024, 256),
    ]  # fmt: skip
    assert buckets == kohya
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)


def test_select_bucket_takes_the_closest_aspect_or_the_exact_size():
    buckets = bucket_resolutions(512, 256, 1024, 64)
    assert select_bucket(410, 512, buckets) == (448, 576)  # 0.80 -> 0.78
    assert select_bucket(3000, 2000, buckets) == (640, 384)  # 1.5 -> 1.67 (1.29 is further)
    assert select_bucket(1000, 1000, buckets) == (512, 512)
    assert select_bucket(2000, 300, buckets) == (1024, 256)  # beyond the widest: the widest


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ((512, 256, 1024, 60), "multiple of 8"),
        ((512, 250, 1024, 64), "multiples of bucket_step"),
        ((512, 640, 1024, 64), "within bucket_min_size"),
    ],
)
def test_inconsistent_bucket_settings_are_refused(settings, message):
    with pytest.raises(SpecError, match=message):
        bucket_resolutions(*settings)


def test_image_size_follows_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 120 x 60 sensor image is shown 60 x 120
    Image.new("RGB", (120, 60), "gray").save(path, exif=exif)
    assert image_size(path) == (60, 120)
    assert preprocess(path, (32, 64)).shape == (3, 64, 32)


def test_preprocess_covers_the_bucket_and_crops_the_centre(tmp_path):
    image = np.zeros((100, 60, 3), dtype=np.uint8)  # tall 60 x 100, black
    image[5:95] = 255  # white except a 5 px band at top and bottom
    Image.fromarray(image).save(tmp_path / "tall.png")
    pixels = preprocess(tmp_path / "tall.png", (48, 64))  # cover: 48 x 80, crop 8 rows a side
    assert pixels.shape == (3, 64, 48)
    assert pixels.min() > 0.9  # only white is left: the crop took the black bands (a squash
    # to 48 x 64 would have kept them)


# --- batches --------------------------------------------------------------------------------


def test_bucketed_batches_hold_one_size_each(tiny_model, shapes, tmp_path):
    spec = spec_for(tiny_model, shapes, tmp_path, repeats=3, batch_size=2)
    batches = epoch_batches(spec)
    sizes = Counter(batch[0].size for batch in batches for _ in batch)
    assert all(len({item.size for item in batch}) == 1 for batch in batches)
    by_image = {item.image.stem: item.size for batch in batches for item in batch}
    assert by_image == {
        "tall1": (48, 80),
        "tall2": (48, 80),
        "wide": (80, 48),
        "square": (64, 64),
    }
    assert sizes == {(48, 80): 6, (80, 48): 3, (64, 64): 3}
    # Kohya's count: each bucket ends in its own short batch (3 + 2 + 2), not ceil(12 / 2) = 6.
    assert len(batches) == bucket_steps([6, 3, 3], 2) == 7
    assert sorted(len(b) for b in batches) == [1, 1, 2, 2, 2, 2, 2]
    assert epoch_batches(spec) == batches  # seeded
    later = dataclasses.replace(spec, epoch=2, previous_meta=tmp_path / "x.json")
    assert epoch_batches(later) != batches


def test_class_images_are_bucketed_too_or_follow_their_paired_batch(tiny_model, shapes, tmp_path):
    kohya = spec_for(tiny_model, shapes, tmp_path, reg_dir=shapes["reg"], batch_size=2)
    items = [item for batch in epoch_batches(kohya) for item in batch]
    assert sum(item.is_reg for item in items) == 4  # as many as instance items
    assert {item.size for item in items if item.is_reg} == {(64, 64)}

    paired = dataclasses.replace(kohya, reg_mode="paired")
    batches = epoch_batches(paired)
    # The instance items make the batches (one per bucket here); each gets as many class
    # items, fitted to the batch's bucket so the batch stacks into one tensor.
    assert len(batches) == bucket_steps([2, 1, 1], 2) == 3
    for batch in batches:
        instance = [item for item in batch if not item.is_reg]
        assert [item.is_reg for item in batch] == [False] * len(instance) + [True] * len(instance)
        assert {item.size for item in batch} == {instance[0].size}


def test_spec_and_config_checks_for_buckets(tiny_model, shapes, tmp_path):
    with pytest.raises(SpecError, match="bucket_step as an integer"):
        spec_for(tiny_model, shapes, tmp_path, bucket_step=None)
    with pytest.raises(SpecError, match="leave them null"):
        spec_for(tiny_model, shapes, tmp_path, aspect_ratio="center_crop")
    with pytest.raises(SpecError, match="within bucket_min_size"):
        spec_for(tiny_model, shapes, tmp_path, resolution=256)


# --- training -------------------------------------------------------------------------------


def test_bucketed_training_runs_counts_kohya_steps_and_records_sizes(tiny_model, shapes, tmp_path):
    from dreamgrid.train import train_dreambooth

    cache = tmp_path / "cache"
    fields = {"repeats": 2, "batch_size": 2, "save_precision": "fp32"}
    spec = spec_for(tiny_model, shapes, tmp_path / "a", **fields)
    result = train_dreambooth(spec)
    assert result["steps"] == result["steps_per_epoch"] == bucket_steps([4, 2, 2], 2) == 4
    meta = read_metadata(spec.out_checkpoint)
    assert meta["aspect_ratio"] == "buckets"
    assert meta["train_sizes"] == {"48x80": 2, "64x64": 1, "80x48": 1}

    # From cached latents (one file per image and bucket): the same draws, the same result
    # up to the VAE's batching, as for center-cropped training.
    cached = spec_for(
        tiny_model,
        shapes,
        tmp_path / "b",
        cache_latents=True,
        cache_dir=cache,
        **fields,
    )
    train_dreambooth(cached)
    names = sorted(p.name.rsplit("-", 1)[1] for p in cache.iterdir())
    assert names == ["48x80.safetensors"] * 2 + ["64.safetensors", "80x48.safetensors"]
    ta, tb = load_file(str(spec.out_checkpoint)), load_file(str(cached.out_checkpoint))
    # Measured: the paths differ by 1.3e-4, the update itself is 4e-3 at most; 6e-4 leaves
    # 4x the noise and stays 7x below the update (2e-3 sat at half of it).
    assert all(torch.allclose(ta[k], tb[k], atol=6e-4) for k in ta)

    # Center crop on the same photos trains other tensors (other pixels, other batches).
    square = tiny_train_spec(tiny_model, shapes["instance"], tmp_path / "c", **fields)
    assert train_dreambooth(square)["steps"] == 4
    tc = load_file(str(square.out_checkpoint))
    key = next(k for k in ta if k.endswith("out.2.weight"))
    assert not torch.equal(ta[key], tc[key])
