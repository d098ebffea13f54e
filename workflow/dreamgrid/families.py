"""Which family a base model belongs to: SD 1.5, SDXL or FLUX.1.

A foundation of the base-model axis (#17): each family is trained and rendered by its own code
path, chosen by :func:`resolve_family` from the model itself and, where the model cannot tell,
from the config's ``family:``. Nothing here loads weights:

- a diffusers folder is read from ``model_index.json``'s pipeline class (and, for
  ``StableDiffusionPipeline``, its UNet's config, since SD 2.x folders carry the same class);
- a single ``.safetensors`` file is read from its header (key names and shapes) and classified
  by diffusers' own ``infer_diffusers_model_type``, the function ``from_single_file`` uses.

Models of other families (SD 2.x, SD 3, the SDXL refiner, FLUX.1 Fill, ...) are refused by
name; dreamgrid trains none of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError

FAMILIES = ("sd15", "sdxl", "flux")

#: Pipeline classes (``model_index.json``'s ``_class_name``) of each family. Img2img
#: pipelines hold the same weights as text-to-image ones.
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionImg2ImgPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "FluxPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
}

#: diffusers' single-file model types (``infer_diffusers_model_type``) of each family.
#: ``flux-schnell`` is FLUX.1 without the guidance embedding (timestep-distilled).
SINGLE_FILE_FAMILIES = {
    "v1": "sd15",
    "xl_base": "sdxl",
    "flux-dev": "flux",
    "flux-schnell": "flux",
}

#: Readable names for the single-file model types dreamgrid refuses (others are named by
#: diffusers' type).
_OTHER_MODEL_TYPES = {
    "v2": "Stable Diffusion 2.x",
    "inpainting": "an SD 1.x inpainting model",
    "inpainting_v2": "an SD 2.x inpainting model",
    "xl_refiner": "the SDXL refiner",
    "xl_inpaint": "an SDXL inpainting model",
    "playground-v2-5": "Playground v2.5 (SDXL-shaped, EDM-trained)",
    "sd3": "Stable Diffusion 3",
    "sd35_medium": "Stable Diffusion 3.5 Medium",
    "sd35_large": "Stable Diffusion 3.5 Large",
    "flux-fill": "FLUX.1 Fill",
    "flux-depth": "FLUX.1 Depth",
    "flux-2-dev": "FLUX.2",
}

#: SD 2.x UNets cross-attend to 1024-wide OpenCLIP-H embeddings (SD 1.x: 768-wide CLIP-L);
#: diffusers' single-file inference tells v2 from v1 by the same width.
_SD2_CROSS_ATTENTION_DIM = 1024

_FIX = "State it in the config: family: " + " | ".join(FAMILIES) + "."


@dataclass(frozen=True)
class Detection:
    """What a model says about its family.

    ``family`` is one of :data:`FAMILIES` when known; ``other`` names a family dreamgrid does
    not train; neither means the model cannot tell, and ``evidence`` says why.
    """

    family: str | None
    evidence: str
    other: str | None = None


def detect(source: str | Path) -> Detection:
    """Read ``source`` (a diffusers folder or a single ``.safetensors`` file) without loading
    weights and say what it tells about its family.

    Raises:
        SpecError: ``source`` does not exist, or is a folder that is no diffusers pipeline.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _detect_folder(path)
    if path.is_file():
        return _detect_file(path)
    raise SpecError(
        f"{source}: no such folder or file. The family is read from a local diffusers folder or "
        "a .safetensors file (a hub id once it is downloaded); fix the path."
    )


def detect_family(source: str | Path) -> str:
    """The family (one of :data:`FAMILIES`) of the model at ``source``.

    Raises:
        SpecError: the model cannot tell its family (the message names the file and the
            config's ``family:`` fix) or belongs to a family dreamgrid does not train (the
            message names what was found).
    """
    found = detect(source)
    _refuse_other(source, found)
    if found.family is None:
        raise SpecError(f"{source}: cannot tell the base model's family ({found.evidence}). {_FIX}")
    return found.family


def resolve_family(source: str | Path, stated: str | None) -> str:
    """The family of the model at ``source``, given the config's ``family:`` (or None).

    Detection decides when it can; a stated family decides where detection cannot tell. A
    stated family that disagrees with a detected one is refused, naming both; a model of a
    family dreamgrid does not train is refused whatever is stated.
    """
    if stated is not None and stated not in FAMILIES:
        raise SpecError(
            f"{source}: family {stated!r} is not one dreamgrid trains. "
            f"Use family: {' | '.join(FAMILIES)}."
        )
    found = detect(source)
    _refuse_other(source, found)
    if found.family is None:
        if stated is None:
            raise SpecError(
                f"{source}: cannot tell the base model's family ({found.evidence}). {_FIX}"
            )
        return stated
    if stated is not None and stated != found.family:
        raise SpecError(
            f"{source}: the config states family: {stated}, but the model is {found.family} "
            f"({found.evidence}). Remove family: from the config, or point base_model at "
            f"a {stated} model."
        )
    return found.family


def _refuse_other(source: str | Path, found: Detection) -> None:
    if found.other is not None:
        raise SpecError(
            f"{source}: {found.other} ({found.evidence}); dreamgrid trains "
            f"{', '.join(FAMILIES)} only. Point base_model at a model of one of those families."
        )


# ---- diffusers folders ---------------------------------------------------------------------
def _detect_folder(path: Path) -> Detection:
    from dreamgrid import models

    if (path / models.LINK).is_file():  # a prepared model that references a local folder
        path = models.resolve(path)
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise SpecError(
            f"{path}: no model_index.json, so not a diffusers pipeline folder. Point base_model "
            "at a folder saved with the pipeline's save_pretrained, a .safetensors file or a "
            "hub id."
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as err:
        raise SpecError(f"{index_file}: unreadable ({err}). Save the pipeline again.") from err
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    evidence = f"model_index.json names {class_name}"
    if not isinstance(class_name, str):
        return Detection(None, "model_index.json names no pipeline class")
    family = PIPELINE_FAMILIES.get(class_name)
    if family == "sd15":
        cross = _component_config(path, "unet").get("cross_attention_dim")
        if cross == _SD2_CROSS_ATTENTION_DIM:
            return Detection(
                None,
                f"{evidence}, its UNet cross-attends to 1024-wide text",
                "Stable Diffusion 2.x",
            )
    if family == "sdxl" and not _component_present(index, "text_encoder"):
        return Detection(None, f"{evidence} without the first text encoder", "the SDXL refiner")
    if family is not None:
        return Detection(family, evidence)
    import diffusers

    if hasattr(diffusers, class_name):  # a pipeline diffusers knows, of another family
        return Detection(None, evidence, f"a {class_name} model")
    return Detection(None, f"{evidence}, a pipeline class diffusers does not know")


def _component_config(path: Path, component: str) -> dict[str, Any]:
    config = path / component / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _component_present(index: dict[str, Any], component: str) -> bool:
    entry = index.get(component)
    return isinstance(entry, list) and any(part is not None for part in entry)


# ---- single files --------------------------------------------------------------------------
class _Header(Mapping):
    """A safetensors file's tensors as shape-only meta tensors, read from its header: enough
    for diffusers' model-type inference, which looks at key names and shapes."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._keys = set(handle.keys())

    def __getitem__(self, key: str) -> Any:
        import torch

        if key not in self._keys:
            raise KeyError(key)
        return torch.empty(self._handle.get_slice(key).get_shape(), device="meta")

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _detect_file(path: Path) -> Detection:
    if path.suffix.lower() != ".safetensors":
        return Detection(None, f"a {path.suffix or 'suffix-less'} file, whose keys are not read")
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        infer_diffusers_model_type,
    )
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = _Header(handle)
            # diffusers raises plain errors on shapes it does not expect; meta tensors fail
            # where it reads values.
            try:
                model_type = infer_diffusers_model_type(header)
            except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as err:
                return Detection(None, f"diffusers could not classify its keys ({err})")
            keys = set(header)
    except Exception as err:  # safetensors raises its own error types
        raise SpecError(f"{path}: not a readable .safetensors file ({err}).") from err
    evidence = f"diffusers reads its keys as {model_type!r}"
    # diffusers falls back to 'v1' for any keys it does not know: ask for SD 1.x's own UNet or
    # CLIP text-encoder key before believing it.
    sd1_keys = {CHECKPOINT_KEY_NAMES["v1"], CHECKPOINT_KEY_NAMES["clip"]}
    if model_type == "v1" and not keys & sd1_keys:
        return Detection(None, "none of its keys is one diffusers knows a model family by")
    family = SINGLE_FILE_FAMILIES.get(model_type)
    if family is not None:
        return Detection(family, evidence)
    return Detection(None, evidence, _OTHER_MODEL_TYPES.get(model_type, f"a {model_type} model"))
