"""The training loop (dreamgrid.train.loop) on the tiny random SD pipeline (CPU): one epoch per
job, resume, determinism, regularization, LoRA, text encoder, precision and optimizer options."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_spec, unet_of
from safetensors import safe_open
from safetensors.torch import load_file

from dreamgrid.errors import SpecError
from dreamgrid.train.data import steps_per_epoch
from dreamgrid.train.export import read_metadata
from dreamgrid.train.spec import TrainSpec
from dreamgrid.train.testing import copy_state, next_epoch, shim_command

REPO = Path(__file__).resolve().parents[2]


def train_in_new_process(spec: TrainSpec, log: Path) -> None:
    """Train ``spec`` in a fresh process as its train_dreambooth job does (the rule's shim)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    done = subprocess.run(
        shim_command(spec, log), env=env, check=False, capture_output=True, text=True, timeout=600
    )
    job_log = log.read_text() if log.exists() else ""
    assert done.returncode == 0, (job_log + done.stderr)[-3000:]


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


def test_epoch2_continues_and_is_deterministic_across_processes(epoch1, tmp_path):
    from dreamgrid.train import train_dreambooth

    spec1, _ = epoch1
    in_process = next_epoch(spec1, tmp_path / "a", state=copy_state(spec1, tmp_path / "sa"))
    result = train_dreambooth(in_process)
    assert result["steps"] == 2 * result["steps_per_epoch"] == 4 and result["replayed"] == 0
    assert read_metadata(in_process.out_checkpoint)["steps"] == 4
    rows = result["loss_log"].read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "4"]

    # The same epoch in a fresh process, as its job runs it, gives bit-identical tensors.
    separate = next_epoch(spec1, tmp_path / "b", state=copy_state(spec1, tmp_path / "sb"))
    train_in_new_process(separate, tmp_path / "b.log")
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
    assert train_dreambooth(replayed)["replayed"] == 1
    ta, tb = unet_of(in_process.out_checkpoint), unet_of(replayed.out_checkpoint)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert read_metadata(replayed.out_checkpoint)["steps"] == 4


def test_epoch1_rerun_is_identical(epoch1, tiny_model, data, tmp_path):
    from dreamgrid.train import train_dreambooth

    spec1, _ = epoch1
    again = dataclasses.replace(
        spec1, out_checkpoint=tmp_path / "e1.safetensors", state=tmp_path / "s.safetensors"
    )
    train_dreambooth(again)
    ta, tb = load_file(str(spec1.out_checkpoint)), load_file(str(again.out_checkpoint))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_later_epoch_needs_the_previous_epoch(epoch1, tmp_path):
    from dreamgrid.train import train_dreambooth

    spec1, _ = epoch1
    with pytest.raises(SpecError, match="set previous_meta"):
        train_dreambooth(dataclasses.replace(spec1, epoch=2))


def test_regularization_doubles_steps_and_text_encoder_training(tiny_model, data, tmp_path):
    from dreamgrid.train import train_dreambooth

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
    result = train_dreambooth(spec)
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
    from dreamgrid.train import train_dreambooth

    paired = make_spec(
        tiny_model,
        data,
        tmp_path / "p",
        arm="ohwx-genreg-nocap",
        reg_dir=data["reg"],
        reg_mode="paired",
    )
    result = train_dreambooth(paired)
    assert result["steps"] == steps_per_epoch(3, 1, 2, True, "paired") == 2
    meta = read_metadata(paired.out_checkpoint)
    assert meta["reg_mode"] == "paired" and meta["reg_images"] == 2
    doubled = make_spec(tiny_model, data, tmp_path / "d", passes=2)
    assert train_dreambooth(doubled)["steps"] == 4
    meta = read_metadata(doubled.out_checkpoint)
    assert meta["steps_per_epoch"] == 4 and meta["kohya_epochs"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed with a GPU")
def test_fp16_without_gpu_is_a_spec_error(tiny_model, data, tmp_path):
    from dreamgrid.train import train_dreambooth

    with pytest.raises(SpecError, match="fp16.*CUDA"):
        train_dreambooth(make_spec(tiny_model, data, tmp_path, mixed_precision="fp16"))


def test_lora_arm_trains_only_the_adapter_and_saves_it_kohya_style(tiny_model, data, tmp_path):
    from dreamgrid.train import train_dreambooth

    fields = {
        "method": "lora",
        "lora_rank": 4,
        "lora_alpha": 4.0,
        "lora_target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
        "arm": "ohwx-noreg-nocap-lora",
        "save_precision": "fp32",
    }
    spec = make_spec(tiny_model, data, tmp_path, **fields)
    result = train_dreambooth(spec)
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
    assert (
        train_dreambooth(resumed)["replayed"] == 0 and train_dreambooth(replayed)["replayed"] == 1
    )
    ta, tb = load_file(str(resumed.out_checkpoint)), load_file(str(replayed.out_checkpoint))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_text_encoder_own_learning_rate_and_stop_epoch(tiny_model, data, tmp_path):
    from dreamgrid.train import train_dreambooth

    spec = make_spec(
        tiny_model,
        data,
        tmp_path,
        train_text_encoder=True,
        text_encoder_lr=5e-4,
        text_encoder_stop_epoch=1,
        save_precision="fp32",
    )
    train_dreambooth(spec)
    with safe_open(str(spec.state), framework="pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
    assert [g["lr"] for g in groups] == [1e-3, 5e-4]
    second = next_epoch(spec, tmp_path / "e2")
    train_dreambooth(second)
    prefix = "cond_stage_model."
    first_te = {k: v for k, v in load_file(str(spec.out_checkpoint)).items() if prefix in k}
    second_te = {k: v for k, v in load_file(str(second.out_checkpoint)).items() if prefix in k}
    assert all(torch.equal(first_te[k], second_te[k]) for k in first_te)  # stopped after 1
    assert not torch.equal(
        *(unet_of(p)["out.2.weight"] for p in (spec.out_checkpoint, second.out_checkpoint))
    )
    assert read_metadata(second.out_checkpoint)["text_encoder_trained"] is False


def test_noise_offset_and_8bit_fallback_change_training_as_asked(
    tiny_model, data, tmp_path, caplog
):
    from dreamgrid.train import train_dreambooth

    plain = make_spec(tiny_model, data, tmp_path / "plain")
    train_dreambooth(plain)
    base = unet_of(plain.out_checkpoint)
    offset = make_spec(tiny_model, data, tmp_path / "offset", noise_offset=0.1)
    train_dreambooth(offset)
    other = unet_of(offset.out_checkpoint)
    assert any(not torch.equal(base[k], other[k]) for k in base)
    assert read_metadata(offset.out_checkpoint)["noise_offset"] == 0.1
    if not torch.cuda.is_available():
        spec = make_spec(tiny_model, data, tmp_path / "8bit", optimizer="adamw8bit")
        with caplog.at_level("WARNING"):
            train_dreambooth(spec)
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
    train_in_new_process(spec, tmp_path / "job.log")
    assert read_metadata(spec.out_checkpoint)["mixed_precision"] == "bf16"
    with safe_open(str(spec.state), framework="pt") as handle:
        keys = [k for k in handle.keys() if k.startswith("weights.")]  # noqa: SIM118
        dtypes = {handle.get_tensor(k).dtype for k in keys}
    assert dtypes == {torch.float32}


# --- what a checkpoint records ----------------------------------------------------------------

#: The checkpoint metadata of two sample specs, as written since versions.TRAIN 2: the keys and
#: values of every checkpoint's .json and safetensors header (a change here is an output change).
COMMON_METADATA = {
    "family": "sd15",  # recorded since base models became an axis
    "epoch": 2,
    "steps": 10,
    "steps_per_epoch": 4,
    "seed": 7,
    "resolution": 64,
    "repeats": 1,
    "batch_size": 2,
    "learning_rate": 0.001,
    "lr_scheduler": "constant",
    "token": "ohwx",
    "class_word": "woman",
    "aspect_ratio": "center_crop",
    "train_sizes": {"64x64": 3},
    "train_images": 3,
    "mean_loss": 0.25,
}
LORA_METADATA = {
    **COMMON_METADATA,
    "arm": "ohwx-genreg-nocap-lora",
    "mixed_precision": "bf16",
    "save_precision": "bf16",
    "train_text_encoder": False,
    "text_encoder_lr": None,
    "text_encoder_stop_epoch": None,
    "text_encoder_trained": False,
    "method": "lora",
    "lora_rank": 4,
    "lora_alpha": 4.0,
    "optimizer": "adamw8bit",
    "noise_offset": 0.05,
    "min_snr_gamma": 5.0,
    "lora_target_modules": ["to_q", "to_v"],
    "regularization": True,
    "prior_loss_weight": 0.5,
    "reg_mode": "paired",
    "passes": 2,
    "kohya_epochs": 4,
    "reg_images": 2,
}
FULL_METADATA = {
    **COMMON_METADATA,
    "arm": "ohwx-noreg-nocaptions",
    "mixed_precision": "no",
    "save_precision": "fp16",
    "train_text_encoder": True,
    "text_encoder_lr": 0.0005,
    "text_encoder_stop_epoch": 3,
    "text_encoder_trained": True,
    "method": "full",
    "lora_rank": None,
    "lora_alpha": None,
    "optimizer": "adamw",
    "noise_offset": 0.0,
    "min_snr_gamma": None,
    "lora_target_modules": None,
    "regularization": False,
    "prior_loss_weight": 1.0,
    "reg_mode": "kohya",
    "passes": 1,
    "kohya_epochs": 2,
    "reg_images": 0,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {
                "arm": "ohwx-genreg-nocap-lora",
                "method": "lora",
                "lora_rank": 4,
                "lora_alpha": 4.0,
                "lora_target_modules": ["to_q", "to_v"],
                "passes": 2,
                "noise_offset": 0.05,
                "min_snr_gamma": 5.0,
                "prior_loss_weight": 0.5,
                "reg_mode": "paired",
                "optimizer": "adamw8bit",
                "mixed_precision": "bf16",
                "save_precision": "bf16",
                "reg": True,
            },
            LORA_METADATA,
        ),
        (
            {"train_text_encoder": True, "text_encoder_lr": 5e-4, "text_encoder_stop_epoch": 3},
            FULL_METADATA,
        ),
    ],
)
def test_checkpoint_metadata_keys_and_values(tiny_model, data, tmp_path, changes, expected):
    from dreamgrid.train.data import epoch_batches
    from dreamgrid.train.loop import checkpoint_metadata

    changes = dict(changes)
    if changes.pop("reg", False):
        changes["reg_dir"] = data["reg"]
    spec = make_spec(
        tiny_model, data, tmp_path, epoch=2, previous_meta=tmp_path / "epoch-1.json", **changes
    )
    metadata = checkpoint_metadata(spec, epoch_batches(spec), 10, 4, [0.5, 0.25, 0.125, 0.125])
    assert metadata == expected
    assert json.dumps(metadata, sort_keys=True) == json.dumps(expected, sort_keys=True)
