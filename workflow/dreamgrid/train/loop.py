"""Train one epoch of one arm: diffusers ``train_dreambooth.py`` order, one function per step.

spec -> accelerator and seed -> frozen models -> optimizer -> resume state -> data -> loop ->
checkpoint, loss log and resume state. What differs by base-model family (which parts load,
how captions become conditioning, the objective, the checkpoint format) is in the family's
module, ``dreamgrid.train.<family>`` (:mod:`~dreamgrid.train.sd15` documents the interface). Each job trains one epoch from the
arm's resume state; every random stream is seeded from ``(seed, epoch)``, so an epoch gives the
same tensors whichever process runs it (on the same device and software).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib
import itertools
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from dreamgrid.errors import DreamgridError, SpecError
from dreamgrid.io import atomic_path, file_hash, list_images
from dreamgrid.train.data import DreamBoothDataset, collate_fn, derive_seed, epoch_batches
from dreamgrid.train.data import steps_per_epoch as count_steps
from dreamgrid.train.spec import TrainSpec
from dreamgrid.train.state import StateInfo, load_state, save_state
from dreamgrid.train.state import read_info as read_state_info

logger = logging.getLogger(__name__)

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass
class Models:
    """The pipeline parts training uses.

    ``denoiser`` is the model trained to denoise: the UNet (SD 1.5, SDXL) or the transformer
    (FLUX). ``named_params`` are the trained parameters in the optimizer's order (the
    denoiser's, e.g. ``unet.<name>``, then ``text_encoder.<name>``); their names are the keys of
    the resume state. Families with a second text encoder (SDXL's CLIP-G, FLUX's T5) fill
    ``tokenizer_2`` and ``text_encoder_2``.
    """

    tokenizer: Any
    text_encoder: Any
    vae: Any
    denoiser: Any
    noise_scheduler: Any
    weight_dtype: torch.dtype
    named_params: dict[str, torch.nn.Parameter]
    family: str
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    latents: Any = None  # LatentCache when spec.cache_latents
    # Frozen text encoders' outputs by caption token ids (cache_text_embeddings).
    text_embeddings: dict[bytes, Any] = dataclasses.field(default_factory=dict)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.named_params.values())


def trainer(spec: TrainSpec) -> Any:
    """The family module that trains ``spec.family`` (e.g. :mod:`dreamgrid.train.sd15`)."""
    return family_module(spec.family)


@functools.cache
def family_module(family: str) -> Any:
    return importlib.import_module(f"dreamgrid.train.{family}")


def load_models(spec: TrainSpec, device: torch.device) -> Models:
    """The base model's parts as the family's trainer loads them (trained parts float32)."""
    return trainer(spec).load_models(spec, device)


def run(spec: TrainSpec) -> dict[str, Any]:
    """Train epoch ``spec.epoch`` of arm ``spec.arm`` and write its outputs.

    Epoch e resumes from the arm's state file when it holds epoch e-1 of these settings (the
    state that wrote ``spec.previous_meta``). Otherwise (state deleted, overwritten by a later
    epoch, or from other settings) epochs 1..e-1 are replayed from the base model first: every
    epoch is seeded from ``(seed, epoch)``, so the replay gives the same tensors, only slower.

    Args:
        spec: the job's settings (base model, data, hyperparameters, resume and output paths).

    Returns:
        dict with ``checkpoint``, ``state``, ``loss_log`` (paths), ``epoch``, ``steps`` (optimizer
        steps so far, all epochs), ``steps_per_epoch``, ``mean_loss``, ``replayed`` (epochs
        retrained because no usable state was found) and ``seconds``.

    Raises:
        SpecError: a missing or inconsistent input (base model, images, captions, resume files).
    """
    started = time.perf_counter()
    spec.check_job()
    check_inputs(spec)
    batches = epoch_batches(spec)  # reads and checks captions and images before any model
    if spec.aspect_ratio == "buckets":
        logger.info(
            "%s: training images per aspect-ratio bucket: %s", spec.arm, train_sizes(batches)
        )
    accelerator = make_accelerator(spec)
    models = load_models(spec, accelerator.device)
    if spec.cache_latents:
        from dreamgrid.train.cache import LatentCache, vae_key

        models.latents = LatentCache(
            spec.cache_dir,
            models.vae,
            vae_key(spec.base_model, spec.vae),
            accelerator.device,
            models.vae.dtype,
        )
    optimizer, lr_scheduler = prepare_optimizer(spec, accelerator, models)
    done, steps = restore(spec, models, optimizer, accelerator.scaler)
    for epoch in range(done + 1, spec.epoch):
        replay = dataclasses.replace(spec, epoch=epoch, previous_meta=None)
        steps += len(
            train_epoch(replay, accelerator, models, epoch_batches(replay), optimizer, lr_scheduler)
        )
    losses = train_epoch(spec, accelerator, models, batches, optimizer, lr_scheduler)
    n_steps = expected_steps(spec, batches)
    if len(losses) != n_steps:
        raise DreamgridError(f"{spec.arm}: trained {len(losses)} steps, expected {n_steps}.")
    previous_steps, steps = steps, steps + n_steps

    metadata = checkpoint_metadata(spec, batches, steps, n_steps, losses)
    loss_log = write_loss_log(spec, losses, previous_steps, lr_scheduler.get_last_lr()[0])
    unwrapped = dataclasses.replace(
        models,
        denoiser=accelerator.unwrap_model(models.denoiser),
        text_encoder=accelerator.unwrap_model(models.text_encoder),
    )
    trainer(spec).save_checkpoint(spec, unwrapped, metadata)
    # Written last: a job killed before this point leaves the state of epoch e-1 to rerun from.
    info = StateInfo(spec.epoch, steps, spec.fingerprint(), file_hash(meta_path(spec)))
    save_state(spec.state, models.named_params, optimizer, info, accelerator.scaler)
    seconds = time.perf_counter() - started
    logger.info(
        "%s epoch %d: %d steps (%d total), mean loss %.5f, %.1f s -> %s",
        spec.arm,
        spec.epoch,
        n_steps,
        steps,
        metadata["mean_loss"],
        seconds,
        spec.out_checkpoint,
    )
    return {
        "checkpoint": spec.out_checkpoint,
        "state": spec.state,
        "loss_log": loss_log,
        "epoch": spec.epoch,
        "steps": steps,
        "steps_per_epoch": n_steps,
        "mean_loss": metadata["mean_loss"],
        "replayed": spec.epoch - 1 - done,
        "seconds": seconds,
    }


def expected_steps(spec: TrainSpec, batches: list[list[Any]]) -> int:
    """Optimizer steps the epoch must take, counted as Kohya does from the data (not from
    the batches built), so a batching bug fails the job instead of shifting every step."""
    from dreamgrid.train.data import bucket_steps

    items = [item for batch in batches for item in batch]
    instance = [item for item in items if not item.is_reg]
    if spec.aspect_ratio == "buckets":
        paired = spec.reg_mode == "paired" and spec.regularization
        per_bucket = Counter(item.size for item in (instance if paired else items))
        per_pass = [n // spec.passes for n in per_bucket.values()]
        return bucket_steps(per_pass, spec.batch_size, spec.passes)
    n_images = len({item.image for item in instance})
    return count_steps(
        n_images, spec.repeats, spec.batch_size, spec.regularization, spec.reg_mode, spec.passes
    )


def meta_path(spec: TrainSpec) -> Path:
    """The JSON written beside the checkpoint (what the next epoch's job declares as input)."""
    return spec.out_checkpoint.with_suffix(".json")


def check_inputs(spec: TrainSpec) -> None:
    """Fail early, naming the path, if an input the job reads is missing."""
    base = spec.base_model
    missing = [part for part in trainer(spec).MODEL_PARTS if not (base / part).is_dir()]
    if missing:
        raise SpecError(
            f"{base}: not a diffusers {spec.family} folder (missing {', '.join(missing)}). "
            f"Point base_model at a pipeline saved with save_pretrained."
        )
    if spec.vae is not None and not (spec.vae / "config.json").is_file():
        raise SpecError(
            f"{spec.vae}: training.vae is not a diffusers AutoencoderKL folder (no config.json)."
        )
    list_images(spec.instance_dir)
    if spec.reg_dir is not None:
        list_images(spec.reg_dir)
    for path in (spec.captions, spec.previous_meta):
        if path is not None and not path.is_file():
            raise SpecError(f"{path}: file not found. Rerun the step that writes it.")


def make_accelerator(spec: TrainSpec) -> Any:
    """Accelerator with the spec's mixed precision; seeds the global RNGs from (seed, epoch)."""
    from accelerate import Accelerator

    if spec.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise SpecError(
            f"train spec {spec.arm}: mixed_precision 'fp16' needs a CUDA GPU; "
            f"use 'bf16' or 'no' on this machine."
        )
    accelerator = Accelerator(mixed_precision=spec.mixed_precision)
    if accelerator.num_processes > 1:
        raise DreamgridError(
            "dreamgrid trains with one process per job (Kohya step counts assume it); "
            "launch without --multi_gpu / --num_processes."
        )
    return accelerator


def restore(spec: TrainSpec, models: Models, optimizer: Any, scaler: Any = None) -> tuple[int, int]:
    """Load the arm's state if it holds epoch e-1 of these settings (weights, optimizer, and
    the fp16 loss ``scaler``'s scale when there is one).

    Returns:
        (last finished epoch now in the models, optimizer steps so far); ``(0, 0)`` means
        start from the base model.
    """
    if spec.epoch == 1:
        return 0, 0
    previous = json.loads(spec.previous_meta.read_text())
    if previous.get("epoch") != spec.epoch - 1:
        raise SpecError(
            f"{spec.previous_meta}: holds epoch {previous.get('epoch')}, but epoch "
            f"{spec.epoch} must continue epoch {spec.epoch - 1}."
        )
    info = read_state_info(spec.state)
    problem = None
    if info is None:
        problem = "there is no resume state"
    elif info.fingerprint != spec.fingerprint():
        problem = "the resume state was trained with other settings"
    elif info.epoch != spec.epoch - 1:
        problem = f"the resume state holds epoch {info.epoch}"
    elif info.meta_digest != file_hash(spec.previous_meta):
        problem = f"the resume state did not write {spec.previous_meta}"
    if problem:
        logger.warning(
            "%s epoch %d: %s (%s); replaying epochs 1-%d from the base model "
            "(same result, more time).",
            spec.arm,
            spec.epoch,
            problem,
            spec.state,
            spec.epoch - 1,
        )
        return 0, 0
    load_state(spec.state, models.named_params, optimizer, scaler)
    logger.info("%s: resumed from %s (epoch %d)", spec.arm, spec.state, info.epoch)
    return info.epoch, info.steps


def prepare_optimizer(spec: TrainSpec, accelerator: Any, models: Models) -> tuple[Any, Any]:
    """Optimizer and LR schedule, prepared by accelerate with the trained models.

    Replaces ``models.denoiser`` (and a trained ``models.text_encoder``) by their prepared forms.
    """
    optimizer, lr_scheduler = make_optimizer(spec, models)
    parts = [models.denoiser] + ([models.text_encoder] if spec.train_text_encoder else [])
    prepared = accelerator.prepare(*parts, optimizer, lr_scheduler)
    models.denoiser = prepared[0]
    if spec.train_text_encoder:
        models.text_encoder = prepared[1]
    return prepared[-2], prepared[-1]


def make_dataloader(accelerator: Any, models: Models, batches: list[list[Any]]) -> Any:
    """A loader that yields ``batches`` as given (their seeded order, their sizes)."""
    items = [item for batch in batches for item in batch]
    bounds = itertools.accumulate((len(batch) for batch in batches), initial=0)
    dataloader = torch.utils.data.DataLoader(
        DreamBoothDataset(
            items, functools.partial(family_module(models.family).tokenize, models), models.latents
        ),
        batch_sampler=[list(range(a, b)) for a, b in itertools.pairwise(bounds)],
        collate_fn=collate_fn,
        num_workers=0,
    )
    return accelerator.prepare(dataloader)


def make_optimizer(spec: TrainSpec, models: Models) -> tuple[Any, Any]:
    """AdamW over the trained parameters and the spec's learning-rate schedule.

    The text encoder, when trained, is its own parameter group with ``text_encoder_lr``
    (default: the denoiser's learning rate), as Kohya's ``--learning_rate_te``.
    """
    from diffusers.optimization import get_scheduler

    denoiser = [p for k, p in models.named_params.items() if not k.startswith("text_encoder.")]
    groups = [{"params": denoiser, "lr": spec.learning_rate}]
    if spec.train_text_encoder:
        text = [p for k, p in models.named_params.items() if k.startswith("text_encoder.")]
        groups.append({"params": text, "lr": spec.text_encoder_lr or spec.learning_rate})
    optimizer = adamw_class(spec)(
        groups,
        lr=spec.learning_rate,
        betas=(spec.adam_beta1, spec.adam_beta2),
        weight_decay=spec.adam_weight_decay,
        eps=spec.adam_epsilon,
    )
    return optimizer, get_scheduler(spec.lr_scheduler, optimizer=optimizer)


def adamw_class(spec: TrainSpec) -> Any:
    """torch's AdamW, or bitsandbytes' 8-bit AdamW when asked for and usable (CUDA + package).

    Without either the job falls back to torch's AdamW and says so: same update rule, more
    memory for the moments.
    """
    if spec.optimizer != "adamw8bit":
        return torch.optim.AdamW
    if not torch.cuda.is_available():
        logger.warning("optimizer adamw8bit needs a CUDA GPU; using torch AdamW instead.")
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        logger.warning(
            "optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes); "
            "using torch AdamW instead."
        )
        return torch.optim.AdamW
    return bitsandbytes.optim.AdamW8bit


def train_epoch(
    spec: TrainSpec,
    accelerator: Any,
    models: Models,
    batches: list[list[Any]],
    optimizer: Any,
    lr_scheduler: Any,
) -> list[float]:
    """One optimizer step per batch of ``epoch_batches``; returns the loss of every step.

    The bar shows loss, steps/s and the time left (tqdm's rate and ETA).
    """
    set_seed(derive_seed(spec.seed, spec.epoch, "global") % 2**32)
    if spec.train_text_encoder:
        # After its stop epoch the text encoder gets no gradients, so AdamW leaves it alone.
        models.text_encoder.requires_grad_(spec.text_encoder_trains(spec.epoch))
    before_epoch = getattr(trainer(spec), "before_epoch", None)  # optional family hook
    if before_epoch is not None:
        before_epoch(spec, models, batches, accelerator.device)
    loader = make_dataloader(accelerator, models, batches)
    generator = torch.Generator(device=accelerator.device)
    generator.manual_seed(derive_seed(spec.seed, spec.epoch, "noise"))
    losses: list[float] = []
    progress = tqdm(
        total=len(loader),
        desc=f"{spec.arm} epoch {spec.epoch}",
        unit="step",
        disable=not accelerator.is_local_main_process,
    )
    for batch in loader:
        loss = compute_loss(spec, models, batch, generator, accelerator.device)
        accelerator.backward(loss)
        # one optimizer step per batch (no gradient accumulation), so every step clips
        accelerator.clip_grad_norm_(models.params, spec.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())
        progress.update(1)
        progress.set_postfix(loss=f"{losses[-1]:.4f}", lr=lr_scheduler.get_last_lr()[0])
    progress.close()
    return losses


def compute_loss(
    spec: TrainSpec,
    models: Models,
    batch: dict[str, Any],
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Weighted loss of one batch: the family's objective per item (instance weight 1, class
    prior_loss_weight).

    Kohya averages the weighted per-item losses over the batch. In ``paired`` batches the sum
    is divided by the instance items only, as diffusers' ``instance + w * prior`` does.
    """
    latents = image_latents(models, batch, generator, device)
    per_item = trainer(spec).per_item_loss(spec, models, batch, latents, generator, device)
    weighted = per_item * batch["weight"].to(device)
    # Paired batches average over instance images only (diffusers' instance + w * prior).
    if spec.reg_mode == "paired" and spec.regularization:
        return weighted.sum() / (~batch["is_reg"]).sum().to(device)
    return weighted.mean()


def image_latents(
    models: Models, batch: dict[str, Any], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """A draw from the VAE's latent distribution of each image (cached or encoded now),
    before the family's scaling, in the VAE's dtype (SDXL's stays float32)."""
    dtype = models.vae.dtype
    if "latent_mean" in batch:
        # Cached distribution: the same draw DiagonalGaussianDistribution.sample makes.
        mean = batch["latent_mean"].to(device, dtype=dtype)
        std = batch["latent_std"].to(device, dtype=dtype)
        sample = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
        return mean + std * sample
    pixel_values = batch["pixel_values"].to(device, dtype=dtype)
    with torch.no_grad():
        return models.vae.encode(pixel_values).latent_dist.sample(generator=generator)


def checkpoint_metadata(
    spec: TrainSpec, batches: list[list[Any]], steps: int, n_steps: int, losses: list[float]
) -> dict[str, Any]:
    """What the checkpoint header records about how it was trained: the spec's settings
    (:meth:`TrainSpec.checkpoint_settings`) and what the epoch did."""
    items = [item for batch in batches for item in batch]
    return {
        **spec.checkpoint_settings(),
        "steps": steps,
        "steps_per_epoch": n_steps,
        "text_encoder_trained": spec.text_encoder_trains(spec.epoch),
        "regularization": spec.regularization,
        "kohya_epochs": spec.epoch * spec.passes,
        "train_sizes": train_sizes(batches),
        "train_images": len({item.image for item in items if not item.is_reg}),
        "reg_images": len({item.image for item in items if item.is_reg}),
        "mean_loss": sum(losses) / len(losses),
    }


def train_sizes(batches: list[list[Any]]) -> dict[str, int]:
    """Training images per fitted size (bucket, or the square), e.g. ``{"448x576": 20}``."""
    from dreamgrid.buckets import size_label

    fitted = {item.image: item.size for batch in batches for item in batch if not item.is_reg}
    return dict(sorted(Counter(map(size_label, fitted.values())).items()))


def loss_log_path(out_checkpoint: Path) -> Path:
    """``epoch-3.safetensors`` -> ``epoch-3.loss.csv`` beside it."""
    return out_checkpoint.with_suffix(".loss.csv")


def write_loss_log(spec: TrainSpec, losses: list[float], first_step: int, lr: float) -> Path:
    """CSV with one row per optimizer step: step (1-based, over all epochs), epoch, loss, lr."""
    path = loss_log_path(spec.out_checkpoint)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "epoch", "loss", "lr"])
        for i, loss in enumerate(losses, start=first_step + 1):
            writer.writerow([i, spec.epoch, repr(loss), repr(lr)])
    return path
