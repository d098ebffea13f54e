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


# --- every shim runs in logs.snakemake_job, so every GPU rule's job takes a slot ---------------

RULES = WORKFLOW / "rules"
SHIM_CONTEXT = "with logs.snakemake_job(snakemake"


def gpu_rule_scripts() -> dict[str, Path]:
    """Rule name -> its script shim, for every rule that declares ``gpu=1``."""
    import re

    found = {}
    for smk in RULES.glob("*.smk"):
        for block in re.split(r"\n(?=(?:rule|checkpoint) )", smk.read_text()):
            name = re.match(r"(?:rule|checkpoint) (\w+):", block.strip())
            script = re.search(r'script:\s*"\.\./scripts/(\w+\.py)"', block)
            if name and script and re.search(r"\bgpu=1\b", block):
                found[name.group(1)] = WORKFLOW / "scripts" / script.group(1)
    return found


def test_every_shim_runs_in_the_one_job_context():
    # The context takes the GPU slot from the rule's resources: no shim sets up its own.
    shims = sorted((WORKFLOW / "scripts").glob("*.py"))
    assert len(shims) > 20
    for shim in shims:
        text = shim.read_text()
        assert text.count(SHIM_CONTEXT) == 1, shim.name
        assert "logs.job(" not in text and "gpus.slot(" not in text, shim.name


class Namespace(dict):
    """Snakemake's named lists: attribute and ``get`` access (and [0] for a one-item log)."""

    def __getattr__(self, name):
        return self[name]


#: The one entry function each GPU rule's shim calls (named after the rule).
GPU_ENTRIES = {
    "caption_images": "dreamgrid.caption.caption_images",
    "generate_class_images": "dreamgrid.regularization.generate_class_images",
    "train_dreambooth": "dreamgrid.train.train_dreambooth",
    "sample_checkpoint": "dreamgrid.sample.sample_checkpoint",
    "render_candidates": "dreamgrid.sample.render_candidates",
    "clip_score": "dreamgrid.clip_score.clip_score",
}


def test_every_gpu_rule_is_checked_below():
    assert set(gpu_rule_scripts()) == set(GPU_ENTRIES)


@pytest.mark.parametrize("rule", sorted(GPU_ENTRIES))
def test_gpu_rule_jobs_run_pinned_to_their_slot(rule, tmp_path, monkeypatch):
    import importlib
    import os

    seen = {}
    module, func = GPU_ENTRIES[rule].rsplit(".", 1)
    monkeypatch.setattr(
        importlib.import_module(module),
        func,
        lambda *a, **kw: seen.setdefault("device", os.environ.get("CUDA_VISIBLE_DEVICES")),
    )
    monkeypatch.setattr("dreamgrid.models.resolve", lambda path: path)
    monkeypatch.setattr("dreamgrid.sample.SampleSettings", lambda **kw: kw)
    monkeypatch.setattr("dreamgrid.caption.CaptionSettings", lambda **kw: kw)
    monkeypatch.setattr("dreamgrid.train.spec.job_spec", lambda *a, **kw: None)
    monkeypatch.setenv("DREAMGRID_GPUS", "5")
    monkeypatch.setenv("DREAMGRID_GPU_LOCKS", str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    settings = dict.fromkeys(
        ("prompt", "negative", "class_word", "count", "seed", "steps", "cfg"), "x"
    )
    fake = Namespace(
        scriptdir=str(WORKFLOW / "scripts"),
        log=[str(tmp_path / "job.log")],
        resources=Namespace(gpu=1),
        input=Namespace(
            base="base", model="clip", tables=[], renders=[], images="i", checkpoint="c"
        ),
        output=Namespace({0: str(tmp_path / "out")}, renders="r", table="t.csv", checkpoint="c"),
        params=Namespace(
            settings={**settings, "resolution": 8, "batch_size": 1},
            names={"n": "N"},
            class_word="woman",
            token="ohwx",
            first=0,
        ),
        wildcards=Namespace(arm="a", epoch="1"),
    )
    shim = gpu_rule_scripts()[rule]
    shim_globals = {"snakemake": fake, "__name__": "__main__"}
    exec(compile(shim.read_text(), shim.name, "exec"), shim_globals)  # noqa: S102 - as Snakemake runs it
    assert seen["device"] == "5"
    assert "pinned to GPU 5" in (tmp_path / "job.log").read_text()
