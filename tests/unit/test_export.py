"""Checkpoints in the original SD layout load back with diffusers' from_single_file (offline)
and render exactly what the in-memory model renders; SD 1.5-shaped models get SD 1.5's keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dreamgrid.errors import SpecError
from dreamgrid.train.export import (
    ldm_state,
    load_sd_pipeline,
    read_metadata,
    save_sd_checkpoint,
)


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    from dreamgrid.tiny import build_tiny_sd

    path = build_tiny_sd(tmp_path_factory.mktemp("model") / "tiny-sd")
    pipe = StableDiffusionPipeline.from_pretrained(
        path, safety_checker=None, requires_safety_checker=False
    )
    # Move every weight away from the saved base model, as training does.
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            for param in module.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.01)
    pipe.set_progress_bar_config(disable=True)
    return path, pipe


def render(pipe) -> np.ndarray:
    return pipe(
        "ohwx woman",
        num_inference_steps=3,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images


def test_fp32_file_loads_back_with_the_same_weights_and_renders(tiny_pipe, tmp_path):
    base, pipe = tiny_pipe
    path = tmp_path / "epoch-1.safetensors"
    save_sd_checkpoint(path, pipe.unet, pipe.vae, pipe.text_encoder, {"epoch": 1}, "fp32")
    loaded = load_sd_pipeline(path, base)
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(render(pipe), render(loaded))
    assert read_metadata(path) == {"epoch": 1}


def test_fp16_file_is_half_the_weights_and_renders_alike(tiny_pipe, tmp_path):
    base, pipe = tiny_pipe
    path = tmp_path / "epoch-1.safetensors"
    save_sd_checkpoint(path, pipe.unet, pipe.vae, pipe.text_encoder, {"epoch": 1}, "fp16")
    assert {t.dtype for t in load_file(str(path)).values()} == {torch.float16}
    loaded = load_sd_pipeline(path, base, dtype=torch.float32)
    ours, theirs = pipe.unet.state_dict(), loaded.unet.state_dict()
    assert all(torch.equal(ours[k].half().float(), theirs[k]) for k in ours)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(render(pipe), render(loaded), atol=2e-2)


def test_other_files_are_refused_by_name(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(SpecError, match="foreign.safetensors: not a dreamgrid SD checkpoint"):
        read_metadata(path)


def sd15_models():
    """SD 1.5-shaped UNet, VAE and CLIP-L text encoder on the meta device (no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)
        )
    return unet, vae, text_encoder


def test_sd15_shaped_models_get_the_keys_of_sd15_files():
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    unet, vae, text_encoder = sd15_models()
    keys = ldm_state(unet, vae, text_encoder)
    # Counts and landmarks of the v1-5-pruned file (position_ids aside).
    unet_keys = [k for k in keys if k.startswith("model.diffusion_model.")]
    vae_keys = [k for k in keys if k.startswith("first_stage_model.")]
    clip_keys = [k for k in keys if k.startswith("cond_stage_model.transformer.text_model.")]
    assert (len(unet_keys), len(vae_keys), len(clip_keys)) == (686, 248, 196)
    for key in (
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
        "model.diffusion_model.out.2.weight",
        "model.diffusion_model.time_embed.2.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.decoder.up.0.block.2.conv2.weight",
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
        "first_stage_model.encoder.mid.attn_1.proj_out.weight",
        "first_stage_model.post_quant_conv.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    ):
        assert key in keys, key
    assert keys["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert infer_diffusers_model_type(keys) == "v1"


def test_sampler_loads_the_sd_file(tiny_pipe, tmp_path):
    from dreamgrid.sample import load_pipeline

    base, pipe = tiny_pipe
    path = tmp_path / "epoch-1.safetensors"
    save_sd_checkpoint(path, pipe.unet, pipe.vae, pipe.text_encoder, {"epoch": 1}, "fp32")
    loaded = load_pipeline(base, path, device="cpu")
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name


def test_lora_in_kohya_format_loads_with_diffusers_and_renders_alike(tiny_pipe, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    from dreamgrid.sample import load_pipeline
    from dreamgrid.train.export import save_lora

    base, _ = tiny_pipe
    pipe = StableDiffusionPipeline.from_pretrained(
        base, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    before = render(pipe)
    torch.manual_seed(3)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    # init_lora_weights=False: both matrices random, so the adapter visibly changes renders.
    pipe.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=2.0, init_lora_weights=False, target_modules=targets)
    )
    in_memory = render(pipe)
    assert np.abs(in_memory - before).max() > 1e-3

    path = tmp_path / "epoch-1.safetensors"
    save_lora(path, pipe.unet, 2.0, {"epoch": 1}, "fp32")
    tensors = load_file(str(path))
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= set(tensors)
    assert tensors[f"{name}.lora_down.weight"].shape[0] == 4
    assert float(tensors[f"{name}.alpha"]) == 2.0
    assert all(k.startswith("lora_unet_") for k in tensors)
    assert read_metadata(path) == {"epoch": 1}

    # diffusers' own loader reads Kohya's keys and alpha; the sampler goes through it too.
    loaded = load_pipeline(base, path, device="cpu")
    np.testing.assert_allclose(render(loaded), in_memory, atol=1e-5)
