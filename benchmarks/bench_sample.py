"""Time the sampler: batched vs one-image-at-a-time pipeline calls (renders/s).

Usage:
    python benchmarks/bench_sample.py                 # CPU, the tiny random-weight model
    python benchmarks/bench_sample.py --sd15          # GPU: SD 1.5-shaped random-weight UNet/VAE

``--sd15`` builds a UNet and VAE with Stable Diffusion 1.5's shapes from their configs (random
weights, no download) into the tiny pipeline, feeds 77x768 random text embeddings (the text
encoder's cost is negligible), and renders 512 px, Euler, 30 steps, CFG 8 in fp16 with SDPA,
as the study's sample jobs do. Both ways render the same seeds through
``dreamgrid.sample.generate_images``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time

from dreamgrid import sample
from dreamgrid.tiny import build_tiny_sd


def sd15_pipeline(device: str):
    """The tiny pipeline with SD 1.5-shaped random-weight UNet and VAE, fp16 on GPU."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    pipe = sample.load_pipeline(build_tiny_sd(tempfile.mkdtemp()), None, device="cpu")
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe.unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
    )
    pipe.vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=512,
        layers_per_block=2,
    )
    pipe.register_modules(unet=pipe.unet, vae=pipe.vae)
    pipe.vae_scale_factor = 8
    pipe.image_processor.config.vae_scale_factor = 8
    pipe = pipe.to(device, dtype)
    sample.use_sdpa(pipe)
    return pipe


def timed(pipe, seeds, batch_size, args, embeds) -> float:
    import torch

    start = time.perf_counter()
    for i in range(0, len(seeds), batch_size):
        batch = seeds[i : i + batch_size]
        generators = [torch.Generator("cpu").manual_seed(s) for s in batch]
        kwargs = (
            {"prompt_embeds": embeds[0].expand(len(batch), -1, -1),
             "negative_prompt_embeds": embeds[1].expand(len(batch), -1, -1)}
            if embeds
            else {"prompt": ["headshot photo of ohwx woman"] * len(batch),
                  "negative_prompt": ["smile, text"] * len(batch)}
        )  # fmt: skip
        with torch.no_grad():
            pipe(
                num_inference_steps=args.steps,
                guidance_scale=8.0,
                width=args.size,
                height=args.size,
                generator=generators,
                output_type="pil",
                **kwargs,
            )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD 1.5-shaped model (GPU)")
    parser.add_argument("--renders", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args(argv)
    device = sample.default_device()
    if args.sd15:
        args.steps, args.size = args.steps or 30, args.size or 512
        pipe = sd15_pipeline(device)
        dtype = pipe.unet.dtype
        embeds = tuple(
            torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(k)).to(device, dtype)
            for k in (0, 1)
        )
    else:
        args.steps, args.size = args.steps or 10, args.size or 64
        pipe = sample.load_pipeline(build_tiny_sd(tempfile.mkdtemp()), None, device=device)
        embeds = None
    sample.set_scheduler(pipe, "euler")
    pipe.set_progress_bar_config(disable=True)
    seeds = list(range(args.renders))
    timed(pipe, seeds[: args.batch_size], args.batch_size, args, embeds)  # warm up
    one = timed(pipe, seeds, 1, args, embeds)
    batched = timed(pipe, seeds, args.batch_size, args, embeds)
    result = {
        "machine": f"{platform.machine()}, {device}"
        + (f" {torch.cuda.get_device_name()}" if device == "cuda" else "")
        + f", torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": "SD 1.5-shaped, random weights" if args.sd15 else "tiny random-weight SD",
        "dtype": str(pipe.unet.dtype),
        "renders": args.renders,
        "size": args.size,
        "steps": args.steps,
        "one_at_a_time_renders_per_s": round(args.renders / one, 2),
        "batched_renders_per_s": round(args.renders / batched, 2),
        "batch_size": args.batch_size,
        "ratio": round(one / batched, 2),
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
