"""TrainSpec (dreamgrid.train.spec): conflicting settings are refused, the fingerprint
follows settings, not locations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import make_spec

from dreamgrid.errors import SpecError
from dreamgrid.train.spec import TrainSpec
from dreamgrid.train.testing import next_epoch


def test_spec_json_round_trip(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, reg_dir=data["reg"])
    text = spec.to_json()
    assert TrainSpec.from_json(text) == spec
    assert isinstance(TrainSpec.from_json(text).base_model, Path)
    (tmp_path / "spec.json").write_text(text)
    assert TrainSpec.read(tmp_path / "spec.json") == spec
    broken = json.loads(text)
    del broken["seed"]
    broken["sed"] = 1
    with pytest.raises(SpecError, match=r"unknown keys \['sed'\].*missing keys \['seed'\]"):
        TrainSpec.from_json(json.dumps(broken))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epoch": 0}, "epoch must be >= 1"),
        ({"previous_meta": "x.json"}, "epoch 1 starts from the base model"),
        ({"arm": "Has Spaces"}, "arm id"),
        ({"epoch": 1.5}, "epoch must be an integer"),
        ({"state": "state.pt"}, r"\.safetensors"),
        ({"out_checkpoint": "s.safetensors", "state": "s.safetensors"}, "different files"),
        ({"passes": 0}, "passes"),
        ({"cache_latents": True}, "cache_latents needs cache_dir"),
        ({"method": "lora"}, "method lora needs lora_rank"),
        ({"lora_rank": 4}, "leave them null"),
        ({"text_encoder_lr": 1e-5}, "need train_text_encoder"),
        ({"aspect_ratio": "center_crop", "bucket_step": 64}, r"bucket_\* settings are for"),
        # A single setting out of range (repeats 0, learning_rate 0, resolution 60, reg_mode
        # mixed, method dora, ...) is the config schema's to refuse, before any job:
        # tests/unit/test_config.py::test_the_schema_owns_the_ranges_the_jobs_settings_had.
    ],
)
def test_spec_rejects_conflicts(tiny_model, data, tmp_path, changes, message):
    with pytest.raises(SpecError, match=message):
        make_spec(tiny_model, data, tmp_path, **changes)


def test_fingerprint_follows_settings_not_locations(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path)
    moved = next_epoch(spec, tmp_path / "elsewhere", state=tmp_path / "other.safetensors")
    assert moved.fingerprint() == spec.fingerprint()
    assert dataclasses.replace(spec, learning_rate=2e-3).fingerprint() != spec.fingerprint()
    assert dataclasses.replace(spec, save_precision="fp32").fingerprint() != spec.fingerprint()
