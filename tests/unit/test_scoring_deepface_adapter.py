"""dreamgrid.scoring.deepface_adapter: deepface's home and weights, scoring on the CPU with a
(fake) visible GPU, settings checked against deepface, one image detected and embedded (real
Dlib, offline)."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from dreamgrid.errors import SpecError
from dreamgrid.scoring import deepface_adapter
from dreamgrid.scoring.settings import FaceSettings

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = ROOT / "resources" / "demo" / "references"
REFERENCES = sorted(REFERENCE_DIR.glob("*.jpg"))


FAKE_GPU = """
import os, torch
torch.cuda.is_available = lambda: os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
def refuse(*args, **kwargs):
    raise AssertionError("scoring started CUDA")
torch.cuda._lazy_init = refuse
torch.cuda.init = refuse
"""


def test_setup_copies_missing_weights_and_keeps_existing(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "unused"))
    weights = tmp_path / "home" / ".deepface" / "weights"
    weights.mkdir(parents=True)
    kept = weights / "shape_predictor_5_face_landmarks.dat"
    kept.write_bytes(b"user's own file")

    assert deepface_adapter.setup_deepface(tmp_path / "home") == tmp_path / "home"
    assert kept.read_bytes() == b"user's own file"
    copied = weights / "dlib_face_recognition_resnet_model_v1.dat"
    assert filecmp.cmp(copied, deepface_adapter._bundled_weights_dir() / copied.name, shallow=False)
    assert os.environ["DEEPFACE_HOME"] == str(tmp_path / "home")

    mtime = copied.stat().st_mtime_ns
    deepface_adapter.setup_deepface(tmp_path / "home")
    assert copied.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in weights.iterdir()) == sorted(deepface_adapter.DLIB_WEIGHTS)


def test_setup_uses_existing_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    assert deepface_adapter.setup_deepface() == tmp_path
    assert all(
        (tmp_path / ".deepface" / "weights" / n).is_file() for n in deepface_adapter.DLIB_WEIGHTS
    )


# ---- scoring never takes a GPU: with a (fake) visible GPU, deepface's backend and device are
# the CPU's in every scoring job and in the preflight, and the GPU jobs still see their GPU after.


@pytest.mark.parametrize("backend", ["", "pytorch"])
def test_embedding_job_runs_on_cpu_with_a_visible_gpu(tmp_path, backend):
    # The embed_renders job's path, workers included, in a fresh process whose environment
    # shows GPU 0 (as a job on a GPU workstation inherits it); "pytorch" is what deepface
    # picks by itself where torch is installed.
    table = tmp_path / "shard-0.csv"
    table.write_text("image\n" + "".join(f"{p.name}\n" for p in sorted(REFERENCE_DIR.iterdir())))
    code = FAKE_GPU + textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "workflow")!r})
        from dreamgrid.scoring import deepface_adapter, steps
        from dreamgrid.scoring.settings import EmbedSettings
        deepface_adapter.setup_deepface({str(tmp_path / "home")!r})
        steps.embed_renders(
            renders_table=Path({str(table)!r}),
            renders_dir=Path({str(REFERENCE_DIR)!r}),
            settings=EmbedSettings(model="Dlib", detector="dlib", align=True),
            out=Path({str(tmp_path / "faces.json")!r}),
            cache_dir=None,
            workers=2,
        )
        print(json.dumps(deepface_adapter.compute_info()))
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

    for name in ("DEEPFACE_HOME", deepface_adapter.BACKEND_VAR, *deepface_adapter.CPU_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(
        torch.cuda, "is_available", lambda: os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    )
    seen = {}

    def spy(references, settings):
        seen.update(deepface_adapter.compute_info(), env=os.environ["CUDA_VISIBLE_DEVICES"])
        return {}

    monkeypatch.setattr(preflight, "embed_reference_photos", spy)
    config = {
        "score": {
            "model": "Dlib",
            "detector": "dlib",
            "metric": "cosine",
            "align": True,
            "deepface_home": str(tmp_path / "home"),
        },
        "subject": {"references": str(REFERENCE_DIR)},
    }
    preflight.check_reference_faces(config, None)
    assert seen["device"] == "cpu" and seen["env"] == ""
    # Snakemake's process starts the GPU jobs afterwards: they must see the GPU again.
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert (
        deepface_adapter.BACKEND_VAR not in os.environ
        and "DEEPFACE_ONNX_PROVIDERS" not in os.environ
    )


# ---- settings checked against deepface; one image detected and embedded


def test_embed_faces_matches_reference_embedding(settings, references):
    [embedding] = deepface_adapter.embed_faces(REFERENCES[0], settings)
    assert embedding.shape == (128,)
    assert np.array_equal(embedding, references[REFERENCES[0].name])


@pytest.mark.parametrize(
    "change", [{"model": "NoSuchNet"}, {"metric": "manhattan"}, {"detector": "skip"}]
)
def test_unknown_settings_raise_spec_error(settings, change):
    bad = FaceSettings(**{**asdict(settings), **change})
    with pytest.raises(SpecError, match=next(iter(change.values()))):
        deepface_adapter.embed_faces(REFERENCES[0], bad)
