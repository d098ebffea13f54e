"""Every download once, on the submitting node, before any job; every job offline.

The prepare rule fetches DeepFace's weights from a stand-in hub on 127.0.0.1 (through
HF_ENDPOINT); scoring jobs then run with the network switched off (no socket can leave the
machine, the hub's switches set); and a run that lacks a weight on an offline node stops
before its first job, naming the model and the prepare step.
"""

import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow, snakemake

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubserver import DEEPFACE_REPO, serve, stand_in_onnx

from dreamgrid import offline

pytestmark = pytest.mark.slow

HOME = "results/models/deepface"
SWITCHES_OFF = {name: None for name in offline.SWITCHES}

#: On PYTHONPATH of every process of the run: an internet socket cannot connect.
NO_NETWORK = """
import socket

_connect = socket.socket.connect


def _refuse(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"network switched off by the test (connect to {address})")
    return _connect(self, address)


socket.socket.connect = _refuse
"""


def _edit(work: Path, **score) -> None:
    path = work / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["score"].update(score)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _network_off(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "no-network"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    return {"PYTHONPATH": str(site), **offline.SWITCHES}


def test_prepare_rule_fetches_then_scoring_jobs_run_with_the_network_off(tmp_path):
    work = copy_workflow(tmp_path / "run")
    _edit(work, models=["VGG-Face"])  # Dlib (from its wheel) first, VGG-Face from the hub
    record = f"{HOME}/.deepface/prepared/VGG-Face-dlib.json"
    with serve(tmp_path / "hub") as hub:
        hub.add(DEEPFACE_REPO, "vgg_face_weights.onnx", stand_in_onnx())
        env = {"HF_ENDPOINT": hub.url, "NO_PROXY": "127.0.0.1", **SWITCHES_OFF}
        result = snakemake(work, "--cores", "2", record, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "localrule prepare_face_models:" in result.stdout + result.stderr
    assert ("GET", f"/{DEEPFACE_REPO}/resolve/main/vgg_face_weights.onnx") in hub.requests
    weights = work / HOME / ".deepface" / "weights"
    assert (weights / "vgg_face_weights.onnx").read_bytes() == stand_in_onnx()
    assert not (work / "resources" / "deepface").exists()  # never inside the checkout

    # The scoring jobs of the Dlib pair, network off for the whole run.
    targets = ["results/references/Dlib-dlib.json", "results/references/Dlib-dlib.baseline.csv"]
    result = snakemake(work, "--cores", "2", *targets, timeout=900, env=_network_off(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    assert "network switched off" not in output
    assert (work / HOME / ".deepface/prepared/Dlib-dlib.json").is_file()  # from its wheel
    assert (work / "results/references/Dlib-dlib.json").is_file()
    log = (work / "results/logs/embed_references/Dlib-dlib.log").read_text()
    assert "offline: HF_HUB_OFFLINE=1" in log


def test_a_missing_weight_on_an_offline_node_stops_the_run_before_any_job(tmp_path):
    work = copy_workflow(tmp_path)
    _edit(work, model="VGG-Face", thresholds=[0.6, 0.7])
    result = snakemake(work, "--cores", "2", timeout=300, env=_network_off(tmp_path))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "DeepFace model VGG-Face with detector dlib was never prepared" in output
    assert "prepare_face_models" in output and "dreamgrid fetch" in output
    assert not (work / "results" / "models" / "base").exists()
    assert not (work / "results" / "logs").exists()


def test_the_demo_prepares_its_face_models_once_and_scores_offline(demo_run):
    record = demo_run / HOME / ".deepface" / "prepared" / "Dlib-dlib.json"
    assert record.is_file()
    assert (demo_run / "results/logs/prepare_face_models/Dlib-dlib.log").is_file()
    logs = sorted((demo_run / "results/logs/embed_renders").rglob("*.log"))
    assert logs
    for log in logs:
        assert "offline: HF_HUB_OFFLINE=1" in log.read_text(), log
    assert not (demo_run / "resources" / "deepface").exists()
