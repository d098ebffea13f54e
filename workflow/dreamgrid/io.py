"""Small file helpers shared by the stages: atomic writes, file hashes, image listing/loading."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Image types a camera or phone writes that dreamgrid does not read: an error, not a skip.
UNSUPPORTED_IMAGE_SUFFIXES = (
    ".gif", ".heic", ".heif", ".avif", ".svg", ".tif", ".tiff", ".jxl", ".dng", ".cr2", ".nef",
    ".arw",
)  # fmt: skip


def is_image(path: Path) -> bool:
    """A file dreamgrid reads as an image: a supported suffix (any case), not hidden."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


#: A temporary sibling whose owner cannot be checked (another host, or an unknown name) is
#: removed once it is this old: no single write of an output takes a day.
STALE_AFTER_S = 24 * 3600
_HOST = socket.gethostname().replace("~", "-")


def _temp_prefix(path: Path) -> str:
    """``.<name>.tmp~<host>~<pid>~``: whose temporary sibling of ``path`` this is."""
    return f".{path.name}.tmp~{_HOST}~{os.getpid()}~"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _is_stale(temp: Path, name: str) -> bool:
    """Whether a temporary sibling of ``name`` was left by a writer that is gone.

    A writer still running (this host, its pid alive) keeps its temp: two jobs may write the
    same content-keyed cache entry at once. Temps of other hosts or of unknown names are
    stale only when older than ``STALE_AFTER_S``.
    """
    owner = temp.name.removeprefix(f".{name}.").split("~")
    if len(owner) == 4 and owner[0] == "tmp" and owner[1] == _HOST and owner[2].isdigit():
        return not _pid_alive(int(owner[2]))
    try:
        return time.time() - temp.lstat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False  # its writer just finished


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` only if the block succeeds.

    A killed or failed job therefore never leaves a half-written file under the final name.
    Works for files and for directories (the block creates whichever it wants). The temporary
    name records its writer (host and pid), so temps left by killed writers are removed while
    those of live writers of the same path are left alone; concurrent writers of one file each
    rename their own complete copy over it (the last one wins, atomically).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
        # left by a killed run of the same job (a finally block cannot run after SIGKILL)
        if _is_stale(stale, path.name):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


#: Bytes read at a time while hashing a file (model weights are gigabytes).
HASH_CHUNK = 1 << 20


def update_hash(digest: Any, path: str | Path) -> Any:
    """Feed a file's bytes into ``digest`` (a ``hashlib`` object), a chunk at a time; returns
    ``digest``."""
    with open(path, "rb") as handle:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
    return digest


def file_hash(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes: the key of content caches, the manifest's file hashes
    and the resume state's record of the epoch it continues."""
    return update_hash(hashlib.sha256(), path).hexdigest()


def read_text(path: str | Path, what: str) -> str:
    """A user's text file as UTF-8 (a byte-order mark is dropped).

    Raises:
        SpecError: the file is not UTF-8, naming it, the byte and ``what`` it is.
    """
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path}: not UTF-8 text (byte {err.start}); save the {what} as UTF-8."
        ) from err


def list_images(directory: str | Path) -> list[Path]:
    """Images in ``directory`` (not recursive), sorted by name; hidden files (``.x.jpg``,
    macOS's ``._x.jpg``) are ignored.

    Raises:
        SpecError: the directory is missing or holds no image, or holds images of a type
            dreamgrid does not read (all of them named in one message).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError(f"{directory}: not a directory. Point the config at a folder of images.")
    entries = sorted(directory.iterdir())
    unsupported = [
        p.name
        for p in entries
        if p.suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    if unsupported:
        raise SpecError(
            f"{directory}: {len(unsupported)} image file(s) of a type dreamgrid does not read: "
            f"{', '.join(unsupported)}. Convert them to JPEG or PNG, or move them out."
        )
    hidden = [p.name for p in entries if p.name.startswith(".") and p.is_file()]
    if hidden:
        logger.debug("%s: hidden files ignored: %s", directory, ", ".join(hidden))
    images = [p for p in entries if is_image(p)]
    if not images:
        raise SpecError(
            f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) found. Add photos or fix the path."
        )
    return images


def by_stem(paths: list[Path], what: str) -> dict[str, Path]:
    """Map file stem -> path; two files with one stem (``a.jpg``, ``a.png``) are an error,
    since stem-named outputs or caption files could not tell them apart."""
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise SpecError(
                f"{stems[path.stem]} and {path}: two {what} share the name {path.stem!r}. "
                "Rename one."
            )
        stems[path.stem] = path
    return stems


def load_rgb(path: str | Path):
    """Open an image as 8-bit RGB with its EXIF orientation applied (PIL.Image).

    Transparent images are composited on white, palette/grayscale/CMYK images converted and
    16-bit images scaled down (not clipped); each conversion is logged, none is an error.

    Raises:
        SpecError: the file is not a readable image (or is truncated).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                image = _scale_to_8bit(image)
            if image.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
                # Composite transparency on white rather than letting it turn black.
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            if mode != "RGB":
                logger.info("%s: converted from %s to 8-bit RGB", path, mode)
            return image.convert("RGB")
    except Image.DecompressionBombError as err:
        # PIL refuses images over twice its pixel limit (about 179 megapixels) as a possible
        # decompression bomb; its message holds the pixel count.
        raise SpecError(
            f"{path}: too large to open ({err}). Save a smaller copy (a few megapixels is "
            "plenty for 512-1024 px training) and use that."
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SpecError(
            f"{path}: cannot be read as an image ({err}). Replace or remove the file."
        ) from err


def _scale_to_8bit(image):
    """16-bit or float grayscale to 8-bit by its value range (PIL would clip at 255)."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I") and array.max() > 255 else max(array.max(), 1.0)
    if image.mode == "F" and array.max() <= 1.0:
        top = 1.0
    return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def resize_center_crop(image, resolution: int):
    """Resize so the shorter side is ``resolution`` (bilinear), then center-crop a square.

    Training photos and ground-truth regularization photos both go through this, so they
    are prepared identically.
    """
    return resize_cover_crop(image, resolution, resolution)


def resize_cover_crop(image, width: int, height: int):
    """Resize (bilinear, aspect kept) to the smallest size covering ``width`` x ``height``,
    then center-crop to it: Kohya's fit for an aspect-ratio bucket, and a square center crop
    when ``width == height``."""
    from PIL import Image

    new_w, new_h, left, top = cover_crop_box(*image.size, width, height)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return image.crop((left, top, left + width, top + height))


def cover_crop_box(old_w: int, old_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """What :func:`resize_cover_crop` does to an ``old_w`` x ``old_h`` image:
    ``(resized width, resized height, crop left, crop top)`` (SDXL conditions on the corner)."""
    scale = max(width / old_w, height / old_h)
    new_w = max(width, round(old_w * scale))
    new_h = max(height, round(old_h * scale))
    return new_w, new_h, (new_w - width) // 2, (new_h - height) // 2
