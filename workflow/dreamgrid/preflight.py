"""Preflight: open every input before any GPU job, so a bad file fails in seconds, not hours."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
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
    logger.info("%s: %d images decode", directory, len(rows))
    return rows


def run(
    subject: dict[str, Any],
    resolution: int,
    face_settings: Any,
    out: Path,
) -> dict[str, Any]:
    """Check the subject's folders and write a JSON inventory to ``out``.

    Args:
        subject: the config's ``subject`` section.
        resolution: training resolution (smaller images get a warning).
        face_settings: ``faces.FaceSettings``; each reference must show exactly one face.
        out: inventory file, written only when every check passed.
    Returns:
        The inventory.
    """
    from dreamgrid import faces

    images = check_images(subject["train_images"], "train", resolution)
    images += check_images(subject["references"], "reference")
    if subject.get("ground_truth"):
        images += check_images(subject["ground_truth"], "ground_truth", resolution)
    overrides = subject.get("caption_overrides")
    if overrides and not Path(overrides).is_dir():
        raise SpecError(
            f"{overrides}: subject.caption_overrides is not a folder. Fix the path or set it to null."
        )
    faces.embed_references(list_images(subject["references"]), face_settings)
    inventory = {"images": images, "face_settings": repr(face_settings)}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(inventory, indent=2) + "\n")
    return inventory
