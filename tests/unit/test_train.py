"""Train stage on the tiny random SD pipeline (CPU): step counts, data, spec, resume, determinism."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from dreamgrid.errors import SpecError
from dreamgrid.train.data import epoch_batches, instance_items, preprocess, steps_per_epoch
from dreamgrid.train.export import read_metadata
from dreamgrid.train.spec import TrainSpec
from dreamgrid.train.testing import tiny_train_spec

REPO = Path(__file__).resolve().parents[2]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from dreamgrid.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("model") / "tiny-sd")


def write_images(folder: Path, names: list[str], seed: int, size=(80, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    instance = write_images(root / "instance", ["a.png", "b.png", "c.png"], seed=1)
    reg = write_images(root / "reg", ["r1.png", "r2.png"], seed=2)
    return {"root": root, "instance": instance, "reg": reg}


def make_spec(tiny_model: Path, data: dict[str, Path], out: Path, **changes) -> TrainSpec:
    return tiny_train_spec(tiny_model, data["instance"], out, **changes)


def next_epoch(spec: TrainSpec, out: Path, state: Path | None = None) -> TrainSpec:
    """The arm's next epoch, writing into ``out`` (resume state ``state``, default the same)."""
    e = spec.epoch + 1
    return dataclasses.replace(
        spec,
        epoch=e,
        previous_meta=spec.out_checkpoint.with_suffix(".json"),
        state=state or spec.state,
        out_checkpoint=out / f"epoch-{e}.safetensors",
    )


def copy_state(spec: TrainSpec, out: Path) -> Path:
    """A private copy of the arm's resume state (so two branches can continue from it)."""
    out.mkdir(parents=True, exist_ok=True)
    copy = out / "resume.safetensors"
    copy.write_bytes(spec.state.read_bytes())
    return copy


def unet_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    prefix = "model.diffusion_model."
    return {k[len(prefix) :]: v for k, v in load_file(str(checkpoint)).items() if prefix in k}


@pytest.fixture(scope="module")
def epoch1(tiny_model, data, tmp_path_factory):
    from dreamgrid.train import run

    spec = make_spec(tiny_model, data, tmp_path_factory.mktemp("run1"))
    return spec, run(spec)


# --- step accounting ------------------------------------------------------------------------


def test_steps_per_epoch_kohya_numbers():
    assert steps_per_epoch(25, 25, 1, regularization=False) == 625
    assert steps_per_epoch(25, 25, 1, regularization=True) == 1250
    assert steps_per_epoch(3, 1, 2, regularization=False) == 2  # ceil(3 / 2)
    assert steps_per_epoch(3, 2, 4, regularization=True) == 3  # ceil(12 / 4)
    with pytest.raises(SpecError, match="batch_size"):
        steps_per_epoch(3, 1, 0, regularization=False)
    # diffusers' prior preservation: class images share the batch, no extra steps.
    assert steps_per_epoch(25, 25, 1, regularization=True, reg_mode="paired") == 625
    # match_steps: a no-reg arm runs its data twice per epoch, as many steps as a reg arm.
    assert steps_per_epoch(25, 25, 1, regularization=False, passes=2) == 1250
    assert steps_per_epoch(3, 1, 2, regularization=False, passes=2) == 4  # 2 x ceil(3 / 2)


# --- data -----------------------------------------------------------------------------------


def epoch_items(spec: TrainSpec) -> list:
    """The epoch's items in training order (its batches laid end to end)."""
    return [item for batch in epoch_batches(spec) for item in batch]


def test_items_without_and_with_regularization(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, repeats=2)
    items = epoch_items(spec)
    assert len(items) == 6
    assert {i.caption for i in items} == {"ohwx woman"}
    assert all(i.weight == 1.0 and not i.is_reg for i in items)

    reg = dataclasses.replace(spec, reg_dir=data["reg"], prior_loss_weight=0.5)
    items = epoch_items(reg)
    assert len(items) == 12
    class_items = [i for i in items if i.is_reg]
    assert len(class_items) == 6
    assert {i.caption for i in class_items} == {"woman"}
    assert {i.weight for i in class_items} == {0.5}
    assert sorted(i.image.name for i in class_items) == ["r1.png"] * 3 + ["r2.png"] * 3


def test_order_is_seeded_per_epoch(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, repeats=4)
    names = [i.image.name for i in epoch_items(spec)]
    assert names == [i.image.name for i in epoch_items(spec)]
    later = dataclasses.replace(spec, epoch=2, previous_meta=tmp_path / "x.json")
    assert names != [i.image.name for i in epoch_items(later)]
    assert sorted(names) == sorted(i.image.name for i in epoch_items(later))


def write_captions(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["image,caption"] + [f'{name},"{caption}"' for name, caption in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_paired_mode_puts_instance_then_class_items_in_each_batch(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, reg_dir=data["reg"], reg_mode="paired")
    batches = epoch_batches(spec)  # 3 instance items, batch 2 -> batches [i i c c], [i c]
    assert [[item.is_reg for item in b] for b in batches] == [[0, 0, 1, 1], [0, 1]]
    items = [item for batch in batches for item in batch]
    assert sorted(i.image.name for i in items if not i.is_reg) == ["a.png", "b.png", "c.png"]
    assert all(i.weight == spec.prior_loss_weight for i in items if i.is_reg)


def test_two_passes_shuffle_each_pass_and_keep_the_first(tiny_model, data, tmp_path):
    one = epoch_items(make_spec(tiny_model, data, tmp_path, repeats=4))
    two = epoch_items(make_spec(tiny_model, data, tmp_path, repeats=4, passes=2))
    assert len(two) == 2 * len(one) and two[: len(one)] == one
    assert sorted(i.image for i in two[len(one) :]) == sorted(i.image for i in one)
    assert two[len(one) :] != one  # the second pass is shuffled anew


def test_captions_are_composed_with_token_and_class(tiny_model, data, tmp_path):
    csv = write_captions(
        tmp_path / "captions.csv",
        [
            ("a.png", "a photo of a person, smiling"),
            ("b.png", "ohwx woman in a red coat"),
            ("c.png", ""),
        ],
    )
    spec = make_spec(tiny_model, data, tmp_path, captions=csv)
    captions = {i.image.name: i.caption for i in instance_items(spec)}
    assert captions == {
        "a.png": "ohwx woman, a photo of a person, smiling",
        "b.png": "ohwx woman in a red coat",
        "c.png": "ohwx woman",
    }


def test_every_caption_passes_the_guard_naming_the_image(tiny_model, data, tmp_path, monkeypatch):
    # compose_caption always adds "<token> <class>", so the guard is a safety net: bypass the
    # composition (as a hand-edited caption used verbatim would) and the job must fail.
    import dreamgrid.train.data as data_module

    csv = write_captions(
        tmp_path / "captions.csv",
        [("a.png", "ohwx woman"), ("b.png", "a woman at the beach"), ("c.png", "")],
    )
    spec = make_spec(tiny_model, data, tmp_path, captions=csv)
    assert len(instance_items(spec)) == 3
    monkeypatch.setattr(data_module, "compose_caption", lambda raw, token, cls: raw or "")
    with pytest.raises(SpecError, match=r"b\.png.*lacks 'ohwx'"):
        instance_items(spec)


def test_captions_csv_errors_name_the_image(tiny_model, data, tmp_path):
    missing = write_captions(tmp_path / "missing.csv", [("a.png", "x"), ("b.png", "y")])
    spec = make_spec(tiny_model, data, tmp_path, captions=missing)
    with pytest.raises(SpecError, match=r"c\.png"):
        instance_items(spec)
    extra = write_captions(
        tmp_path / "extra.csv", [("a.png", ""), ("b.png", ""), ("c.png", ""), ("zz.png", "")]
    )
    with pytest.raises(SpecError, match=r"zz\.png"):
        instance_items(dataclasses.replace(spec, captions=extra))
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.png,x\n")
    with pytest.raises(SpecError, match="columns"):
        instance_items(dataclasses.replace(spec, captions=bad))


def test_preprocess_resizes_center_crops_and_normalizes(tmp_path):
    image = np.zeros((40, 80, 3), dtype=np.uint8)  # wide: 80 x 40
    image[:, 20:60] = 255  # white centre band, exactly what the crop keeps
    Image.fromarray(image).save(tmp_path / "wide.png")
    pixels = preprocess(tmp_path / "wide.png", (32, 32))
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert pixels[:, :, 4:28].min() > 0.9  # the centre band survived the crop


# --- spec -----------------------------------------------------------------------------------


def test_spec_json_round_trip(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path, reg_dir=data["reg"])
    text = spec.to_json()
    assert TrainSpec.from_json(text) == spec
    assert isinstance(TrainSpec.from_json(text).base_model, Path)
    (tmp_path / "spec.json").write_text(text)
    assert TrainSpec.read(tmp_path / "spec.json") == spec
    broken = json.loads(text)
    del broken["seed"]
    broken["sed"] = 1
    with pytest.raises(SpecError, match=r"unknown keys \['sed'\].*missing keys \['seed'\]"):
        TrainSpec.from_json(json.dumps(broken))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epoch": 0}, "epoch must be >= 1"),
        ({"previous_meta": "x.json"}, "epoch 1 starts from the base model"),
        ({"repeats": 0}, "repeats"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"save_precision": "fp8"}, "save_precision"),
        ({"lr_scheduler": "cosine"}, "lr_scheduler"),
        ({"resolution": 60}, "resolution"),
        ({"adam_beta2": 1.0}, "adam_beta2"),
        ({"arm": "Has Spaces"}, "arm id"),
        ({"repeats": 1.5}, "repeats must be an integer"),
        ({"state": "state.pt"}, r"\.safetensors"),
        ({"reg_mode": "mixed"}, "reg_mode"),
        ({"passes": 0}, "passes"),
        ({"method": "lora"}, "method lora needs lora_rank"),
        ({"lora_rank": 4}, "leave them null"),
        ({"text_encoder_lr": 1e-5}, "need train_text_encoder"),
        ({"method": "dora"}, "method must be one of"),
    ],
)
def test_spec_rejects_conflicts(tiny_model, data, tmp_path, changes, message):
    with pytest.raises(SpecError, match=message):
        make_spec(tiny_model, data, tmp_path, **changes)


def test_fingerprint_follows_settings_not_locations(tiny_model, data, tmp_path):
    spec = make_spec(tiny_model, data, tmp_path)
    moved = next_epoch(spec, tmp_path / "elsewhere", state=tmp_path / "other.safetensors")
    assert moved.fingerprint() == spec.fingerprint()
    assert dataclasses.replace(spec, learning_rate=2e-3).fingerprint() != spec.fingerprint()
    assert dataclasses.replace(spec, save_precision="fp32").fingerprint() != spec.fingerprint()


# --- training -------------------------------------------------------------------------------


def test_epoch1_writes_sd_checkpoint_state_and_loss_log(epoch1, tiny_model):
    spec, result = epoch1
    assert result["steps"] == result["steps_per_epoch"] == steps_per_epoch(3, 1, 2, False) == 2
    assert result["replayed"] == 0
    meta = read_metadata(spec.out_checkpoint)
    assert meta["steps"] == 2 and meta["epoch"] == 1 and meta["arm"] == spec.arm
    assert meta["steps_per_epoch"] == 2 and meta["save_precision"] == "fp16"
    assert meta["train_images"] == 3 and meta["reg_images"] == 0 and not meta["regularization"]
    assert json.loads(spec.out_checkpoint.with_suffix(".json").read_text()) == meta
    rows = result["loss_log"].read_text().splitlines()
    assert rows[0] == "step,epoch,loss,lr" and len(rows) == 3
    assert np.isfinite(meta["mean_loss"])

    # A full model in the original SD layout, fp16: UNet, VAE and text encoder.
    tensors = load_file(str(spec.out_checkpoint))
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert {v.dtype for v in tensors.values()} == {torch.float16}
    # The exported UNet is the trained one (the state's full-precision weights, rounded).
    with safe_open(str(spec.state), framework="pt") as handle:
        conv_out = handle.get_tensor("weights.unet.conv_out.weight")
    assert torch.equal(tensors["model.diffusion_model.out.2.weight"], conv_out.half())
    base = load_file(str(tiny_model / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(base["conv_out.weight"].half(), conv_out.half())


def test_resume_state_is_one_safetensors_file_per_arm(epoch1):
    spec, _ = epoch1
    assert [p.name for p in spec.state.parent.iterdir()] == ["resume.safetensors"]
    assert spec.state.read_bytes()[:2] != b"\x80\x04"  # no pickle protocol header
    with safe_open(str(spec.state), framework="pt") as handle:
        header = handle.metadata()
        keys = list(handle.keys())
        dtypes = {handle.get_tensor(k).dtype for k in keys if k.startswith("weights.")}
    assert header["format"] == "dreamgrid-resume-v2"
    assert header["epoch"] == "1" and header["steps"] == "2"
    assert header["fingerprint"] == spec.fingerprint()
    assert json.loads(header["param_groups"])[0]["lr"] == spec.learning_rate
    assert {"optimizer.0.exp_avg", "optimizer.0.exp_avg_sq", "optimizer.0.step"} <= set(keys)
    assert dtypes == {torch.float32}  # full precision, unlike the fp16 checkpoint


def test_epoch2_continues_and_is_deterministic_across_processes(epoch1, tmp_path):
    from dreamgrid.train import run

    spec1, _ = epoch1
    in_process = next_epoch(spec1, tmp_path / "a", state=copy_state(spec1, tmp_path / "sa"))
    result = run(in_process)
    assert result["steps"] == 2 * result["steps_per_epoch"] == 4 and result["replayed"] == 0
    assert read_metadata(in_process.out_checkpoint)["steps"] == 4
    rows = result["loss_log"].read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "4"]

    # The same epoch in a fresh process via the CLI gives bit-identical tensors.
    separate = next_epoch(spec1, tmp_path / "b", state=copy_state(spec1, tmp_path / "sb"))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(separate.to_json())
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    subprocess.run(
        [sys.executable, "-m", "dreamgrid.train", "--spec", str(spec_file)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    for a, b in [
        (in_process.out_checkpoint, separate.out_checkpoint),
        (in_process.state, separate.state),
    ]:
        ta, tb = load_file(str(a)), load_file(str(b))
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), f"{a.name} differs between runs"
    assert read_metadata(in_process.out_checkpoint) == read_metadata(separate.out_checkpoint)

    # Without a usable state (deleted, or already moved on to epoch 2) epoch 2 replays epoch 1
    # from the base model and still gives the same checkpoint.
    replayed = next_epoch(spec1, tmp_path / "c", state=in_process.state)  # holds epoch 2 now
    assert run(replayed)["replayed"] == 1
    ta, tb = unet_of(in_process.out_checkpoint), unet_of(replayed.out_checkpoint)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert read_metadata(replayed.out_checkpoint)["steps"] == 4


def test_epoch1_rerun_is_identical(epoch1, tiny_model, data, tmp_path):
    from dreamgrid.train import run

    spec1, _ = epoch1
    again = dataclasses.replace(
        spec1, out_checkpoint=tmp_path / "e1.safetensors", state=tmp_path / "s.safetensors"
    )
    run(again)
    ta, tb = load_file(str(spec1.out_checkpoint)), load_file(str(again.out_checkpoint))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_later_epoch_needs_the_previous_epoch(epoch1, tmp_path):
    from dreamgrid.train import run

    spec1, _ = epoch1
    with pytest.raises(SpecError, match="set previous_meta"):
        run(dataclasses.replace(spec1, epoch=2))


def test_resume_rejects_wrong_epoch(epoch1, tmp_path):
    from dreamgrid.train import run

    spec1, _ = epoch1
    skipped = dataclasses.replace(next_epoch(spec1, tmp_path), epoch=3)
    with pytest.raises(SpecError, match="holds epoch 1"):
        run(skipped)


def test_regularization_doubles_steps_and_text_encoder_training(tiny_model, data, tmp_path):
    from dreamgrid.train import run

    spec = make_spec(
        tiny_model,
        data,
        tmp_path,
        arm="ohwx-genreg-nocaptions",
        reg_dir=data["reg"],
        train_text_encoder=True,
        gradient_checkpointing=True,
        save_precision="fp32",
    )
    result = run(spec)
    assert result["steps"] == steps_per_epoch(3, 1, 2, True) == 3
    meta = read_metadata(spec.out_checkpoint)
    assert meta["regularization"] and meta["reg_images"] == 2 and meta["train_images"] == 3
    prefix = "cond_stage_model.transformer.text_model."
    trained = {
        k[len(prefix) :]: v
        for k, v in load_file(str(spec.out_checkpoint)).items()
        if k.startswith(prefix)
    }
    base = load_file(str(tiny_model / "text_encoder" / "model.safetensors"))
    base = {k.removeprefix("text_model."): v for k, v in base.items()}
    assert trained.keys() == base.keys()
    assert any(not torch.equal(base[k], trained[k]) for k in base)


def test_paired_regularization_and_two_passes_train_the_counted_steps(tiny_model, data, tmp_path):
    from dreamgrid.train import run

    paired = make_spec(
        tiny_model,
        data,
        tmp_path / "p",
        arm="ohwx-genreg-nocap",
        reg_dir=data["reg"],
        reg_mode="paired",
    )
    result = run(paired)
    assert result["steps"] == steps_per_epoch(3, 1, 2, True, "paired") == 2
    meta = read_metadata(paired.out_checkpoint)
    assert meta["reg_mode"] == "paired" and meta["reg_images"] == 2
    doubled = make_spec(tiny_model, data, tmp_path / "d", passes=2)
    assert run(doubled)["steps"] == 4
    meta = read_metadata(doubled.out_checkpoint)
    assert meta["steps_per_epoch"] == 4 and meta["kohya_epochs"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed with a GPU")
def test_fp16_without_gpu_is_a_spec_error(tiny_model, data, tmp_path):
    from dreamgrid.train import run

    with pytest.raises(SpecError, match="fp16.*CUDA"):
        run(make_spec(tiny_model, data, tmp_path, mixed_precision="fp16"))


def test_lora_arm_trains_only_the_adapter_and_saves_it_kohya_style(tiny_model, data, tmp_path):
    from dreamgrid.train import run

    fields = {
        "method": "lora",
        "lora_rank": 4,
        "lora_alpha": 4.0,
        "lora_target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
        "arm": "ohwx-noreg-nocap-lora",
        "save_precision": "fp32",
    }
    spec = make_spec(tiny_model, data, tmp_path, **fields)
    result = run(spec)
    assert result["steps"] == 2
    tensors = load_file(str(spec.out_checkpoint))
    assert tensors and all(k.startswith("lora_unet_") for k in tensors)
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert any(v.abs().max() > 0 for v in ups)  # lora_up starts at zero: it was trained
    with safe_open(str(spec.state), framework="pt") as handle:
        weights = [k for k in handle.keys() if k.startswith("weights.")]  # noqa: SIM118
    assert weights and all(".lora_" in k for k in weights)  # the frozen UNet is not in it
    meta = read_metadata(spec.out_checkpoint)
    assert meta["method"] == "lora" and meta["lora_rank"] == 4

    # Epoch 2 resumes the adapter and its moments from the state; a replay gives the same.
    resumed = next_epoch(spec, tmp_path / "a", state=copy_state(spec, tmp_path / "sa"))
    replayed = next_epoch(spec, tmp_path / "b", state=tmp_path / "none.safetensors")
    assert run(resumed)["replayed"] == 0 and run(replayed)["replayed"] == 1
    ta, tb = load_file(str(resumed.out_checkpoint)), load_file(str(replayed.out_checkpoint))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_text_encoder_own_learning_rate_and_stop_epoch(tiny_model, data, tmp_path):
    from dreamgrid.train import run

    spec = make_spec(
        tiny_model,
        data,
        tmp_path,
        train_text_encoder=True,
        text_encoder_lr=5e-4,
        text_encoder_stop_epoch=1,
        save_precision="fp32",
    )
    run(spec)
    with safe_open(str(spec.state), framework="pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
    assert [g["lr"] for g in groups] == [1e-3, 5e-4]
    second = next_epoch(spec, tmp_path / "e2")
    run(second)
    prefix = "cond_stage_model."
    first_te = {k: v for k, v in load_file(str(spec.out_checkpoint)).items() if prefix in k}
    second_te = {k: v for k, v in load_file(str(second.out_checkpoint)).items() if prefix in k}
    assert all(torch.equal(first_te[k], second_te[k]) for k in first_te)  # stopped after 1
    assert not torch.equal(
        *(unet_of(p)["out.2.weight"] for p in (spec.out_checkpoint, second.out_checkpoint))
    )
    assert read_metadata(second.out_checkpoint)["text_encoder_trained"] is False


def test_cached_latents_are_shared_by_content_and_reused(tiny_model, data, tmp_path):
    from dreamgrid.train import run

    cache = tmp_path / "cache"
    fields = {"cache_latents": True, "cache_text_embeddings": True, "cache_dir": cache}
    first = make_spec(tiny_model, data, tmp_path / "a", **fields)
    run(first)
    files = sorted(cache.iterdir())
    assert len(files) == 3  # one per training image
    stamps = [p.stat().st_mtime_ns for p in files]
    # Another arm with the same images (and class images added) reuses the three files.
    other = make_spec(
        tiny_model, data, tmp_path / "b", arm="ohwx-genreg-nocap", reg_dir=data["reg"], **fields
    )
    run(other)
    assert len(list(cache.iterdir())) == 5
    assert [p.stat().st_mtime_ns for p in files] == stamps
    # Same settings from a warm cache: the same checkpoint.
    again = make_spec(tiny_model, data, tmp_path / "c", **fields)
    run(again)
    ta, tb = unet_of(first.out_checkpoint), unet_of(again.out_checkpoint)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    # And close to the uncached path (same draws; only the VAE's batching differs). Measured:
    # the paths differ by 6e-5 (fp16 rounding), while this epoch moves weights by only 2.1e-3
    # at most, so the old atol 2e-3 passed even a cache that trained nothing; 3e-4 is 5x the
    # noise and 7x below the update.
    plain = make_spec(tiny_model, data, tmp_path / "d")
    run(plain)
    tc = unet_of(plain.out_checkpoint)
    assert all(torch.allclose(ta[k].float(), tc[k].float(), atol=3e-4) for k in ta)


def test_min_snr_weights_damp_low_noise_steps_only(tiny_model):
    from diffusers import DDPMScheduler

    from dreamgrid.train.loop import min_snr_weights

    scheduler = DDPMScheduler.from_pretrained(tiny_model, subfolder="scheduler")
    weights = min_snr_weights(scheduler, torch.tensor([1, 50, 500, 999]), gamma=5.0)
    assert weights[0] < weights[1] < 1.0  # high SNR (little noise): down-weighted
    assert torch.equal(weights[2:], torch.ones(2))  # SNR below gamma: plain MSE


def test_noise_offset_and_8bit_fallback_change_training_as_asked(
    tiny_model, data, tmp_path, caplog
):
    from dreamgrid.train import run

    plain = make_spec(tiny_model, data, tmp_path / "plain")
    run(plain)
    base = unet_of(plain.out_checkpoint)
    offset = make_spec(tiny_model, data, tmp_path / "offset", noise_offset=0.1)
    run(offset)
    other = unet_of(offset.out_checkpoint)
    assert any(not torch.equal(base[k], other[k]) for k in base)
    assert read_metadata(offset.out_checkpoint)["noise_offset"] == 0.1
    if not torch.cuda.is_available():
        spec = make_spec(tiny_model, data, tmp_path / "8bit", optimizer="adamw8bit")
        with caplog.at_level("WARNING"):
            run(spec)
        assert "using torch AdamW instead" in caplog.text
        fallback = unet_of(spec.out_checkpoint)
        assert all(torch.equal(base[k], fallback[k]) for k in base)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bf16_mixed_precision_runs_on_cpu(tiny_model, data, tmp_path, method):
    # The path a GPU takes with fp16: frozen parts cast down, trained parameters fp32.
    # In a fresh process: accelerate keeps one mixed-precision setting per process.
    lora = {"lora_rank": 2, "lora_alpha": 2.0, "lora_target_modules": ["to_q", "to_v"]}
    spec = make_spec(
        tiny_model,
        data,
        tmp_path,
        mixed_precision="bf16",
        method=method,
        cache_latents=True,
        cache_dir=tmp_path / "cache",
        **(lora if method == "lora" else {}),
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.to_json())
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    done = subprocess.run(
        [sys.executable, "-m", "dreamgrid.train", "--spec", str(spec_file)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metadata(spec.out_checkpoint)["mixed_precision"] == "bf16"
    with safe_open(str(spec.state), framework="pt") as handle:
        keys = [k for k in handle.keys() if k.startswith("weights.")]  # noqa: SIM118
        dtypes = {handle.get_tensor(k).dtype for k in keys}
    assert dtypes == {torch.float32}
