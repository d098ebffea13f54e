"""FLUX.1 checkpoints: the LoRA adapter, and the full fine-tune's transformer, one
``.safetensors`` file each with dreamgrid's metadata in the header (and a ``.json`` beside it).

**LoRA: diffusers' peft format** (``transformer.<module>.lora_A.weight`` / ``.lora_B.weight``),
the state dict ``FluxPipeline.save_lora_weights`` writes from ``get_peft_model_state_dict``.
``FluxPipeline.load_lora_weights`` loads it as it is (tested: renders equal the trained
model's). ComfyUI maps exactly these names for FLUX models (``comfy/lora.py``,
``model_lora_keys_unet``: ``transformer.<diffusers module>``, "Diffusers lora Flux"), and Forge's
LoRA patcher (``backend/patcher/lora.py``) has the same mapping; both read in their sources,
not run here. Kohya's ``lora_unet_*`` FLUX format was not chosen: it names
BFL's fused layers (``double_blocks_0_img_attn_qkv``), so diffusers' separate
``to_q``/``to_k``/``to_v`` adapters would have to be rewritten as one block-diagonal adapter of
triple rank, a conversion with its own failure modes that diffusers reverses again on loading.

The peft format has no alpha: diffusers, ComfyUI and Forge then all scale the adapter by 1.
The trained ``alpha / rank`` is therefore folded into ``lora_B`` before saving, so every loader
applies exactly the trained update ``B A alpha / rank``; the header's ``lora_alpha``/``lora_rank``
record what was trained, and Kohya's ``ss_network_alpha`` says ``rank`` (the scale in the file).

**Full fine-tune: the transformer alone, in diffusers' layout** (``FluxTransformer2DModel``
keys), since the VAE and both text encoders stay frozen and are the base model's. dreamgrid's
sampler loads it over the base folder, offline (:func:`load_transformer_into`). ComfyUI's
"Load Diffusion Model" node converts diffusers-layout FLUX transformers on loading
(``comfy/model_detection.py``, ``convert_diffusers_mmdit``: ``x_embedder.weight`` means FLUX);
that was read in its source, not run here; Forge's loader was not checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.train.export import FLUX_FORMAT, FLUX_LORA_FORMAT, checkpoint_format, torch_dtype

#: The prefix FluxPipeline.save_lora_weights gives the transformer's LoRA weights.
TRANSFORMER_PREFIX = "transformer."


def flux_lora_state(transformer: Any, alpha: float) -> dict[str, Any]:
    """The transformer's peft LoRA weights under ``transformer.*`` names, ``alpha / rank``
    folded into each ``lora_B`` (float32, CPU)."""
    import torch
    from peft.utils import get_peft_model_state_dict

    out: dict[str, Any] = {}
    for key, value in get_peft_model_state_dict(transformer).items():
        value = value.detach().to("cpu", dtype=torch.float32)
        if key.endswith(".lora_B.weight"):
            value = value * (float(alpha) / value.shape[1])
        elif not key.endswith(".lora_A.weight"):
            raise SpecError(f"LoRA weight {key!r} is not a lora_A/lora_B matrix.")
        out[TRANSFORMER_PREFIX + key] = value
    return out


def _write(path: Path, tensors: dict[str, Any], header: dict[str, str], metadata: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    with atomic_path(Path(path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def save_flux_lora(
    path: Path, transformer: Any, alpha: float, metadata: dict[str, Any], precision: str = "fp16"
) -> None:
    """Write the FLUX transformer's LoRA adapter (peft format, scale folded in) + ``.json``."""
    dtype = torch_dtype(precision)
    tensors = {k: v.to(dtype).contiguous() for k, v in flux_lora_state(transformer, alpha).items()}
    rank = next(v.shape[0] for k, v in tensors.items() if k.endswith("lora_A.weight"))
    header = {
        "format": FLUX_LORA_FORMAT,
        "ss_network_module": "networks.lora_flux",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(rank),  # the file's scale is 1: alpha / rank is folded in
        **{k: json.dumps(v) for k, v in metadata.items()},
    }
    _write(path, tensors, header, metadata)


def save_flux_transformer(
    path: Path, transformer: Any, metadata: dict[str, Any], precision: str = "fp16"
) -> None:
    """Write the full fine-tune's transformer (diffusers layout) as one file + ``.json``."""
    dtype = torch_dtype(precision)
    tensors = {
        k: (v.detach().to("cpu", dtype=dtype) if v.is_floating_point() else v.cpu()).contiguous()
        for k, v in transformer.state_dict().items()
    }
    header = {"format": FLUX_FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    _write(path, tensors, header, metadata)


def load_transformer_into(pipe: Any, path: Path) -> None:
    """Put a full FLUX checkpoint's transformer weights into ``pipe``'s transformer (every
    weight must be there: a file of another FLUX shape fails, naming it)."""
    from safetensors.torch import load_file

    if checkpoint_format(path) != FLUX_FORMAT:
        raise SpecError(f"{path}: not a full FLUX checkpoint written by the train stage.")
    transformer = pipe.transformer
    state = load_file(str(path))
    try:
        transformer.load_state_dict(
            {k: v.to(transformer.dtype) for k, v in state.items()}, strict=True
        )
    except RuntimeError as err:
        raise SpecError(
            f"{path}: its weights do not fit the base model's transformer ({err}). Sample it "
            "with the base model it was trained from."
        ) from None
