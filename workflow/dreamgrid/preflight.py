"""Preflight: open every input before any job runs, so a bad file fails in seconds, not hours.

Called from the Snakefile's ``onstart`` (after the DAG is built, before the first job) and by
``dreamgrid check``. It never adds a file to the DAG: a checked-inputs file as a job input
would, on every re-check, rerun all training downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from dreamgrid import config as cfg
from dreamgrid import models
from dreamgrid.io import atomic_path, list_images, load_rgb

logger = logging.getLogger(__name__)


def check_images(directory: str | Path, role: str, resolution: int | None = None) -> list[dict]:
    """Decode every image in ``directory``; warn about images smaller than ``resolution``.

    Raises:
        SpecError: the folder is missing or empty, or a file does not decode (named).
    """
    rows = []
    for path in list_images(directory):
        image = load_rgb(path)
        if resolution and min(image.size) < resolution:
            logger.warning(
                "%s: %dx%d is smaller than the training resolution %d; it will be upscaled.",
                path,
                *image.size,
                resolution,
            )
        rows.append(
            {"role": role, "image": str(path), "width": image.width, "height": image.height}
        )
    return rows


def _fingerprint(paths: list[Path], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def check_reference_faces(config: dict[str, Any], cache: Path | None) -> None:
    """Each reference must show exactly one face; cached by file contents and face settings."""
    from dreamgrid import faces

    score = config["score"]
    settings = faces.settings_from(score)
    references = list_images(config["subject"]["references"])
    key = _fingerprint(references, {**vars(settings), "deepface_home": score["deepface_home"]})
    if cache and cache.is_file() and json.loads(cache.read_text()).get("references") == key:
        return
    faces.setup_deepface(score["deepface_home"])
    faces.embed_references(references, settings)
    if cache:
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps({"references": key}) + "\n")


def run(config: dict[str, Any], cache: str | Path | None = None) -> list[dict]:
    """Check the validated config's inputs; raise one SpecError naming the file and the fix.

    Args:
        config: validated config.
        cache: file remembering which reference set already passed the face check.
    Returns:
        One row per image checked (role, path, size).
    """
    subject = config["subject"]
    models.classify(config["base_model"])
    if "blip" in config["axes"]["captions"]:
        models.classify(config["caption"]["model"])
    resolution = config["training"]["resolution"]
    images = check_images(subject["train_images"], "train", resolution)
    images += check_images(subject["references"], "reference")
    if subject["ground_truth"]:
        images += check_images(subject["ground_truth"], "ground_truth", resolution)
    overrides = subject["caption_overrides"]
    if overrides:
        from dreamgrid import caption

        caption.read_overrides(Path(overrides), list_images(subject["train_images"]))
    check_reference_faces(config, Path(cache) if cache else None)
    logger.info("preflight: %d images decode; references show one face each", len(images))
    if cfg.is_demo(config):
        logger.warning(
            "DEMO: tiny random-weight models; renders are noise and every number this run "
            "reports is meaningless. The real study: --configfile config/experiment.yaml"
        )
    return images
