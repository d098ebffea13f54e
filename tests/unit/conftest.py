"""Fixtures shared by the face-scoring tests and by the trainer's tests (test_train_*.py)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dreamgrid import faces
from dreamgrid.train.spec import TrainSpec
from dreamgrid.train.testing import tiny_train_spec


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh DEEPFACE_HOME for the module, set before deepface is first imported; the
    variables scoring sets to hide the GPUs are given back afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DEEPFACE_HOME", faces.BACKEND_VAR, *faces.CPU_ENV):
            mp.delenv(name, raising=False)
        yield faces.setup_deepface(tmp_path_factory.mktemp("deepface"))


@pytest.fixture(scope="module")
def settings(home):
    return faces.FaceSettings(model="Dlib", detector="dlib", metric="cosine", align=True)


@pytest.fixture(autouse=True)
def gpus_visible_again(monkeypatch):
    """Scoring hides the GPUs for the rest of its process (dreamgrid.faces.hide_gpus); in the
    one pytest process, give them back after each test, as separate jobs would have them."""
    for name in (faces.BACKEND_VAR, *faces.CPU_ENV):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


# --- the trainer: a tiny model, three training and two class images, one trained epoch -----


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from dreamgrid.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("model") / "tiny-sd")


def write_images(folder: Path, names: list[str], seed: int, size=(80, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return folder


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    instance = write_images(root / "instance", ["a.png", "b.png", "c.png"], seed=1)
    reg = write_images(root / "reg", ["r1.png", "r2.png"], seed=2)
    return {"root": root, "instance": instance, "reg": reg}


def make_spec(tiny_model: Path, data: dict[str, Path], out: Path, **changes) -> TrainSpec:
    return tiny_train_spec(tiny_model, data["instance"], out, **changes)


def unet_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    prefix = "model.diffusion_model."
    return {k[len(prefix) :]: v for k, v in load_file(str(checkpoint)).items() if prefix in k}


@pytest.fixture(scope="session")
def epoch1(tiny_model, data, tmp_path_factory):
    from dreamgrid.train import run

    spec = make_spec(tiny_model, data, tmp_path_factory.mktemp("run1"))
    return spec, run(spec)
