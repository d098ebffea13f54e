"""SD 1.x family trainer: what diffusers' ``train_dreambooth.py`` does that is particular to
Stable Diffusion 1.x. The shared epoch (data, resume, optimizer, progress, loss log) is in
:mod:`dreamgrid.train.loop`; it calls these functions through the family interface:

- ``MODEL_PARTS``: the subfolders a diffusers folder of this family has;
- ``load_models(spec, device)`` -> :class:`~dreamgrid.train.loop.Models`;
- ``tokenize(models, caption)`` -> the ``input_ids*`` tensors of one caption;
- ``per_item_loss(spec, models, batch, latents, generator, device)`` -> loss per item before
  the instance/class weights, given the VAE's latent sample of each image;
- ``save_checkpoint(spec, models, metadata)``: the epoch's checkpoint file;
- optional ``before_epoch(spec, models, batches, device)``: called before each epoch's steps
  (FLUX encodes every caption there, then moves its text encoders off the GPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

from dreamgrid.errors import SpecError
from dreamgrid.train.data import derive_seed
from dreamgrid.train.export import save_lora, save_sd_checkpoint

if TYPE_CHECKING:
    from dreamgrid.train.loop import Models
    from dreamgrid.train.spec import TrainSpec

MODEL_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def load_models(spec: TrainSpec, device: torch.device) -> Models:
    """Load the base model's parts; freeze the VAE (and text encoder unless it is trained)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from dreamgrid.train.loop import DTYPES, Models

    base = str(spec.base_model)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    check_prediction_type(base, noise_scheduler)
    weight_dtype = DTYPES[spec.mixed_precision]
    # Frozen parts run in the mixed-precision dtype (a cast to float32 is skipped: it only
    # makes diffusers warn). Trained parts stay float32 and are moved by accelerate.
    cast = {} if weight_dtype == torch.float32 else {"dtype": weight_dtype}
    vae.requires_grad_(False)
    vae.to(device, **cast)
    text_encoder.requires_grad_(spec.train_text_encoder)
    if spec.train_text_encoder:
        text_encoder.train()
    else:
        text_encoder.to(device, **cast)
    if spec.method == "lora":
        add_lora(spec, unet, device, weight_dtype)
    use_sdpa(unet)
    unet.train()
    if spec.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if spec.train_text_encoder:
            # transformers 5 renamed gradient_checkpointing_enable.
            enable = getattr(text_encoder, "activation_checkpointing_enable", None)
            (enable or text_encoder.gradient_checkpointing_enable)()
    named = {f"unet.{k}": p for k, p in unet.named_parameters() if p.requires_grad}
    if spec.train_text_encoder:
        named.update({f"text_encoder.{k}": p for k, p in text_encoder.named_parameters()})
    return Models(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        denoiser=unet,
        noise_scheduler=noise_scheduler,
        weight_dtype=weight_dtype,
        named_params=named,
        family="sd15",
    )


def check_prediction_type(base: str, noise_scheduler: Any) -> None:
    if noise_scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
        raise SpecError(
            f"{base}: scheduler prediction_type {noise_scheduler.config.prediction_type!r} "
            f"is not supported (epsilon or v_prediction)."
        )


def use_sdpa(unet: Any) -> None:
    """torch's scaled_dot_product_attention (flash / memory-efficient kernels on GPU); diffusers
    picks it on torch 2 anyway, set here so no saved processor config overrides it."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def add_lora(spec: TrainSpec, unet: Any, device: torch.device, weight_dtype: torch.dtype) -> None:
    """Freeze the UNet and give it a peft LoRA adapter (diffusers' train_dreambooth_lora).

    The frozen weights run in the mixed-precision dtype; the adapter stays float32. Its
    random init is seeded from the spec's seed, so every epoch's replay starts alike.
    """
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    unet.requires_grad_(False)
    if weight_dtype != torch.float32:
        unet.to(device, dtype=weight_dtype)
    set_seed(derive_seed(spec.seed, 0, "lora-init") % 2**32)
    unet.add_adapter(
        LoraConfig(
            r=spec.lora_rank,
            lora_alpha=spec.lora_alpha,
            init_lora_weights="gaussian",
            target_modules=list(spec.lora_target_modules),
        )
    )
    cast_training_params(unet, dtype=torch.float32)


def tokenize(models: Models, caption: str) -> dict[str, torch.Tensor]:
    """The caption's CLIP token ids, padded to the encoder's window (77)."""
    return {"input_ids": clip_ids(models.tokenizer, caption)}


def clip_ids(tokenizer: Any, caption: str) -> torch.Tensor:
    return tokenizer(
        caption,
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids[0]


def add_noise(
    spec: TrainSpec,
    models: Models,
    latents: torch.Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DDPM forward process at a random timestep per image: ``(noisy, noise, timesteps)``."""
    scheduler = models.noise_scheduler
    # Sample the noise to add to the latents.
    noise = torch.randn(latents.shape, generator=generator, device=device).to(latents.dtype)
    if spec.noise_offset:
        # Kohya / diffusers noise offset: a per-channel shift lets the model learn brightness.
        shift = torch.randn(
            (latents.shape[0], latents.shape[1], 1, 1), generator=generator, device=device
        )
        noise = noise + spec.noise_offset * shift.to(latents.dtype)
    # Sample a random timestep per image, and add noise to the latents at that timestep
    # (the forward diffusion process).
    timesteps = torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        (latents.shape[0],),
        generator=generator,
        device=device,
    ).long()
    return scheduler.add_noise(latents, noise, timesteps), noise, timesteps


def noise_prediction_loss(
    spec: TrainSpec,
    models: Models,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    model_pred: torch.Tensor,
) -> torch.Tensor:
    """Per-item MSE against the epsilon or velocity target, with min-SNR weights if set."""
    scheduler = models.noise_scheduler
    # The target depends on the model's prediction type: the noise, or the velocity.
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    per_item = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    per_item = per_item.mean(dim=list(range(1, per_item.ndim)))
    if spec.min_snr_gamma is not None:
        per_item = per_item * min_snr_weights(scheduler, timesteps, spec.min_snr_gamma)
    return per_item


def per_item_loss(
    spec: TrainSpec,
    models: Models,
    batch: dict[str, Any],
    latents: torch.Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Noise-prediction loss of each item (before the instance/class weights)."""
    latents = latents * models.vae.config.scaling_factor
    noisy_latents, noise, timesteps = add_noise(spec, models, latents, generator, device)
    # Condition on the captions' text embeddings, and predict the noise residual.
    encoder_hidden_states = encode_text(spec, models, batch["input_ids"].to(device))
    model_pred = models.denoiser(
        noisy_latents, timesteps, encoder_hidden_states, return_dict=False
    )[0]
    return noise_prediction_loss(spec, models, latents, noise, timesteps, model_pred)


def encode_text(spec: TrainSpec, models: Models, input_ids: torch.Tensor) -> torch.Tensor:
    """Text encoder hidden states; while the encoder is frozen, memoized per caption."""
    if spec.text_encoder_trains(spec.epoch):
        return models.text_encoder(input_ids, return_dict=False)[0]
    if not spec.cache_text_embeddings:
        with torch.no_grad():
            return models.text_encoder(input_ids, return_dict=False)[0]
    rows = []
    for ids in input_ids:
        key = ids.cpu().numpy().tobytes()
        if key not in models.text_embeddings:
            with torch.no_grad():
                models.text_embeddings[key] = models.text_encoder(ids[None], return_dict=False)[0][
                    0
                ]
        rows.append(models.text_embeddings[key])
    return torch.stack(rows)


def min_snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as diffusers' training scripts use them:
    ``min(snr, gamma) / snr`` for epsilon, ``/ (snr + 1)`` for v-prediction."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    weights = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return weights / (snr + 1)
    return weights / snr


def save_checkpoint(spec: TrainSpec, models: Models, metadata: dict[str, Any]) -> None:
    """A LoRA arm's adapter in Kohya's format, or the full model as one SD-layout file.

    ``models`` holds the unwrapped (not accelerate-prepared) modules.
    """
    if spec.method == "lora":
        save_lora(
            spec.out_checkpoint, models.denoiser, spec.lora_alpha, metadata, spec.save_precision
        )
    else:
        save_sd_checkpoint(
            spec.out_checkpoint,
            models.denoiser,
            models.vae,
            models.text_encoder,
            metadata,
            spec.save_precision,
        )
