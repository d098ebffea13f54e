import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from dreamgrid import config as cfg
from dreamgrid import preflight
from dreamgrid.errors import NoFaceError, SpecError

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture
def subject(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "deepface"))
    for folder in ("train", "references", "ground_truth"):
        shutil.copytree(DEMO / folder, tmp_path / folder)
    return tmp_path


def make_config(root: Path, **subject):
    return cfg.validate(
        {
            "subject": {
                "class_word": "man",
                "train_images": str(root / "train"),
                "references": str(root / "references"),
                "ground_truth": str(root / "ground_truth"),
                **subject,
            },
            "base_model": "tiny",
            "axes": {"token": {"rare": "ohwx"}, "regularization": ["ground_truth"]},
            "training": {"resolution": 64},
        }
    )


def test_good_inputs_pass_and_the_face_check_is_cached(subject):
    cache = subject / "cache.json"
    rows = preflight.run(make_config(subject), cache)
    roles = {row["role"] for row in rows}
    assert roles == {"train", "reference", "ground_truth"}
    assert cache.is_file()
    before = cache.stat().st_mtime_ns
    preflight.run(make_config(subject), cache)
    assert cache.stat().st_mtime_ns == before


def test_broken_training_image_is_named(subject):
    (subject / "train" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(SpecError, match="broken.jpg"):
        preflight.run(make_config(subject))


def test_empty_reference_folder(subject):
    shutil.rmtree(subject / "references")
    (subject / "references").mkdir()
    with pytest.raises(SpecError, match="no images"):
        preflight.run(make_config(subject))


def test_reference_without_a_face_is_refused_and_cache_not_written(subject):
    Image.new("RGB", (200, 200), (120, 120, 120)).save(subject / "references" / "gray.png")
    cache = subject / "cache.json"
    with pytest.raises(NoFaceError, match="gray.png"):
        preflight.run(make_config(subject), cache)
    assert not cache.exists()


def test_pickled_base_model_is_refused_before_any_job(subject):
    config = make_config(subject)
    config["base_model"] = str(subject / "model.ckpt")
    with pytest.raises(SpecError, match="pickled"):
        preflight.run(config)


def test_missing_caption_override_folder(subject):
    with pytest.raises(SpecError, match="captions"):
        preflight.run(make_config(subject, caption_overrides=str(subject / "captions")))


def spec_config(root: Path, **sections):
    config = {
        "subject": {
            "class_word": "man",
            "train_images": str(root / "train"),
            "references": str(root / "references"),
        },
        "base_model": "tiny",
        "axes": {"token": {"rare": "ohwx"}, "method": ["full", "lora"]},
        "training": {"resolution": 64, "epochs": 2},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return cfg.validate(config)


def test_every_training_and_sampling_spec_is_built(tmp_path):
    config = spec_config(tmp_path, sample={"count": 6, "shard_size": 2, "batch_size": 1})
    # 2 arms x 2 epochs training specs + 3 shards of the main prompt set.
    assert preflight.check_specs(config, tmp_path / "results") == 2 * 2 + 3


def test_a_spec_level_conflict_names_the_config_key(tmp_path):
    # The schema lets text_encoder_lr through; only the TrainSpec knows it needs the encoder.
    config = spec_config(tmp_path, training={"text_encoder_lr": 1e-5})
    with pytest.raises(SpecError, match=r"config key training.text_encoder_lr \(arm rare-noreg"):
        preflight.check_specs(config, tmp_path / "results")


def test_a_lora_target_typo_fails_before_any_job(tmp_path):
    config = spec_config(tmp_path, lora={"target_modules": ["to_k", "to_qq"]})
    with pytest.raises(SpecError, match=r"lora.target_modules: 'to_qq' \(did you mean to_q"):
        preflight.check_specs(config, tmp_path / "results")


def test_lora_targets_of_a_hub_model_wait_for_prepare_base_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = spec_config(tmp_path, lora={"target_modules": ["to_qq"]})
    config["base_model"] = "org/model"
    assert preflight.check_lora_targets(config, "results") is False
    # Once converted, the prepared folder's UNet config is checked.
    unet = tmp_path / "results" / "models" / "base" / "unet"
    unet.mkdir(parents=True)
    from dreamgrid import tiny

    (unet / "config.json").write_text(
        json.dumps({"_class_name": "UNet2DConditionModel", **tiny.TINY_UNET})
    )
    with pytest.raises(SpecError, match="to_qq"):
        preflight.check_lora_targets(config, "results")
