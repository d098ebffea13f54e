"""SDXL family trainer: what diffusers' ``train_dreambooth_lora_sdxl.py`` does that is
particular to Stable Diffusion XL, behind the interface :mod:`dreamgrid.train.sd15` documents.

- Two text encoders: the UNet cross-attends to CLIP-L's and OpenCLIP-G's penultimate hidden
  states concatenated, and gets the pooled (projected) embedding of the second as
  ``text_embeds``.
- Micro-conditioning: each image's ``add_time_ids`` are its original size, the top-left corner
  of its crop and the target size, as (height, width) pairs (the batch's ``original_size`` and
  ``crop_top_left`` from :func:`dreamgrid.train.data.crop_conditioning`; the target is the
  fitted size, so buckets get theirs).
- The VAE stays float32 (SDXL's overflows in fp16) unless ``spec.vae`` names a separate VAE
  made for fp16 (e.g. madebyollin/sdxl-vae-fp16-fix), which then runs in the mixed-precision
  dtype, as the diffusers script does with ``--pretrained_vae_model_name_or_path``.

Noise, objective (epsilon or v-prediction), noise offset, min-SNR and the LoRA adapter are
SD 1.5's (:mod:`dreamgrid.train.sd15`). Text-encoder training is refused for SDXL
(:class:`~dreamgrid.train.spec.TrainSpec` says so before any job).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dreamgrid.errors import SpecError
from dreamgrid.train import sd15
from dreamgrid.train.export_sdxl import save_sdxl_checkpoint, save_sdxl_lora

if TYPE_CHECKING:
    from dreamgrid.train.loop import Models
    from dreamgrid.train.spec import TrainSpec

MODEL_PARTS = (
    "unet",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
)


def load_models(spec: TrainSpec, device: torch.device) -> Models:
    """Load SDXL's parts; freeze the VAE and both text encoders."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from dreamgrid.train.loop import DTYPES, Models

    if spec.train_text_encoder:  # TrainSpec refuses it; a direct caller gets the same answer
        raise SpecError(f"train spec {spec.arm}: SDXL text-encoder training is not supported.")
    base = str(spec.base_model)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2")
    if spec.vae is not None:
        vae = AutoencoderKL.from_pretrained(str(spec.vae))
    else:
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    if unet.config.addition_embed_type != "text_time":
        raise SpecError(
            f"{base}: the UNet has no SDXL text_time conditioning "
            f"(addition_embed_type {unet.config.addition_embed_type!r}); not an SDXL base model."
        )
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    sd15.check_prediction_type(base, noise_scheduler)
    weight_dtype = DTYPES[spec.mixed_precision]
    cast = {} if weight_dtype == torch.float32 else {"dtype": weight_dtype}
    vae.requires_grad_(False)
    # SDXL's own VAE gives NaNs in fp16: it stays float32 (as loaded) unless a separate
    # (fp16-safe) VAE is given.
    vae.to(device, **(cast if spec.vae is not None else {}))
    for encoder in (text_encoder, text_encoder_2):
        encoder.requires_grad_(False)
        encoder.to(device, **cast)
    if spec.method == "lora":
        sd15.add_lora(spec, unet, device, weight_dtype)
    sd15.use_sdpa(unet)
    unet.train()
    if spec.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    named = {f"unet.{k}": p for k, p in unet.named_parameters() if p.requires_grad}
    return Models(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        denoiser=unet,
        noise_scheduler=noise_scheduler,
        weight_dtype=weight_dtype,
        named_params=named,
        family="sdxl",
        tokenizer_2=tokenizer_2,
        text_encoder_2=text_encoder_2,
    )


def tokenize(models: Models, caption: str) -> dict[str, torch.Tensor]:
    """The caption's token ids for each text encoder, padded to its window (77)."""
    return {
        "input_ids": sd15.clip_ids(models.tokenizer, caption),
        "input_ids_2": sd15.clip_ids(models.tokenizer_2, caption),
    }


def encode_pair(
    text_encoder: Any, text_encoder_2: Any, ids: torch.Tensor, ids_2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' SDXL ``encode_prompt``: both encoders' penultimate hidden states
    concatenated, and the second encoder's pooled (projected) embedding."""
    hidden = []
    for encoder, input_ids in ((text_encoder, ids), (text_encoder_2, ids_2)):
        out = encoder(input_ids, output_hidden_states=True, return_dict=False)
        pooled = out[0]
        hidden.append(out[-1][-2])
    return torch.cat(hidden, dim=-1), pooled


def encode_text(
    spec: TrainSpec, models: Models, ids: torch.Tensor, ids_2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, pooled)`` of a batch; memoized per caption when
    ``cache_text_embeddings`` (the encoders are frozen)."""
    encoders = (models.text_encoder, models.text_encoder_2)
    if not spec.cache_text_embeddings:
        with torch.no_grad():
            return encode_pair(*encoders, ids, ids_2)
    rows = []
    for one, two in zip(ids, ids_2, strict=True):
        key = one.cpu().numpy().tobytes() + two.cpu().numpy().tobytes()
        if key not in models.text_embeddings:
            with torch.no_grad():
                embeds, pooled = encode_pair(*encoders, one[None], two[None])
            models.text_embeddings[key] = (embeds[0], pooled[0])
        rows.append(models.text_embeddings[key])
    return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


def time_ids(
    batch: dict[str, Any], target: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """SDXL's ``add_time_ids`` per item: original (h, w), crop top-left (y, x), target (h, w)."""
    n = batch["original_size"].shape[0]
    target_ids = torch.tensor(target, dtype=torch.long).expand(n, 2)
    ids = torch.cat([batch["original_size"], batch["crop_top_left"], target_ids], dim=1)
    return ids.to(device, dtype=dtype)


def fitted_size(vae_config: Any, latents: torch.Tensor) -> tuple[int, int]:
    """The (height, width) in pixels the batch's images were fitted to (the resolution, or
    their bucket): the latents' size times the VAE's downsampling."""
    factor = 2 ** (len(vae_config.block_out_channels) - 1)
    return latents.shape[2] * factor, latents.shape[3] * factor


def scale_latents(models: Models, latents: torch.Tensor) -> torch.Tensor:
    """The VAE sample as the UNet sees it (with the VAE's latents mean/std where it has them),
    in the mixed-precision dtype."""
    config = models.vae.config
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        mean = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
        latents = (latents - mean) * config.scaling_factor / std
    else:
        latents = latents * config.scaling_factor
    return latents.to(models.weight_dtype)


def per_item_loss(
    spec: TrainSpec,
    models: Models,
    batch: dict[str, Any],
    latents: torch.Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Noise-prediction loss of each item (before the instance/class weights)."""
    latents = scale_latents(models, latents)
    noisy, noise, timesteps = sd15.add_noise(spec, models, latents, generator, device)
    target = fitted_size(models.vae.config, latents)
    prompt_embeds, pooled = encode_text(
        spec, models, batch["input_ids"].to(device), batch["input_ids_2"].to(device)
    )
    added = {
        "time_ids": time_ids(batch, target, models.weight_dtype, device),
        "text_embeds": pooled,
    }
    model_pred = models.denoiser(
        noisy, timesteps, prompt_embeds, added_cond_kwargs=added, return_dict=False
    )[0]
    return sd15.noise_prediction_loss(spec, models, latents, noise, timesteps, model_pred)


def save_checkpoint(spec: TrainSpec, models: Models, metadata: dict[str, Any]) -> None:
    """A LoRA arm's adapter in Kohya's SDXL format, or the full model as one SGM-layout file
    (the layout of sd_xl_base_1.0.safetensors)."""
    if spec.method == "lora":
        save_sdxl_lora(
            spec.out_checkpoint, models.denoiser, spec.lora_alpha, metadata, spec.save_precision
        )
    else:
        save_sdxl_checkpoint(
            spec.out_checkpoint,
            models.denoiser,
            models.vae,
            models.text_encoder,
            models.text_encoder_2,
            metadata,
            spec.save_precision,
        )
