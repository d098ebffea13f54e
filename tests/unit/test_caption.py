"""Caption stage: tiny random-weight BLIP (captions are gibberish), user caption files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid.caption import COLUMNS, CaptionSettings, caption_images, read_overrides, strip_prompt
from dreamgrid.errors import SpecError
from dreamgrid.io import list_images
from dreamgrid.tiny import build_tiny_blip

N_IMAGES = 5


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    """The tiny BLIP, made to look at the image: captions then differ between images.

    BlipVisionConfig initialises with std 1e-10 and the decoder's cross-attention is weak at
    random, so an untouched random BLIP gives every image the same caption and the tests
    below (batching, overrides leave other captions alone) would prove nothing.
    """
    import torch
    from transformers import BlipForConditionalGeneration

    path = build_tiny_blip(tmp_path_factory.mktemp("models") / "blip")
    model = BlipForConditionalGeneration.from_pretrained(path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.vision_model.embeddings.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
        for name, param in model.text_decoder.named_parameters():
            if "crossattention" in name and name.endswith("weight") and "LayerNorm" not in name:
                param.mul_(20)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def settings(tiny_blip) -> CaptionSettings:
    return CaptionSettings(
        model=tiny_blip,
        backend="transformers",
        prompt="a picture of ",
        sampling=True,
        num_beams=1,
        top_p=0.9,
        min_length=5,
        max_length=20,
        seed=42,
        batch_size=2,
    )


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        noise = rng.integers(0, 256, (40, 48 + 8 * i, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return folder


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def test_blip_captions_every_image(images, settings, tmp_path):
    out = tmp_path / "captions" / "blip.csv"
    table = caption_images(images, settings, None, out)
    assert list(table.columns) == list(COLUMNS)
    assert list(table.image) == [p.name for p in list_images(images)]
    assert set(table.source) == {"blip"}
    assert all(isinstance(c, str) for c in table.caption)
    assert not any(c.startswith("a picture of") for c in table.caption)
    assert table.caption.nunique() > 1  # the model sees the images
    pd.testing.assert_frame_equal(read_csv(out), table)
    assert sorted(p.name for p in out.parent.iterdir()) == ["blip.csv"]


@pytest.mark.parametrize("sampling", [True, False])
def test_reruns_give_identical_captions(images, settings, tmp_path, sampling):
    settings = dataclasses.replace(settings, sampling=sampling, num_beams=2)
    first = caption_images(images, settings, None, tmp_path / "a.csv")
    second = caption_images(images, settings, None, tmp_path / "b.csv")
    pd.testing.assert_frame_equal(first, second)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


@pytest.mark.parametrize("sampling", [True, False])
def test_batch_size_does_not_change_captions(images, settings, tmp_path, sampling):
    one = dataclasses.replace(settings, sampling=sampling, num_beams=2, batch_size=1)
    three = dataclasses.replace(one, batch_size=3)
    pd.testing.assert_frame_equal(
        caption_images(images, one, None, tmp_path / "1.csv"),
        caption_images(images, three, None, tmp_path / "3.csv"),
    )


def test_seed_changes_sampled_captions(images, settings, tmp_path):
    seeds = [dataclasses.replace(settings, seed=s) for s in range(4)]
    captions = {tuple(caption_images(images, s, None, tmp_path / "c.csv").caption) for s in seeds}
    assert len(captions) > 1


def test_overrides_take_precedence_and_are_untouched(images, settings, tmp_path):
    overrides = tmp_path / "edited"
    overrides.mkdir()
    (overrides / "img1.txt").write_text("ohwx woman smiling,\n  in a garden\n")
    (overrides / "img3.caption").write_bytes("\ufeffa woman in a café".encode())
    (overrides / "unrelated.txt").write_text("no image has this stem")
    before = {p.name: digest(p) for p in overrides.iterdir()}
    base = caption_images(images, settings, None, tmp_path / "blip.csv")
    table = caption_images(images, settings, overrides, tmp_path / "mixed.csv")
    by_image = table.set_index("image")
    assert by_image.loc["img1.png", "caption"] == "ohwx woman smiling, in a garden"
    assert by_image.loc["img1.png", "source"] == "override"
    assert by_image.loc["img3.png", "caption"] == "a woman in a café"
    assert by_image.loc["img3.png", "source"] == "override"
    others = ["img0.jpg", "img2.jpg", "img4.jpg"]
    assert list(by_image.loc[others, "source"]) == ["blip"] * 3
    # Overriding some images does not change the BLIP captions of the others.
    assert list(by_image.loc[others, "caption"]) == list(
        base.set_index("image").loc[others, "caption"]
    )
    pd.testing.assert_frame_equal(read_csv(tmp_path / "mixed.csv"), table)
    assert {p.name: digest(p) for p in overrides.iterdir()} == before


def test_overrides_next_to_the_images(images, settings, tmp_path):
    (images / "img0.caption").write_text("hand written")
    table = caption_images(images, settings, images, tmp_path / "c.csv")
    assert table.set_index("image").loc["img0.jpg", "caption"] == "hand written"
    assert len(table) == N_IMAGES


def test_all_overridden_needs_no_model(images, settings, tmp_path):
    for path in list_images(images):
        (images / f"{path.stem}.txt").write_text(f"caption of {path.stem}")
    missing_model = dataclasses.replace(settings, model=tmp_path / "no-model")
    table = caption_images(images, missing_model, images, tmp_path / "c.csv")
    assert set(table.source) == {"override"}
    assert list(table.caption) == [f"caption of img{i}" for i in range(N_IMAGES)]


def test_txt_and_caption_for_one_image_is_an_error(images, tmp_path):
    (images / "img2.txt").write_text("one")
    (images / "img2.caption").write_text("two")
    with pytest.raises(SpecError) as err:
        read_overrides(images, list_images(images))
    assert "img2.txt" in str(err.value) and "img2.caption" in str(err.value)
    assert (images / "img2.txt").read_text() == "one"


def test_override_errors(images, tmp_path):
    paths = list_images(images)
    assert read_overrides(None, paths) == {}
    with pytest.raises(SpecError, match="not found"):
        read_overrides(tmp_path / "missing", paths)
    (images / "img0.txt").write_text("  \n")
    with pytest.raises(SpecError, match="img0.txt: empty"):
        read_overrides(images, paths)
    (images / "img0.txt").write_bytes(b"\xff\xfe caf\xe9")
    with pytest.raises(SpecError, match="UTF-8"):
        read_overrides(images, paths)
    (images / "img0.txt").unlink()
    Image.new("RGB", (8, 8)).save(images / "img0.png")
    with pytest.raises(SpecError, match="share the name"):
        read_overrides(images, list_images(images))


def test_missing_model_is_a_spec_error(images, settings, tmp_path):
    with pytest.raises(SpecError, match="caption.model"):
        caption_images(
            images, dataclasses.replace(settings, model=tmp_path / "nope"), None, tmp_path / "c"
        )
    assert not (tmp_path / "c").exists()


def test_unknown_backend_is_refused(settings):
    with pytest.raises(SpecError, match="not supported"):
        dataclasses.replace(settings, backend="clip-interrogator")


def test_lavis_backend_without_its_venv_says_how_to_build_it(settings, tmp_path):
    with pytest.raises(SpecError, match="caption.lavis_python is not set.*lavis-venv.sh"):
        dataclasses.replace(settings, backend="lavis", lavis_model="tiny")
    missing = tmp_path / "nope" / "python"
    with pytest.raises(SpecError, match=f"{missing}.*not an executable.*lavis-venv.sh"):
        dataclasses.replace(settings, backend="lavis", lavis_python=str(missing))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"min_length": 80}, "exceeds"),
        ({"num_beams": 0}, "num_beams"),
        ({"min_length": -1}, "min_length"),
        ({"top_p": 0.0}, "top_p"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_settings(settings, change, match):
    with pytest.raises(SpecError, match=match):
        dataclasses.replace(settings, **change)


def test_min_length_zero_is_allowed(settings):
    assert dataclasses.replace(settings, min_length=0).min_length == 0


def test_generate_kwargs(settings):
    sampled = settings.generate_kwargs()
    assert sampled["do_sample"] is True and sampled["top_p"] == 0.9
    assert (sampled["min_length"], sampled["max_length"]) == (5, 20)
    beam = dataclasses.replace(settings, sampling=False, num_beams=3).generate_kwargs()
    assert beam["do_sample"] is False and beam["num_beams"] == 3 and "top_p" not in beam


def test_strip_prompt():
    assert strip_prompt("a picture of  a woman\nin red", "a picture of ") == "a woman in red"
    assert strip_prompt("A Picture Of a cat", "a picture of") == "a cat"
    assert strip_prompt("a woman", "") == "a woman"


def test_override_suffixes_match_in_any_case_and_hidden_files_are_ignored(tmp_path):
    images = [tmp_path / "img1.jpg", tmp_path / "img2.jpg"]
    overrides = tmp_path / "edited"
    overrides.mkdir()
    (overrides / "img1.TXT").write_text("ohwx woman, from Windows")
    (overrides / "img2.Caption").write_text("ohwx woman, Kohya")
    (overrides / "._img2.txt").write_bytes(b"\x00\x05 resource fork, not UTF-8 \xff")
    assert read_overrides(overrides, images) == {
        "img1.jpg": "ohwx woman, from Windows",
        "img2.jpg": "ohwx woman, Kohya",
    }
