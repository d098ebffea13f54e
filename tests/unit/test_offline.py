"""Weights prepared once, jobs offline: DeepFace's weights fetched through HF_ENDPOINT from a
stand-in hub on 127.0.0.1, and a job without them stopped with the prepare step's name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubserver import DEEPFACE_REPO, serve, stand_in_onnx

from dreamgrid import offline
from dreamgrid.scoring import deepface_adapter

WORKFLOW = Path(__file__).resolve().parents[2] / "workflow"


def test_switches_and_mirrored_urls():
    env = {}
    assert not offline.is_on(env)
    offline.switch_on(env)
    assert offline.is_on(env) and env["HF_HUB_OFFLINE"] == "1"
    urls = [
        "https://github.com/a/v.onnx",
        "https://huggingface.co/serengil/deepface/resolve/main/v.onnx",
    ]
    assert offline.mirrored(urls, {}) == urls
    moved = offline.mirrored(urls, {"HF_ENDPOINT": "http://127.0.0.1:9/"})
    assert moved == ["http://127.0.0.1:9/serengil/deepface/resolve/main/v.onnx", *urls]


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, as a job runs (deepface keeps built models)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _prepare(home: Path, model: str, detector: str, env: dict) -> subprocess.CompletedProcess:
    """prepare_face_weights in its own process, as the prepare rule's job runs it."""
    args = f"{model!r}, {detector!r}, {str(home)!r}"
    code = (
        "from dreamgrid.scoring import deepface_adapter\n"
        f"deepface_adapter.prepare_face_weights({args})\n"
    )
    return _python(code, env)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPFACE_HOME", *offline.SWITCHES)}
    env.update(PYTHONPATH=str(WORKFLOW), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1")
    env.update(extra)
    return env


def test_prepare_fetches_the_study_pair_through_hf_endpoint_once(tmp_path):
    stand_in = stand_in_onnx()
    with serve(tmp_path / "hub") as hub:
        for name in ("vgg_face_weights.onnx", "retinaface.onnx"):
            hub.add(DEEPFACE_REPO, name, stand_in)
        home = tmp_path / "home"
        result = _prepare(home, "VGG-Face", "retinaface", _env(HF_ENDPOINT=hub.url))
        assert result.returncode == 0, result.stderr[-3000:]
        weights = home / ".deepface" / "weights"
        for name in ("vgg_face_weights.onnx", "retinaface.onnx"):
            assert (weights / name).read_bytes() == stand_in
            assert ("GET", f"/{DEEPFACE_REPO}/resolve/main/{name}") in hub.requests
        record = json.loads(offline.face_record(home, "VGG-Face", "retinaface").read_text())
        assert set(record["files"]) == {"vgg_face_weights.onnx", "retinaface.onnx"}
        assert deepface_adapter.face_weights_problem("VGG-Face", "retinaface", home) is None

        # Prepared once: a second run finds the files and asks the server nothing.
        asked = len(hub.requests)
        result = _prepare(home, "VGG-Face", "retinaface", _env(HF_ENDPOINT=hub.url))
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(hub.requests) == asked


def test_record_home_inverts_face_record(tmp_path):
    assert offline.record_home(offline.face_record(tmp_path / "h", "VGG-Face", "dlib")) == (
        tmp_path / "h"
    )


def test_a_missing_weight_file_is_named(tmp_path):
    home = tmp_path / "home"
    record = offline.face_record(home, "ArcFace", "dlib")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"files": {"arcface_weights.onnx": 1}}))
    problem = deepface_adapter.face_weights_problem("ArcFace", "dlib", home)
    assert "arcface_weights.onnx" in problem and "ArcFace" in problem
    assert "never prepared" in deepface_adapter.face_weights_problem("VGG-Face", "dlib", home)


def test_an_offline_job_without_weights_fails_at_once_naming_model_and_rule(tmp_path):
    """A scoring job (offline switches on) never reaches the network: the missing weights stop
    it with the model and the prepare step, before deepface tries a download."""
    code = (
        "from dreamgrid.scoring import deepface_adapter\n"
        "from dreamgrid.scoring.settings import EmbedSettings\n"
        f"deepface_adapter.setup_deepface({str(tmp_path / 'home')!r})\n"
        "deepface_adapter.detect_and_embed('x.png', EmbedSettings('VGG-Face', 'dlib', True))\n"
    )
    with serve(tmp_path / "hub") as hub:
        hub.add(DEEPFACE_REPO, "vgg_face_weights.onnx", stand_in_onnx())
        env = _env(HF_ENDPOINT=hub.url, **offline.SWITCHES)
        result = _python(code, env)
    assert result.returncode != 0
    assert "DreamgridError" in result.stderr
    assert "VGG-Face" in result.stderr and "prepare_face_models" in result.stderr
    assert hub.requests == []


def test_offline_deepface_refuses_a_download_with_the_prepare_step(tmp_path):
    """The last guard: a weight file a model asks for that is not there is refused by
    deepface's own download function, in an offline process."""
    code = (
        "from dreamgrid.scoring import deepface_adapter\n"
        f"deepface_adapter.setup_deepface({str(tmp_path / 'home')!r})\n"
        "deepface_adapter._deepface()\n"
        "from deepface.models.facial_recognition.onnx import VGGFace\n"
        "VGGFace.load_model()\n"
    )
    result = _python(code, _env(**offline.SWITCHES))
    assert result.returncode != 0
    assert "DeepFace needs vgg_face_weights.onnx" in result.stderr
    assert "prepare_face_models" in result.stderr


def test_dlib_weights_still_come_from_the_wheel(tmp_path):
    """The demo's pair needs no network at all: its files are copied from
    face-recognition-models, and the record lists them."""
    result = _prepare(tmp_path / "home", "Dlib", "dlib", _env(HF_ENDPOINT="http://127.0.0.1:9"))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(offline.face_record(tmp_path / "home", "Dlib", "dlib").read_text())
    assert set(record["files"]) == set(deepface_adapter.DLIB_WEIGHTS)
    assert deepface_adapter.face_weights_problem("Dlib", "dlib", tmp_path / "home") is None


@pytest.mark.parametrize("value", ["1", "true", "ON"])
def test_any_switch_counts(value):
    assert offline.is_on({"TRANSFORMERS_OFFLINE": value})


def _study(**caption) -> dict:
    from dreamgrid import config as cfg

    return cfg.validate(
        {
            "subject": {"class_word": "woman", "train_images": "photos", "references": "refs"},
            "base_model": "org/sd-model",
            "axes": {"token": {"rare": "ohwx"}, "regularization": ["none"], "captions": ["blip"]},
            "caption": {"model": "org/blip", **caption},
            "score": {"model": "VGG-Face", "detector": "retinaface", "clip_model": "org/clip"},
        }
    )


def test_preflight_lists_what_the_local_rules_will_download(tmp_path, monkeypatch):
    from dreamgrid import preflight

    monkeypatch.chdir(tmp_path)
    for name in offline.SWITCHES:
        monkeypatch.delenv(name, raising=False)
    fetched = preflight.check_models(_study())
    assert fetched == [
        "base_model org/sd-model (prepare_base_model)",
        "caption.model org/blip (prepare_caption_model)",
        "score.clip_model org/clip (prepare_clip_model)",
        "DeepFace VGG-Face/retinaface (prepare_face_models)",
    ]
    # Prepared already: nothing to fetch, offline or not.
    for folder in ("base", "captioner", "clip"):
        (tmp_path / "results" / "models" / folder).mkdir(parents=True)
    record = offline.face_record("results/models/deepface", "VGG-Face", "retinaface")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"files": {}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert preflight.check_models(_study()) == []


def test_an_offline_node_with_a_model_missing_stops_the_preflight(tmp_path, monkeypatch):
    from dreamgrid import preflight
    from dreamgrid.errors import SpecError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = _study(backend="lavis", lavis_python="/venv/bin/python")
    with pytest.raises(SpecError) as err:
        preflight.check_models(config)
    message = str(err.value)
    for part in (
        "HF_HUB_OFFLINE set",
        "prepare_base_model",
        "prepare_lavis_model",
        "prepare_clip_model",
        "VGG-Face",
        "prepare_face_models",
        "dreamgrid fetch",
    ):
        assert part in message, part  # fmt: skip
    assert "prepare_caption_model" not in message  # the LAVIS backend needs no BLIP folder
