"""kill -9 of an embedding job leaves no pool worker behind (they would wait forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCES = ROOT / "resources" / "demo" / "references"

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_killed_embedding_job_leaves_no_worker(tmp_path):
    images = sorted(REFERENCES.iterdir())
    many = [images[i % len(images)] for i in range(40)]  # enough to be killed mid-way
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "workflow")!r})
        from dreamgrid.scoring import deepface_adapter, embedding
        from dreamgrid.scoring.settings import EmbedSettings
        deepface_adapter.setup_deepface({str(tmp_path / "home")!r})
        embedding.embed_images(
            [Path(p) for p in {[str(p) for p in many]!r}],
            EmbedSettings(model="Dlib", detector="dlib", align=True),
            workers=2,
            progress=False,
        )
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "DEEPFACE_HOME"}
    job = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        workers: list[int] = []
        while len(workers) < 2:
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the job never started its two workers"
            time.sleep(0.2)
            workers = children(job.pid)
        time.sleep(3)  # let them load the model and start embedding
        assert all(alive(pid) for pid in workers)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [pid for pid in workers if alive(pid)]
    finally:
        job.kill()
        job.wait()
    for pid in survivors:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], f"workers {survivors} outlived their killed job"


def test_the_watchdog_ends_a_worker_where_prctl_is_unavailable():
    # The fallback alone: prctl made to fail, so only the parent-pid watchdog can end it.
    code = textwrap.dedent(
        f"""
        import ctypes, os, sys, time
        sys.path.insert(0, {str(ROOT / "workflow")!r})
        from dreamgrid.scoring import embedding
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            def no_prctl(*args, **kwargs):
                raise OSError("no prctl here")
            ctypes.CDLL = no_prctl
            embedding.die_with_parent(parent, poll_s=0.1)
            time.sleep(600)
            os._exit(0)
        print(child, flush=True)
        time.sleep(600)
        """
    )
    job = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(job.stdout.readline())
    try:
        time.sleep(0.5)
        assert alive(worker)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        survived = alive(worker)
    finally:
        job.kill()
        job.wait()
    if survived:
        os.kill(worker, signal.SIGKILL)
    assert not survived, "the watchdog did not end the worker of a killed job"
