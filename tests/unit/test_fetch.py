"""`dreamgrid fetch` against a stand-in hub on 127.0.0.1 (reached through HF_ENDPOINT), then
`dreamgrid check` on its folder with the network switched off."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubserver import DEEPFACE_REPO, serve, stand_in_onnx

from dreamgrid import offline, tiny
from dreamgrid.scoring import deepface_adapter

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **changes) -> Path:
    """The demo config with absolute photo paths, a hub id as base model and VGG-Face scored
    beside Dlib."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key in ("train_images", "references", "ground_truth", "caption_overrides"):
        config["subject"][key] = str(ROOT / config["subject"][key])
    config["token_finder"]["candidates"] = str(ROOT / config["token_finder"]["candidates"])
    config["base_model"] = "tiny-org/tiny-sd"
    config["score"]["models"] = ["VGG-Face"]
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _dreamgrid(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("DEEPFACE_HOME", *offline.SWITCHES)}
    environ.update(PYTHONPATH=str(ROOT / "workflow"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    environ.update(HF_HOME=str(cwd / "hf-cache"), **env)
    return subprocess.run(
        [sys.executable, "-m", "dreamgrid", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_fetch_fills_one_folder_and_check_passes_on_it_offline(tmp_path):
    with serve(tmp_path / "hub") as hub:
        tiny.build_tiny_sd(tmp_path / "hub" / "tiny-org" / "tiny-sd")
        hub.add(DEEPFACE_REPO, "vgg_face_weights.onnx", stand_in_onnx())
        config = _config(tmp_path)
        online = tmp_path / "online"
        online.mkdir()
        result = _dreamgrid(["fetch", str(config), "--to", "models"], online, HF_ENDPOINT=hub.url)
        assert result.returncode == 0, (hub.requests, result.stderr[-4000:])
        assert any(path.startswith("/tiny-org/tiny-sd/") for _, path in hub.requests)

    values = yaml.safe_load(result.stdout)
    fetched = online / "models"
    assert values == {
        "base_model": str(fetched / "base"),
        "score": {"deepface_home": str(fetched / "deepface")},
    }
    assert (fetched / "base" / "model_index.json").is_file()
    assert (fetched / "base" / "unet").is_dir()
    for model in ("Dlib", "VGG-Face"):
        assert deepface_adapter.face_weights_problem(model, "dlib", fetched / "deepface") is None

    # The machine without network: no hub at all, the switches on, an empty cache.
    airgapped = tmp_path / "airgapped"
    airgapped.mkdir()
    down = {"HF_ENDPOINT": "http://127.0.0.1:9", **offline.SWITCHES}
    check = _dreamgrid(
        ["check", str(_config(tmp_path, **{"base_model": values["base_model"],
                                             "score.deepface_home": str(fetched / "deepface")}))],
        airgapped,
        **down,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-4000:]
    assert "valid" in check.stdout

    # The same config as fetched, not pointed at the folder: stopped, naming what to do.
    check = _dreamgrid(["check", str(config)], airgapped, **down)
    assert check.returncode != 0
    assert "prepare_base_model" in check.stderr and "dreamgrid fetch" in check.stderr
    assert "VGG-Face" in check.stderr and "prepare_face_models" in check.stderr


def test_fetch_refuses_to_run_offline(tmp_path):
    result = _dreamgrid(["fetch", str(_config(tmp_path))], tmp_path, **offline.SWITCHES)
    assert result.returncode == 2
    assert "offline switches" in result.stderr
