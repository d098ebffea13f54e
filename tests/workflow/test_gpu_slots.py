"""GPU jobs of the real workflow pin themselves to a device slot (dreamgrid.gpus), here with
fake device ids on CPU: CUDA_VISIBLE_DEVICES=5 or 6 hides nothing torch could use anyway."""

import re
import shutil

import pytest
from conftest import snakemake

pytestmark = pytest.mark.slow


def test_gpu_jobs_take_a_slot_each(demo_run, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(demo_run, work, symlinks=True)
    monkeypatch.setenv("DREAMGRID_GPUS", "5,6")
    monkeypatch.setenv("DREAMGRID_GPU_LOCKS", str(tmp_path / "locks"))
    rules = ("caption_images", "generate_class_images")
    result = snakemake(
        work,
        "--cores",
        "2",
        "--resources",
        "gpu=2",
        "--forcerun",
        *rules,
        "--until",
        *rules,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for log in ("caption_images/blip.log", "generate_class_images/generated.log"):
        text = (work / "results" / "logs" / log).read_text()
        assert re.search(r"pinned to GPU [56] \(CUDA_VISIBLE_DEVICES=[56]\)", text), log
    # The first job always finds slot 5 free; a second takes 6 only if it ran alongside.
    assert (tmp_path / "locks" / "gpu-5.lock").is_file()
