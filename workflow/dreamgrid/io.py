"""Small file helpers shared by the stages: atomic writes and image listing/loading."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dreamgrid.errors import SpecError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` only if the block succeeds.

    A killed or failed job therefore never leaves a half-written file under the final name.
    Works for files and for directories (the block creates whichever it wants).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def list_images(directory: str | Path) -> list[Path]:
    """Images in ``directory`` (not recursive), sorted by name.

    Raises:
        SpecError: the directory is missing or holds no image.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError(f"{directory}: not a directory. Point the config at a folder of images.")
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SpecError(
            f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) found. Add photos or fix the path."
        )
    return images


def load_rgb(path: str | Path):
    """Open an image as RGB with its EXIF orientation applied (PIL.Image).

    Raises:
        SpecError: the file is not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "P", "PA"):
                # Composite transparency on white rather than letting it turn black.
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise SpecError(
            f"{path}: cannot be read as an image ({err}). Replace or remove the file."
        ) from err


def resize_center_crop(image, resolution: int):
    """Resize so the shorter side is ``resolution`` (bilinear), then center-crop a square.

    Training photos and ground-truth regularization photos both go through this, so they
    are prepared identically.
    """
    from PIL import Image

    width, height = image.size
    scale = resolution / min(width, height)
    new_w = max(resolution, round(width * scale))
    new_h = max(resolution, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left = (new_w - resolution) // 2
    top = (new_h - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))
