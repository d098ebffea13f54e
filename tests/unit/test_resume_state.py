"""The resume state holds every optimizer's state and the fp16 loss scale, exactly, as
safetensors + JSON (no pickle): bitsandbytes' 8-bit AdamW (real, on CPU) and torch's GradScaler."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from dreamgrid.errors import SpecError
from dreamgrid.train import loop
from dreamgrid.train.state import StateInfo, load_state, save_state
from dreamgrid.train.testing import next_epoch, tiny_train_spec

try:
    import bitsandbytes as bnb
except ImportError:
    bnb = None
needs_bnb = pytest.mark.skipif(bnb is None, reason="pip install -e '.[test]' installs bitsandbytes")

INFO = StateInfo(epoch=1, steps=3, fingerprint="f", meta_digest="d")


def params_and_step(optimizer_class, seed: int = 0, **kwargs):
    """A small model (two layers big enough for 8-bit moments, one small) after 3 steps."""
    torch.manual_seed(seed)
    named = {
        "big": torch.nn.Parameter(torch.randn(96, 64)),  # >= 4096 elements: 8-bit state
        "other": torch.nn.Parameter(torch.randn(64, 64)),  # shares the quantization maps
        "small": torch.nn.Parameter(torch.randn(16)),  # bitsandbytes keeps fp32 moments
    }
    optimizer = optimizer_class(list(named.values()), lr=1e-2, **kwargs)
    for _ in range(3):
        step(named, optimizer)
    return named, optimizer


def step(named, optimizer) -> None:
    loss = (named["big"] ** 2).sum() + named["other"].cos().sum() + named["small"].sin().sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def flat(value, prefix=""):
    """Nested optimizer state as path -> value, for exact comparison."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()
        }
    return {prefix: value}


def assert_same_state(a, b):
    a, b = flat(a.state_dict()["state"]), flat(b.state_dict()["state"])
    assert a.keys() == b.keys()
    for key in a:
        if torch.is_tensor(a[key]):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@needs_bnb
def test_8bit_adamw_state_round_trips_exactly(tmp_path):
    named, optimizer = params_and_step(bnb.optim.AdamW8bit)
    entry = optimizer.state_dict()["state"][0]
    assert isinstance(entry["__bnb_optimizer_quant_state__"], dict)  # what broke the JSON header
    path = tmp_path / "resume.safetensors"
    save_state(path, named, optimizer, INFO)
    assert path.read_bytes()[:2] != b"\x80\x04"  # no pickle
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
    assert "optimizer.0.__bnb_optimizer_quant_state__.state1" in keys
    assert load_file(str(path))["optimizer.0.__bnb_optimizer_quant_state__.state1"].dtype == (
        torch.uint8
    )

    fresh, restored = params_and_step(bnb.optim.AdamW8bit, seed=1)  # other weights and moments
    load_state(path, fresh, restored)
    assert all(torch.equal(named[k], fresh[k]) for k in named)
    assert_same_state(optimizer, restored)
    # Continuing from the file is continuing the run: the next steps agree bit for bit.
    for _ in range(2):
        step(named, optimizer)
        step(fresh, restored)
    assert all(torch.equal(named[k], fresh[k]) for k in named)


def test_torch_adamw_state_round_trips_exactly(tmp_path):
    named, optimizer = params_and_step(torch.optim.AdamW)
    save_state(tmp_path / "s.safetensors", named, optimizer, INFO)
    fresh, restored = params_and_step(torch.optim.AdamW, seed=1)
    load_state(tmp_path / "s.safetensors", fresh, restored)
    assert_same_state(optimizer, restored)


def test_loss_scaler_state_round_trips(tmp_path):
    named, optimizer = params_and_step(torch.optim.AdamW)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    scaler.scale(torch.ones(()))  # creates the scale tensors, as the first backward does
    scaler.update(2.0**11)  # as after overflows had backed the scale off
    scaler._growth_tracker.fill_(2)  # two clean steps since
    path = tmp_path / "s.safetensors"
    save_state(path, named, optimizer, INFO, scaler)
    header = json.loads(safe_open(str(path), framework="pt").metadata()["scaler"])
    assert header["scale"] == 2048.0 and header["_growth_tracker"] == 2

    fresh = torch.amp.GradScaler("cpu")  # what the next epoch's job starts with: 65,536
    load_state(path, *params_and_step(torch.optim.AdamW, seed=1), scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict()
    # Without fp16 there is no scaler: the header says null, loading leaves a scaler alone.
    save_state(path, named, optimizer, INFO, None)
    untouched = torch.amp.GradScaler("cpu", init_scale=8.0)
    load_state(path, *params_and_step(torch.optim.AdamW, seed=1), scaler=untouched)
    assert untouched.get_scale() == 8.0


# --- through train_dreambooth on the tiny model -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dreamgrid.tiny import build_tiny_sd

    root = tmp_path_factory.mktemp("resume")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return build_tiny_sd(root / "sd"), images


@needs_bnb
def test_8bit_arm_resumes_to_the_checkpoint_a_replay_gives(tiny, tmp_path, monkeypatch):
    # The job path of adamw8bit on a GPU (bitsandbytes, real, runs on CPU here): epoch 1
    # writes its state, epoch 2 resumes from it and equals epoch 2 replayed from scratch.
    monkeypatch.setattr(loop, "adamw_class", lambda spec: bnb.optim.AdamW8bit)
    base, images = tiny
    spec = tiny_train_spec(base, images, tmp_path / "a", optimizer="adamw8bit", repeats=2)
    loop.run(spec)
    with safe_open(str(spec.state), framework="pt") as handle:
        assert any("__bnb_optimizer_quant_state__" in k for k in handle.keys())  # noqa: SIM118
    resumed = loop.run(next_epoch(spec, tmp_path / "a"))
    assert resumed["replayed"] == 0

    spec.state.unlink()
    replay = dataclasses.replace(
        next_epoch(spec, tmp_path / "b"), state=tmp_path / "b" / "s.safetensors"
    )
    assert loop.run(replay)["replayed"] == 1
    a, b = load_file(str(resumed["checkpoint"])), load_file(str(replay.out_checkpoint))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_scale_carries_over_epochs(tiny, tmp_path, monkeypatch):
    # fp16 needs CUDA, so a CPU GradScaler stands in for accelerate's: the scale grows every
    # clean step (growth_interval 1), and epoch 2 must continue from epoch 1's scale.
    make = loop.make_accelerator

    def with_scaler(spec):
        accelerator = make(spec)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
        return accelerator

    monkeypatch.setattr(loop, "make_accelerator", with_scaler)
    base, images = tiny
    spec = tiny_train_spec(base, images, tmp_path, repeats=2)  # 3 steps per epoch

    def scale() -> float:
        return json.loads(safe_open(str(spec.state), framework="pt").metadata()["scaler"])["scale"]

    loop.run(spec)
    assert scale() == 1024.0 * 2**3
    loop.run(next_epoch(spec, tmp_path))
    assert scale() == 1024.0 * 2**6  # not 1024 * 2**3 again: the scale was restored


@needs_bnb
def test_8bit_state_for_other_parameters_is_refused(tmp_path):
    # Moments saved in another parameter order than the weights (a state from other code)
    # must not be loaded into the wrong parameters.
    from dreamgrid.errors import SpecError

    named, _ = params_and_step(bnb.optim.AdamW8bit)
    shuffled = bnb.optim.AdamW8bit([named["small"], named["big"], named["other"]], lr=1e-2)
    step(named, shuffled)
    save_state(tmp_path / "s.safetensors", named, shuffled, INFO)
    with pytest.raises(SpecError, match="does not match"):
        load_state(tmp_path / "s.safetensors", *params_and_step(bnb.optim.AdamW8bit, seed=1))


# --- the state an epoch of train_dreambooth leaves ----------------------------------------------------


def test_resume_state_is_one_safetensors_file_per_arm(epoch1):
    spec, _ = epoch1
    assert [p.name for p in spec.state.parent.iterdir()] == ["resume.safetensors"]
    assert spec.state.read_bytes()[:2] != b"\x80\x04"  # no pickle protocol header
    with safe_open(str(spec.state), framework="pt") as handle:
        header = handle.metadata()
        keys = list(handle.keys())
        dtypes = {handle.get_tensor(k).dtype for k in keys if k.startswith("weights.")}
    assert header["format"] == "dreamgrid-resume-v2"
    assert header["epoch"] == "1" and header["steps"] == "2"
    assert header["fingerprint"] == spec.fingerprint()
    assert json.loads(header["param_groups"])[0]["lr"] == spec.learning_rate
    assert {"optimizer.0.exp_avg", "optimizer.0.exp_avg_sq", "optimizer.0.step"} <= set(keys)
    assert dtypes == {torch.float32}  # full precision, unlike the fp16 checkpoint


def test_resume_rejects_wrong_epoch(epoch1, tmp_path):
    from dreamgrid.train import train_dreambooth

    spec1, _ = epoch1
    skipped = dataclasses.replace(next_epoch(spec1, tmp_path), epoch=3)
    with pytest.raises(SpecError, match="holds epoch 1"):
        train_dreambooth(skipped)
