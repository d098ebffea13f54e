"""Preflight: open every input before any job runs, so a bad file fails in seconds, not hours.

Called from the Snakefile's ``onstart`` (after the DAG is built, before the first job) and by
``dreamgrid check``. It never adds a file to the DAG: a checked-inputs file as a job input
would, on every re-check, rerun all training downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from dreamgrid import config as cfg
from dreamgrid import models, offline, paths
from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path, by_stem, file_hash, list_images, load_rgb
from dreamgrid.scoring import deepface_adapter
from dreamgrid.scoring.embedding import embed_reference_photos
from dreamgrid.scoring.settings import settings_from

logger = logging.getLogger(__name__)


def check_images(directory: str | Path, role: str, resolution: int | None = None) -> list[dict]:
    """Decode every image in ``directory``; warn about images smaller than ``resolution``.

    Raises:
        SpecError: the folder is missing or empty, or a file does not decode (named).
    """
    rows = []
    for path in list_images(directory):
        image = load_rgb(path)
        if resolution and min(image.size) < resolution:
            logger.warning(
                "%s: %dx%d is smaller than the training resolution %d; it will be upscaled.",
                path,
                *image.size,
                resolution,
            )
        rows.append(
            {"role": role, "image": str(path), "width": image.width, "height": image.height}
        )
    return rows


def _fingerprint(files: list[Path], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(bytes.fromhex(file_hash(path)))
    return digest.hexdigest()


def _config_key(field: str, method: dict[str, Any]) -> str:
    """The config key behind a TrainSpec field (LoRA arms take their rate from ``lora``)."""
    if method.get("method") == "lora" and field in method and field != "method":
        return "lora." + field.removeprefix("lora_")
    special = {"token": "axes.token", "class_word": "subject.class_word", "arm": "axes"}
    return special.get(field, f"training.{field}")


def _spec_error(
    err: ValueError,
    arm: str,
    epoch: int,
    method: dict[str, Any],
    levels: dict[str, str] | None = None,
) -> SpecError:
    """One message naming the config key for a ValueError a TrainSpec raised."""
    import dataclasses
    import re

    from dreamgrid.train.spec import TrainSpec

    fields = {f.name for f in dataclasses.fields(TrainSpec)}
    text = re.sub(r"^train spec( [^:]*)?: ", "", str(err))
    # The first field the message names is the one it is about ("adam_beta1 must be ...").
    named = [w for w in re.findall(r"[a-z][a-z0-9_]*", text) if w in fields]
    key = _config_key(named[0], method) if named else "training"
    if key in (levels or {}):  # the arm's value comes from a settings axis
        key = f"axes.settings.{key} (value {levels[key]})"
    return SpecError(
        f"config key {key} (arm {arm}, epoch {epoch}): {text} A training job would refuse "
        "this; fix the key in the config."
    )


def check_specs(config: dict[str, Any], results: str | Path = "results") -> int:
    """Build every training job's TrainSpec and every sampling shard's settings as the jobs
    do (same functions, same params), and check LoRA targets against the base model's UNet.

    Returns:
        The number of specs built.
    Raises:
        SpecError: naming the config key, the arm and the fix.
    """
    from types import SimpleNamespace

    from dreamgrid import dag
    from dreamgrid.sample import SampleSettings
    from dreamgrid.train.spec import job_spec

    grid = dag.Grid(config)
    check_settings_matter(grid)
    built = 0
    # Arms that share a training (other sample.* settings) build its specs once.
    for arm in grid.training_arms:
        # An auto token is named by the finder during the run; "auto" stands in for it.
        params = grid.train_job_params(arm, resolve_token=False)
        for epoch in grid.epochs:
            try:
                job_spec(
                    params,
                    grid.train_files(arm, epoch),
                    base_model=paths.base_model_dir(grid.arms[arm].base_model),
                    epoch=epoch,
                    out_checkpoint=paths.CHECKPOINT.format(arm=arm, epoch=epoch),
                ).check_job()
            except ValueError as err:
                levels = grid.arms[arm].setting_levels
                raise _spec_error(err, arm, epoch, params["method"], levels) from err
            built += 1
    # One arm per base model and sample.* settings levels: shards differ only by those.
    firsts = {}
    for arm in grid.arms.values():
        levels = tuple((k, n) for k, n, _ in arm.settings if k.startswith("sample."))
        firsts.setdefault((arm.base_model, levels), arm.arm)
    for (name, levels), arm in firsts.items():
        key = f"sample.by_base_model.{name} (merged into sample)" if name else "sample"
        if levels:
            key += " with " + ", ".join(f"axes.settings.{k}: {n}" for k, n in levels)
        for prompt_set in grid.prompt_set_names:
            for shard in grid.shard_ids(prompt_set):
                wildcards = SimpleNamespace(arm=arm, prompt_set=prompt_set, shard=str(shard))
                try:
                    SampleSettings(**grid.get_shard_settings(wildcards))
                except ValueError as err:
                    raise SpecError(
                        f"config key {key} (prompt set {prompt_set}, shard {shard}): {err}"
                    ) from err
                built += 1
    for name in grid.base_model_names:
        # Once per distinct lora.target_modules of the base model's lora arms (a settings
        # axis may give several).
        checked = set()
        for arm in grid.arms.values():
            if arm.method == "lora" and arm.base_model == name:
                view = grid.view(arm.arm)
                targets = tuple(view["lora"]["target_modules"])
                if targets not in checked:
                    checked.add(targets)
                    check_lora_targets(view, results, name)
    return built


def check_settings_matter(grid: Any) -> None:
    """Refuse two arms that would train and render the same (an ``axes.settings`` value
    that no job of theirs reads, e.g. ``lora.rank`` on full arms, ``training.learning_rate``
    on LoRA arms, which take ``lora.learning_rate``, or a FLUX-only key on SD 1.5): they would
    spend GPU time on one recipe twice and show a difference of exactly zero."""
    from types import SimpleNamespace

    seen: dict[str, str] = {}
    for arm_id, arm in grid.arms.items():
        if not arm.settings:
            continue
        params = grid.train_job_params(arm.trainer, resolve_token=False)
        params["arm"] = {k: v for k, v in params["arm"].items() if k != "arm"}
        del params["state"]
        # What the job trains with: the method's settings over the training section's (a
        # LoRA arm's learning_rate is lora.learning_rate), as train.spec.job_spec merges them.
        params["training"] = {**params["training"], **params.pop("method")}
        shards = {
            p: grid.get_shard_settings(SimpleNamespace(arm=arm_id, prompt_set=p, shard="0"))
            for p in grid.prompt_set_names
        }
        key = json.dumps([params, shards], sort_keys=True, default=str)
        if key not in seen:
            seen[key] = arm_id
            continue
        other = grid.arms[seen[key]]
        keys = [k for k, n, _ in arm.settings if other.setting_levels.get(k) != n]
        raise SpecError(
            f"axes.settings: arms {other.arm} and {arm_id} differ only in "
            f"{', '.join(keys)}, which no job of theirs reads (their {arm.method} training "
            "and renders would be the same), so both would spend GPU time on one recipe. "
            "Drop the axis, or keep only arms it changes (lora.* changes LoRA arms only; "
            "LoRA arms take lora.learning_rate, not training.learning_rate)."
        )


def check_lora_targets(
    config: dict[str, Any], results: str | Path = "results", name: str = ""
) -> bool:
    """LoRA targets against the base model's UNet (config only, built on the meta device).
    ``config``: as base model ``name``'s arms see it (:func:`dreamgrid.config.base_model_config`).

    Returns:
        False when the check must wait for prepare_base_model (a hub id or single file not
        yet converted); the lora arms' check_lora_targets job then runs it before training.
    """
    from dreamgrid.train import targets

    entry = cfg.base_models(config)[""]
    source = entry["source"]
    kind = models.classify(source, config["allow_pickle"])
    prepared = Path(results).parent / paths.base_model_dir(name)
    family = models.plan_family(source, entry["family"], config["allow_pickle"])
    if family == "flux" or (kind == "tiny" and source != cfg.TINY):
        # A FLUX transformer, or a tiny model not yet built: the base model's
        # check_lora_targets job checks them before its first lora arm trains.
        logger.info("lora.target_modules of %s: checked once %s is prepared", source, family)
        return False
    if kind == "tiny":
        unet = targets.empty_unet(None)
    elif kind == "dir":
        unet = targets.empty_unet(Path(source).expanduser())
    elif (prepared / "unet" / "config.json").is_file():
        unet = targets.empty_unet(prepared)
    else:
        logger.info(
            "lora.target_modules: checked once prepare_base_model has converted %s, before "
            "any training job",
            source,
        )
        return False
    targets.check(unet, list(config["lora"]["target_modules"]))
    return True


def check_reference_faces(config: dict[str, Any], cache: Path | None) -> None:
    """Each reference must show exactly one face; cached by file contents and face settings."""
    score = config["score"]
    settings = settings_from(score)
    references = list_images(config["subject"]["references"])
    key = _fingerprint(references, {**vars(settings), "deepface_home": score["deepface_home"]})
    if cache and cache.is_file() and json.loads(cache.read_text()).get("references") == key:
        return
    # In Snakemake's own process: on the CPU, and the GPUs visible again to the jobs after.
    with deepface_adapter.on_cpu():
        deepface_adapter.setup_deepface(score["deepface_home"])
        if deepface_adapter.face_weights_problem(
            settings.model, settings.detector, score["deepface_home"]
        ):
            # The submitting node, where prepare_face_models runs too: the check needs them.
            logger.info("preparing DeepFace %s/%s for the reference check", settings.model,
                        settings.detector)  # fmt: skip
            deepface_adapter.prepare_face_weights(
                settings.model, settings.detector, score["deepface_home"]
            )
        embed_reference_photos(references, settings)
    if cache:
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps({"references": key}) + "\n")


def check_models(config: dict[str, Any]) -> list[str]:
    """Every model the grid loads is on disk, or is prepared by a local rule that may use the
    network here: when this node is offline (the hub's switches set, e.g. an air-gapped
    machine), everything must already be on disk.

    Returns:
        What each local rule will download (empty when nothing is fetched).

    Raises:
        SpecError: offline and a model is missing; names the config key, the prepare step
            and ``dreamgrid fetch``.
    """
    from dreamgrid import dag

    score = config["score"]
    fetched: list[str] = []
    missing: list[str] = []
    needs = [
        (f"axes.base_model.{name}" if name else "base_model", entry["source"],
         paths.base_model_dir(name), "prepare_base_model")
        for name, entry in cfg.base_models(config).items()
    ]  # fmt: skip
    captions = config["axes"]["captions"]
    if "blip" in captions and config["caption"]["backend"] == "transformers":
        needs.append(
            ("caption.model", config["caption"]["model"], paths.CAPTION_MODEL_DIR,
             "prepare_caption_model")
        )  # fmt: skip
    lavis = config["caption"]["backend"] == "lavis" and "blip" in captions
    if (
        lavis
        and config["caption"]["lavis_model"] != "tiny"
        and not Path(paths.LAVIS_MODEL_DIR).is_dir()
    ):
        fetched.append(f"LAVIS {config['caption']['lavis_model']} (prepare_lavis_model)")
        missing.append(
            f"caption.lavis_model: {config['caption']['lavis_model']} is downloaded by the local "
            f"rule prepare_lavis_model into {paths.LAVIS_MODEL_DIR}"
        )
    if score["clip_model"]:
        needs.append(
            ("score.clip_model", score["clip_model"], paths.CLIP_MODEL_DIR, "prepare_clip_model")
        )
    for key, source, prepared, rule in needs:
        base = key == "base_model" or key.startswith("axes.base_model.")
        kind = models.classify(source, config["allow_pickle"] if base else False)
        # A single file's scheduler and tokenizer configs come from the hub too.
        if kind in ("hub", "single_file") and not Path(prepared).is_dir():
            fetched.append(f"{key} {source} ({rule})")
            missing.append(f"{key}: {source} is downloaded by the local rule {rule}")
    detector = score["detector"]
    for model in dag.Grid(config).face_models:
        problem = deepface_adapter.face_weights_problem(model, detector, score["deepface_home"])
        if problem:
            fetched.append(f"DeepFace {model}/{detector} ({offline.FACE_PREPARE_RULE})")
            missing.append(f"{problem}; {offline.FACE_PREPARE_RULE} downloads it")
    if missing and offline.is_on():
        switches = ", ".join(
            k for k in offline.SWITCHES if offline.is_on({k: os.environ.get(k, "")})
        )
        raise SpecError(
            f"This node runs offline ({switches} set), but the grid needs models that are not "
            f"on disk: {'; '.join(missing)}. On a machine with network run `dreamgrid fetch "
            "CONFIG --to DIR`, copy DIR here and set the config values it prints; or run "
            "snakemake once where the network is reachable."
        )
    for item in fetched:
        logger.info("to download once, on this node, before any other job: %s", item)
    return fetched


# Sizes used before the base model is on disk: SD 1.5's fp32 UNet and CLIP-L text encoder.
SD15_UNET_BYTES = 3_438_167_536
SD15_TEXT_ENCODER_BYTES = 492_265_168
SD15_VAE_BYTES = 334_643_268
TINY_UNET_BYTES = 2_000_000
PNG_BYTES_PER_PIXEL = 1.5  # photo-like PNGs compress RGB to about half


def _unet_bytes(base_model: str) -> int:
    path = Path(base_model)
    if base_model in cfg.TINY_FAMILIES:
        return TINY_UNET_BYTES
    if path.is_dir() and (path / "unet").is_dir():
        weights = [p for p in (path / "unet").iterdir() if p.suffix in (".safetensors", ".bin")]
        # fp16 variants are half of the fp32 weights the trainer keeps.
        return max(
            (p.stat().st_size * (2 if ".fp16." in p.name else 1) for p in weights), default=0
        )
    return SD15_UNET_BYTES


def _disk_of(
    config: dict[str, Any], grid: Any, arms: set[str], results: str | Path
) -> dict[str, int]:
    """:func:`estimate_disk`'s checkpoints, states and renders of ``arms`` (one base model's,
    ``config`` as they see it)."""
    from dreamgrid.memory import DENOISER, PUBLISHED

    training = config["training"]
    entry = cfg.base_models(config)[""]
    family = models.plan_family(entry["source"], entry["family"], config["allow_pickle"])
    unet = _unet_bytes(entry["source"])
    tiny = unet == TINY_UNET_BYTES or entry["source"] in cfg.TINY_FAMILIES
    trained = unet
    if training["train_text_encoder"] and not tiny:
        trained += SD15_TEXT_ENCODER_BYTES
    full_model = unet if tiny else unet + SD15_TEXT_ENCODER_BYTES + SD15_VAE_BYTES
    if family != "sd15" and not tiny:
        # SDXL and FLUX.1 from their published parameter counts (fp32: 4 bytes each).
        trained = 4 * PUBLISHED[family][DENOISER[family]]
        full_model = 4 * sum(PUBLISHED[family].values())
    if training.get("save_precision", "fp16") != "fp32":
        full_model //= 2
    sample = config["sample"]
    # Every prompt set renders its own images of each checkpoint.
    per_checkpoint = sum(grid.prompt_set_count(p) for p in grid.prompt_set_names)
    renders = int(per_checkpoint * sample["width"] * sample["height"] * PNG_BYTES_PER_PIXEL)
    # Per (arm, epoch) not yet rendered, the checkpoint it renders: its training arm's
    # (arms with other sample.* settings share one training, counted once).
    todo = []
    for arm in sorted(arms):
        for epoch in grid.epochs:
            path = paths.CHECKPOINT.format(arm=grid.trainer_of(arm), epoch=epoch)
            if not (Path(results).parent / path).exists():
                todo.append(path)
    arms_todo = {path.split("/")[2] for path in todo}  # results/arms/{arm}/...
    # fp32 weights (4 bytes a parameter) + two moments (4 bytes each, or 1 byte in 8 bits)
    state = trained * (6 if training.get("optimizer") == "adamw8bit" else 12) // 4
    return {
        "checkpoints": len(set(todo)) * full_model,
        "resume_states": len(arms_todo) * state,
        "resume_state_rewrite": state if arms_todo else 0,
        "renders": len(todo) * renders,
    }


def estimate_disk(config: dict[str, Any], results: str | Path = "results") -> dict[str, int]:
    """Bytes the grid still needs at its peak: per (arm, epoch) not yet trained, its
    checkpoint (UNet, VAE and text encoder at ``save_precision``) and renders (every prompt
    set); per arm with epochs to train, one resume state (fp32 trained weights and two Adam
    moments: fp32 with ``adamw``, 8-bit with ``adamw8bit``), plus the temporary copy each
    rewrite of a state makes beside the old one (one training job at a time); plus class
    images. States of finished arms are deleted (``keep_resume_state: false``), but Snakemake
    may start every arm before finishing any, so all of them are counted."""
    from dreamgrid import dag

    grid = dag.Grid(config)
    parts = [
        _disk_of(view, grid, {a for a, arm in grid.arms.items() if arm.base_model == name}, results)
        for name, view in grid.views.items()
    ]
    # Each base model's arms with its own model size and settings (by_base_model); one state
    # rewrite at a time, the largest.
    estimate = {key: sum(part[key] for part in parts) for key in parts[0]}
    estimate["resume_state_rewrite"] = max(part["resume_state_rewrite"] for part in parts)
    if "generated" in config["axes"]["regularization"]:
        estimate["class_images"] = 0
        for name, view in grid.views.items():
            side = view["training"]["resolution"]
            count = grid.class_image_params_for(name)["count"]
            estimate["class_images"] += int(count * side * side * PNG_BYTES_PER_PIXEL)
    estimate["total"] = sum(estimate.values())
    return estimate


def check_disk(config: dict[str, Any], results: str | Path = "results") -> dict[str, int]:
    """Refuse to start a grid that cannot fit on the disk holding ``results``."""
    import shutil

    estimate = estimate_disk(config, results)
    where = Path(results).resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    parts = ", ".join(
        f"{k.replace('_', ' ')} {v / 1e9:.1f} GB" for k, v in estimate.items() if k != "total"
    )
    logger.info("disk: this grid still needs about %s; %.1f GB free", parts, free / 1e9)
    if estimate["total"] > free:
        raise SpecError(
            f"{where}: about {estimate['total'] / 1e9:.1f} GB needed ({parts}) but only "
            f"{free / 1e9:.1f} GB free. Free space, or shrink the grid (fewer arms, epochs or "
            "sample.count)."
        )
    return estimate


def run(config: dict[str, Any], cache: str | Path | None = None, specs: bool = True) -> list[dict]:
    """Check the validated config's inputs; raise one SpecError naming the file and the fix.

    Args:
        config: validated config.
        cache: file remembering which reference set already passed the face check.
        specs: build every job's spec (:func:`check_specs`); the workflow has done so
            while reading the config.
    Returns:
        One row per image checked (role, path, size).
    """
    subject = config["subject"]
    results = Path("results")
    if results.exists() and not results.is_dir():
        raise SpecError(
            f"{results.resolve()}: is a file, but the workflow writes its outputs into a "
            "folder of that name. Move the file away."
        )
    if "blip" in config["axes"]["captions"] and config["caption"]["backend"] == "lavis":
        from dreamgrid.lavis_caption import check_interpreter

        check_interpreter(config["caption"]["lavis_python"])
    check_models(config)
    if specs:
        check_specs(config, results)
    resolution = config["training"]["resolution"]
    images = check_images(subject["train_images"], "train", resolution)
    images += check_images(subject["references"], "reference")
    if subject["ground_truth"]:
        images += check_images(subject["ground_truth"], "ground_truth", resolution)
        # prepare_ground_truth names its outputs by stem: a.jpg and a.png would collide.
        by_stem(list_images(subject["ground_truth"]), "ground-truth photos")
    overrides = subject["caption_overrides"]
    if overrides:
        from dreamgrid import caption

        caption.read_overrides(Path(overrides), list_images(subject["train_images"]))
    check_disk(config)
    # Last: it may fetch the face weights (this node runs the prepare rules too).
    check_reference_faces(config, Path(cache) if cache else None)
    logger.info("preflight: %d images decode; references show one face each", len(images))
    if cfg.is_demo(config):
        logger.warning(
            "DEMO: tiny random-weight models; renders are noise and every number this run "
            "reports is meaningless. The real study: --configfile config/experiment.yaml"
        )
    return images
