"""The trainer's data (dreamgrid.train.data): Kohya step counts, epoch items and batches,
captions, image preprocessing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_spec
from PIL import Image

from dreamgrid.errors import SpecError
from dreamgrid.train.data import epoch_batches, instance_items, preprocess, steps_per_epoch
from dreamgrid.train.spec import TrainSpec


def test_steps_per_epoch_kohya_numbers():
    assert steps_per_epoch(25, 25, 1, regularization=False) == 625
    assert steps_per_epoch(25, 25, 1, regularization=True) == 1250
    assert steps_per_epoch(3, 1, 2, regularization=False) == 2  # ceil(3 / 2)
    assert steps_per_epoch(3, 2, 4, regularization=True) == 3  # ceil(12 / 4)
    with pytest.raises(SpecError, match="batch_size"):
        steps_per_epoch(3, 1, 0, regularization=False)
    # diffusers' prior preservation: class images share the batch, no extra steps.
    assert steps_per_epoch(25, 25, 1, regularization=True, reg_mode="paired") == 625
    # match_steps: a no-reg arm runs its data twice per epoch, as many steps as a reg arm.
    assert steps_per_epoch(25, 25, 1, regularization=False, passes=2) == 1250
    assert steps_per_epoch(3, 1, 2, regularization=False, passes=2) == 4  # 2 x ceil(3 / 2)


def epoch_items(spec: TrainSpec) -> list:
    """The epoch's items in training order (its batches laid end to end)."""
    return [item for batch in epoch_batches(spec) for item in batch]


def test_items_without_and_with_regularization(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, repeats=2)
    items = epoch_items(spec)
    assert len(items) == 6
    assert {i.caption for i in items} == {"ohwx woman"}
    assert all(i.weight == 1.0 and not i.is_reg for i in items)

    reg = dataclasses.replace(spec, reg_dir=data["reg"], prior_loss_weight=0.5)
    items = epoch_items(reg)
    assert len(items) == 12
    class_items = [i for i in items if i.is_reg]
    assert len(class_items) == 6
    assert {i.caption for i in class_items} == {"woman"}
    assert {i.weight for i in class_items} == {0.5}
    assert sorted(i.image.name for i in class_items) == ["r1.png"] * 3 + ["r2.png"] * 3


def test_order_is_seeded_per_epoch(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, repeats=4)
    names = [i.image.name for i in epoch_items(spec)]
    assert names == [i.image.name for i in epoch_items(spec)]
    later = dataclasses.replace(spec, epoch=2, previous_meta=tmp_path / "x.json")
    assert names != [i.image.name for i in epoch_items(later)]
    assert sorted(names) == sorted(i.image.name for i in epoch_items(later))


def write_captions(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["image,caption"] + [f'{name},"{caption}"' for name, caption in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_paired_mode_puts_instance_then_class_items_in_each_batch(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, reg_dir=data["reg"], reg_mode="paired")
    batches = epoch_batches(spec)  # 3 instance items, batch 2 -> batches [i i c c], [i c]
    assert [[item.is_reg for item in b] for b in batches] == [[0, 0, 1, 1], [0, 1]]
    items = [item for batch in batches for item in batch]
    assert sorted(i.image.name for i in items if not i.is_reg) == ["a.png", "b.png", "c.png"]
    assert all(i.weight == spec.prior_loss_weight for i in items if i.is_reg)


def test_two_passes_shuffle_each_pass_and_keep_the_first(tiny_model, data, tmp_path):
    one = epoch_items(make_spec(tiny_model, data, tmp_path, repeats=4))
    two = epoch_items(make_spec(tiny_model, data, tmp_path, repeats=4, passes=2))
    assert len(two) == 2 * len(one) and two[: len(one)] == one
    assert sorted(i.image for i in two[len(one) :]) == sorted(i.image for i in one)
    assert two[len(one) :] != one  # the second pass is shuffled anew


def test_captions_are_composed_with_token_and_class(tiny_model, data, tmp_path):
    csv = write_captions(
        tmp_path / "captions.csv",
        [
            ("a.png", "a photo of a person, smiling"),
            ("b.png", "ohwx woman in a red coat"),
            ("c.png", ""),
        ],
    )
    spec = make_spec(tiny_model, data, tmp_path, captions=csv)
    captions = {i.image.name: i.caption for i in instance_items(spec)}
    assert captions == {
        "a.png": "ohwx woman, a photo of a person, smiling",
        "b.png": "ohwx woman in a red coat",
        "c.png": "ohwx woman",
    }


def test_every_caption_passes_the_guard_naming_the_image(tiny_model, data, tmp_path, monkeypatch):
    # compose_caption always adds "<token> <class>", so the guard is a safety net: bypass the
    # composition (as a hand-edited caption used verbatim would) and the job must fail.
    import dreamgrid.train.data as data_module

    csv = write_captions(
        tmp_path / "captions.csv",
        [("a.png", "ohwx woman"), ("b.png", "a woman at the beach"), ("c.png", "")],
    )
    spec = make_spec(tiny_model, data, tmp_path, captions=csv)
    assert len(instance_items(spec)) == 3
    monkeypatch.setattr(data_module, "compose_caption", lambda raw, token, cls: raw or "")
    with pytest.raises(SpecError, match=r"b\.png.*lacks 'ohwx'"):
        instance_items(spec)


def test_captions_csv_errors_name_the_image(tiny_model, data, tmp_path):
    missing = write_captions(tmp_path / "missing.csv", [("a.png", "x"), ("b.png", "y")])
    spec = make_spec(tiny_model, data, tmp_path, captions=missing)
    with pytest.raises(SpecError, match=r"c\.png"):
        instance_items(spec)
    extra = write_captions(
        tmp_path / "extra.csv", [("a.png", ""), ("b.png", ""), ("c.png", ""), ("zz.png", "")]
    )
    with pytest.raises(SpecError, match=r"zz\.png"):
        instance_items(dataclasses.replace(spec, captions=extra))
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.png,x\n")
    with pytest.raises(SpecError, match="columns"):
        instance_items(dataclasses.replace(spec, captions=bad))


def test_preprocess_resizes_center_crops_and_normalizes(tmp_path):
    image = np.zeros((40, 80, 3), dtype=np.uint8)  # wide: 80 x 40
    image[:, 20:60] = 255  # white centre band, exactly what the crop keeps
    Image.fromarray(image).save(tmp_path / "wide.png")
    pixels = preprocess(tmp_path / "wide.png", (32, 32))
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert pixels[:, :, 4:28].min() > 0.9  # the centre band survived the crop
