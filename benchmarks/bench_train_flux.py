"""dreamgrid's FLUX.1 LoRA trainer against diffusers' train_dreambooth_lora_flux.py step.

Usage:
    python benchmarks/bench_train_flux.py          # CPU, the tiny random-weight FLUX
    python benchmarks/bench_train_flux.py --gpu    # CUDA: FLUX.1-dev shapes, random weights

Both sides train the same model from the same weights on the same batches (dreamgrid's data
pipeline) with the same random draws (latent sample, noise, timestep density u, in that order,
from one generator). "ours" is ``dreamgrid.train.loop.train_epoch`` (+ ``dreamgrid.train.flux``);
"reference" is the inner loop of diffusers' ``examples/dreambooth/train_dreambooth_lora_flux.py``
transcribed below: encode_prompt (CLIP pooled + T5, zero text ids) -> VAE sample ->
``(z - shift) * scale`` -> latent image ids -> noise -> compute_density_for_timestep_sampling
-> timesteps from the scheduler copy -> get_sigmas -> ``(1 - s) x + s noise`` -> _pack_latents
-> guidance -> transformer(timestep / 1000) -> _unpack_latents -> compute_loss_weighting_for_sd3
-> weighted MSE against ``noise - x`` -> backward -> clip -> step -> zero_grad. Only the
random draws are given our generator (the script uses the global RNG), so that the losses can
be compared step by step. Model building and checkpoint export are not timed.

``--gpu`` (needs CUDA) builds FLUX.1-dev-shaped parts from their configs with random weights
directly on the GPU in bfloat16 (transformer 19 + 38 blocks, 12B; T5-XXL encoder; CLIP-L;
the 16-channel VAE; no download), 512 px, batch 1, LoRA rank 16 on to_k/to_q/to_v/to_out.0,
bf16 mixed precision, gradient checkpointing, T5 at 512 tokens; steps/s and peak GPU memory
per side. The reference encodes the prompt every step as the script does with per-image
prompts; ours encodes each caption once (cache_text_embeddings) and then moves CLIP and T5 to
the CPU, so its peak memory leaves out T5-XXL (about 9 GiB) where the reference's holds it.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import make_images, peak_memory_gib, peak_memory_reset

LORA = {
    "method": "lora",
    "lora_rank": 4,
    "lora_alpha": 4.0,
    "lora_target_modules": ("to_k", "to_q", "to_v", "to_out.0"),
}

#: black-forest-labs/FLUX.1-dev's component configs (transformer, VAE, CLIP-L, T5-XXL).
DEV_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
DEV_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "force_upcast": True,
}

DEV_CLIP = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "projection_dim": 768,
}
DEV_T5 = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
    "use_cache": False,
}


def make_spec(base: Path, images: Path, out: Path, **changes):
    from dreamgrid.train.testing import tiny_train_spec

    fields = {
        "arm": "bench-flux",
        "family": "flux",
        "repeats": 2,
        "batch_size": 1,
        "learning_rate": 1e-4,
        "seed": 1,
        "cache_text_embeddings": True,
        "max_sequence_length": 32,
        **LORA,
    }
    return tiny_train_spec(
        base, images, out, state=out / "state.safetensors", **{**fields, **changes}
    )


def dev_parts(base: Path, device: str) -> dict:
    """FLUX.1-dev-shaped parts with random weights, built on ``device`` in bfloat16; the
    tokenizers and scheduler are the tiny model's (its vocabularies fit the big encoders)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    tokenizer_2 = T5TokenizerFast.from_pretrained(base, subfolder="tokenizer_2")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # 12B + 4.7B parameters: never in float32
    try:
        with torch.device(device):
            torch.manual_seed(0)
            parts = {
                "transformer": FluxTransformer2DModel(**DEV_TRANSFORMER),
                "vae": AutoencoderKL(**DEV_VAE),
                "text_encoder": CLIPTextModel(
                    CLIPTextConfig(
                        **DEV_CLIP,
                        bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                ),
                "text_encoder_2": T5EncoderModel(T5Config(**DEV_T5)),
            }
    finally:
        torch.set_default_dtype(default)
    parts["tokenizer"] = tokenizer
    parts["tokenizer_2"] = tokenizer_2
    parts["scheduler"] = FlowMatchEulerDiscreteScheduler.from_pretrained(
        base, subfolder="scheduler"
    )
    return parts


def setup(spec, parts_fn=None):
    """Accelerator, models, optimizer and the epoch's batches, as ``loop.run`` makes them
    (``parts_fn(device)`` builds the parts instead of loading the spec's folder)."""
    from dreamgrid.train import flux, loop
    from dreamgrid.train.data import epoch_batches

    accelerator = loop.make_accelerator(spec)
    if parts_fn is None:
        models = loop.load_models(spec, accelerator.device)
    else:
        models = flux.prepare_models(spec, parts_fn(accelerator.device), accelerator.device)
    optimizer, lr_scheduler = loop.prepare_optimizer(spec, accelerator, models)
    return accelerator, models, optimizer, lr_scheduler, epoch_batches(spec)


def reference_epoch(spec, accelerator, models, batches, optimizer, lr_scheduler) -> list[float]:
    """diffusers train_dreambooth_lora_flux.py's training step, fed our batches and draws."""
    import copy

    import torch
    from diffusers import FluxPipeline
    from diffusers.training_utils import (
        compute_density_for_timestep_sampling,
        compute_loss_weighting_for_sd3,
    )

    from dreamgrid.train import loop
    from dreamgrid.train.data import derive_seed

    dataloader = loop.make_dataloader(accelerator, models, batches)
    generator = torch.Generator(device=accelerator.device)
    generator.manual_seed(derive_seed(spec.seed, spec.epoch, "noise"))
    vae, transformer = models.vae, models.denoiser
    text_encoder_one, text_encoder_two = models.text_encoder, models.text_encoder_2
    noise_scheduler_copy = copy.deepcopy(models.noise_scheduler)
    weight_dtype = models.weight_dtype
    vae_config_shift_factor = vae.config.shift_factor
    vae_config_scaling_factor = vae.config.scaling_factor
    vae_config_block_out_channels = vae.config.block_out_channels

    def encode_prompt(tokens_one, tokens_two):
        # The script's encode_prompt with text_input_ids_list (CLIP pooled, T5 hidden states).
        with torch.no_grad():
            pooled = text_encoder_one(tokens_one, output_hidden_states=False).pooler_output
            pooled = pooled.to(dtype=text_encoder_one.dtype)
            prompt_embeds = text_encoder_two(tokens_two)[0].to(dtype=text_encoder_two.dtype)
        text_ids = torch.zeros(prompt_embeds.shape[1], 3).to(
            device=accelerator.device, dtype=text_encoder_one.dtype
        )
        return prompt_embeds, pooled, text_ids

    def get_sigmas(timesteps, n_dim=4, dtype=torch.float32):
        sigmas = noise_scheduler_copy.sigmas.to(device=accelerator.device, dtype=dtype)
        schedule_timesteps = noise_scheduler_copy.timesteps.to(accelerator.device)
        timesteps = timesteps.to(accelerator.device)
        step_indices = [(schedule_timesteps == t).nonzero().item() for t in timesteps]
        sigma = sigmas[step_indices].flatten()
        while len(sigma.shape) < n_dim:
            sigma = sigma.unsqueeze(-1)
        return sigma

    losses = []
    for batch in dataloader:
        with accelerator.accumulate([transformer]):
            prompt_embeds, pooled_prompt_embeds, text_ids = encode_prompt(
                batch["input_ids"].to(accelerator.device),
                batch["input_ids_2"].to(accelerator.device),
            )
            pixel_values = batch["pixel_values"].to(dtype=vae.dtype)
            with torch.no_grad():
                model_input = vae.encode(pixel_values).latent_dist.sample(generator=generator)
            model_input = (model_input - vae_config_shift_factor) * vae_config_scaling_factor
            model_input = model_input.to(dtype=weight_dtype)
            vae_scale_factor = 2 ** (len(vae_config_block_out_channels) - 1)
            latent_image_ids = FluxPipeline._prepare_latent_image_ids(
                model_input.shape[0],
                model_input.shape[2] // 2,
                model_input.shape[3] // 2,
                accelerator.device,
                weight_dtype,
            )
            noise = torch.randn(
                model_input.shape, generator=generator, device=model_input.device
            ).to(model_input.dtype)
            bsz = model_input.shape[0]
            u = compute_density_for_timestep_sampling(
                weighting_scheme=spec.weighting_scheme,
                batch_size=bsz,
                logit_mean=spec.logit_mean,
                logit_std=spec.logit_std,
                mode_scale=spec.mode_scale,
                device=accelerator.device,
                generator=generator,
            )
            indices = (u * noise_scheduler_copy.config.num_train_timesteps).long().cpu()
            timesteps = noise_scheduler_copy.timesteps[indices].to(device=model_input.device)
            sigmas = get_sigmas(timesteps, n_dim=model_input.ndim, dtype=model_input.dtype)
            noisy_model_input = (1.0 - sigmas) * model_input + sigmas * noise
            packed_noisy_model_input = FluxPipeline._pack_latents(
                noisy_model_input,
                batch_size=model_input.shape[0],
                num_channels_latents=model_input.shape[1],
                height=model_input.shape[2],
                width=model_input.shape[3],
            )
            if accelerator.unwrap_model(transformer).config.guidance_embeds:
                guidance = torch.tensor([spec.flux_guidance], device=accelerator.device)
                guidance = guidance.expand(model_input.shape[0])
            else:
                guidance = None
            model_pred = transformer(
                hidden_states=packed_noisy_model_input,
                timestep=timesteps / 1000,
                guidance=guidance,
                pooled_projections=pooled_prompt_embeds,
                encoder_hidden_states=prompt_embeds,
                txt_ids=text_ids,
                img_ids=latent_image_ids,
                return_dict=False,
            )[0]
            model_pred = FluxPipeline._unpack_latents(
                model_pred,
                height=model_input.shape[2] * vae_scale_factor,
                width=model_input.shape[3] * vae_scale_factor,
                vae_scale_factor=vae_scale_factor,
            )
            weighting = compute_loss_weighting_for_sd3(
                weighting_scheme=spec.weighting_scheme, sigmas=sigmas
            )
            target = noise - model_input
            loss = torch.mean(
                (weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(
                    target.shape[0], -1
                ),
                1,
            )
            loss = loss.mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(transformer.parameters(), spec.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        losses.append(loss.detach().item())
    return losses


def time_side(spec, side: str, warmup: int, parts_fn=None) -> dict:
    """Steps/s of one side after ``warmup`` untimed steps (a separate short epoch)."""
    import torch

    from dreamgrid.train import loop

    accelerator, models, optimizer, lr_scheduler, batches = setup(spec, parts_fn)
    step = loop.train_epoch if side == "ours" else reference_epoch
    if warmup:
        warm = dataclasses.replace(spec, repeats=1)
        step(warm, accelerator, models, batches[:warmup], optimizer, lr_scheduler)
    peak_memory_reset()
    started = time.perf_counter()
    losses = step(spec, accelerator, models, batches, optimizer, lr_scheduler)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = {
        "steps": len(losses),
        "seconds": round(seconds, 3),
        "steps_per_s": round(len(losses) / seconds, 3),
        "peak_gpu_gib": peak_memory_gib(),
        "losses": losses,
    }
    del accelerator, models, optimizer, lr_scheduler, batches, step
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def compare(spec, warmup: int, parts_fn=None) -> dict:
    ours = time_side(spec, "ours", warmup, parts_fn)
    reference = time_side(spec, "reference", warmup, parts_fn)
    diffs = [abs(a - b) for a, b in zip(ours["losses"], reference["losses"], strict=True)]
    return {
        "ours": {k: v for k, v in ours.items() if k != "losses"},
        "reference": {k: v for k, v in reference.items() if k != "losses"},
        "speed_ratio": round(ours["steps_per_s"] / reference["steps_per_s"], 3),
        "max_abs_loss_difference": max(diffs),
        "max_rel_loss_difference": max(d / abs(b) for d, b in zip(diffs, reference["losses"])),
        "first_losses": {"ours": ours["losses"][:3], "reference": reference["losses"][:3]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="FLUX.1-dev shapes on CUDA")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=None, help="steps = images x repeats")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from dreamgrid.tiny import build_tiny_flux

    work = Path(tempfile.mkdtemp(prefix="bench-train-flux-"))
    report: dict = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    base = build_tiny_flux(work / "tiny-flux")
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu needs a CUDA GPU", file=sys.stderr)
            return 2
        images = make_images(work / "images", args.images, 512)
        spec = make_spec(
            base,
            images,
            work / "dev",
            resolution=512,
            repeats=args.repeats or 2,
            mixed_precision="bf16",
            gradient_checkpointing=True,
            max_sequence_length=512,
            lora_rank=16,
            lora_alpha=16.0,
        )
        report["flux_dev_lora_rank16_bf16_gradckpt_512px"] = compare(
            spec, args.warmup, lambda device: dev_parts(base, device)
        )
    else:
        images = make_images(work / "images", args.images, 64)
        repeats = args.repeats or 2
        settings = {
            "lora_uniform": {},
            "lora_logit_normal_batch2": {"weighting_scheme": "logit_normal", "batch_size": 2},
            "lora_mode": {"weighting_scheme": "mode"},
            "lora_cosmap": {"weighting_scheme": "cosmap"},
            "lora_sigma_sqrt": {"weighting_scheme": "sigma_sqrt"},
        }
        for name, changes in settings.items():
            spec = make_spec(base, images, work / name, repeats=repeats, **changes)
            report[f"tiny_cpu_{name}"] = compare(spec, args.warmup)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
