"""SDXL trainer against diffusers' train_dreambooth_lora_sdxl.py step: same losses, and speed.

Usage:
    python benchmarks/bench_train_sdxl.py            # CPU, the tiny random-weight SDXL
    python benchmarks/bench_train_sdxl.py --sdxl     # GPU: SDXL-shaped random weights, 1024 px

Both sides train the same model from the same weights on the same batches (dreamgrid's data
pipeline, non-square photos so that the size and crop conditioning is not trivial) with the
same random draws (latent sample, noise, timesteps, from one generator), as bench_train.py
does for SD 1.5. "ours" is ``dreamgrid.train.loop.train_epoch`` with ``dreamgrid.train.sdxl``;
"reference" is the inner loop of diffusers' ``examples/dreambooth/train_dreambooth_lora_sdxl.py``
(custom-caption path, frozen text encoders) transcribed below: VAE (float32) sample x scaling
-> weight dtype -> noise -> timesteps -> add_noise -> ``compute_time_ids`` per image ->
``encode_prompt`` (both encoders' hidden_states[-2], pooled from the second) -> UNet with
``added_cond_kwargs`` -> mse(mean) -> backward -> clip -> step -> zero_grad. The reference reads
each image's original size and crop corner from our batch (its own dataset computes them the
same way from its resize and crop).

``--sdxl`` (needs CUDA) builds SDXL-base-shaped UNet (320/640/1280, transformer depth 1/2/10,
cross-attention 2048), VAE, CLIP-L and OpenCLIP-G-shaped text encoders from configs with random
weights (no download), 1024 px, batch 1, and times LoRA (rank 4, fp16) and a full fine-tune
(fp16, 8-bit AdamW, gradient checkpointing): steps/s and peak GPU memory per side. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import make_spec, peak_memory_gib, peak_memory_reset, setup

LORA = {
    "method": "lora",
    "lora_rank": 4,
    "lora_alpha": 4.0,
    "lora_target_modules": ("to_k", "to_q", "to_v", "to_out.0"),
}


def make_images(folder: Path, count: int, width: int, height: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def build_sdxl(out: Path) -> Path:
    """The tiny SDXL folder (tokenizers, scheduler) with SDXL-base-shaped random weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dreamgrid.tiny import build_tiny_sdxl

    build_tiny_sdxl(out)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # random init of 2.6 B parameters is minutes on a CPU
        UNet2DConditionModel(
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
        ).save_pretrained(out / "unet")
        AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=1024,
            scaling_factor=0.13025,
            force_upcast=True,
        ).save_pretrained(out / "vae")
        small = CLIPTextConfig.from_pretrained(out / "text_encoder")
        ids = {
            "bos_token_id": small.bos_token_id,
            "eos_token_id": small.eos_token_id,
            "pad_token_id": small.pad_token_id,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
        }
        CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, **ids)
        ).save_pretrained(out / "text_encoder")
        CLIPTextModelWithProjection(
            CLIPTextConfig(
                hidden_size=1280,
                intermediate_size=5120,
                num_attention_heads=20,
                num_hidden_layers=32,
                projection_dim=1280,
                hidden_act="gelu",
                **ids,
            )
        ).save_pretrained(out / "text_encoder_2")
    return out


def encode_prompt(text_encoders, text_input_ids_list):
    """diffusers' train_dreambooth_lora_sdxl.encode_prompt (tokenizers=None path)."""
    import torch

    prompt_embeds_list = []
    for i, text_encoder in enumerate(text_encoders):
        text_input_ids = text_input_ids_list[i]
        prompt_embeds = text_encoder(
            text_input_ids.to(text_encoder.device), output_hidden_states=True, return_dict=False
        )
        pooled_prompt_embeds = prompt_embeds[0]
        prompt_embeds = prompt_embeds[-1][-2]
        bs_embed, seq_len, _ = prompt_embeds.shape
        prompt_embeds = prompt_embeds.view(bs_embed, seq_len, -1)
        prompt_embeds_list.append(prompt_embeds)
    prompt_embeds = torch.concat(prompt_embeds_list, dim=-1)
    pooled_prompt_embeds = pooled_prompt_embeds.view(bs_embed, -1)
    return prompt_embeds, pooled_prompt_embeds


def reference_epoch(spec, accelerator, models, batches, optimizer, lr_scheduler) -> list[float]:
    """train_dreambooth_lora_sdxl.py's training step, fed our batches and random draws."""
    import torch
    import torch.nn.functional as F

    from dreamgrid.train import loop
    from dreamgrid.train.data import derive_seed

    dataloader = loop.make_dataloader(accelerator, models, batches)
    generator = torch.Generator(device=accelerator.device)
    generator.manual_seed(derive_seed(spec.seed, spec.epoch, "noise"))
    vae, unet, noise_scheduler = models.vae, models.denoiser, models.noise_scheduler
    text_encoders = [models.text_encoder, models.text_encoder_2]
    weight_dtype = models.weight_dtype
    device = accelerator.device

    def compute_time_ids(original_size, crops_coords_top_left):
        target_size = (spec.resolution, spec.resolution)
        add_time_ids = list(original_size + crops_coords_top_left + target_size)
        add_time_ids = torch.tensor([add_time_ids])
        return add_time_ids.to(device, dtype=weight_dtype)

    losses = []
    for batch in dataloader:
        with accelerator.accumulate(unet):
            pixel_values = batch["pixel_values"].to(dtype=vae.dtype)
            original_sizes = [tuple(s) for s in batch["original_size"].tolist()]
            crop_top_lefts = [tuple(c) for c in batch["crop_top_left"].tolist()]
            with torch.no_grad():
                prompt_embeds, unet_add_text_embeds = encode_prompt(
                    text_encoders, [batch["input_ids"], batch["input_ids_2"]]
                )
            model_input = vae.encode(pixel_values).latent_dist.sample(generator=generator)
            model_input = model_input * vae.config.scaling_factor
            if spec.vae is None:
                model_input = model_input.to(weight_dtype)
            noise = torch.randn(model_input.shape, generator=generator, device=device).to(
                model_input.dtype
            )
            bsz = model_input.shape[0]
            timesteps = torch.randint(
                0,
                noise_scheduler.config.num_train_timesteps,
                (bsz,),
                device=model_input.device,
                generator=generator,
            ).long()
            noisy_model_input = noise_scheduler.add_noise(model_input, noise, timesteps)
            add_time_ids = torch.cat(
                [
                    compute_time_ids(original_size=s, crops_coords_top_left=c)
                    for s, c in zip(original_sizes, crop_top_lefts, strict=True)
                ]
            )
            unet_added_conditions = {"time_ids": add_time_ids, "text_embeds": unet_add_text_embeds}
            model_pred = unet(
                noisy_model_input,
                timesteps,
                prompt_embeds,
                added_cond_kwargs=unet_added_conditions,
                return_dict=False,
            )[0]
            loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(models.params, spec.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())
    return losses


def time_side(spec, side: str, warmup: int) -> dict:
    """Steps/s of one side after ``warmup`` untimed steps (a separate short epoch)."""
    import dataclasses

    import torch

    from dreamgrid.train import loop

    accelerator, models, optimizer, lr_scheduler, batches = setup(spec)
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


def compare(spec, warmup: int) -> dict:
    ours = time_side(spec, "ours", warmup)
    reference = time_side(spec, "reference", warmup)
    diffs = [abs(a - b) for a, b in zip(ours["losses"], reference["losses"], strict=True)]
    return {
        "ours": {k: v for k, v in ours.items() if k != "losses"},
        "reference": {k: v for k, v in reference.items() if k != "losses"},
        "speed_ratio": round(ours["steps_per_s"] / reference["steps_per_s"], 3),
        "max_abs_loss_difference": max(diffs),
        "first_losses": {"ours": ours["losses"][:3], "reference": reference["losses"][:3]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdxl", action="store_true", help="SDXL shapes on CUDA, 1024 px")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None, help="steps = images x repeats")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-full", action="store_true", help="LoRA only")
    args = parser.parse_args(argv)

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-train-sdxl-"))
    report: dict = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.sdxl:
        if not torch.cuda.is_available():
            print("--sdxl needs a CUDA GPU", file=sys.stderr)
            return 2
        started = time.perf_counter()
        base = build_sdxl(work / "sdxl")
        report["build_seconds"] = round(time.perf_counter() - started, 1)
        # Photos larger than the training size and not square: resized and cropped.
        images = make_images(work / "images", args.images, 1280, 1152)
        common = {"family": "sdxl", "resolution": 1024, "repeats": args.repeats or 4}
        lora = make_spec(
            base, images, work / "lora", mixed_precision="fp16", learning_rate=1e-4,
            **LORA, **common,
        )  # fmt: skip
        report["lora_rank4_fp16"] = compare(lora, args.warmup)
        if not args.no_full:
            full = make_spec(
                base, images, work / "full", mixed_precision="fp16", optimizer="adamw8bit",
                gradient_checkpointing=True, learning_rate=1e-6, **common,
            )  # fmt: skip
            report["full_fp16_8bit_gradckpt"] = compare(full, args.warmup)
    else:
        from dreamgrid.tiny import build_tiny_sdxl

        base = build_tiny_sdxl(work / "tiny-sdxl")
        images = make_images(work / "images", args.images, 80, 72)
        common = {"family": "sdxl", "repeats": args.repeats or 4}
        lora = make_spec(base, images, work / "lora", learning_rate=1e-3, **LORA, **common)
        report["tiny_cpu_lora"] = compare(lora, args.warmup)
        if not args.no_full:
            full = make_spec(base, images, work / "full", learning_rate=1e-4, **common)
            report["tiny_cpu_full"] = compare(full, args.warmup)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
