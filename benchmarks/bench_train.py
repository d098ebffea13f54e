"""Time the trainer's optimizer steps against diffusers' train_dreambooth.py step logic.

Usage:
    python benchmarks/bench_train.py                  # CPU, the tiny random-weight model
    python benchmarks/bench_train.py --sd15           # GPU: SD 1.5-shaped random weights

Both sides train the same model from the same weights on the same batches (dreamgrid's
data pipeline: Kohya repeats, seeded order) with the same random draws (latent sample, noise,
timesteps, in that order, from one generator). "ours" is ``dreamgrid.train.loop.train_epoch``
(+ its compute_loss); "reference" is the inner loop of diffusers'
``examples/dreambooth/train_dreambooth.py`` transcribed below (encode -> sample * scaling ->
noise -> timesteps -> add_noise -> text encoder -> UNet -> mse(mean) -> backward -> clip ->
step -> zero_grad), with ``torch.randn_like``/``randint`` given our generator so that the losses
can be compared step by step. Model loading and checkpoint export are not timed.

``--sd15`` (needs CUDA) builds SD 1.5-shaped UNet (320/640/1280/1280, cross-attention 768),
VAE and CLIP-L-shaped text encoder from configs with random weights (no download), 512 px,
batch 1, and times two settings: full fine-tune (fp16 mixed precision, 8-bit AdamW,
gradient checkpointing) and LoRA (rank 4, fp16); steps/s and peak GPU memory per side.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def make_images(folder: Path, count: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def build_sd15(out: Path) -> Path:
    """The tiny pipeline folder with SD 1.5-shaped random UNet, VAE and text encoder."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dreamgrid.tiny import build_tiny_sd

    build_tiny_sd(out)
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=64, cross_attention_dim=768, attention_head_dim=8
    ).save_pretrained(out / "unet")
    AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    ).save_pretrained(out / "vae")
    config = CLIPTextConfig.from_pretrained(out / "text_encoder")
    big = CLIPTextConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=768,
    )
    CLIPTextModel(big).save_pretrained(out / "text_encoder")
    return out


def make_spec(base: Path, images: Path, out: Path, **changes):
    from dreamgrid.train.testing import tiny_train_spec

    fields = {"arm": "bench", "repeats": 10, "batch_size": 1, "learning_rate": 1e-5, "seed": 1}
    return tiny_train_spec(
        base, images, out, state=out / "state.safetensors", **{**fields, **changes}
    )


def setup(spec):
    """Accelerator, models, optimizer and the epoch's batches, exactly as ``loop.run`` makes them."""
    from dreamgrid.train import loop
    from dreamgrid.train.data import epoch_batches

    accelerator = loop.make_accelerator(spec)
    models = loop.load_models(spec, accelerator.device)
    optimizer, lr_scheduler = loop.prepare_optimizer(spec, accelerator, models)
    return accelerator, models, optimizer, lr_scheduler, epoch_batches(spec)


def reference_epoch(spec, accelerator, models, batches, optimizer, lr_scheduler) -> list[float]:
    """diffusers train_dreambooth.py's training step, fed our batches and random draws."""
    import torch
    import torch.nn.functional as F

    from dreamgrid.train import loop
    from dreamgrid.train.data import derive_seed

    dataloader = loop.make_dataloader(accelerator, models, batches)
    generator = torch.Generator(device=accelerator.device)
    generator.manual_seed(derive_seed(spec.seed, spec.epoch, "noise"))
    vae, unet, text_encoder, scheduler = (
        models.vae,
        models.denoiser,
        models.text_encoder,
        models.noise_scheduler,
    )
    params = models.params
    losses = []
    for batch in dataloader:
        with accelerator.accumulate(unet):
            pixel_values = batch["pixel_values"].to(dtype=models.weight_dtype)
            model_input = vae.encode(pixel_values).latent_dist.sample(generator=generator)
            model_input = model_input * vae.config.scaling_factor
            noise = torch.randn(
                model_input.shape, generator=generator, device=model_input.device
            ).to(model_input.dtype)
            bsz = model_input.shape[0]
            timesteps = torch.randint(
                0,
                scheduler.config.num_train_timesteps,
                (bsz,),
                device=model_input.device,
                generator=generator,
            ).long()
            noisy_model_input = scheduler.add_noise(model_input, noise, timesteps)
            with torch.no_grad():
                encoder_hidden_states = text_encoder(
                    batch["input_ids"].to(model_input.device), return_dict=False
                )[0]
            model_pred = unet(
                noisy_model_input, timesteps, encoder_hidden_states, return_dict=False
            )[0]
            loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, spec.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())
    return losses


def peak_memory_reset() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def time_side(spec, side: str, warmup: int) -> dict:
    """Steps/s of one side after ``warmup`` untimed steps (a separate short epoch)."""
    import gc

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
    # Free this side before the next is built: the scheduler and loader hold the optimizer and
    # models too, and what stays allocated would count in the next side's peak memory.
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
    parser.add_argument("--sd15", action="store_true", help="SD 1.5 shapes on CUDA")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=None, help="steps = images x repeats")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    report: dict = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.sd15:
        if not torch.cuda.is_available():
            print("--sd15 needs a CUDA GPU", file=sys.stderr)
            return 2
        base = build_sd15(work / "sd15")
        images = make_images(work / "images", args.images, 512)
        common = {"resolution": 512, "repeats": args.repeats or 4}
        full = make_spec(
            base,
            images,
            work / "full",
            mixed_precision="fp16",
            optimizer="adamw8bit",
            gradient_checkpointing=True,
            learning_rate=1e-6,
            **common,
        )
        lora = make_spec(
            base,
            images,
            work / "lora",
            mixed_precision="fp16",
            method="lora",
            lora_rank=4,
            lora_alpha=4.0,
            lora_target_modules=("to_k", "to_q", "to_v", "to_out.0"),
            learning_rate=1e-4,
            **common,
        )
        report["full_fp16_8bit_gradckpt"] = compare(full, args.warmup)
        report["lora_rank4_fp16"] = compare(lora, args.warmup)
    else:
        from dreamgrid.tiny import build_tiny_sd

        base = build_tiny_sd(work / "tiny")
        images = make_images(work / "images", args.images, 64)
        spec = make_spec(base, images, work / "tiny-run", repeats=args.repeats or 10)
        report["tiny_cpu_full"] = compare(spec, args.warmup)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
