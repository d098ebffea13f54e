"""SDXL on the tiny random SDXL pipeline (dreamgrid.tiny.build_tiny_sdxl, CPU): LoRA and full
epochs through the shared loop, resume, SDXL's micro-conditioning, the SGM-layout and Kohya
exports loaded back by diffusers, and rendering."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_images
from safetensors.torch import load_file

from dreamgrid.errors import SpecError
from dreamgrid.train.export import read_metadata
from dreamgrid.train.testing import copy_state, next_epoch, tiny_train_spec

TINY_VAE_CONFIG = SimpleNamespace(block_out_channels=(32, 64))
LORA = {
    "method": "lora",
    "lora_rank": 4,
    "lora_alpha": 4.0,
    "lora_target_modules": ("to_k", "to_q", "to_v", "to_out.0"),
    "learning_rate": 1e-3,
}


@pytest.fixture(scope="module")
def sdxl_model(tmp_path_factory):
    from dreamgrid.tiny import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("model") / "tiny-sdxl")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("sdxl-data"), ["a.png", "b.png", "c.png"], 3)


def sdxl_spec(model, images, out, **changes):
    return tiny_train_spec(model, images, out, family="sdxl", **changes)


@pytest.fixture(scope="module")
def lora_epoch1(sdxl_model, images, tmp_path_factory):
    from dreamgrid.train import train_dreambooth

    spec = sdxl_spec(
        sdxl_model,
        images,
        tmp_path_factory.mktemp("lora"),
        cache_latents=True,
        cache_dir=tmp_path_factory.mktemp("cache"),
        cache_text_embeddings=True,
        save_precision="fp32",
        **LORA,
    )
    return spec, train_dreambooth(spec)


@pytest.fixture(scope="module")
def vpred_model(sdxl_model, tmp_path_factory):
    """The tiny SDXL with a v-prediction scheduler (as SDXL v-prediction finetunes ship)."""
    import json
    import shutil

    out = shutil.copytree(sdxl_model, tmp_path_factory.mktemp("model") / "tiny-sdxl-v")
    config = out / "scheduler" / "scheduler_config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "prediction_type": "v_prediction"})
    )
    return out


@pytest.fixture(scope="module")
def full_epoch1(vpred_model, images, tmp_path_factory):
    from dreamgrid.train import train_dreambooth

    spec = sdxl_spec(
        vpred_model,
        images,
        tmp_path_factory.mktemp("full"),
        save_precision="fp32",
        min_snr_gamma=5.0,
        noise_offset=0.05,
    )
    return spec, train_dreambooth(spec)


def test_lora_epoch_writes_a_kohya_sdxl_adapter(lora_epoch1):
    spec, result = lora_epoch1
    assert result["steps"] == 2 and np.isfinite(result["mean_loss"])
    meta = read_metadata(spec.out_checkpoint)
    assert (meta["family"], meta["resolution"], meta["steps"]) == ("sdxl", 64, 2)
    keys = load_file(str(spec.out_checkpoint))
    # Kohya's SDXL names: the original layout's modules (tiny UNet: input_blocks.3 is the
    # first cross-attention block), never diffusers' down_blocks.
    assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k.lora_down.weight" in keys
    assert not any("down_blocks" in k for k in keys)


def test_lora_epoch2_resumed_equals_replayed(lora_epoch1, tmp_path):
    from dreamgrid.train import train_dreambooth

    spec1, _ = lora_epoch1
    resumed = next_epoch(spec1, tmp_path / "a", state=copy_state(spec1, tmp_path / "sa"))
    result = train_dreambooth(resumed)
    assert result["replayed"] == 0 and result["steps"] == 4
    # No usable state (it holds epoch 2 now): epoch 1 is replayed from the base model.
    replayed = next_epoch(spec1, tmp_path / "b", state=resumed.state)
    assert train_dreambooth(replayed)["replayed"] == 1
    a, b = load_file(str(resumed.out_checkpoint)), load_file(str(replayed.out_checkpoint))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_full_epoch_writes_an_sgm_layout_checkpoint(full_epoch1, sdxl_model):
    """v-prediction, min-SNR and noise offset: the full fine-tune trains and exports."""
    spec, result = full_epoch1
    assert (
        np.isfinite(result["mean_loss"]) and read_metadata(spec.out_checkpoint)["family"] == "sdxl"
    )
    tensors = load_file(str(spec.out_checkpoint))
    prefixes = {".".join(k.split(".")[:3]) for k in tensors if k.startswith("conditioner.")}
    assert prefixes == {"conditioner.embedders.0", "conditioner.embedders.1"}
    assert "model.diffusion_model.label_emb.0.0.weight" in tensors
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in tensors
    base = load_file(str(sdxl_model / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(base["conv_out.weight"], tensors["model.diffusion_model.out.2.weight"])


def test_micro_conditioning_of_a_non_square_bucket(tmp_path):
    """A 100x60 photo fitted to a 64x32 bucket: resized to 64x38, cropped 3 px from the top;
    add_time_ids = original (h, w), crop (top, left), target (h, w)."""
    from dreamgrid.train import sdxl
    from dreamgrid.train.data import DreamBoothDataset, Item, collate_fn

    write_images(tmp_path, ["wide.png"], seed=0, size=(100, 60))
    items = [Item(tmp_path / "wide.png", "ohwx woman", 1.0, False, (64, 32))] * 2
    dataset = DreamBoothDataset(items, lambda caption: {"input_ids": torch.zeros(77, dtype=int)})
    batch = collate_fn([dataset[0], dataset[1]])
    assert batch["pixel_values"].shape == (2, 3, 32, 64)
    # The target is read back from the latents (tiny VAE: 2x downsampling).
    target = sdxl.fitted_size(TINY_VAE_CONFIG, torch.zeros(2, 4, 16, 32))
    ids = sdxl.time_ids(batch, target, torch.float32, torch.device("cpu"))
    assert ids.tolist() == [[60, 100, 3, 0, 32, 64]] * 2


def test_sdxl_text_encoder_training_is_refused(sdxl_model, images, tmp_path):
    with pytest.raises(SpecError, match="text encoders of SDXL"):
        sdxl_spec(sdxl_model, images, tmp_path, train_text_encoder=True)
    with pytest.raises(SpecError, match="training.vae is for SDXL"):
        tiny_train_spec(sdxl_model, images, tmp_path, vae=tmp_path)


def test_separate_vae_is_used_and_keys_the_latent_cache(sdxl_model, images, tmp_path):
    from dreamgrid.train.cache import vae_key
    from dreamgrid.train.loop import load_models

    spec = sdxl_spec(sdxl_model, images, tmp_path, vae=sdxl_model / "vae")
    models = load_models(spec, torch.device("cpu"))
    assert models.vae.dtype == torch.float32 and models.text_encoder_2 is not None
    assert vae_key(sdxl_model, sdxl_model / "vae") == vae_key(sdxl_model)
    assert spec.fingerprint() != dataclasses.replace(spec, vae=None).fingerprint()


# ---- export round trips and sampling --------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(sdxl_model):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe, **kwargs) -> np.ndarray:
    return pipe(
        "ohwx woman",
        negative_prompt="blurry",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).images


def test_full_checkpoint_loads_with_from_single_file_and_renders_alike(full_epoch1):
    from dreamgrid.sample import load_pipeline
    from dreamgrid.train.export_sdxl import load_sdxl_pipeline, sdxl_ldm_state

    spec, _ = full_epoch1
    loaded = load_sdxl_pipeline(spec.out_checkpoint, spec.base_model)
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    # Every tensor of the file lands in the loaded pipeline, unchanged (fp32 file).
    ours = sdxl_ldm_state(loaded.unet, loaded.vae, loaded.text_encoder, loaded.text_encoder_2)
    stored = load_file(str(spec.out_checkpoint))
    assert ours.keys() == stored.keys()
    assert all(torch.equal(ours[k], stored[k]) for k in ours)
    # The sampler loads the same file; its renders are pixel-identical.
    sampler = load_pipeline(spec.base_model, spec.out_checkpoint, device="cpu")
    loaded.set_progress_bar_config(disable=True)
    first = render(sampler)
    assert first.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(first, render(loaded))


def test_perturbed_pipeline_round_trips_pixel_identical(pipe, sdxl_model, tmp_path):
    """All four models moved off the base weights, saved fp32, loaded back: same renders."""
    from diffusers import StableDiffusionXLPipeline

    from dreamgrid.train.export_sdxl import load_sdxl_pipeline, save_sdxl_checkpoint

    moved = StableDiffusionXLPipeline.from_pretrained(sdxl_model, local_files_only=True)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in (moved.unet, moved.vae, moved.text_encoder, moved.text_encoder_2):
            for param in module.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.01)
    path = tmp_path / "moved.safetensors"
    save_sdxl_checkpoint(
        path,
        moved.unet,
        moved.vae,
        moved.text_encoder,
        moved.text_encoder_2,
        {"family": "sdxl"},
        "fp32",
    )
    loaded = load_sdxl_pipeline(path, sdxl_model)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(moved, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    moved.set_progress_bar_config(disable=True)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(render(moved), render(loaded))


def test_kohya_lora_renders_as_the_trained_adapter(pipe, sdxl_model, images, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from dreamgrid.train.export_sdxl import save_sdxl_lora
    from dreamgrid.train.sd15 import add_lora

    spec = sdxl_spec(sdxl_model, images, tmp_path, **LORA)
    trained = StableDiffusionXLPipeline.from_pretrained(sdxl_model, local_files_only=True)
    add_lora(spec, trained.unet, torch.device("cpu"), torch.float32)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # lora_B starts at zero: give the adapter an effect
        for name, param in trained.unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    path = tmp_path / "lora.safetensors"
    save_sdxl_lora(path, trained.unet, spec.lora_alpha, {"family": "sdxl"}, "fp32")
    trained.set_progress_bar_config(disable=True)
    expected = render(trained)
    assert not np.array_equal(expected, render(pipe))  # the adapter changes the render
    loaded = StableDiffusionXLPipeline.from_pretrained(sdxl_model, local_files_only=True)
    loaded.load_lora_weights(str(path))
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(render(loaded), expected)


def test_sampler_renders_the_lora_arm_deterministically(lora_epoch1, sdxl_model, tmp_path):
    from dreamgrid.sample import SampleSettings, load_pipeline
    from dreamgrid.sample import render as render_settings

    spec, _ = lora_epoch1
    sampler = load_pipeline(sdxl_model, spec.out_checkpoint, device="cpu")
    assert type(sampler).__name__ == "StableDiffusionXLPipeline"
    settings = SampleSettings(
        prompt="photo of {token} {class}",
        negative="blurry",
        steps=2,
        cfg=5.0,
        count=2,
        seed=3,
        width=64,
        height=48,
        batch_size=2,
        scheduler="dpmpp_2m",
    )
    table = render_settings(sampler, settings, "ohwx", "woman", tmp_path / "a")
    again = render_settings(sampler, settings, "ohwx", "woman", tmp_path / "b")
    from PIL import Image

    for name in table["image"]:
        a, b = Image.open(tmp_path / "a" / name), Image.open(tmp_path / "b" / name)
        assert a.size == (64, 48)
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert list(again["seed"]) == [3, 4]
    # Prompts beyond SDXL's window are refused by name, not cut silently.
    long = dataclasses.replace(settings, prompt="photo of {token} {class}" + ", detailed" * 80)
    with pytest.raises(SpecError, match="SDXL renders read at most 75 tokens"):
        render_settings(sampler, long, "ohwx", "woman", tmp_path / "c")


def test_sd15_checkpoint_on_an_sdxl_base_is_refused(lora_epoch1, tmp_path):
    from dreamgrid.sample import load_pipeline
    from dreamgrid.tiny import build_tiny_sd

    spec, _ = lora_epoch1
    sd = build_tiny_sd(tmp_path / "tiny-sd")
    with pytest.raises(SpecError, match="trained on a sdxl model"):
        load_pipeline(sd, spec.out_checkpoint, device="cpu")


def test_sdxl_shaped_models_get_the_keys_of_sdxl_files():
    """Full-size SDXL shapes (meta device, no memory): diffusers' own single-file converters
    take our keys back to every weight, and classify the file as SDXL base."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
        infer_diffusers_model_type,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dreamgrid.train.export_sdxl import sdxl_ldm_state

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=128,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
        )
        clip_l = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072))
        clip_g = CLIPTextModelWithProjection(
            CLIPTextConfig(
                hidden_size=1280,
                intermediate_size=5120,
                num_attention_heads=20,
                num_hidden_layers=32,
                projection_dim=1280,
                hidden_act="gelu",
            )
        )
    keys = sdxl_ldm_state(unet, vae, clip_l, clip_g)
    assert infer_diffusers_model_type(keys) == "xl_base"
    for key in (
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.ff.net.2.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.label_emb.0.2.weight",
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_proj.bias",
        "conditioner.embedders.1.model.text_projection",
    ):
        assert key in keys, key
    assert not any("input_blocks.1.1." in k for k in keys)  # no attention in the first block
    assert keys["conditioner.embedders.1.model.text_projection"].shape == (1280, 1280)
    in_proj = keys["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]
    assert in_proj.shape == (3 * 1280, 1280)
    assert convert_ldm_unet_checkpoint(keys, dict(unet.config)).keys() == unet.state_dict().keys()
    assert convert_ldm_vae_checkpoint(keys, dict(vae.config)).keys() == vae.state_dict().keys()
    converted = convert_open_clip_checkpoint(clip_g, keys, prefix="conditioner.embedders.1.model.")
    assert converted.keys() == {k for k in clip_g.state_dict() if not k.endswith("position_ids")}


def test_class_images_and_prior_preservation_train_an_sdxl_lora(sdxl_model, images, tmp_path):
    """Regularization works for SDXL as for SD 1.5: class images rendered by the SDXL base model,
    then a paired prior-preservation epoch over them (class items weighted, counted apart)."""
    from dreamgrid.regularization import generate_class_images
    from dreamgrid.train import train_dreambooth

    index = generate_class_images(
        sdxl_model, prompt="photo of a woman", negative="blurry", count=2, seed=1, steps=2,
        cfg=5.0, size=64, batch_size=2, out_dir=tmp_path / "class",
    )  # fmt: skip
    assert list(index["seed"]) == [1, 2]
    spec = sdxl_spec(
        sdxl_model,
        images,
        tmp_path / "out",
        reg_dir=tmp_path / "class",
        reg_mode="paired",
        prior_loss_weight=0.5,
        **LORA,
    )
    result = train_dreambooth(spec)
    meta = read_metadata(spec.out_checkpoint)
    assert meta["family"] == "sdxl" and meta["regularization"] and meta["reg_images"] == 2
    assert meta["train_images"] == 3 and np.isfinite(result["mean_loss"])
