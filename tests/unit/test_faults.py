"""Faults: a training job killed with SIGKILL leaves nothing half-written, and its rerun
gives exactly the checkpoint (and resume state) an uninterrupted run gives."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from dreamgrid.tiny import build_tiny_sd
from dreamgrid.train.spec import TrainSpec
from dreamgrid.train.testing import shim_command, tiny_train_spec

# Steps per epoch (3 images x repeats): enough that a kill after step 2 lands mid-epoch,
# few enough that the runs stay cheap (steps dominate this file's time).
STEPS = 21


@pytest.fixture(scope="module")
def spec_fields(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    base = build_tiny_sd(root / "sd")
    spec = tiny_train_spec(
        base, images, root, arm="rare-noreg-nocap", repeats=STEPS // 3, batch_size=1, seed=11
    )
    fields = spec.to_dict()
    for name in ("previous_meta", "state", "out_checkpoint"):
        del fields[name]  # epoch_spec sets them per epoch
    return fields


def epoch_spec(fields: dict, out: Path, epoch: int) -> TrainSpec:
    """Epoch ``epoch`` of the arm whose files live in ``out`` (as the workflow lays them out)."""
    previous = out / f"epoch-{epoch - 1}.json" if epoch > 1 else None
    return TrainSpec(
        **{**fields, "epoch": epoch},
        previous_meta=previous,
        state=out / "state" / "resume.safetensors",
        out_checkpoint=out / f"epoch-{epoch}.safetensors",
    )


def train_job(spec: TrainSpec, workdir: Path) -> subprocess.Popen:
    """The epoch's train_dreambooth job (the rule's shim) in its own process; the job logs to
    train.log, what the process prints before the job starts goes to process.log."""
    out = (workdir / "process.log").open("w")
    (workdir / "train.log").unlink(missing_ok=True)
    return subprocess.Popen(
        shim_command(spec, workdir / "train.log"), stdout=out, stderr=subprocess.STDOUT
    )


def job_log(workdir: Path) -> str:
    logs = [workdir / "process.log", workdir / "train.log"]
    return "".join(p.read_text(errors="replace") for p in logs if p.exists())


def kill_mid_epoch(spec: TrainSpec, workdir: Path) -> None:
    job = train_job(spec, workdir)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.poll() is None:
        # wait until the progress bar shows real steps, then kill mid-epoch
        log = job_log(workdir)
        steps = re.findall(rf"(\d+)/{STEPS}\b", log)
        if steps and int(steps[-1]) >= 2:
            break
        time.sleep(0.02)  # polled often: the kill must land well before the last step
    assert job.poll() is None, "training finished before it could be killed"
    os.kill(job.pid, signal.SIGKILL)
    job.wait()


def run_job(spec: TrainSpec, workdir: Path) -> None:
    assert train_job(spec, workdir).wait(timeout=600) == 0, job_log(workdir)[-3000:]


@pytest.fixture(scope="module")
def uninterrupted(spec_fields, tmp_path_factory) -> dict[str, Path]:
    """Epochs 1 and 2 trained without a kill, once for both cases (each full run costs a
    process start and an epoch). ``after_epoch_1`` is the arm's folder as it was before
    epoch 2 ran: the killed-epoch-2 case starts from a copy of it instead of retraining."""
    root = tmp_path_factory.mktemp("uninterrupted")
    out = root / "arm"
    out.mkdir()
    run_job(epoch_spec(spec_fields, out, 1), out)
    shutil.copytree(out, root / "after-epoch-1")
    run_job(epoch_spec(spec_fields, out, 2), out)
    return {"final": out, "after_epoch_1": root / "after-epoch-1"}


@pytest.mark.parametrize("killed_epoch", [1, 2])
def test_killed_training_leaves_no_output_and_rerun_matches(
    spec_fields, uninterrupted, tmp_path, killed_epoch
):
    out = tmp_path / "killed"
    if killed_epoch == 1:
        out.mkdir()
    else:  # epoch 1 finished as in the uninterrupted run (same bytes, same resume state)
        shutil.copytree(uninterrupted["after_epoch_1"], out)
    spec = epoch_spec(spec_fields, out, killed_epoch)
    state_before = spec.state.read_bytes() if spec.state.exists() else None
    kill_mid_epoch(spec, out)
    assert (
        not spec.out_checkpoint.exists() and not spec.out_checkpoint.with_suffix(".json").exists()
    )
    # The resume state still holds the last finished epoch, untouched.
    assert (spec.state.read_bytes() if spec.state.exists() else None) == state_before

    run_job(spec, out)
    assert "replaying" not in (out / "train.log").read_text()  # resumed, not retrained
    leftovers = [p for d in (out, spec.state.parent) for p in d.iterdir() if p.name[0] == "."]
    assert not leftovers, "temp files left behind"
    assert [p.name for p in spec.state.parent.iterdir()] == ["resume.safetensors"]

    # The checkpoint of the killed epoch, and the resume state as that epoch left it.
    reference = epoch_spec(spec_fields, uninterrupted["final"], killed_epoch)
    reference_state = epoch_spec(
        spec_fields, uninterrupted["after_epoch_1" if killed_epoch == 1 else "final"], 1
    ).state
    for a, b in [(spec.out_checkpoint, reference.out_checkpoint), (spec.state, reference_state)]:
        left, right = load_file(str(a)), load_file(str(b))
        assert left.keys() == right.keys()
        for key in left:
            assert (left[key] == right[key]).all(), key
