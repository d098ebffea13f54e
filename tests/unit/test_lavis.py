"""The LAVIS captioning backend, run in its own venv (dreamgrid.lavis_caption).

The venv is 7 GB and not part of the default install: the tests that need it run where it
exists (scripts/lavis-venv.sh; .venv-lavis in the repo or DREAMGRID_LAVIS_PYTHON) and are
skipped with that reason elsewhere (failed instead with DREAMGRID_REQUIRE_LAVIS=1).
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamgrid import config as cfg
from dreamgrid import dag, lavis_caption, paths
from dreamgrid.caption import CaptionSettings, caption_images
from dreamgrid.errors import DreamgridError

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = Path(os.environ.get("DREAMGRID_LAVIS_PYTHON", ROOT / ".venv-lavis/bin/python"))


@pytest.fixture
def venv_python() -> Path:
    """The LAVIS venv's interpreter; without it a skip, or a failure where CI requires it
    (DREAMGRID_REQUIRE_LAVIS=1, as DREAMGRID_REQUIRE_SLURM does for the Slurm test)."""
    if not VENV_PYTHON.is_file():
        reason = (
            f"no LAVIS venv at {VENV_PYTHON}: build it with scripts/lavis-venv.sh (7 GB) or "
            "point DREAMGRID_LAVIS_PYTHON at its interpreter"
        )
        if os.environ.get("DREAMGRID_REQUIRE_LAVIS") == "1":
            pytest.fail(f"DREAMGRID_REQUIRE_LAVIS=1 but {reason}")
        pytest.skip(reason)
    return VENV_PYTHON


def settings(python: Path, **change) -> CaptionSettings:
    values = {
        "model": Path("unused-by-lavis"),
        "backend": "lavis",
        "prompt": "a picture of ",
        "sampling": True,
        "num_beams": 1,
        "top_p": 0.9,
        "min_length": 3,
        "max_length": 12,
        "seed": 42,
        "batch_size": 1,
        "lavis_python": str(python),
        "lavis_model": "tiny",
    }
    return CaptionSettings(**{**values, **change})


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        noise = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"img{i}.png")
    return folder


def test_an_interpreter_without_lavis_fails_with_its_error_and_the_fix(images, tmp_path):
    # This env's python has no lavis: the venv side's ImportError comes back, with the fix.
    with pytest.raises(DreamgridError, match=r"(?s)No module named 'lavis'.*lavis-venv\.sh"):
        caption_images(images, settings(Path(sys.executable)), None, tmp_path / "captions.csv")
    assert not (tmp_path / "captions.csv").exists()


def test_lavis_backend_needs_no_transformers_captioner_in_the_dag():
    config = cfg.validate(
        {
            "subject": {"class_word": "man", "train_images": "photos", "references": "refs"},
            "base_model": "tiny",
            "axes": {"token": {"rare": "ohwx"}, "regularization": ["none"], "captions": ["blip"]},
            "caption": {"backend": "lavis", "lavis_python": "/venv/bin/python"},
        }
    )
    grid = dag.Grid(config)
    assert "model" not in grid.get_caption_inputs()
    assert grid.get_caption_inputs()["lavis"] == paths.LAVIS_MODEL_DIR  # prepared by a local rule
    assert "captioner" not in grid.get_manifest_inputs()
    assert grid.caption_params["lavis_python"] == "/venv/bin/python"
    # The transformers backend's params carry no LAVIS keys (adding them reran nothing).
    config["caption"]["backend"] = "transformers"
    assert not any(k.startswith("lavis") for k in dag.Grid(config).caption_params)


def test_tiny_lavis_blip_captions_every_image_reproducibly(venv_python, images, tmp_path):
    first = caption_images(images, settings(venv_python), None, tmp_path / "a.csv")
    assert list(first["image"]) == ["img0.png", "img1.png", "img2.png"]
    assert (first["source"] == "blip").all()
    words = set(lavis_caption.TINY_VOCAB)
    for text in first["caption"]:
        assert text and set(text.replace(" ##", "").split()) <= words, text
    again = caption_images(images, settings(venv_python), None, tmp_path / "b.csv")
    pd.testing.assert_frame_equal(first, again)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # The seed reaches LAVIS's nucleus sampling.
    other_seed = caption_images(images, settings(venv_python, seed=7), None, tmp_path / "c.csv")
    assert list(first["caption"]) != list(other_seed["caption"])


def test_overrides_are_not_sent_to_lavis(venv_python, images, tmp_path):
    overrides = tmp_path / "captions"
    overrides.mkdir()
    (overrides / "img1.txt").write_text("a man in a blue shirt\n")
    table = caption_images(images, settings(venv_python), overrides, tmp_path / "c.csv")
    row = table.set_index("image").loc["img1.png"]
    assert (row["caption"], row["source"]) == ("a man in a blue shirt", "override")
    assert (table["source"] == "blip").sum() == 2


def test_unknown_lavis_model_fails_naming_it(venv_python, images, tmp_path):
    bad = settings(venv_python, lavis_model="no_such_model:base")
    with pytest.raises(
        DreamgridError, match="(?s)caption.lavis_model: LAVIS has no model 'no_such"
    ):
        caption_images(images, bad, None, tmp_path / "d.csv")


def test_settings_replace_keeps_lavis_fields(tmp_path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    changed = dataclasses.replace(settings(python), seed=1)
    assert (changed.lavis_python, changed.lavis_model) == (str(python), "tiny")


#: Stands in for the LAVIS venv's interpreter (``python -m dreamgrid.lavis_caption ...``): a
#: "download" lands where torch.hub would put it, captions are canned, the env is kept.
FAKE_VENV = """#!{python}
import json, os, sys
args = sys.argv[3:]
dump = os.environ["FAKE_LAVIS_ENV"]
json.dump(dict(os.environ), open(dump, "w"))
if args[0] == "--prepare":
    folder = os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints")
    os.makedirs(folder)
    open(os.path.join(folder, "model_large_caption.pth"), "w").write(args[1])
else:
    request = json.load(open(args[0]))
    json.dump({{p: request["prompt"] + "woman" for p in request["images"]}}, open(args[1], "w"))
"""


def test_lavis_downloads_once_into_a_folder_its_caption_jobs_read_offline(
    images, tmp_path, monkeypatch
):
    from dreamgrid import offline

    fake = tmp_path / "venv-python"
    fake.write_text(FAKE_VENV.format(python=sys.executable))
    fake.chmod(0o755)
    dump = tmp_path / "env.json"
    monkeypatch.setenv("FAKE_LAVIS_ENV", str(dump))
    for name in offline.SWITCHES:
        monkeypatch.delenv(name, raising=False)
    prepared = lavis_caption.prepare_lavis_model(
        str(fake), "blip_caption:large_coco", tmp_path / "m"
    )
    checkpoint = prepared / "torch" / "hub" / "checkpoints" / "model_large_caption.pth"
    assert checkpoint.read_text() == "blip_caption:large_coco"
    assert (prepared / lavis_caption.PREPARED).is_file()
    assert not offline.is_on(json.loads(dump.read_text()))  # the prepare step may download

    # The caption job: offline switches on (logs.job), LAVIS's caches the prepared ones.
    for name, value in offline.SWITCHES.items():
        monkeypatch.setenv(name, value)
    chosen = settings(fake, lavis_model="blip_caption:large_coco", lavis_home=str(prepared))
    table = caption_images(images, chosen, None, tmp_path / "captions.csv")
    assert len(table) == 3
    env = json.loads(dump.read_text())
    assert env["TORCH_HOME"] == str(prepared.resolve() / "torch")
    assert env["HF_HOME"] == str(prepared.resolve() / "hf")
    assert offline.is_on(env)
