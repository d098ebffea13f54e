"""SDXL checkpoints as single files in the original (SGM) layout of ``sd_xl_base_1.0.safetensors``,
and SDXL LoRA adapters in Kohya's format.

The layout: ``model.diffusion_model.*`` (UNet, LDM names as for SD 1.x plus ``label_emb`` for the
added conditioning), ``first_stage_model.*`` (VAE), ``conditioner.embedders.0.transformer.*``
(CLIP-L, transformers names) and ``conditioner.embedders.1.model.*`` (OpenCLIP-G in open_clip's
own names: fused ``in_proj`` attention, ``resblocks``, a transposed ``text_projection``). The
mappings generalise :mod:`dreamgrid.train.export` and invert diffusers' single-file loaders
(``convert_ldm_unet_checkpoint``, ``convert_open_clip_checkpoint``); the tests load files
back with ``StableDiffusionXLPipeline.from_single_file`` and compare renders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.train.export import (
    FORMAT,
    LORA_FORMAT,
    _dtype_kwarg,
    lora_to_kohya,
    text_encoder_to_ldm,
    torch_dtype,
    unet_prefix_map,
    unet_to_ldm,
    vae_to_ldm,
)

CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# transformers CLIP names -> open_clip names, inside one encoder layer.
_OPEN_CLIP_LAYER = (
    ("self_attn.out_proj.", "attn.out_proj."),
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)
_OPEN_CLIP_TOP = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_LAYERS = "text_model.encoder.layers."


def open_clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIPTextModelWithProjection state dict as OpenCLIP-G's
    ``conditioner.embedders.1.model.*`` tensors (q, k and v fused into ``in_proj``)."""
    import torch

    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue  # a buffer transformers rebuilds; open_clip has none
        if key in _OPEN_CLIP_TOP:
            out[OPEN_CLIP_PREFIX + _OPEN_CLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            # open_clip multiplies x @ text_projection; a Linear layer computes x @ W.T.
            out[OPEN_CLIP_PREFIX + "text_projection"] = value.T
        elif key.startswith(_LAYERS):
            index, inner = key[len(_LAYERS) :].split(".", 1)
            block = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{index}."
            for part in ("q", "k", "v"):
                if inner.startswith(f"self_attn.{part}_proj."):
                    kind = inner.rsplit(".", 1)[1]  # weight or bias
                    fused.setdefault(f"{block}attn.in_proj_{kind}", {})[part] = value
                    break
            else:
                for ours, theirs in _OPEN_CLIP_LAYER:
                    if inner.startswith(ours):
                        out[block + theirs + inner[len(ours) :]] = value
                        break
                else:
                    raise SpecError(
                        f"text encoder 2 weight {key!r} has no place in the SDXL layout."
                    )
        else:
            raise SpecError(f"text encoder 2 weight {key!r} has no place in the SDXL layout.")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def sdxl_ldm_state(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> dict[str, Any]:
    """The four models' weights under their SGM-layout names (tensors as they are)."""
    return {
        **unet_to_ldm(unet.state_dict(), dict(unet.config)),
        **vae_to_ldm(vae.state_dict(), dict(vae.config)),
        **text_encoder_to_ldm(text_encoder.state_dict(), CLIP_L_PREFIX),
        **open_clip_to_ldm(text_encoder_2.state_dict()),
    }


def write_checkpoint(
    path: Path, tensors: dict[str, Any], metadata: dict[str, Any], header: dict[str, str]
) -> None:
    """Tensors with dreamgrid's metadata in the safetensors header, and a ``.json`` beside."""
    from safetensors.torch import save_file

    header = {**header, **{k: json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    with atomic_path(Path(path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def save_sdxl_checkpoint(
    path: Path,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    text_encoder_2: Any,
    metadata: dict[str, Any],
    precision: str = "fp16",
) -> None:
    """Write the full SDXL model as one SGM-layout safetensors file (+ ``.json``)."""
    dtype = torch_dtype(precision)
    tensors = {}
    for key, value in sdxl_ldm_state(unet, vae, text_encoder, text_encoder_2).items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    write_checkpoint(path, tensors, metadata, {"format": FORMAT})


def save_sdxl_lora(
    path: Path, unet: Any, alpha: float, metadata: dict[str, Any], precision: str = "fp16"
) -> None:
    """Write the UNet's LoRA adapter with Kohya's SDXL names (``lora_unet_input_blocks_*``,
    the original layout's modules), as sd-scripts' ``sdxl_train_network`` writes them."""
    from peft.utils import get_peft_model_state_dict

    dtype = torch_dtype(precision)
    names = unet_prefix_map(dict(unet.config))
    kohya = lora_to_kohya(get_peft_model_state_dict(unet), alpha, names)
    tensors = {k: v.detach().to("cpu", dtype=dtype).contiguous() for k, v in kohya.items()}
    rank = next(v.shape[0] for k, v in tensors.items() if k.endswith("lora_down.weight"))
    header = {
        "format": LORA_FORMAT,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sdxl_base_v1-0",
    }
    write_checkpoint(path, tensors, metadata, header)


def load_sdxl_pipeline(path: Path, config_dir: Path, dtype: Any = None) -> Any:
    """Load an SGM-layout SDXL checkpoint with diffusers' ``from_single_file``, offline;
    ``config_dir`` (the base model's diffusers folder) gives configs, tokenizers, scheduler."""
    from diffusers import StableDiffusionXLPipeline

    kwargs: dict[str, Any] = {"config": str(config_dir), "local_files_only": True}
    if dtype is not None:
        kwargs.update(_dtype_kwarg(dtype))
    return StableDiffusionXLPipeline.from_single_file(str(path), **kwargs)
