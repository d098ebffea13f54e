"""Checkpoints as single files in the original Stable Diffusion (LDM) layout; LoRA adapters in
Kohya's format.

ComfyUI, A1111 and Kohya load SD 1.x weights as one ``.safetensors`` file whose keys are
``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE) and
``cond_stage_model.transformer.*`` (CLIP text encoder). The mapping follows diffusers'
``scripts/convert_diffusers_to_original_stable_diffusion.py``, generalized from SD 1.5's fixed
4 blocks x 2 layers to any ``block_out_channels`` / ``layers_per_block`` (the tiny test models
have 2 x 1), and is tested as the exact inverse of diffusers' ``from_single_file`` loader.

SDXL's layout (two text encoders, ``conditioner.embedders.*``) is in
:mod:`dreamgrid.train.export_sdxl`, built on these mappings.

dreamgrid's own facts (arm, epoch, steps, ...) ride along as JSON strings in the safetensors
header; other tools ignore them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.train.spec import SAVE_PRECISIONS

FORMAT = "dreamgrid-sd-v1"
#: FLUX.1 checkpoints (written by dreamgrid.train.export_flux): the LoRA adapter, and the full
#: fine-tune's transformer.
FLUX_LORA_FORMAT = "dreamgrid-flux-lora-v1"
FLUX_FORMAT = "dreamgrid-flux-v1"
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."

# Inside a resnet the LDM and diffusers names differ; attention blocks share their inner names.
_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
    # SDXL's added (size and pooled-text) conditioning; SD 1.x UNets have none.
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
}
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def unet_prefix_map(config: dict[str, Any]) -> dict[str, str]:
    """Diffusers UNet module prefixes -> LDM prefixes for this UNet's shape."""
    layers = int(config["layers_per_block"])
    n_blocks = len(config["block_out_channels"])
    up_types = list(config["up_block_types"])
    mapping = dict(_UNET_TOP)
    for i in range(n_blocks):
        for j in range(layers):
            index = (layers + 1) * i + j + 1
            mapping[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{index}.0."
            mapping[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{index}.1."
        if i < n_blocks - 1:
            index = (layers + 1) * (i + 1)
            mapping[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{index}.0.op."
        for j in range(layers + 1):
            index = (layers + 1) * i + j
            mapping[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{index}.0."
            mapping[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{index}.1."
        if i < n_blocks - 1:
            # The upsampler follows the block's last layer: after its attention if it has one.
            index = (layers + 1) * i + layers
            slot = 2 if "CrossAttn" in up_types[i] else 1
            mapping[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{index}.{slot}."
    mapping["mid_block.attentions.0."] = "middle_block.1."
    mapping["mid_block.resnets.0."] = "middle_block.0."
    mapping["mid_block.resnets.1."] = "middle_block.2."
    return mapping


def vae_prefix_map(config: dict[str, Any]) -> dict[str, str]:
    """Diffusers VAE module prefixes -> LDM prefixes (decoder blocks are numbered backwards)."""
    layers = int(config["layers_per_block"])
    n_blocks = len(config["block_out_channels"])
    mapping = {
        "encoder.conv_norm_out.": "encoder.norm_out.",
        "decoder.conv_norm_out.": "decoder.norm_out.",
    }
    for i in range(n_blocks):
        for j in range(layers):
            mapping[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        if i < n_blocks - 1:
            mapping[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
            mapping[f"decoder.up_blocks.{i}.upsamplers.0."] = (
                f"decoder.up.{n_blocks - 1 - i}.upsample."
            )
        for j in range(layers + 1):
            mapping[f"decoder.up_blocks.{i}.resnets.{j}."] = (
                f"decoder.up.{n_blocks - 1 - i}.block.{j}."
            )
    for part in ("encoder", "decoder"):
        for i in range(2):
            mapping[f"{part}.mid_block.resnets.{i}."] = f"{part}.mid.block_{i + 1}."
        mapping[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
    return mapping


def _rename(key: str, prefixes: dict[str, str]) -> str:
    # Longest prefix first, so "up_blocks.1.resnets.1." never matches "up_blocks.1.resnets.10.".
    for old in sorted(prefixes, key=len, reverse=True):
        if key.startswith(old):
            return prefixes[old] + key[len(old) :]
    return key


def unet_key_to_ldm(key: str, prefixes: dict[str, str]) -> str:
    """One UNet weight's (or module's, with a trailing dot) LDM name."""
    new = _rename(key, prefixes)
    if "resnets" in key:
        for diffusers_name, ldm_name in _UNET_RESNET:
            new = new.replace(f".{diffusers_name}.", f".{ldm_name}.")
    return new


def unet_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers UNet state dict as ``model.diffusion_model.*`` tensors."""
    prefixes = unet_prefix_map(config)
    out = {}
    for key, value in state.items():
        new = unet_key_to_ldm(key, prefixes)
        if new == key and key.split(".")[0] not in ("conv_in", "conv_out"):
            raise SpecError(f"UNet weight {key!r} has no place in the SD layout.")
        out[UNET_PREFIX + new] = value
    return out


def vae_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers VAE state dict as ``first_stage_model.*`` tensors.

    LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers; their weights
    get the two trailing unit dimensions A1111 and ComfyUI expect.
    """
    prefixes = vae_prefix_map(config)
    out = {}
    for key, value in state.items():
        new = _rename(key, prefixes).replace("conv_shortcut.", "nin_shortcut.")
        if ".mid.attn_1." in new:
            for diffusers_name, ldm_name in _VAE_ATTENTION:
                new = new.replace(f".{diffusers_name}", f".{ldm_name}")
            if new.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
                value = value.reshape(*value.shape, 1, 1)
        out[VAE_PREFIX + new] = value
    return out


def text_encoder_to_ldm(state: dict[str, Any], prefix: str = TEXT_ENCODER_PREFIX) -> dict[str, Any]:
    """A transformers CLIPTextModel state dict as ``<prefix>text_model.*`` (SD 1.x:
    ``cond_stage_model.transformer.``).

    transformers 5 dropped the ``text_model.`` level from CLIPTextModel's keys; SD files have it.
    """
    out = {}
    for key, value in state.items():
        inner = key if key.startswith("text_model.") else f"text_model.{key}"
        out[prefix + inner] = value
    return out


def ldm_state(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """The three models' weights under their SD-layout names (tensors as they are)."""
    return {
        **unet_to_ldm(unet.state_dict(), dict(unet.config)),
        **vae_to_ldm(vae.state_dict(), dict(vae.config)),
        **text_encoder_to_ldm(text_encoder.state_dict()),
    }


def pipeline_state(unet: Any, vae: Any, text_encoder: Any, dtype: Any) -> dict[str, Any]:
    """The three models' weights in the SD layout, cast to ``dtype``, on the CPU, contiguous."""
    out = {}
    for key, value in ldm_state(unet, vae, text_encoder).items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous()
    return out


def torch_dtype(precision: str) -> Any:
    import torch

    if precision not in SAVE_PRECISIONS:
        raise SpecError(f"save_precision must be one of {SAVE_PRECISIONS}, got {precision!r}.")
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def save_sd_checkpoint(
    path: Path,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    metadata: dict[str, Any],
    precision: str = "fp16",
) -> None:
    """Write the full model (UNet, VAE, text encoder) as one SD-layout safetensors file.

    ``metadata`` goes into the header (values as JSON strings) and, for tools that do not read
    safetensors headers, into a ``.json`` file beside ``path``.
    """
    from safetensors.torch import save_file

    tensors = pipeline_state(unet, vae, text_encoder, torch_dtype(precision))
    header = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    with atomic_path(Path(path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def is_sd_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint written by :func:`save_sd_checkpoint`."""
    return checkpoint_format(path) == FORMAT


def is_lora_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a LoRA adapter written by :func:`save_lora` (or FLUX's)."""
    return checkpoint_format(path) in (LORA_FORMAT, FLUX_LORA_FORMAT)


def is_flux_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a full FLUX.1 transformer written by the FLUX trainer."""
    return checkpoint_format(path) == FLUX_FORMAT


def read_metadata(path: Path) -> dict[str, Any]:
    """dreamgrid metadata of an SD-layout checkpoint, from its safetensors header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if header.get("format") not in (FORMAT, LORA_FORMAT, FLUX_FORMAT, FLUX_LORA_FORMAT):
        raise SpecError(
            f"{path}: not a dreamgrid SD checkpoint (format {header.get('format')!r}). "
            "Rerun the train stage to rewrite it."
        )
    return {
        k: json.loads(v)
        for k, v in header.items()
        if k not in ("format", "lora_adapter_metadata") and not k.startswith("ss_")
    }


def _dtype_kwarg(dtype: Any) -> dict[str, Any]:
    # diffusers renamed torch_dtype to dtype (and warns on the old name).
    from diffusers.utils import deprecation_utils

    renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype": dtype} if renamed else {"torch_dtype": dtype}


def load_sd_pipeline(path: Path, config_dir: Path, dtype: Any = None) -> Any:
    """Load an SD-layout checkpoint with diffusers' ``from_single_file``, offline.

    ``config_dir`` is the base model's diffusers folder: it supplies the component configs,
    tokenizer and scheduler, so nothing is fetched from the hub.
    """
    from diffusers import StableDiffusionPipeline

    kwargs: dict[str, Any] = {
        "config": str(config_dir),
        "local_files_only": True,
        "safety_checker": None,
        "requires_safety_checker": False,
    }
    if dtype is not None:
        kwargs.update(_dtype_kwarg(dtype))
    return StableDiffusionPipeline.from_single_file(str(path), **kwargs)


# ---- LoRA adapters in Kohya's format ------------------------------------------------------
LORA_FORMAT = "dreamgrid-lora-v1"
KOHYA_UNET_PREFIX = "lora_unet_"


def lora_to_kohya(
    peft_state: dict[str, Any], alpha: float, module_names: dict[str, str] | None = None
) -> dict[str, Any]:
    """peft LoRA weights of a diffusers UNet as Kohya's ``networks.lora`` keys.

    ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`` becomes
    ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight``
    (``lora_B`` -> ``lora_up``), with a scalar ``.alpha`` per module (scale = alpha / rank).
    ``module_names`` (the UNet's :func:`unet_prefix_map`) names the modules as in the
    original layout first, as Kohya does for SDXL
    (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``).
    """
    import torch

    out: dict[str, Any] = {}
    for key, value in peft_state.items():
        for suffix, kohya in ((".lora_A.weight", "lora_down"), (".lora_B.weight", "lora_up")):
            if key.endswith(suffix):
                module = key[: -len(suffix)]
                if module_names is not None:
                    module = unet_key_to_ldm(module + ".", module_names)[:-1]
                name = KOHYA_UNET_PREFIX + module.replace(".", "_")
                out[f"{name}.{kohya}.weight"] = value
                out[f"{name}.alpha"] = torch.tensor(float(alpha))
                break
        else:
            raise SpecError(f"LoRA weight {key!r} is not a lora_A/lora_B matrix.")
    return out


def save_lora(
    path: Path, unet: Any, alpha: float, metadata: dict[str, Any], precision: str = "fp16"
) -> None:
    """Write the UNet's LoRA adapter as a Kohya-format safetensors file (+ ``.json``).

    The header also carries Kohya's ``ss_network_*`` keys, which UIs read for dim and alpha.
    """
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    dtype = torch_dtype(precision)
    tensors = {
        k: v.detach().to("cpu", dtype=dtype).contiguous()
        for k, v in lora_to_kohya(get_peft_model_state_dict(unet), alpha).items()
    }
    rank = next(v.shape[0] for k, v in tensors.items() if k.endswith("lora_down.weight"))
    header = {
        "format": LORA_FORMAT,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        **{k: json.dumps(v) for k, v in metadata.items()},
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    with atomic_path(Path(path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def checkpoint_format(path: Path) -> str | None:
    """The ``format`` in a safetensors header (None if absent)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("format")
