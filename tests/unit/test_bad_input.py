"""Bad input: one clear error naming the file or key and the fix, before any job runs.

Each test is one case of the troubleshooting list in the README (issue #6).
"""

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamgrid import config as cfg
from dreamgrid import io, logs, preflight
from dreamgrid.errors import DreamgridError, NoFaceError, SpecError

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture
def subject(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "deepface"))
    monkeypatch.chdir(tmp_path)
    for folder in ("train", "references", "ground_truth"):
        shutil.copytree(DEMO / folder, tmp_path / folder)
    return tmp_path


def config_for(root: Path, **top):
    raw = {
        "subject": {
            "class_word": "man",
            "train_images": str(root / "train"),
            "references": str(root / "references"),
            "ground_truth": str(root / "ground_truth"),
        },
        "base_model": "tiny",
        "axes": {"token": {"rare": "ohwx"}, "regularization": ["none", "ground_truth"]},
        "training": {"resolution": 64},
    }
    raw.update(top)
    return cfg.validate(raw)


# ---- folders ----------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["train", "references", "ground_truth"])
def test_missing_folder_is_named(subject, folder):
    shutil.rmtree(subject / folder)
    with pytest.raises(SpecError, match=f"{folder}: not a directory"):
        preflight.run(config_for(subject))


@pytest.mark.parametrize("folder", ["train", "references", "ground_truth"])
def test_empty_folder_is_named(subject, folder):
    shutil.rmtree(subject / folder)
    (subject / folder).mkdir()
    (subject / folder / "notes.txt").write_text("not an image")
    with pytest.raises(SpecError, match=f"{folder}: no images"):
        preflight.run(config_for(subject))


def test_paths_with_spaces_and_unicode(subject):
    fancy = subject / "photos of Zoë é 写真"
    (subject / "train").rename(fancy)
    config = config_for(subject)
    config["subject"]["train_images"] = str(fancy)
    rows = preflight.run(config)
    assert any(str(fancy) in row["image"] for row in rows)


# ---- files --------------------------------------------------------------------------------
def test_not_an_image(subject):
    (subject / "train" / "cv.jpg").write_text("this is a text file")
    with pytest.raises(SpecError, match=r"cv\.jpg: cannot be read as an image"):
        preflight.run(config_for(subject))


def test_truncated_image(subject):
    data = (DEMO / "train" / "obama.jpg").read_bytes()
    (subject / "train" / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpecError, match=r"cut\.jpg"):
        preflight.run(config_for(subject))


@pytest.mark.parametrize("folder", ["train", "references", "ground_truth"])
def test_unsupported_image_types_are_all_named_not_skipped(subject, folder):
    for name in ("IMG_1.HEIC", "b.gif", "c.avif", "d.svg"):
        (subject / folder / name).write_bytes(b"not read")
    (subject / folder / "notes.txt").write_text("not an image: ignored")
    with pytest.raises(SpecError, match=f"{folder}: 4 image file") as err:
        preflight.run(config_for(subject))
    assert all(n in str(err.value) for n in ("IMG_1.HEIC", "b.gif", "c.avif", "d.svg"))


def test_hidden_files_are_ignored_everywhere(subject):
    # macOS leaves ._name resource forks beside copied photos; they are not photos.
    for folder in ("train", "references", "ground_truth"):
        (subject / folder / "._obama.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
        (subject / folder / ".hidden.png").write_bytes(b"")
    results = preflight.run(config_for(subject))
    checked = [Path(r["image"]).name for r in results]
    assert checked and not any(name.startswith(".") for name in checked)
    assert all(p.name[0] != "." for p in io.list_images(subject / "references"))


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16", "LA"])
def test_odd_image_modes_are_converted_not_rejected(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray((rng.integers(0, 65536, (16, 16))).astype(np.uint16))
        path = tmp_path / "deep.png"
    elif mode == "CMYK":
        image, path = rgb.convert("CMYK"), tmp_path / "print.jpg"
    else:
        image, path = rgb.convert(mode), tmp_path / f"img-{mode}.png"
    image.save(path)
    loaded = io.load_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (16, 16)
    if mode == "I;16":
        # scaled, not clipped to white
        assert 0 < np.asarray(loaded).mean() < 255


def test_sixteen_bit_keeps_contrast(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None, :].repeat(4, 0)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    values = np.asarray(io.load_rgb(tmp_path / "ramp.png"))[0, :, 0]
    assert values[0] == 0 and values[-1] == 255 and np.all(np.diff(values.astype(int)) >= 0)


def test_exif_rotated_photo_is_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise on display
    Image.new("RGB", (60, 20), "white").save(tmp_path / "r.jpg", exif=exif)
    assert io.load_rgb(tmp_path / "r.jpg").size == (20, 60)


def test_tiny_images_warn(subject, caplog):
    Image.new("RGB", (32, 32), "white").save(subject / "train" / "thumb.png")
    config = config_for(subject)
    config["training"]["resolution"] = 512
    with caplog.at_level("WARNING"):
        preflight.check_images(config["subject"]["train_images"], "train", 512)
    assert "thumb.png: 32x32 is smaller than the training resolution 512" in caplog.text


def test_reference_without_face(subject):
    Image.new("RGB", (300, 300), (90, 90, 90)).save(subject / "references" / "wall.png")
    with pytest.raises(NoFaceError, match="wall.png"):
        preflight.run(config_for(subject))


def test_reference_with_two_faces(subject):
    face = Image.open(DEMO / "references" / "obama_closeup.jpg").convert("RGB")
    pair = Image.new("RGB", (face.width * 2 + 40, face.height), "white")
    pair.paste(face, (0, 0))
    pair.paste(face, (face.width + 40, 0))
    pair.save(subject / "references" / "pair.jpg")
    with pytest.raises(SpecError, match="pair.jpg"):
        preflight.run(config_for(subject))


# ---- config -------------------------------------------------------------------------------
def test_unknown_key_suggests_the_right_one(subject):
    with pytest.raises(SpecError, match=r"unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        config_for(subject, training={"epoch": 3})


@pytest.mark.parametrize(
    ("section", "values", "where"),
    [
        ("training", {"epochs": -2}, "training.epochs"),
        ("training", {"epochs": "six"}, "training.epochs"),
        ("sample", {"cfg": 0}, "sample.cfg"),
        ("sample", {"count": 0}, "sample.count"),
        ("score", {"thresholds": [-0.1]}, "score.thresholds"),
    ],
)
def test_wrong_types_and_ranges(subject, section, values, where):
    with pytest.raises(SpecError, match=where.replace(".", r"\.")):
        config_for(subject, **{section: values})


def test_threshold_outside_the_metric_range(subject):
    with pytest.raises(SpecError, match=r"outside the range of angular distances"):
        config_for(subject, score={"metric": "angular", "thresholds": [0.6, 1.2]})


@pytest.mark.parametrize("token", ["", "   ", "oh\nwx", "oh\twx"])
def test_empty_or_multiline_token_refused(subject, token):
    with pytest.raises(SpecError, match=r"axes\.token\.rare"):
        config_for(subject, axes={"token": {"rare": token}})


@pytest.mark.parametrize("token", ['o"hwx', "o'neil", "a; rm -rf ~", "$(touch pwned)", "`id`"])
def test_shell_metacharacters_are_plain_text(subject, token):
    # Accepted: tokens reach prompts only through Python, never a shell (see next test).
    config = config_for(subject, axes={"token": {"rare": token}})
    assert cfg.expand_arms(config)[0].token == token
    assert cfg.expand_arms(config)[0].arm == "rare-noreg-nocap"


def test_no_rule_runs_a_shell_command():
    rules = Path(__file__).resolve().parents[2] / "workflow" / "rules"
    for smk in rules.glob("*.smk"):
        assert "shell:" not in smk.read_text(), smk


def test_duplicate_keys_in_the_config_file(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "subject: {class_word: man, train_images: a, references: b}\n"
        "base_model: tiny\n"
        "axes:\n  token:\n    rare: ohwx\n    rare: sks\n"
    )
    with pytest.raises(SpecError, match=r"dup\.yaml.*duplicate key 'rare'"):
        cfg.load(path)


def test_unsupported_axis_value(subject):
    with pytest.raises(SpecError, match=r"axes\.regularization"):
        config_for(subject, axes={"token": {"rare": "ohwx"}, "regularization": ["dropout"]})


@pytest.mark.parametrize(
    ("base_model", "message"),
    [
        ("./missing/folder", "no such folder"),
        ("weights.safetensors", "not found"),
        ("model.ckpt", "allow_pickle"),
    ],
)
def test_bad_base_model(subject, base_model, message):
    with pytest.raises(SpecError, match=message):
        preflight.run(config_for(subject, base_model=base_model))


def test_base_model_folder_that_is_not_diffusers(subject):
    (subject / "sd").mkdir()
    with pytest.raises(SpecError, match="model_index.json"):
        preflight.run(config_for(subject, base_model=str(subject / "sd")))


def test_pickle_allowed_only_by_explicit_opt_in(subject, monkeypatch):
    monkeypatch.setattr(preflight, "check_disk", lambda config: {})
    (subject / "model.ckpt").write_bytes(b"")
    config = config_for(subject, base_model=str(subject / "model.ckpt"), allow_pickle=True)
    preflight.run(config)


# ---- disk ---------------------------------------------------------------------------------
def test_disk_estimate_counts_only_missing_checkpoints(subject):
    config = cfg.load(Path(__file__).resolve().parents[2] / "config" / "experiment.yaml")
    estimate = preflight.estimate_disk(config, subject / "results")
    arms, epochs = len(cfg.expand_arms(config)), config["training"]["epochs"]
    full_model = (
        preflight.SD15_UNET_BYTES + preflight.SD15_TEXT_ENCODER_BYTES + preflight.SD15_VAE_BYTES
    ) // 2  # fp16 single files
    assert estimate["checkpoints"] == arms * epochs * full_model
    state = 3 * preflight.SD15_UNET_BYTES  # fp32 weights and two fp32 Adam moments
    assert estimate["resume_states"] == arms * state  # one per arm
    # Each rewrite writes the new state beside the old one before renaming it over.
    assert estimate["resume_state_rewrite"] == state
    eight_bit = {**config, "training": {**config["training"], "optimizer": "adamw8bit"}}
    assert preflight.estimate_disk(eight_bit, subject / "results")["resume_states"] == (
        arms * 3 * preflight.SD15_UNET_BYTES // 2  # 8-bit moments: 6 bytes a parameter, not 12
    )
    done = subject / "results" / "arms" / "rare-noreg-nocap" / "checkpoints" / "epoch-1.safetensors"
    done.parent.mkdir(parents=True)
    done.write_bytes(b"")
    after = preflight.estimate_disk(config, subject / "results")
    assert after["checkpoints"] == estimate["checkpoints"] - full_model


def test_disk_estimate_counts_the_renders_of_every_prompt_set(subject):
    config = copy.deepcopy(config_for(subject))
    config["sample"].update(count=8, width=64, height=64)
    alone = preflight.estimate_disk(config, subject / "results")["renders"]
    config["sample"]["prompt_sets"] = {"bleed": "a {class}", "painting": "a {token} {class}"}
    config["sample"]["prompt_sets_count"] = 4
    assert preflight.estimate_disk(config, subject / "results")["renders"] == alone * 2


def test_not_enough_disk_stops_with_the_estimate(subject, monkeypatch):
    import collections
    import shutil as shutil_module

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda _: usage(10**12, 10**12, 10**6))
    config = copy.deepcopy(config_for(subject))
    config["sample"]["count"] = 200
    with pytest.raises(SpecError, match=r"GB needed .* only 0\.0 GB free"):
        preflight.run(config)


# ---- faults -------------------------------------------------------------------------------
def test_out_of_memory_names_the_settings_to_change(tmp_path):
    class OutOfMemoryError(RuntimeError):  # the name torch.cuda.OutOfMemoryError has
        pass

    with (
        pytest.raises(DreamgridError, match="gradient_checkpointing"),
        logs.job(tmp_path / "job.log"),
    ):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "sample.batch_size" in (tmp_path / "job.log").read_text()


# ---- one clear message instead of a traceback -------------------------------------------
def test_a_decompression_bomb_is_named_with_its_size(subject, monkeypatch):
    from PIL import Image as PILImage

    # A 200-megapixel phone photo, scaled down: the limit is lowered instead of the file raised.
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    PILImage.new("RGB", (64, 64)).save(subject / "train" / "huge.jpg")
    with pytest.raises(SpecError, match=r"huge\.jpg: too large to open .*4096 pixels"):
        io.load_rgb(subject / "train" / "huge.jpg")


def test_a_non_utf8_candidate_list_is_named(tmp_path):
    from dreamgrid import candidates

    names = tmp_path / "names.txt"
    names.write_bytes("Zoë Saldaña\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"names\.txt: not UTF-8 text"):
        candidates.read_names(names)


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_deepface_home_that_cannot_hold_weights(tmp_path, kind):
    from dreamgrid.scoring import deepface_adapter

    home = tmp_path / "home"
    if kind == "file":
        home.write_text("not a folder")
    else:
        home.mkdir()
        home.chmod(0o500)
        if os.access(home, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is still writable")
    with pytest.raises(DreamgridError, match="DEEPFACE_HOME .*cannot hold DeepFace's weights"):
        deepface_adapter.setup_deepface(home)


def test_results_that_is_a_file(subject):
    (subject / "results").write_text("mine")
    with pytest.raises(SpecError, match="results: is a file"):
        preflight.run(config_for(subject))
    assert (subject / "results").read_text() == "mine"


def test_braces_in_a_path_and_tilde_expansion(subject, monkeypatch):
    monkeypatch.setenv("HOME", str(subject))
    raw = config_for(subject)
    raw["subject"]["train_images"] = "~/train"
    config = cfg.validate(raw)
    assert config["subject"]["train_images"] == str(subject / "train")
    raw["subject"]["references"] = str(subject / "{refs}")
    with pytest.raises(SpecError, match=r"subject.references .* contains \{ or \}"):
        cfg.validate(raw)


# ---- refused by the check, not by a job hours later ---------------------------------------
@pytest.mark.parametrize(
    ("section", "values", "where"),
    [
        ("training", {"seed": -1}, "training.seed"),
        ("training", {"adam_beta1": 5}, "training.adam_beta1"),
        ("training", {"adam_epsilon": 0}, "training.adam_epsilon"),
        ("training", {"adam_weight_decay": -0.1}, "training.adam_weight_decay"),
        ("caption", {"seed": 2**40}, "caption.seed"),
    ],
)
def test_optimizer_and_seed_ranges(subject, section, values, where):
    with pytest.raises(SpecError, match=where):
        config_for(subject, **{section: {**({"resolution": 64} if section == "training" else {}),
                                         **values}})  # fmt: skip


@pytest.mark.parametrize(
    ("score", "message"),
    [
        ({"models": ["Facenet521"]}, r"score.models: 'Facenet521' .*did you mean 'Facenet512'"),
        ({"model": "vgg-face"}, r"score.model: 'vgg-face' .*did you mean 'VGG-Face'"),
        ({"detector": "retina"}, r"score.detector: 'retina' is not a DeepFace name"),
    ],
)
def test_face_model_and_detector_names(subject, score, message):
    with pytest.raises(SpecError, match=message):
        config_for(subject, score=score)


def test_ground_truth_photos_that_share_a_name(subject):
    Image.new("RGB", (64, 64), "gray").save(subject / "ground_truth" / "biden.png")
    with pytest.raises(SpecError, match=r"biden\.(jpg|png) and .*biden\.(jpg|png)"):
        preflight.run(config_for(subject))


def test_a_lora_file_given_as_base_model(subject):
    import torch
    from safetensors.torch import save_file

    lora = subject / "person.safetensors"
    save_file(
        {
            "lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 32),
            "lora_unet_down_blocks_0_attn1_to_q.lora_up.weight": torch.zeros(32, 4),
            "lora_unet_down_blocks_0_attn1_to_q.alpha": torch.tensor(4.0),
        },
        str(lora),
    )
    with pytest.raises(SpecError, match="a LoRA adapter, not a full model"):
        preflight.run(config_for(subject, base_model=str(lora)))
