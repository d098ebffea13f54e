"""TrainSpec (dreamgrid.train.spec): a job's params build it, conflicting settings are refused,
the fingerprint follows settings, not locations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import make_spec

from dreamgrid.config import validate
from dreamgrid.errors import SpecError
from dreamgrid.train.spec import job_spec
from dreamgrid.train.testing import job_of, next_epoch

LORA = {
    "arm": "ohwx-genreg-nocap-lora",
    "method": "lora",
    "lora_rank": 4,
    "lora_alpha": 4.0,
    "lora_target_modules": ["to_q", "to_v"],
    "learning_rate": 1e-4,
}


@pytest.mark.parametrize("changes", [{}, LORA], ids=["full", "lora"])
def test_a_jobs_params_build_its_spec(tiny_model, data, tmp_path, changes):
    # What the train_dreambooth shim (and the preflight) does with a job's params and inputs;
    # test_train_loop.py runs the shim itself in a fresh process with these params.
    first = make_spec(tiny_model, data, tmp_path, reg_dir=data["reg"], **changes)
    spec = next_epoch(first, tmp_path / "later")
    job = json.loads(json.dumps(job_of(spec)))  # plain data, as Snakemake passes params
    built = job_spec(
        job["params"],
        job["input"],
        base_model=job["input"]["base"],
        epoch=int(job["wildcards"]["epoch"]),
        out_checkpoint=job["output"]["checkpoint"],
    )
    assert built == spec
    assert isinstance(built.base_model, Path) and isinstance(built.previous_meta, Path)


def test_a_misspelt_setting_never_reaches_a_job():
    # The spec's own key check went with its JSON file; the config schema names the key.
    config = {
        "subject": {"class_word": "woman", "train_images": "a", "references": "b"},
        "base_model": "tiny",
        "axes": {"token": {"rare": "ohwx"}},
        "training": {"sed": 1},
    }
    with pytest.raises(SpecError, match=r"unknown key 'sed' \(did you mean 'seed'\?\)"):
        validate(config)


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
