"""FLUX.1 rendering for :mod:`dreamgrid.sample`: the base folder as a ``FluxPipeline`` with a
dreamgrid FLUX checkpoint over it, and the renders with FLUX's own settings.

- The scheduler is the model's own flow-matching Euler (``FlowMatchEulerDiscreteScheduler``
  with its resolution-dependent shift); ``sample.scheduler`` must be ``euler``, the others are
  samplers of the DDPM family and are refused.
- ``sample.cfg`` is FLUX.1-dev's distilled guidance (the ``guidance_scale`` fed to the
  transformer's guidance embedding, one pass per step; FLUX.1-schnell ignores it).
- A negative prompt needs true classifier-free guidance, a second pass per step:
  ``sample.true_cfg`` > 1 (FluxPipeline's ``true_cfg_scale``). Without it a negative prompt
  would be silently ignored, so it is refused before anything renders.
- T5 reads ``sample.max_sequence_length`` tokens (512 as FluxPipeline; lower is faster).

Seeds and generators are as for SD 1.5 (:mod:`dreamgrid.sample`): one CPU generator per render.
On CUDA the pipeline runs in bfloat16 (FLUX's T5 overflows in float16), float32 on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError

log = logging.getLogger(__name__)

#: The one scheduler name FLUX renders with (its own flow-matching Euler).
FLUX_SCHEDULER = "euler"


def settings_problem(
    scheduler: str, negative: str, true_cfg: float, max_sequence_length: int
) -> str | None:
    """Why these sample settings cannot render a FLUX model, or None."""
    if scheduler != FLUX_SCHEDULER:
        return (
            f"sample.scheduler {scheduler!r} is a DDPM-family sampler; FLUX renders with its own "
            f"flow-matching Euler scheduler. Set sample.scheduler {FLUX_SCHEDULER!r} for the "
            "FLUX base model."
        )
    if negative.strip() and true_cfg <= 1:
        return (
            f"sample.negative {negative!r} would be ignored: FLUX.1's guidance is distilled and "
            "takes no negative prompt. Set sample.negative '' for the FLUX base model, or "
            "sample.true_cfg > 1 (true classifier-free guidance, twice the compute per step)."
        )
    if not 1 <= max_sequence_length <= 512:
        return f"sample.max_sequence_length must be 1..512 (T5), got {max_sequence_length}."
    return None


def check_settings(settings: Any) -> None:
    """Raise SpecError if ``settings`` (a SampleSettings) cannot render a FLUX model."""
    problem = settings_problem(
        settings.scheduler, settings.negative, settings.true_cfg, settings.max_sequence_length
    )
    if problem:
        raise SpecError(problem)


def load_pipeline(base_model: Path, checkpoint: Path | None, device: str) -> Any:
    """A ``FluxPipeline`` of ``base_model`` on ``device`` with ``checkpoint`` (a FLUX LoRA or
    full transformer from the train stage, or None) loaded over it, offline."""
    import torch
    from diffusers import FluxPipeline

    from dreamgrid.sample import _dtype_kwarg
    from dreamgrid.train.export import (
        FLUX_FORMAT,
        FLUX_LORA_FORMAT,
        checkpoint_format,
        is_flux_checkpoint,
        read_metadata,
    )
    from dreamgrid.train.export_flux import load_transformer_into

    if checkpoint is not None and checkpoint_format(checkpoint) not in (
        FLUX_FORMAT,
        FLUX_LORA_FORMAT,
    ):
        raise SpecError(
            f"{checkpoint}: not a FLUX checkpoint (it was trained on another base model than "
            f"{base_model}). Delete it and rerun the train stage."
        )
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    pipe = FluxPipeline.from_pretrained(base_model, local_files_only=True, **_dtype_kwarg(dtype))
    if checkpoint is not None and is_flux_checkpoint(checkpoint):
        load_transformer_into(pipe, checkpoint)
        log.info("loaded FLUX transformer %s (%s)", checkpoint, read_metadata(checkpoint))
    elif checkpoint is not None:
        pipe.load_lora_weights(str(checkpoint))
        log.info("loaded FLUX LoRA %s (%s)", checkpoint, read_metadata(checkpoint))
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate_images(
    pipe: Any,
    prompt: str,
    negative: str,
    seeds: Sequence[int],
    steps: int,
    cfg: float,
    width: int,
    height: int,
    batch_size: int,
    true_cfg: float = 1.0,
    max_sequence_length: int = 512,
    desc: str = "render",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(seed, PIL image)`` per seed, ``batch_size`` per pipeline call; each image from
    its own CPU generator, so it does not depend on its batch. ``cfg`` is the distilled
    guidance; the negative prompt is used only with ``true_cfg`` > 1."""
    import torch
    from tqdm.auto import tqdm

    seeds = list(seeds)
    with tqdm(total=len(seeds), desc=desc, unit="img") as bar:
        for start in range(0, len(seeds), batch_size):
            batch = seeds[start : start + batch_size]
            generators = [torch.Generator("cpu").manual_seed(s) for s in batch]
            with torch.no_grad():
                images = pipe(
                    prompt=[prompt] * len(batch),
                    negative_prompt=[negative] * len(batch) if true_cfg > 1 else None,
                    true_cfg_scale=true_cfg,
                    guidance_scale=cfg,
                    num_inference_steps=steps,
                    width=width,
                    height=height,
                    max_sequence_length=max_sequence_length,
                    generator=generators,
                    output_type="pil",
                ).images
            yield from zip(batch, images, strict=True)
            bar.update(len(batch))


def check_class_image_negative(negative: str) -> None:
    """Class images of a FLUX model have no true CFG setting: a negative prompt is refused."""
    if negative.strip():
        raise SpecError(
            f"regularization.negative {negative!r} would be ignored: FLUX.1's distilled guidance "
            "takes no negative prompt. Set regularization.negative '' for the FLUX base model."
        )


def is_flux_pipeline(pipe: Any) -> bool:
    return type(pipe).__name__.startswith("Flux")
