"""Tiny SDXL and FLUX.1 pipelines (foundations of the base-model axis, #17): built from configs
with random weights, loaded offline by their own pipeline classes, rendered deterministically,
recognised as tiny, and small."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamgrid import models, offline
from dreamgrid.tiny import build_tiny_flux, build_tiny_sdxl

MAX_PARAMS = 5_000_000  # per component; build_tiny_sd's UNet is about 1M


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """The hub libraries told not to use the network (env and huggingface_hub's constant,
    which it reads once at import)."""
    import huggingface_hub.constants

    for name, value in offline.SWITCHES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    from diffusers import StableDiffusionXLPipeline

    path = build_tiny_sdxl(tmp_path_factory.mktemp("model") / "tiny-sdxl")
    pipe = StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return path, pipe


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    from diffusers import FluxPipeline

    path = build_tiny_flux(tmp_path_factory.mktemp("model") / "tiny-flux")
    pipe = FluxPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return path, pipe


def render_sdxl(pipe, seed: int) -> np.ndarray:
    return pipe(
        "ohwx woman",
        negative_prompt="blurry",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images


def render_flux(pipe, seed: int) -> np.ndarray:
    return pipe(
        "ohwx woman",
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=3.5,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_tiny_sdxl_loads_offline_and_renders_deterministically(sdxl):
    path, pipe = sdxl
    first = render_sdxl(pipe, 0)
    assert first.shape == (1, 64, 64, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, render_sdxl(pipe, 0))
    assert not np.array_equal(first, render_sdxl(pipe, 1))
    assert models.is_tiny(path)


def test_tiny_sdxl_has_sdxl_conditioning_and_is_small(sdxl):
    _, pipe = sdxl
    unet = pipe.unet.config
    assert unet.addition_embed_type == "text_time"
    hidden = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert unet.cross_attention_dim == hidden
    pooled = pipe.text_encoder_2.config.projection_dim
    assert unet.projection_class_embeddings_input_dim == 6 * unet.addition_time_embed_dim + pooled
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert n_params(getattr(pipe, name)) < MAX_PARAMS, name


def test_tiny_flux_loads_offline_and_renders_deterministically(flux):
    path, pipe = flux
    first = render_flux(pipe, 0)
    assert first.shape == (1, 64, 64, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, render_flux(pipe, 0))
    assert not np.array_equal(first, render_flux(pipe, 1))
    assert models.is_tiny(path)


def test_tiny_flux_is_guidance_distilled_with_16_latent_channels_and_is_small(flux):
    _, pipe = flux
    assert pipe.transformer.config.guidance_embeds
    vae = pipe.vae.config
    assert vae.latent_channels == 16 and pipe.transformer.config.in_channels == 16 * 4
    assert vae.shift_factor is not None and vae.scaling_factor != 1.0
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert n_params(getattr(pipe, name)) < MAX_PARAMS, name


def test_tiny_t5_tokenizer_covers_any_prompt_and_keeps_t5_special_ids(flux):
    _, pipe = flux
    tokenizer = pipe.tokenizer_2
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("Ohwx woman, photo #7 (close-up)!").input_ids
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids


def test_same_seed_same_weights(tmp_path):
    from safetensors.torch import load_file

    for build, component in ((build_tiny_sdxl, "unet"), (build_tiny_flux, "transformer")):
        a, b = build(tmp_path / f"a-{component}"), build(tmp_path / f"b-{component}")
        name = "diffusion_pytorch_model.safetensors"
        first, second = load_file(a / component / name), load_file(b / component / name)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), component
