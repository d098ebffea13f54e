"""``results/manifest.json``: what a run's results were made from, to reproduce or compare them.

Config hash, git commit, package versions, model file hashes, seeds, hardware, and hashes of
the result tables. Two runs with the same config hash and model hashes on the same hardware and
package versions give identical score tables on CPU; on GPU only statistically (see README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from dreamgrid.io import file_hash

log = logging.getLogger(__name__)

# Distributions whose versions change numbers (or may): the stacks of every stage.
PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "peft",
    "safetensors",
    "deepface",
    "dlib-bin",
    "numpy",
    "scipy",
    "pandas",
    "pillow",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the validated config as canonical JSON (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def seeds(config: Mapping[str, Any], prefix: str = "") -> dict[str, int]:
    """Every ``seed`` key of the config by dotted path, e.g. ``{"sample.seed": 0}``."""
    found: dict[str, int] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(seeds(value, prefix=f"{path}."))
        elif key == "seed":
            found[path] = value
    return found


def git_commit(directory: Path) -> dict[str, Any] | None:
    """HEAD of the git checkout holding ``directory`` and whether it has uncommitted edits;
    None outside git (a copied or unpacked workflow) or without git installed."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (a file or folder; links followed), by path
    relative to it."""
    root = Path(root)
    if root.is_file():
        return {root.name: file_hash(root)}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): file_hash(p) for p in files}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def accelerator() -> dict[str, Any]:
    """torch's CUDA/cuDNN build versions and the visible GPUs (empty on a CPU machine)."""
    import torch

    cuda = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    gpus = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cuda": cuda, "cudnn": cudnn, "gpus": gpus}


def hardware(gpus: list[str]) -> dict[str, Any]:
    """The machine this runs on (under SLURM: the node of the manifest job)."""
    return {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "gpus": gpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def write_manifest(
    *,
    config_sha256: str,
    seed_values: Mapping[str, int],
    models: Mapping[str, Path],
    outputs: Mapping[str, Path],
    workflow_dir: Path,
    out: Path,
) -> dict[str, Any]:
    """Write the run manifest.

    Args:
        config_sha256: ``config_hash`` of the validated config.
        seed_values: ``seeds`` of the config.
        models: prepared model folders by name (``results/models/...``); every file is hashed.
        outputs: result tables by name, hashed so two runs can be compared at a glance.
        workflow_dir: a folder of the workflow, to find its git commit.
        out: the JSON file to write (via a temp name).

    Returns:
        The manifest as written.
    """
    found = accelerator()
    manifest = {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_sha256": config_sha256,
        "git": git_commit(workflow_dir),
        "packages": {**package_versions(), "cuda": found["cuda"], "cudnn": found["cudnn"]},
        "models": {name: file_hashes(Path(path)) for name, path in models.items()},
        "seeds": dict(seed_values),
        "hardware": hardware(found["gpus"]),
        "outputs": {name: file_hash(Path(path)) for name, path in outputs.items()},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out)
    log.info("manifest: config %s, git %s", config_sha256[:12], manifest["git"])
    return manifest
