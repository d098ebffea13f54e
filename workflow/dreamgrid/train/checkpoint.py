"""Checkpoint files: one safetensors file per epoch with the trained weights and metadata.

Keys are the diffusers module state dicts prefixed ``unet.`` / ``text_encoder.``; the
safetensors header metadata holds ``format``, ``arm``, ``epoch``, ``steps``, ``steps_per_epoch``.
Only safetensors are read, never pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path

FORMAT = "dreamgrid-diffusers-v1"
PREFIXES = ("unet.", "text_encoder.")


def save_checkpoint(path: Path, modules: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Write ``modules`` (name -> torch module, names from PREFIXES without the dot) to ``path``.

    ``metadata`` values are stored as JSON strings in the header; a ``.json`` sidecar with the
    same metadata is written next to the file for tools that do not read safetensors headers.
    """
    from safetensors.torch import save_file

    tensors = {}
    for name, module in modules.items():
        if f"{name}." not in PREFIXES:
            raise ValueError(f"unknown module {name!r}; expected one of {PREFIXES}")
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous()
    header = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    with atomic_path(sidecar(path)) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def sidecar(path: Path) -> Path:
    """The JSON file beside a checkpoint holding its metadata."""
    return Path(path).with_suffix(".json")


def read_metadata(path: Path) -> dict[str, Any]:
    """Metadata of a checkpoint, from its safetensors header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if header.get("format") != FORMAT:
        raise SpecError(f"{path}: not a dreamgrid checkpoint (format {header.get('format')!r}).")
    return {k: json.loads(v) for k, v in header.items() if k != "format"}


def load_checkpoint_into(path: Path, modules: dict[str, Any]) -> dict[str, Any]:
    """Load the weights in ``path`` into ``modules`` (strict per module); return the metadata.

    Modules absent from the file (e.g. a frozen text encoder) are left as they are.
    """
    from safetensors.torch import load_file

    state = load_file(str(path))
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            module.load_state_dict(sub, strict=True)
    return read_metadata(path)
