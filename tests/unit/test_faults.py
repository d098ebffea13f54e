"""Faults: a training job killed with SIGKILL leaves nothing half-written, and its rerun
gives exactly the checkpoint an uninterrupted run gives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from dreamgrid.tiny import build_tiny_sd
from dreamgrid.train.spec import TrainSpec


@pytest.fixture(scope="module")
def spec_fields(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return {
        "arm": "rare-noreg-nocap",
        "base_model": build_tiny_sd(root / "sd"),
        "instance_dir": images,
        "captions": None,
        "token": "ohwx",
        "class_word": "woman",
        "reg_dir": None,
        "prior_loss_weight": 1.0,
        "resolution": 64,
        "repeats": 20,
        "batch_size": 1,
        "learning_rate": 1e-3,
        "lr_scheduler": "constant",
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_weight_decay": 1e-2,
        "adam_epsilon": 1e-8,
        "max_grad_norm": 1.0,
        "seed": 11,
        "epoch": 1,
        "previous_checkpoint": None,
        "previous_state": None,
        "mixed_precision": "no",
        "gradient_checkpointing": False,
        "train_text_encoder": False,
    }


def train_cli(spec: TrainSpec, workdir: Path) -> subprocess.Popen:
    spec_file = workdir / "spec.json"
    spec_file.write_text(spec.to_json())
    log = (workdir / "train.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "dreamgrid.train", "--spec", str(spec_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_killed_training_leaves_no_output_and_rerun_matches(spec_fields, tmp_path):
    out = tmp_path / "killed"
    out.mkdir()
    spec = TrainSpec(
        **spec_fields,
        out_checkpoint=out / "epoch-1.safetensors",
        out_state=out / "epoch-1.state.safetensors",
    )
    job = train_cli(spec, out)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.poll() is None:
        # wait until the progress bar shows real steps, then kill mid-epoch
        steps = re.findall(r"(\d+)/60\b", (out / "train.log").read_text(errors="replace"))
        if steps and int(steps[-1]) >= 5:
            break
        time.sleep(0.2)
    assert job.poll() is None, "training finished before it could be killed"
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert not spec.out_checkpoint.exists() and not spec.out_state.exists()

    rerun = train_cli(spec, out)
    assert rerun.wait(timeout=600) == 0, (out / "train.log").read_text()[-3000:]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"

    reference_dir = tmp_path / "uninterrupted"
    reference_dir.mkdir()
    reference = TrainSpec(
        **spec_fields,
        out_checkpoint=reference_dir / "epoch-1.safetensors",
        out_state=reference_dir / "epoch-1.state.safetensors",
    )
    assert train_cli(reference, reference_dir).wait(timeout=600) == 0
    for a, b in [
        (spec.out_checkpoint, reference.out_checkpoint),
        (spec.out_state, reference.out_state),
    ]:
        left, right = load_file(str(a)), load_file(str(b))
        assert left.keys() == right.keys()
        for key in left:
            assert (left[key] == right[key]).all(), key
