"""Sampling throughput of SDXL and FLUX.1: batched vs one-image-at-a-time pipeline calls.

Usage:
    python benchmarks/bench_sample_families.py --family sdxl          # CPU: the tiny SDXL
    python benchmarks/bench_sample_families.py --family flux --full   # GPU: FLUX.1-dev shapes

``--full`` builds the denoiser (SDXL's 2.6 B-parameter UNet, FLUX.1-dev's 12 B transformer) and
the VAE with the published shapes of :data:`dreamgrid.memory.CONFIGS`, random weights, directly
on the device in fp16 (SDXL) or bf16 (FLUX.1), into the tiny pipeline of the same family, and
feeds random text embeddings of the real encoders' shapes (SDXL: 77 x 2048 and a pooled 1280;
FLUX.1: T5's 512 x 4096 and CLIP's pooled 768): the encoders run once per prompt, the
denoiser once per step. Renders as the study's sample jobs would: SDXL 1024 px, Euler, 30
steps, CFG 5 with a negative prompt; FLUX.1 1024 px, its flow-matching Euler, 28 steps,
distilled guidance 3.5. Prints one JSON object (renders/s both ways, their ratio, peak GPU
memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from typing import Any

from dreamgrid import memory, sample, tiny

#: Per family: steps, size and guidance of a study's renders.
STUDY_RENDER = {"sdxl": (30, 1024, 5.0), "flux": (28, 1024, 3.5)}
TINY_RENDER = {"sdxl": (4, 64, 5.0), "flux": (4, 64, 3.5)}


def build_on(device: str, dtype: Any, library: str, cls: str, config: dict[str, Any]) -> Any:
    """A component from its config with random weights, allocated on ``device`` in ``dtype``."""
    import torch

    module = __import__(library)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return getattr(module, cls).from_config(config)
    finally:
        torch.set_default_dtype(default)


def full_pipeline(family: str, device: str, configs: dict | None = None) -> Any:
    """The tiny pipeline of ``family`` with full-shape random-weight denoiser and VAE."""
    import torch

    configs = configs or memory.CONFIGS
    folder = (tiny.build_tiny_sdxl if family == "sdxl" else tiny.build_tiny_flux)(
        tempfile.mkdtemp()
    )
    small = sample.load_pipeline(folder, None, device="cpu")
    dtype = torch.float16 if family == "sdxl" else torch.bfloat16
    if device == "cpu":
        dtype = torch.float32
    denoiser = memory.DENOISER[family]
    library, cls, vae_config = configs[family]["vae"]
    # The shape configs leave out the latents' scale and shift (FLUX.1 decodes with both).
    scale = {k: small.vae.config[k] for k in ("scaling_factor", "shift_factor")}
    parts = {
        denoiser: build_on(device, dtype, *configs[family][denoiser]),
        "vae": build_on(device, dtype, library, cls, {**vae_config, **scale}),
    }
    # A new pipeline object, so its vae_scale_factor and image processor follow the full VAE.
    # No text encoders: the prompts come as embeddings (and SDXL would otherwise read the
    # pooled width from the tiny CLIP-G).
    encoders = {"text_encoder": None, "text_encoder_2": None}
    pipe = type(small)(**{**small.components, **encoders, **parts})
    return pipe.to(device, dtype)


def embeddings(family: str, pipe: Any, device: str) -> dict[str, Any]:
    """Random prompt (and, for SDXL, negative) embeddings of the real text encoders' shapes,
    read from the denoiser's config."""
    import torch

    dtype = next(pipe.components[memory.DENOISER[family]].parameters()).dtype
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator).to(device, dtype)

    if family == "sdxl":
        config = pipe.unet.config
        width = config.cross_attention_dim
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        return {
            "prompt_embeds": randn(1, 77, width),
            "pooled_prompt_embeds": randn(1, pooled),
            "negative_prompt_embeds": randn(1, 77, width),
            "negative_pooled_prompt_embeds": randn(1, pooled),
        }
    config = pipe.transformer.config
    tokens = 512 if config.joint_attention_dim == 4096 else 32
    return {
        "prompt_embeds": randn(1, tokens, config.joint_attention_dim),
        "pooled_prompt_embeds": randn(1, config.pooled_projection_dim),
    }


def timed(pipe: Any, seeds: list[int], batch_size: int, render: tuple, embeds: dict) -> float:
    import torch

    steps, size, guidance = render
    start = time.perf_counter()
    for i in range(0, len(seeds), batch_size):
        batch = seeds[i : i + batch_size]
        generators = [torch.Generator("cpu").manual_seed(s) for s in batch]
        with torch.no_grad():
            pipe(
                **{k: v.expand(len(batch), *v.shape[1:]) for k, v in embeds.items()},
                num_inference_steps=steps,
                guidance_scale=guidance,
                width=size,
                height=size,
                generator=generators,
                output_type="pil",
            )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sdxl", "flux"), required=True)
    parser.add_argument("--full", action="store_true", help="published shapes (GPU)")
    parser.add_argument("--renders", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    device = sample.default_device()
    if args.full:
        pipe = full_pipeline(args.family, device)
        render = STUDY_RENDER[args.family]
    else:
        folder = (tiny.build_tiny_sdxl if args.family == "sdxl" else tiny.build_tiny_flux)(
            tempfile.mkdtemp()
        )
        pipe = sample.load_pipeline(folder, None, device=device)
        render = TINY_RENDER[args.family]
    if args.steps:
        render = (args.steps, *render[1:])
    if args.family == "sdxl":
        sample.set_scheduler(pipe, "euler")
    pipe.set_progress_bar_config(disable=True)
    embeds = embeddings(args.family, pipe, device)
    seeds = list(range(args.renders))
    timed(pipe, seeds[:1], 1, render, embeds)  # warm up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    one = timed(pipe, seeds, 1, render, embeds)
    batched = timed(pipe, seeds, args.batch_size, render, embeds)
    denoiser = pipe.components[memory.DENOISER[args.family]]
    result = {
        "machine": f"{platform.machine()}, {device}"
        + (f" {torch.cuda.get_device_name()}" if device == "cuda" else "")
        + f", torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": f"{args.family} {'published shapes' if args.full else 'tiny'}, random weights",
        "denoiser_parameters": sum(p.numel() for p in denoiser.parameters()),
        "dtype": str(next(denoiser.parameters()).dtype),
        "renders": args.renders,
        "steps": render[0],
        "size": render[1],
        "guidance": render[2],
        "one_at_a_time_renders_per_s": round(args.renders / one, 3),
        "batched_renders_per_s": round(args.renders / batched, 3),
        "batch_size": args.batch_size,
        "ratio": round(one / batched, 2),
        "peak_gpu_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None
        ),
    }
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
