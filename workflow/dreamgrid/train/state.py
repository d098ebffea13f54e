"""The arm's resume state: one safetensors file per arm, rewritten after every epoch.

It holds what an exported checkpoint cannot give back exactly: the trained weights in full
precision (checkpoints are fp16 by default), the optimizer's moments and step counts, and the
fp16 loss scaler's state (its scale and growth tracker; without it every epoch would restart
at 65,536 and skip its first updates). Tensors are ``weights.<module>.<parameter name>``
(every parameter the optimizer updates) and ``optimizer.<param index>.<key path>``, where the
key path joins nested keys with dots: bitsandbytes' 8-bit AdamW keeps its quantized moments
in a nested dict (``optimizer.0.__bnb_optimizer_quant_state__.state1``). The header holds
``epoch``, ``steps``, the spec's ``fingerprint`` and ``meta_digest`` (sha256 of the epoch's
checkpoint JSON, so epoch e+1 resumes only from the state that made the epoch e Snakemake sees),
the optimizer's ``param_groups``, ``optimizer_state`` (each parameter's state as JSON, tensors
replaced by ``{"tensor": <name>}``) and ``scaler`` (JSON, ``null`` without one). No pickle is
written or read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "dreamgrid-resume-v2"
#: Marks a tensor stored beside the header in ``optimizer_state``.
TENSOR_REF = "tensor"


@dataclass(frozen=True)
class StateInfo:
    """Header facts of a resume state."""

    epoch: int
    steps: int
    fingerprint: str
    meta_digest: str


def save_state(
    path: Path, params: dict[str, Any], optimizer: Any, info: StateInfo, scaler: Any = None
) -> None:
    """Write the trained parameters (name -> tensor), the optimizer state and the loss
    scaler's state (``torch.amp.GradScaler`` or None) atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for name, value in params.items():
        tensors[f"weights.{name}"] = value.detach().to("cpu").contiguous()
    state_dict = optimizer.state_dict()
    seen: dict = {}
    entries = {
        str(index): encode_entry(entry, f"optimizer.{index}", tensors, seen)
        for index, entry in state_dict["state"].items()
    }
    header = {
        "format": FORMAT,
        "epoch": str(info.epoch),
        "steps": str(info.steps),
        "fingerprint": info.fingerprint,
        "meta_digest": info.meta_digest,
        "param_groups": json.dumps(state_dict["param_groups"]),
        "optimizer_state": json.dumps(entries),
        "scaler": json.dumps(scaler_state(scaler)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def encode_entry(value: Any, name: str, tensors: dict[str, Any], seen: dict | None = None) -> Any:
    """``value`` as JSON: tensors (at any depth of dicts, lists and tuples) move to
    ``tensors`` under ``name`` (plus the key path) and leave ``{"tensor": name}`` behind.

    A tensor already stored (bitsandbytes shares one quantization map among all parameters)
    is referenced by its first name, as safetensors stores no shared memory twice.
    """
    import torch

    seen = {} if seen is None else seen
    if torch.is_tensor(value):
        key = (value.data_ptr(), value.dtype, tuple(value.shape), tuple(value.stride()))
        if key not in seen:
            seen[key] = name
            tensors[name] = value.detach().to("cpu").contiguous()
        return {TENSOR_REF: seen[key]}
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or key == TENSOR_REF:
                raise TypeError(f"{name}: optimizer state key {key!r} cannot be stored")
        return {k: encode_entry(item, f"{name}.{k}", tensors, seen) for k, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_entry(item, f"{name}.{i}", tensors, seen) for i, item in enumerate(value)]
    json.dumps(value)  # a scalar (int, float, str, bool, None) or a TypeError naming it
    return value


def decode_entry(value: Any, tensors: dict[str, Any]) -> Any:
    """Inverse of :func:`encode_entry`."""
    if isinstance(value, dict):
        if value.keys() == {TENSOR_REF}:
            return tensors[value[TENSOR_REF]]
        return {key: decode_entry(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_entry(item, tensors) for item in value]
    return value


def scaler_state(scaler: Any) -> dict[str, Any] | None:
    """The loss scaler's state (scale, growth tracker, factors) as JSON values, or None
    when there is no enabled scaler (no fp16)."""
    if scaler is None or not scaler.is_enabled():
        return None
    return dict(scaler.state_dict())  # Python numbers: get_scale() and the tracker are .item()s


def read_info(path: Path) -> StateInfo | None:
    """The header of a resume state, or None if there is none (or it is not one)."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as err:  # truncated or foreign: simply not resumable
        logger.warning("%s: not a readable resume state (%s); ignoring it.", path, err)
        return None
    if header.get("format") != FORMAT:
        written = str(header.get("format", ""))
        what = "an older dreamgrid's" if written.startswith("dreamgrid-resume-") else "not a"
        logger.warning("%s: %s resume state; ignoring it.", path, what)
        return None
    return StateInfo(
        int(header["epoch"]), int(header["steps"]), header["fingerprint"], header["meta_digest"]
    )


def load_state(path: Path, named: dict[str, Any], optimizer: Any, scaler: Any = None) -> None:
    """Copy weights into the parameters ``named`` (all of them, nothing else), moments into
    ``optimizer`` (built by the spec: hyperparameters come from the spec, not the file) and
    the loss scale into ``scaler`` (when both the file and the job have one).
    """
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not iterable
    weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
    if weights.keys() != named.keys():
        raise SpecError(f"{path}: resume state holds other parameters than the model trained.")
    with torch.no_grad():
        for name, param in named.items():
            param.copy_(weights[name])
    params = list(named.values())
    entries = json.loads(header["optimizer_state"])
    moments = {int(index): decode_entry(entry, tensors) for index, entry in entries.items()}
    for index, entry in moments.items():
        # torch AdamW's first moment, or bitsandbytes' (8-bit or fp32, the parameter's shape)
        moment = entry.get("exp_avg", entry.get("__bnb_optimizer_quant_state__", {}).get("state1"))
        if index >= len(params) or (moment is not None and moment.shape != params[index].shape):
            raise SpecError(f"{path}: optimizer state does not match the model being trained.")
    current = optimizer.state_dict()["param_groups"]
    saved = json.loads(header["param_groups"])
    if [len(g["params"]) for g in saved] != [len(g["params"]) for g in current]:
        raise SpecError(f"{path}: optimizer state is for a different set of parameters.")
    optimizer.load_state_dict({"state": moments, "param_groups": current})
    scale = json.loads(header.get("scaler", "null"))
    if scale is not None and scaler is not None and scaler.is_enabled():
        scaler.load_state_dict(scale)
