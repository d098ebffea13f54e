"""GPU slots on CPU with fake device ids: each GPU job gets its own device, a killed job's slot
is free again, SLURM's own assignment is left alone."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dreamgrid import gpus

WORKFLOW = Path(__file__).resolve().parents[2] / "workflow"


def test_ids_come_from_dreamgrid_gpus_then_cuda_visible_devices():
    env = {"DREAMGRID_GPUS": "4, 5", "CUDA_VISIBLE_DEVICES": "0"}
    assert gpus.device_ids(env) == ["4", "5"]
    assert gpus.device_ids({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]


def test_concurrent_jobs_get_different_devices_and_release_them(tmp_path):
    env_a, env_b, env_c = {}, {}, {}
    ids = ["7", "9"]
    with (
        gpus.slot(1, ids=ids, directory=tmp_path, environ=env_a) as a,
        gpus.slot(1, ids=ids, directory=tmp_path, environ=env_b) as b,
    ):
        assert {a, b} == {"7", "9"}
        assert (env_a["CUDA_VISIBLE_DEVICES"], env_b["CUDA_VISIBLE_DEVICES"]) == (a, b)
        assert gpus.try_acquire(ids, tmp_path) is None
    with gpus.slot(1, ids=ids, directory=tmp_path, environ=env_c) as c:
        assert c == "7"


def test_cpu_jobs_slurm_jobs_and_gpu_less_machines_are_left_alone(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    with gpus.slot(0, directory=tmp_path, environ=env) as device:
        assert device is None and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    slurm = {"CUDA_VISIBLE_DEVICES": "3", "SLURM_JOB_ID": "12"}
    with gpus.slot(1, directory=tmp_path, environ=slurm) as device:
        assert device is None and slurm["CUDA_VISIBLE_DEVICES"] == "3"
    with gpus.slot(1, ids=[], directory=tmp_path, environ={}) as device:
        assert device is None
    assert not list(tmp_path.iterdir())


def holder(tmp_path: Path, ids: str) -> subprocess.Popen:
    """A separate process that takes a slot, prints its device and holds it until killed."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(WORKFLOW)!r})
        from pathlib import Path
        from dreamgrid import gpus
        with gpus.slot(1, ids={ids.split(",")!r}, directory=Path({str(tmp_path)!r})):
            print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
            sys.stdin.read()
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_processes_share_slots_and_a_killed_job_frees_its_device(tmp_path):
    first, second = holder(tmp_path, "0,1"), None
    try:
        assert first.stdout.readline().strip() == "0"
        second = holder(tmp_path, "0,1")
        assert second.stdout.readline().strip() == "1"
        assert gpus.try_acquire(["0", "1"], tmp_path) is None
        first.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
        first.wait(timeout=60)
        taken = gpus.try_acquire(["0", "1"], tmp_path)
        assert taken is not None and taken[0] == "0"
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)


def test_a_job_cannot_hold_two_devices():
    with pytest.raises(ValueError, match="one GPU per job"), gpus.slot(2, ids=["0", "1"]):
        pass
