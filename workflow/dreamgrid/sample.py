"""Sample stage: render a checkpoint (or the base model) with fixed, recorded seeds.

Render ``i`` of a checkpoint uses seed ``settings.seed + i``, whatever the arm, epoch or
batch size, so every arm is compared on the same noise (paired comparisons). Each image
gets its own ``torch.Generator``; the pipeline draws each image's starting latents (and, for
ancestral schedulers, its step noise) from its own generator, so a render does not depend on
what else is in its batch.

Generators live on the CPU even when the model runs on CUDA (ComfyUI's default "cpu" noise):
the starting noise of a seed is then the same on every machine and GPU model, so arms sampled
on different cluster nodes still share their noise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dreamgrid.config import shard_ranges  # noqa: F401  (sample's shards, checked with the config)
from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.prompts import MAIN_PROMPT_SET, fill

log = logging.getLogger(__name__)

#: Config names of the schedulers → diffusers classes (created from the model's own config).
SCHEDULERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}
#: Extra settings per scheduler (DPM++ 2M is DPM-Solver++ of order 2, as A1111/ComfyUI name it).
_SCHEDULER_KWARGS: dict[str, dict[str, Any]] = {
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}
#: Columns of the render table written by :func:`render` (``run`` adds ``checkpoint``).
RENDER_COLUMNS = (
    "seed",
    "image",
    "prompt_set",
    "prompt",
    "negative",
    "steps",
    "cfg",
    "scheduler",
    "width",
    "height",
)
#: Label written for renders of the untrained base model.
BASE_LABEL = "base"
#: Settings only FLUX renders read (dreamgrid.sample_flux); other families ignore them.
FLUX_ONLY_SETTINGS = ("true_cfg", "max_sequence_length")


@dataclass(frozen=True)
class SampleSettings:
    """How to render one checkpoint; types, ranges and defaults live in the config schema.

    Attributes:
        prompt: template with ``{token}`` and ``{class}``, e.g. ``headshot photo of {token} {class}``.
        negative: negative prompt template (same placeholders; may be empty).
        steps: inference steps.
        cfg: classifier-free guidance scale.
        count: renders per checkpoint; seeds are ``seed .. seed + count - 1``.
        seed: first seed.
        width: image width in pixels (multiple of 8).
        height: image height in pixels (multiple of 8).
        batch_size: images per pipeline call (does not change any image).
        scheduler: one of :data:`SCHEDULERS`.
        prompt_set: name of the prompt set (``main`` is ``sample.prompt``, which must name
            the token; extra sets may leave it out, e.g. to measure class bleed).
        true_cfg: FLUX only: true classifier-free guidance scale (FluxPipeline's
            ``true_cfg_scale``); > 1 enables the negative prompt, 1 = off.
        max_sequence_length: FLUX only: T5 tokens read from the prompt.
        family: the base model's family when known (``flux`` checks the FLUX rules here, so
            that whoever builds the settings refuses them before any job);
            :func:`render` checks them again with the loaded pipeline.
    """

    prompt: str
    negative: str
    steps: int
    cfg: float
    count: int
    seed: int
    width: int
    height: int
    batch_size: int
    scheduler: str
    prompt_set: str = MAIN_PROMPT_SET
    true_cfg: float = 1.0
    max_sequence_length: int = 512
    family: str | None = None

    def __post_init__(self) -> None:
        # Types and ranges are the config schema's (validated before any job); only the rule
        # between the prompt and its set is checked here.
        if self.prompt_set == MAIN_PROMPT_SET and "{token}" not in self.prompt:
            raise SpecError(
                f"sample.prompt {self.prompt!r} lacks '{{token}}': renders would not ask for "
                "the trained subject. Write e.g. 'headshot photo of {token} {class}'."
            )
        if self.family == "flux":
            from dreamgrid.sample_flux import check_settings

            check_settings(self)

    @property
    def seeds(self) -> list[int]:
        """The seeds of this checkpoint's renders, identical for every arm and epoch."""
        return seed_list(self.seed, self.count)


def seed_list(seed: int, count: int) -> list[int]:
    """Seeds ``seed, seed + 1, …, seed + count - 1``."""
    return [seed + i for i in range(count)]


def check_scheduler(name: str) -> None:
    """Raise SpecError unless ``name`` is a key of :data:`SCHEDULERS`."""
    if name not in SCHEDULERS:
        raise SpecError(
            f"unknown scheduler {name!r}; choose one of {', '.join(sorted(SCHEDULERS))}."
        )


def set_scheduler(pipe: Any, name: str) -> None:
    """Replace ``pipe.scheduler`` by scheduler ``name`` built from the model's scheduler config.

    Settings the model's config states explicitly (betas, ``steps_offset``…) carry over;
    diffusers drops the defaults of the previous class, so swapping twice equals swapping once.
    """
    import diffusers

    check_scheduler(name)
    cls = getattr(diffusers, SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **_SCHEDULER_KWARGS.get(name, {}))


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """``dtype=`` for diffusers releases that renamed ``torch_dtype`` (and warn on it)."""
    from diffusers.utils import deprecation_utils

    renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype": dtype} if renamed else {"torch_dtype": dtype}


def load_pipeline(
    base_model: Path, checkpoint: Path | None, device: str | None = None, family: str | None = None
) -> Any:
    """Load the base model, then a dreamgrid checkpoint's weights over it.

    Args:
        base_model: diffusers folder of the base model (``model_index.json`` inside).
        checkpoint: ``.safetensors`` written by the train stage (a full model in the SD
            layout, or a LoRA adapter), or None to render the base model itself.
        device: torch device; default CUDA when available, else CPU.
        family: the base model's family (dreamgrid.families); default: read from the folder
            (``sd15`` when it cannot tell).

    Returns:
        A ``StableDiffusionPipeline`` (``StableDiffusionXLPipeline`` for SDXL) on ``device``
        (fp16 on CUDA, fp32 on CPU), without a safety checker and with its own progress bar
        off. Its scheduler is the model's own; :func:`render` swaps in the one the settings
        name. For a FLUX.1 base model, a ``FluxPipeline``
        (:func:`dreamgrid.sample_flux.load_pipeline`).

    Raises:
        SpecError: the base model folder or the checkpoint file is missing or not loadable.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    from dreamgrid.train.export import (
        FLUX_FORMAT,
        FLUX_LORA_FORMAT,
        checkpoint_format,
        is_lora_checkpoint,
        is_sd_checkpoint,
        load_sd_pipeline,
    )
    from dreamgrid.train.export import read_metadata as read_sd_metadata

    base_model = Path(base_model)
    if not (base_model / "model_index.json").is_file():
        raise SpecError(
            f"{base_model}: not a diffusers model folder (no model_index.json). "
            "Point base_model at a folder saved with save_pretrained."
        )
    device = device or default_device()
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise SpecError(f"{checkpoint}: checkpoint not found. Run the train stage first.")
    family = family or base_family(base_model)
    if family == "flux":
        from dreamgrid import sample_flux

        return sample_flux.load_pipeline(base_model, checkpoint, device)
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if checkpoint is not None and checkpoint_format(checkpoint) in (FLUX_FORMAT, FLUX_LORA_FORMAT):
        raise SpecError(
            f"{checkpoint}: a FLUX.1 checkpoint, but {base_model} is not a FLUX.1 model. Sample it "
            "with the base model it was trained from."
        )
    if checkpoint is not None and not (
        is_sd_checkpoint(checkpoint) or is_lora_checkpoint(checkpoint)
    ):
        raise SpecError(
            f"{checkpoint}: not a checkpoint the train stage writes (an SD-layout model or a "
            "LoRA adapter). Delete it and rerun the train stage to rewrite it."
        )
    if checkpoint is not None:
        check_checkpoint_family(checkpoint, base_model, family)
    if family == "sdxl":
        pipe = load_sdxl(base_model, checkpoint, dtype)
    elif checkpoint is not None and is_sd_checkpoint(checkpoint):
        # Full model in the SD layout; base_model gives the configs.
        pipe = load_sd_pipeline(checkpoint, base_model, dtype)
        log.info("loaded %s (%s)", checkpoint, read_sd_metadata(checkpoint))
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            base_model, **_dtype_kwarg(dtype), safety_checker=None, requires_safety_checker=False
        )
    if family != "sdxl" and checkpoint is not None and is_lora_checkpoint(checkpoint):
        # A LoRA arm's epoch: the adapter (Kohya format) over the base model.
        pipe.load_lora_weights(str(checkpoint))
        log.info("loaded LoRA %s (%s)", checkpoint, read_sd_metadata(checkpoint))
    pipe = pipe.to(device)
    use_sdpa(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def base_family(base_model: Path) -> str:
    """The family a diffusers folder's pipeline class names; ``sd15`` when it names none."""
    from dreamgrid.families import detect

    return detect(base_model).family or "sd15"


def check_checkpoint_family(checkpoint: Path, base_model: Path, family: str) -> None:
    """Refuse a checkpoint trained on another family than ``base_model``'s."""
    from dreamgrid.train.export import read_metadata

    trained = read_metadata(checkpoint).get("family", "sd15")
    if trained != family:
        raise SpecError(
            f"{checkpoint}: trained on a {trained} model, but base_model {base_model} is "
            f"{family}. Sample it with the base model it was trained on."
        )


def load_sdxl(base_model: Path, checkpoint: Path | None, dtype: Any) -> Any:
    """An SDXL pipeline: the base folder, a full SGM-layout checkpoint over its configs, or a
    Kohya LoRA over it. The VAE's ``force_upcast`` makes the pipeline decode in float32."""
    from diffusers import StableDiffusionXLPipeline

    from dreamgrid.train.export import is_lora_checkpoint, is_sd_checkpoint, read_metadata
    from dreamgrid.train.export_sdxl import load_sdxl_pipeline

    if checkpoint is not None and is_sd_checkpoint(checkpoint):
        pipe = load_sdxl_pipeline(checkpoint, base_model, dtype)
        log.info("loaded %s (%s)", checkpoint, read_metadata(checkpoint))
        return pipe
    pipe = StableDiffusionXLPipeline.from_pretrained(
        base_model, local_files_only=True, **_dtype_kwarg(dtype)
    )
    if checkpoint is not None and is_lora_checkpoint(checkpoint):
        pipe.load_lora_weights(str(checkpoint))
        log.info("loaded LoRA %s (%s)", checkpoint, read_metadata(checkpoint))
    return pipe


def use_sdpa(pipe: Any) -> None:
    """Run the UNet's and VAE's attention through torch's scaled_dot_product_attention
    (flash / memory-efficient kernels on GPU). diffusers picks it by default on torch 2;
    setting it explicitly keeps a checkpoint's saved processors from overriding it."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for module in (pipe.unet, pipe.vae):
        if hasattr(module, "set_attn_processor"):
            module.set_attn_processor(AttnProcessor2_0())


def long_prompt_embeddings(pipe: Any, prompt: str, negative: str) -> tuple[Any, Any] | None:
    """Text embeddings of prompts longer than the text encoder's window, as A1111 and ComfyUI
    make them; None when both prompts fit (the pipeline then encodes them itself, unchanged).

    CLIP reads 77 tokens (begin, 75 tokens, end). A longer prompt is cut into chunks of 75
    tokens, each chunk is wrapped and padded like a short prompt and encoded on its own, and
    the chunks' embeddings are concatenated along the sequence; the shorter of prompt and
    negative gets chunks of the empty prompt so that both have the same length. Nothing is cut
    off, where the pipeline would truncate at 77 tokens with only a warning.

    Returns:
        ``(prompt_embeds, negative_prompt_embeds)`` of shape (1, 77 x chunks, width), or None.
    """
    import torch

    tokenizer = pipe.tokenizer
    window = tokenizer.model_max_length - 2
    ids = [
        tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
        for text in (prompt, negative)
    ]
    if max(len(i) for i in ids) <= window:
        return None
    if getattr(pipe, "text_encoder_2", None) is not None:
        # SDXL conditions on two encoders and a pooled embedding; chunking only the first
        # would change what the model sees, and the pipeline would cut the rest silently.
        raise SpecError(
            f"sample prompt of {len(ids[0])} and negative of {len(ids[1])} tokens: SDXL "
            f"renders read at most {window} tokens per prompt here. Shorten sample.prompt / "
            "sample.negative (or the prompt set's)."
        )
    chunks = max(-(-len(i) // window) for i in ids)
    log.info(
        "prompt of %d and negative of %d tokens: encoded in %d chunks of %d tokens",
        len(ids[0]),
        len(ids[1]),
        chunks,
        window,
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = pipe.text_encoder.device
    encoded = []
    for tokens in ids:
        parts = []
        for k in range(chunks):
            piece = tokens[k * window : (k + 1) * window]
            row = [tokenizer.bos_token_id, *piece, tokenizer.eos_token_id]
            row += [pad] * (window + 2 - len(row))
            with torch.no_grad():
                parts.append(pipe.text_encoder(torch.tensor([row], device=device))[0])
        encoded.append(torch.cat(parts, dim=1).to(pipe.text_encoder.dtype))
    return encoded[0], encoded[1]


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
    desc: str = "render",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(seed, PIL image)`` for each seed, ``batch_size`` images per pipeline call.

    Prompts longer than the text encoder's window are encoded in chunks
    (:func:`long_prompt_embeddings`), not truncated. Each image has its own CPU generator seeded with its seed, so image ``i`` is the same
    whatever the batch size or the other seeds in its batch.
    """
    import torch
    from tqdm.auto import tqdm

    seeds = list(seeds)
    long = long_prompt_embeddings(pipe, prompt, negative)
    with tqdm(total=len(seeds), desc=desc, unit="img") as bar:
        for start in range(0, len(seeds), batch_size):
            batch = seeds[start : start + batch_size]
            generators = [torch.Generator("cpu").manual_seed(s) for s in batch]
            if long is None:
                text = {"prompt": [prompt] * len(batch), "negative_prompt": [negative] * len(batch)}
            else:
                text = {
                    "prompt_embeds": long[0].repeat(len(batch), 1, 1),
                    "negative_prompt_embeds": long[1].repeat(len(batch), 1, 1),
                }
            with torch.no_grad():
                images = pipe(
                    **text,
                    num_inference_steps=steps,
                    guidance_scale=cfg,
                    width=width,
                    height=height,
                    generator=generators,
                    output_type="pil",
                ).images
            yield from zip(batch, images, strict=True)
            bar.update(len(batch))


def png_info(fields: dict[str, Any]) -> Any:
    """PNG text chunks (``PngInfo``) holding ``fields`` as strings."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in fields.items():
        info.add_text(key, str(value))
    return info


def render_name(seed: int) -> str:
    """File name of the render with ``seed``."""
    return f"render-{seed}.png"


def render(
    pipe: Any,
    settings: SampleSettings,
    token: str,
    class_word: str,
    out_dir: Path,
    *,
    seeds: Sequence[int] | None = None,
    checkpoint_label: str = BASE_LABEL,
) -> pd.DataFrame:
    """Render ``settings.count`` images of ``token class_word`` into ``out_dir``.

    Args:
        pipe: pipeline from :func:`load_pipeline`; its scheduler is replaced by
            ``settings.scheduler``.
        settings: prompt templates, seeds and sampler settings.
        token: instance token (may contain spaces or quotes; filled verbatim).
        class_word: class word, e.g. ``woman``.
        out_dir: existing or new folder; files ``render-<seed>.png`` are written there.
        seeds: a subset of ``settings.seeds`` to render (for shards); default all of them.
        checkpoint_label: what the PNG ``checkpoint`` text chunk records.

    Returns:
        One row per render with columns :data:`RENDER_COLUMNS`; ``image`` is the file name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = settings.seeds if seeds is None else list(seeds)
    unknown = sorted(set(seeds) - set(settings.seeds))
    if unknown:
        raise SpecError(f"seeds {unknown[:5]} are not among this checkpoint's seeds.")
    prompt = fill(settings.prompt, token, class_word)
    negative = fill(settings.negative, token, class_word)
    from dreamgrid import sample_flux

    flux = sample_flux.is_flux_pipeline(pipe)
    if flux:
        sample_flux.check_settings(settings)  # before the first render
    else:
        set_scheduler(pipe, settings.scheduler)
    log.info(
        "rendering %d images of %r (negative %r): %s",
        len(seeds),
        prompt,
        negative,
        f"{settings.scheduler}, {settings.steps} steps, cfg {settings.cfg}, "
        f"{settings.width}x{settings.height}, batch {settings.batch_size}",
    )
    rows = []
    if flux:
        images = sample_flux.generate_images(
            pipe,
            prompt,
            negative,
            seeds,
            settings.steps,
            settings.cfg,
            settings.width,
            settings.height,
            settings.batch_size,
            true_cfg=settings.true_cfg,
            max_sequence_length=settings.max_sequence_length,
        )
    else:
        images = generate_images(
            pipe,
            prompt,
            negative,
            seeds,
            settings.steps,
            settings.cfg,
            settings.width,
            settings.height,
            settings.batch_size,
        )
    # What every render of this call shares: in its PNG text and in its table row.
    shared = {
        "prompt_set": settings.prompt_set,
        "prompt": prompt,
        "negative": negative,
        "steps": settings.steps,
        "cfg": settings.cfg,
        "scheduler": settings.scheduler,
    }
    for seed, image in images:
        name = render_name(seed)
        meta = {"seed": seed, **shared, "checkpoint": checkpoint_label}
        image.save(out_dir / name, pnginfo=png_info(meta))
        rows.append(
            {
                "seed": seed,
                "image": name,
                **shared,
                "width": settings.width,
                "height": settings.height,
            }
        )
    return pd.DataFrame(rows, columns=list(RENDER_COLUMNS))


def warn_if_tiny(model: Path) -> None:
    """Log that renders of a tiny random-weight model are noise."""
    from dreamgrid.tiny import TINY_MARKER

    if (Path(model) / TINY_MARKER).exists():
        log.warning("%s has random weights (demo/test model): renders are noise.", model)


def render_candidates(
    base_model: Path,
    settings: SampleSettings,
    names: dict[str, str],
    class_word: str,
    out_dir: Path,
    out_table: Path,
) -> pd.DataFrame:
    """Render the base model for several token candidates with one model load.

    Args:
        base_model: diffusers folder of the base model.
        settings: what to render (the finder's prompt with ``{token}``, seeds, sampler).
        names: folder name (slug) -> candidate name, filled into ``{token}``.
        class_word: the class word, filled into ``{class}``.
        out_dir: folder with one sub-folder of renders per slug, built under a temporary
            name and renamed when every name is rendered.
        out_table: CSV with one row per render (written atomically).

    Returns:
        The table: ``candidate`` (the name), :data:`RENDER_COLUMNS` (``image`` relative to
        ``out_dir``, ``<slug>/render-<seed>.png``) and ``checkpoint`` (``base``).
    """
    pipe = _load(base_model, None)
    tables = []
    with atomic_path(out_dir) as tmp:
        for slug, name in names.items():
            table = render(pipe, settings, name, class_word, tmp / slug)
            table["image"] = [f"{slug}/{image}" for image in table["image"]]
            table.insert(0, "candidate", name)
            tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    _write_table(table, BASE_LABEL, out_table)
    log.info("%d candidates, %d renders in %s", len(names), len(table), out_dir)
    return table


def sample_checkpoint(
    base_model: Path,
    checkpoint: Path | None,
    settings: SampleSettings,
    token: str,
    class_word: str,
    out_dir: Path,
    out_table: Path,
    first: int = 0,
) -> pd.DataFrame:
    """Render one shard of a checkpoint, renders ``first .. settings.count - 1``: images into
    ``out_dir``, their table into ``out_table``.

    Render ``i`` uses seed ``settings.seed + i`` whichever shard renders it, so a shard's images
    equal the same renders made in one job (``first`` 0: all of them). The model is loaded once.

    Args:
        base_model: diffusers folder of the base model.
        checkpoint: dreamgrid ``.safetensors`` checkpoint, or None for the base model.
        settings: what to render (prompt templates, seeds, sampler); ``count`` is this
            shard's end (exclusive render index).
        token: the arm's instance token, filled into ``{token}``.
        class_word: the class word, filled into ``{class}``.
        out_dir: the shard's folder (``renders/shard-<k>``); built under a temporary name,
            renamed when complete.
        out_table: CSV with one row per render (written atomically).
        first: index of the shard's first render.

    Returns:
        The table: :data:`RENDER_COLUMNS` plus ``checkpoint`` (its path as given, or ``base``),
        which the PNG ``checkpoint`` text chunks record too; ``image`` is the path relative to
        ``out_dir``'s parent (``shard-<k>/render-<seed>.png``).
    """
    if not 0 <= first < settings.count:
        raise SpecError(f"shard start {first} is outside renders 0..{settings.count - 1}.")
    label = str(checkpoint) if checkpoint is not None else BASE_LABEL
    pipe = _load(base_model, checkpoint)
    out_dir = Path(out_dir)
    seeds = settings.seeds[first:]
    with atomic_path(out_dir) as tmp:
        table = render(pipe, settings, token, class_word, tmp, seeds=seeds, checkpoint_label=label)
    table["image"] = [f"{out_dir.name}/{name}" for name in table["image"]]
    _write_table(table, label, out_table)
    log.info("%d renders (seeds %d..%d) in %s", len(table), seeds[0], seeds[-1], out_dir)
    return table


def _load(base_model: Path, checkpoint: Path | None) -> Any:
    warn_if_tiny(base_model)
    return load_pipeline(base_model, checkpoint)


def _write_table(table: pd.DataFrame, label: str, out_table: Path) -> None:
    """Add the ``checkpoint`` column and write the render table atomically."""
    table["checkpoint"] = label
    with atomic_path(out_table) as tmp:
        table.to_csv(tmp, index=False)
