"""Scoring never takes a GPU: with a (fake) visible GPU, deepface's backend and device are the
CPU's in every scoring job and in the preflight, and the GPU jobs still see their GPU after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dreamgrid import faces

ROOT = Path(__file__).resolve().parents[2]
REFERENCES = ROOT / "resources" / "demo" / "references"

# A torch whose driver sees GPU 0 unless CUDA_VISIBLE_DEVICES hides it, as the real one
# does at CUDA's start; starting CUDA at all fails the job.
FAKE_GPU = """
import os, torch
torch.cuda.is_available = lambda: os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
def refuse(*args, **kwargs):
    raise AssertionError("scoring started CUDA")
torch.cuda._lazy_init = refuse
torch.cuda.init = refuse
"""


@pytest.mark.parametrize("backend", ["", "pytorch"])
def test_embedding_job_runs_on_cpu_with_a_visible_gpu(tmp_path, backend):
    # The embed_renders job's path, workers included, in a fresh process whose environment
    # shows GPU 0 (as a job on a GPU workstation inherits it); "pytorch" is what deepface
    # picks by itself where torch is installed.
    table = tmp_path / "shard-0.csv"
    table.write_text("image\n" + "".join(f"{p.name}\n" for p in sorted(REFERENCES.iterdir())))
    code = FAKE_GPU + textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "workflow")!r})
        from dreamgrid import faces
        faces.setup_deepface({str(tmp_path / "home")!r})
        faces.run_embed_renders(
            renders_table=Path({str(table)!r}),
            renders_dir=Path({str(REFERENCES)!r}),
            settings=faces.EmbedSettings(model="Dlib", detector="dlib", align=True),
            out=Path({str(tmp_path / "faces.json")!r}),
            cache_dir=None,
            workers=2,
        )
        print(json.dumps(faces.compute_info()))
        """
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "DEEPFACE_BACKEND_ENGINE": backend}
    for name in ("DEEPFACE_HOME", "DEEPFACE_ONNX_PROVIDERS"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.splitlines()[-1])
    assert info == {"deepface_backend": backend or "onnx", "device": "cpu"}
    meta = json.loads((tmp_path / "faces.json").read_text())["metadata"]
    assert meta["device"] == "cpu" and meta["deepface_backend"] == info["deepface_backend"]


def test_preflight_embeds_on_cpu_and_gives_the_gpu_back(monkeypatch, tmp_path):
    import torch

    from dreamgrid import preflight

    for name in ("DEEPFACE_HOME", faces.BACKEND_VAR, *faces.CPU_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(
        torch.cuda, "is_available", lambda: os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    )
    seen = {}

    def spy(references, settings):
        seen.update(faces.compute_info(), env=os.environ["CUDA_VISIBLE_DEVICES"])
        return {}

    monkeypatch.setattr(faces, "embed_references", spy)
    config = {
        "score": {
            "model": "Dlib",
            "detector": "dlib",
            "metric": "cosine",
            "align": True,
            "deepface_home": str(tmp_path / "home"),
        },
        "subject": {"references": str(REFERENCES)},
    }
    preflight.check_reference_faces(config, None)
    assert seen["device"] == "cpu" and seen["env"] == ""
    # Snakemake's process starts the GPU jobs afterwards: they must see the GPU again.
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert faces.BACKEND_VAR not in os.environ and "DEEPFACE_ONNX_PROVIDERS" not in os.environ
