"""FLUX.1 family trainer: what diffusers' ``examples/dreambooth/train_dreambooth_lora_flux.py``
does that is particular to FLUX, behind the family interface of :mod:`dreamgrid.train.sd15`
(the shared epoch, resume state, latent cache and loss weights are :mod:`dreamgrid.train.loop`'s).

- **Objective: rectified flow matching.** ``x_t = (1 - sigma) x_0 + sigma noise``; the
  transformer predicts the velocity ``noise - x_0``. Timesteps are drawn with
  ``compute_density_for_timestep_sampling`` (``weighting_scheme`` none/sigma_sqrt/cosmap:
  uniform; logit_normal: ``logit_mean``/``logit_std``; mode: ``mode_scale``) as indices into the
  model's own FlowMatchEulerDiscreteScheduler timesteps, sigmas are that scheduler's, and the
  per-item MSE is weighted by ``compute_loss_weighting_for_sd3`` (sigma_sqrt, cosmap), as the
  script does. Min-SNR and noise offset belong to the DDPM objective and are refused
  (:class:`~dreamgrid.train.spec.TrainSpec`).
- **Inputs.** VAE latents ``(z - shift_factor) * scaling_factor``, packed into 2 x 2 patch
  tokens (``FluxPipeline._pack_latents``) with their position ids
  (``_prepare_latent_image_ids``); text ids all zero; CLIP's pooled embedding and T5's hidden
  states padded to ``max_sequence_length`` tokens; the guidance embedding gets
  ``flux_guidance`` (the script's ``--guidance_scale``, 3.5) when the transformer has one
  (FLUX.1-dev), timesteps divided by 1000 as the script passes them.
- **What trains.** LoRA on the transformer (``lora.target_modules`` matched by peft: the
  config's default to_k/to_q/to_v/to_out.0, the script's earlier default, adapts the image
  stream's attention in the double blocks and the attention in the single blocks; the script's
  current default adds the text stream's ``attn.add_*_proj``/``to_add_out`` and the
  ``ff``/``ff_context`` MLPs, which ``lora.target_modules`` can name), or the whole
  transformer. CLIP and T5 stay frozen and their embeddings are computed once per caption
  (``cache_text_embeddings``), as the script precomputes them when the text encoder is frozen.
  On CUDA both encoders then leave the GPU for the steps (:func:`before_epoch`).
  One difference: LoRA weights train in float32 under bf16 too (the script keeps them bf16
  unless fp16), as dreamgrid's SD 1.5 LoRA does.

Random draws come from the loop's generator in the script's order (latent sample, noise, u),
so an epoch is reproducible and the reference benchmark can replay it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dreamgrid.errors import SpecError

if TYPE_CHECKING:
    from dreamgrid.train.loop import Models
    from dreamgrid.train.spec import TrainSpec

MODEL_PARTS = (
    "transformer",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
)
#: CLIP's window: the pooled embedding always comes from 77 tokens (the script's value).
CLIP_LENGTH = 77


def load_models(spec: TrainSpec, device: torch.device) -> Models:
    """Load the FLUX folder's parts; everything but the trained transformer (or its LoRA
    adapter) is frozen and cast to the mixed-precision dtype."""
    return prepare_models(spec, load_parts(str(spec.base_model)), device)


def load_parts(base: str) -> dict[str, Any]:
    """The FLUX folder's tokenizers, text encoders, VAE, transformer and scheduler."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    parts = {
        "tokenizer": CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        "tokenizer_2": T5TokenizerFast.from_pretrained(base, subfolder="tokenizer_2"),
        "text_encoder": CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
        "text_encoder_2": T5EncoderModel.from_pretrained(base, subfolder="text_encoder_2"),
        "vae": AutoencoderKL.from_pretrained(base, subfolder="vae"),
        "transformer": FluxTransformer2DModel.from_pretrained(base, subfolder="transformer"),
        "scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(base, subfolder="scheduler"),
    }
    check_vae(base, parts["vae"])
    return parts


def prepare_models(spec: TrainSpec, parts: dict[str, Any], device: torch.device) -> Models:
    """Freeze and cast the parts as the script does, add the LoRA adapter (or train the whole
    transformer), and name the trained parameters ``transformer.<name>``."""
    from dreamgrid.train.loop import DTYPES, Models
    from dreamgrid.train.sd15 import add_lora

    tokenizer_2, transformer = parts["tokenizer_2"], parts["transformer"]
    # The dataset tokenizes through tokenize(models, caption); T5's padded length is the spec's.
    tokenizer_2.model_max_length = spec.max_sequence_length
    weight_dtype = DTYPES[spec.mixed_precision]
    cast = {} if weight_dtype == torch.float32 else {"dtype": weight_dtype}
    for frozen in (parts["vae"], parts["text_encoder"], parts["text_encoder_2"]):
        frozen.requires_grad_(False)
        frozen.eval()  # as from_pretrained leaves them: T5's dropout stays off
        frozen.to(device, **cast)
    if spec.method == "lora":
        add_lora(spec, transformer, device, weight_dtype)
    transformer.train()
    if spec.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    named = {f"transformer.{k}": p for k, p in transformer.named_parameters() if p.requires_grad}
    return Models(
        tokenizer=parts["tokenizer"],
        text_encoder=parts["text_encoder"],
        vae=parts["vae"],
        denoiser=transformer,
        noise_scheduler=parts["scheduler"],
        weight_dtype=weight_dtype,
        named_params=named,
        family="flux",
        tokenizer_2=tokenizer_2,
        text_encoder_2=parts["text_encoder_2"],
    )


def check_vae(base: str, vae: Any) -> None:
    if vae.config.shift_factor is None:
        raise SpecError(
            f"{base}: the VAE has no shift_factor, so it is not FLUX.1's 16-channel VAE. "
            "Point base_model at a FLUX.1 diffusers folder (or state family)."
        )


def tokenize(models: Models, caption: str) -> dict[str, torch.Tensor]:
    """CLIP ids (77, for the pooled embedding) and T5 ids padded to ``max_sequence_length``."""
    clip = models.tokenizer(
        caption, padding="max_length", max_length=CLIP_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids[0]
    t5 = models.tokenizer_2(
        caption,
        padding="max_length",
        max_length=models.tokenizer_2.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids[0]
    return {"input_ids": clip, "input_ids_2": t5}


def _encode(models: Models, clip_ids: torch.Tensor, t5_ids: torch.Tensor) -> tuple[Any, Any]:
    """(T5 hidden states, CLIP pooled embedding) as the script's encode_prompt makes them, on
    the ids' device (the encoders may have been moved to the CPU by :func:`before_epoch`)."""
    te, te_2 = models.text_encoder, models.text_encoder_2
    with torch.no_grad():
        pooled = te(clip_ids.to(te.device), output_hidden_states=False).pooler_output
        hidden = te_2(t5_ids.to(te_2.device))[0]
    return hidden.to(t5_ids.device, te_2.dtype), pooled.to(clip_ids.device, te.dtype)


def _key(clip_ids: torch.Tensor, t5_ids: torch.Tensor) -> bytes:
    return clip_ids.cpu().numpy().tobytes() + b"|" + t5_ids.cpu().numpy().tobytes()


def before_epoch(spec: TrainSpec, models: Models, batches: list[list[Any]], device: Any) -> None:
    """With ``cache_text_embeddings``: encode every caption of the epoch now, then move CLIP
    and T5 to the CPU, so the steps run without them on the GPU (T5-XXL alone is 9 GiB in
    bf16), as the script frees its text encoders once the embeddings are computed."""
    if not spec.cache_text_embeddings:
        return
    for caption in sorted({item.caption for batch in batches for item in batch}):
        ids = tokenize(models, caption)
        clip_ids, t5_ids = ids["input_ids"].to(device), ids["input_ids_2"].to(device)
        key = _key(clip_ids, t5_ids)
        if key not in models.text_embeddings:
            hidden, pooled = _encode(models, clip_ids[None], t5_ids[None])
            models.text_embeddings[key] = (hidden[0], pooled[0])
    if torch.device(device).type == "cuda":
        models.text_encoder.to("cpu")
        models.text_encoder_2.to("cpu")
        torch.cuda.empty_cache()


def encode_text(
    spec: TrainSpec, models: Models, batch: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, pooled_prompt_embeds, text_ids)`` of the batch's captions; with
    ``cache_text_embeddings``, each caption is encoded once per job (:func:`before_epoch`)."""
    clip_ids = batch["input_ids"].to(device)
    t5_ids = batch["input_ids_2"].to(device)
    if not spec.cache_text_embeddings:
        hidden, pooled = _encode(models, clip_ids, t5_ids)
    else:
        rows = []
        for ids, ids_2 in zip(clip_ids, t5_ids, strict=True):
            key = _key(ids, ids_2)
            if key not in models.text_embeddings:
                h, p = _encode(models, ids[None], ids_2[None])
                models.text_embeddings[key] = (h[0], p[0])
            rows.append(models.text_embeddings[key])
        hidden = torch.stack([h for h, _ in rows])
        pooled = torch.stack([p for _, p in rows])
    text_ids = torch.zeros(hidden.shape[1], 3, device=device, dtype=models.text_encoder.dtype)
    return hidden, pooled, text_ids


def sample_timesteps(
    spec: TrainSpec, scheduler: Any, batch_size: int, generator: torch.Generator, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(timesteps, sigmas)`` per item: u from the weighting scheme's density, as an index
    into the training scheduler's timesteps and sigmas (the script's get_sigmas)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    u = compute_density_for_timestep_sampling(
        weighting_scheme=spec.weighting_scheme,
        batch_size=batch_size,
        logit_mean=spec.logit_mean,
        logit_std=spec.logit_std,
        mode_scale=spec.mode_scale,
        device=device,
        generator=generator,
    )
    n = scheduler.config.num_train_timesteps
    # u is in [0, 1); the mode density maps u = 0 to 1, one past the last index.
    indices = (u * n).long().clamp(max=n - 1).cpu()
    return scheduler.timesteps[indices].to(device), scheduler.sigmas[indices].to(device)


def _config(model: Any) -> Any:
    return getattr(model, "module", model).config


def per_item_loss(
    spec: TrainSpec,
    models: Models,
    batch: dict[str, Any],
    latents: torch.Tensor,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Flow-matching loss of each item (before the instance/class weights)."""
    from diffusers import FluxPipeline
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    vae_config = models.vae.config
    model_input = (latents - vae_config.shift_factor) * vae_config.scaling_factor
    model_input = model_input.to(dtype=models.weight_dtype)
    bsz, channels, height, width = model_input.shape
    vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
    image_ids = FluxPipeline._prepare_latent_image_ids(
        bsz, height // 2, width // 2, device, models.weight_dtype
    )
    noise = torch.randn(model_input.shape, generator=generator, device=device).to(model_input.dtype)
    timesteps, sigmas = sample_timesteps(spec, models.noise_scheduler, bsz, generator, device)
    sigmas = sigmas.to(model_input.dtype).view(-1, 1, 1, 1)
    noisy = (1.0 - sigmas) * model_input + sigmas * noise
    packed = FluxPipeline._pack_latents(noisy, bsz, channels, height, width)
    guidance = None
    if _config(models.denoiser).guidance_embeds:
        guidance = torch.tensor([spec.flux_guidance], device=device).expand(bsz)
    prompt_embeds, pooled, text_ids = encode_text(spec, models, batch, device)
    model_pred = models.denoiser(
        hidden_states=packed,
        timestep=timesteps / 1000,  # the transformer multiplies by 1000 again
        guidance=guidance,
        pooled_projections=pooled,
        encoder_hidden_states=prompt_embeds,
        txt_ids=text_ids,
        img_ids=image_ids,
        return_dict=False,
    )[0]
    model_pred = FluxPipeline._unpack_latents(
        model_pred,
        height=height * vae_scale_factor,
        width=width * vae_scale_factor,
        vae_scale_factor=vae_scale_factor,
    )
    weighting = compute_loss_weighting_for_sd3(
        weighting_scheme=spec.weighting_scheme, sigmas=sigmas
    )
    target = noise - model_input
    squared = weighting.float() * (model_pred.float() - target.float()) ** 2
    return squared.reshape(bsz, -1).mean(dim=1)


def save_checkpoint(spec: TrainSpec, models: Models, metadata: dict[str, Any]) -> None:
    """The LoRA adapter in diffusers' peft format, or the full transformer
    (:mod:`dreamgrid.train.export_flux` says why and who loads them)."""
    from dreamgrid.train.export_flux import save_flux_lora, save_flux_transformer

    if spec.method == "lora":
        save_flux_lora(
            spec.out_checkpoint, models.denoiser, spec.lora_alpha, metadata, spec.save_precision
        )
    else:
        save_flux_transformer(spec.out_checkpoint, models.denoiser, metadata, spec.save_precision)
