"""LoRA ``target_modules`` checked against the denoiser's module names (a UNet, or FLUX's
transformer), without loading weights.

The denoiser is built from its config on accelerate's ``meta`` device (no memory, no
weights), and peft's own matching and ``add_adapter`` decide, as in the training job: a typo
would otherwise fail (or, beside a correct name, silently train fewer layers) only inside a
training job.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError

#: Layer types peft's LoRA wraps (a block such as Attention is not one).
ADAPTABLE = ("Linear", "Conv1d", "Conv2d", "Conv3d", "Embedding", "MultiheadAttention")


def empty_unet(base_model: Path) -> Any:
    """The denoiser of a diffusers folder (its UNet, or a FLUX folder's transformer), or of
    dreamgrid's tiny model, on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        if base_model is None:
            from dreamgrid import tiny

            return UNet2DConditionModel(**tiny.TINY_UNET)
        transformer = Path(base_model) / "transformer" / "config.json"
        if transformer.is_file():
            from diffusers import FluxTransformer2DModel

            return FluxTransformer2DModel.from_config(
                FluxTransformer2DModel.load_config(str(transformer.parent))
            )
        config_file = Path(base_model) / "unet" / "config.json"
        if not config_file.is_file():
            raise SpecError(
                f"{base_model}: no unet/config.json (or transformer/config.json), so LoRA "
                "targets cannot be checked. base_model must be a diffusers folder "
                "(save_pretrained)."
            )
        return UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(str(config_file.parent))
        )


def check(unet: Any, targets: list[str], key: str = "lora.target_modules") -> None:
    """Every name in ``targets`` must match a module of the denoiser (``unet``: a UNet or
    FLUX transformer) peft can adapt.

    Raises:
        SpecError: naming ``key``, the names that match nothing (with close names), or the
            module peft cannot adapt.
    """
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    names = [name for name, _ in unet.named_modules() if name]
    unmatched = [
        target
        for target in targets
        if not any(
            check_target_module_exists(LoraConfig(target_modules=[target]), n) for n in names
        )
    ]
    if unmatched:
        # Suffixes are what users write (to_k, to_out.0, proj_in).
        suffixes = sorted({".".join(n.split(".")[-k:]) for n in names for k in (1, 2)})
        hints = []
        for target in unmatched:
            close = difflib.get_close_matches(target, suffixes, n=3)
            hints.append(
                f"{target!r}" + (f" (did you mean {' or '.join(close)}?)" if close else "")
            )
        raise SpecError(
            f"{key}: {', '.join(hints)} match no module of the base model's "
            f"{denoiser_name(unet)}. Use module names such as to_k, to_q, to_v, to_out.0 "
            "(diffusers' DreamBooth LoRA scripts)."
        )
    wrong = {
        f"{target!r} ({type(module).__name__})"
        for target in targets
        for name, module in unet.named_modules()
        if name
        and check_target_module_exists(LoraConfig(target_modules=[target]), name)
        and type(module).__name__ not in ADAPTABLE
    }
    if wrong:
        raise SpecError(
            f"{key}: {', '.join(sorted(wrong))} is a block, not a layer peft can adapt. Name the "
            "Linear/Conv2d layers inside it (e.g. to_k, to_q, to_v, to_out.0)."
        )
    unet.add_adapter(LoraConfig(r=1, lora_alpha=1, target_modules=list(targets)))


def denoiser_name(model: Any) -> str:
    return "transformer" if type(model).__name__.endswith("Transformer2DModel") else "UNet"


def check_lora_targets(base_model: Path, targets: list[str], out: Path) -> dict[str, Any]:
    """The ``check_lora_targets`` job: check ``targets`` against the prepared base model.

    Returns:
        What ``out`` records: the targets and how many denoiser layers they adapt.
    """
    import json

    from dreamgrid.io import atomic_path

    unet = empty_unet(base_model)
    check(unet, targets)
    from peft.tuners.tuners_utils import BaseTunerLayer

    record = {
        "target_modules": list(targets),
        "layers": sum(isinstance(m, BaseTunerLayer) for m in unet.modules()),
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record
