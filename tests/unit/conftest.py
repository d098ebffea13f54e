"""Fixtures shared by the face-scoring tests and by the trainer's tests (test_train_*.py)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dreamgrid.scoring import deepface_adapter
from dreamgrid.scoring.embedding import embed_reference_photos
from dreamgrid.scoring.settings import FaceSettings
from dreamgrid.train.spec import TrainSpec
from dreamgrid.train.testing import tiny_train_spec

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
REFERENCES = sorted((DEMO / "references").glob("*.jpg"))
OTHER = sorted((DEMO / "ground_truth").glob("*.jpg"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh DEEPFACE_HOME for the module, set before deepface is first imported; the
    variables scoring sets to hide the GPUs are given back afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DEEPFACE_HOME", deepface_adapter.BACKEND_VAR, *deepface_adapter.CPU_ENV):
            mp.delenv(name, raising=False)
        yield deepface_adapter.setup_deepface(tmp_path_factory.mktemp("deepface"))


@pytest.fixture(scope="module")
def settings(home):
    return FaceSettings(model="Dlib", detector="dlib", metric="cosine", align=True)


@pytest.fixture(scope="module")
def references(settings):
    """The demo subject's reference embeddings (reference file name -> embedding)."""
    return embed_reference_photos(REFERENCES, settings)


@pytest.fixture(scope="module")
def extra(tmp_path_factory):
    """Images that are not in resources/demo: no face (gray, noise) and two faces."""
    folder = tmp_path_factory.mktemp("extra")
    Image.new("RGB", (256, 256), (128, 128, 128)).save(folder / "gray.png")
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    left, right = Image.open(REFERENCES[0]), Image.open(OTHER[-1])
    pair = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    pair.save(folder / "two_faces.png")
    return folder


@pytest.fixture(autouse=True)
def gpus_visible_again(monkeypatch):
    """Scoring hides the GPUs for the rest of its process
    (dreamgrid.scoring.deepface_adapter.hide_gpus); in the one pytest process, give them back
    after each test, as separate jobs would have them."""
    for name in (deepface_adapter.BACKEND_VAR, *deepface_adapter.CPU_ENV):
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
    from dreamgrid.train import train_dreambooth

    spec = make_spec(tiny_model, data, tmp_path_factory.mktemp("run1"))
    return spec, train_dreambooth(spec)
