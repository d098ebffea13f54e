"""Resolving the base diffusion model and the captioner to local diffusers folders.

Each source becomes ``results/models/<name>/``: the tiny demo model is built there, a hub id
or a single-file checkpoint is converted there once (the only step that may use the network),
and a local diffusers folder is referenced by a small ``link.json`` rather than copied.
Every later job loads the model through :func:`resolve` and never touches the network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dreamgrid import tiny
from dreamgrid.config import TINY, TINY_FAMILIES
from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path

logger = logging.getLogger(__name__)

LINK = "link.json"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def classify(source: str, allow_pickle: bool = False) -> str:
    """Kind of a model source: 'tiny' (``tiny``, ``tiny-sdxl``, ``tiny-flux``), 'dir',
    'single_file' or 'hub'.

    Raises:
        SpecError: a path that does not exist, is no diffusers folder, or is a pickle
            (unless ``allow_pickle``, the config's explicit opt-in).
    """
    if source in TINY_FAMILIES:
        return "tiny"
    path = Path(source).expanduser()
    looks_like_path = path.is_absolute() or source.startswith(".") or path.exists()
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise SpecError(
            f"{source}: pickled checkpoints can run arbitrary code when loaded and are refused. "
            "Convert it to .safetensors (or a diffusers folder) and point base_model at that, "
            "or set allow_pickle: true if you trust the file."
        )
    if path.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES):
        if not path.is_file():
            raise SpecError(f"{source}: base_model file not found. Fix the path in the config.")
        if path.suffix.lower() == ".safetensors" and _is_lora(path):
            raise SpecError(
                f"{source}: a LoRA adapter, not a full model: it holds only low-rank weight "
                "updates. Point base_model at the model it was trained on (a full "
                ".safetensors checkpoint, a diffusers folder or a hub id)."
            )
        return "single_file"
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "config.json").is_file():
            raise SpecError(
                f"{source}: not a diffusers/transformers folder (no model_index.json or "
                "config.json). Point the config at a folder saved with save_pretrained."
            )
        return "dir"
    if looks_like_path or source.count("/") != 1:
        raise SpecError(
            f"{source}: no such folder or file, and not a hub id like 'org/name'. Fix the path."
        )
    return "hub"


def _is_lora(path: Path) -> bool:
    """Whether a .safetensors file holds only LoRA weights (Kohya, diffusers or peft keys);
    reads the header, not the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys = list(handle.keys())
    except Exception as err:  # safetensors raises its own error types
        raise SpecError(f"{path}: not a readable .safetensors file ({err}).") from err
    markers = ("lora_down", "lora_up", "lora_A", "lora_B", ".alpha")
    return bool(keys) and all(any(m in key for m in markers) for key in keys)


def prepare_model(
    source: str,
    kind: str,
    out: Path,
    allow_pickle: bool = False,
    family: str | None = None,
) -> Path:
    """Make ``out`` a usable local model folder for ``source``.

    Args:
        source: config value (``tiny``, ``tiny-sdxl``, ``tiny-flux``, a folder, a
            .safetensors file or a hub id).
        kind: ``sd`` for the diffusion model (``sdxl`` or ``flux`` for one stated to be of
            that family), ``blip`` for the captioner, ``clip`` for CLIPScore's model.
        out: output folder (written atomically).
        allow_pickle: the user opted in to loading a pickled .ckpt.
        family: the diffusion model's stated family (``sd15``, ``sdxl``, ``flux``); None:
            the one ``kind`` names, else read from a single file, or a hub repository's
            ``model_index.json`` (which must then be SD 1.5, as the jobs were planned).
    Returns:
        ``out``.
    """
    source_kind = classify(source, allow_pickle)
    with atomic_path(out) as tmp:
        if source_kind == "tiny" and kind in SD_KINDS:
            TINY_BUILDERS[source](tmp)
        elif source_kind == "tiny":
            build = {"blip": tiny.build_tiny_blip}
            build.get(kind, tiny.build_tiny_clip)(tmp)
        elif source_kind == "dir":
            tmp.mkdir()
            (tmp / LINK).write_text(json.dumps({"path": str(Path(source).resolve())}) + "\n")
        elif kind in SD_KINDS:
            _convert_sd(source, source_kind, tmp, family or SD_KINDS[kind])
        elif source_kind == "hub":
            (_download_blip if kind == "blip" else _download_clip)(source, tmp)
        else:
            raise SpecError(
                f"{source}: a {kind.upper()} model must be a folder or hub id, not a single file."
            )
    logger.info("%s model %s (%s) ready at %s", kind, source, source_kind, out)
    return out


#: Diffusion-model kinds of prepare_model and the family each states (None: ``sd``, read
#: from the model; SD 1.5 for a hub id).
SD_KINDS = {"sd": None, "sdxl": "sdxl", "flux": "flux"}
#: Builders of the tiny base models (config.TINY_FAMILIES).
TINY_BUILDERS = {
    TINY: tiny.build_tiny_sd,
    "tiny-sdxl": tiny.build_tiny_sdxl,
    "tiny-flux": tiny.build_tiny_flux,
}
#: The diffusers pipeline class of each family.
PIPELINES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
}


def _convert_sd(source: str, source_kind: str, out: Path, family: str | None = None) -> None:
    import diffusers

    from dreamgrid import families

    if source_kind == "single_file":
        # (A pickle's keys are not read: SD 1.5 unless stated, as before the axis.)
        family = plan_family(source, family, allow_pickle=True)
    # Only SD pipelines have a safety checker to leave out.
    extra = {"safety_checker": None} if family in (None, "sd15") else {}
    if family is None:
        # A hub repository names its pipeline in model_index.json (SD 1.5 repos: as before).
        pipe = diffusers.DiffusionPipeline.from_pretrained(source, **extra)
    elif source_kind == "single_file":
        pipe = getattr(diffusers, PIPELINES[family]).from_single_file(source, **extra)
    else:
        pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(source, **extra)
    pipe.save_pretrained(out, safe_serialization=True)
    # Refuse here, before any training job, a model of a family dreamgrid does not train, or
    # (no family: stated) one the jobs were not planned for.
    found = families.resolve_family(out, family)
    if family is None and found != "sd15":
        raise SpecError(
            f"{source}: a {found} model, but the config states no family, and a hub id is "
            f"planned as SD 1.5 before it is downloaded. Give it as {{source: {source}, "
            f"family: {found}}} in the config."
        )


def _download_blip(source: str, out: Path) -> None:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    BlipForConditionalGeneration.from_pretrained(source).save_pretrained(out)
    BlipProcessor.from_pretrained(source).save_pretrained(out)


def _download_clip(source: str, out: Path) -> None:
    from transformers import CLIPModel, CLIPProcessor

    CLIPModel.from_pretrained(source).save_pretrained(out, safe_serialization=True)
    CLIPProcessor.from_pretrained(source).save_pretrained(out)


def resolve(prepared: str | Path) -> Path:
    """The folder to load weights from, for a folder made by :func:`prepare_model`."""
    prepared = Path(prepared)
    link = prepared / LINK
    if link.is_file():
        target = Path(json.loads(link.read_text())["path"])
        if not target.is_dir():
            raise SpecError(f"{target}: model folder has gone (linked from {link}).")
        return target
    return prepared


def is_tiny(prepared: str | Path) -> bool:
    """Whether a prepared model is a random-weight demo model (any family)."""
    return (resolve(prepared) / tiny.TINY_MARKER).is_file()


def plan_family(source: str, stated: str | None, allow_pickle: bool = False) -> str:
    """A base model's family before any job runs: the stated one or its tiny model's, else
    read from a local folder or file (headers only). A hub id without ``family:`` is SD 1.5,
    as before the base-model axis; its prepare job refuses a model of another family.

    Raises:
        SpecError: the model is of another family than stated, or of none dreamgrid trains.
    """
    from dreamgrid import families

    kind = classify(source, allow_pickle)
    if kind == "tiny":
        return TINY_FAMILIES[source]
    if kind == "single_file" and Path(source).suffix.lower() in PICKLE_SUFFIXES:
        # A pickle's keys are not read before its prepare job: SD 1.5 as before the axis.
        return stated or "sd15"
    if kind in ("dir", "single_file"):
        return families.resolve_family(Path(source).expanduser(), stated)
    return stated or "sd15"
