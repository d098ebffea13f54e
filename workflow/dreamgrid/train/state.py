"""The arm's resume state: one safetensors file per arm, rewritten after every epoch.

It holds what an exported checkpoint cannot give back exactly: the trained weights in full
precision (checkpoints are fp16 by default) and the optimizer's moments and step counts.
Tensors are ``weights.<module>.<parameter name>`` (every parameter the optimizer updates) and
``optimizer.<param index>.<key>``; the header holds
``epoch``, ``steps``, the spec's ``fingerprint`` and ``meta_digest`` (sha256 of the epoch's
checkpoint JSON, so epoch e+1 resumes only from the state that made the epoch e Snakemake sees),
plus the optimizer's ``param_groups`` and non-tensor values. No pickle is written or read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "dreamgrid-resume-v1"


@dataclass(frozen=True)
class StateInfo:
    """Header facts of a resume state."""

    epoch: int
    steps: int
    fingerprint: str
    meta_digest: str


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_state(path: Path, params: dict[str, Any], optimizer: Any, info: StateInfo) -> None:
    """Write the trained parameters (name -> tensor) and the optimizer state atomically."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for name, value in params.items():
        tensors[f"weights.{name}"] = value.detach().to("cpu").contiguous()
    state_dict = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    header = {
        "format": FORMAT,
        "epoch": str(info.epoch),
        "steps": str(info.steps),
        "fingerprint": info.fingerprint,
        "meta_digest": info.meta_digest,
        "param_groups": json.dumps(state_dict["param_groups"]),
        "scalars": json.dumps(scalars),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


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
        logger.warning("%s: not a dreamgrid resume state; ignoring it.", path)
        return None
    return StateInfo(
        int(header["epoch"]), int(header["steps"]), header["fingerprint"], header["meta_digest"]
    )


def load_state(path: Path, named: dict[str, Any], optimizer: Any) -> None:
    """Copy weights into the parameters ``named`` (all of them, nothing else) and moments into
    ``optimizer`` (built by the spec: hyperparameters come from the spec, not the file).
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
    moments: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    for key, value in json.loads(header["scalars"]).items():
        index, name = key.split(".", 1)
        moments.setdefault(int(index), {})[name] = value
    for index, entry in moments.items():
        moment = entry.get("exp_avg")
        if index >= len(params) or (moment is not None and moment.shape != params[index].shape):
            raise SpecError(f"{path}: optimizer state does not match the model being trained.")
    current = optimizer.state_dict()["param_groups"]
    saved = json.loads(header["param_groups"])
    if [len(g["params"]) for g in saved] != [len(g["params"]) for g in current]:
        raise SpecError(f"{path}: optimizer state is for a different set of parameters.")
    optimizer.load_state_dict({"state": moments, "param_groups": current})
