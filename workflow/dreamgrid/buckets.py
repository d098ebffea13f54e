"""Aspect-ratio buckets as Kohya sd-scripts makes them (``--enable_bucket``).

Instead of center-cropping every photo to a square, each image goes to the bucket (a
``width x height`` of about ``resolution²`` pixels, both sides multiples of ``step``) whose
aspect ratio is closest to its own, is resized to cover it and center-cropped to it. A batch
holds images of one bucket only, so tall portraits keep their hair and chin.

``bucket_resolutions`` and ``select_bucket`` follow Kohya's ``make_bucket_resolutions`` and
``BucketManager.select_bucket`` (upscaling allowed, the default). Importing this module needs
only the standard library; PIL is imported to read image sizes.
"""

from __future__ import annotations

import math
from pathlib import Path

from dreamgrid.errors import SpecError

#: EXIF orientations that rotate by 90 degrees (``load_rgb`` applies them, so swap w/h).
_TRANSPOSED = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


def check_bucket_settings(resolution: int, min_size: int, max_size: int, step: int) -> str | None:
    """What is wrong with these bucket settings (a sentence), or None."""
    if step < 8 or step % 8:
        return f"bucket_step must be a positive multiple of 8 (the VAE's factor), got {step}."
    if min_size % step or max_size % step:
        return (
            f"bucket_min_size ({min_size}) and bucket_max_size ({max_size}) must be "
            f"multiples of bucket_step ({step})."
        )
    if not min_size <= resolution <= max_size:
        return (
            f"resolution {resolution} must lie within bucket_min_size {min_size} and "
            f"bucket_max_size {max_size}."
        )
    return None


def bucket_resolutions(
    resolution: int, min_size: int, max_size: int, step: int
) -> list[tuple[int, int]]:
    """Sorted ``(width, height)`` buckets of at most ``resolution²`` pixels (Kohya's list).

    The square bucket, then for every width from ``min_size`` to ``max_size`` in ``step``s the
    tallest height that keeps the area, capped at ``max_size``, and its transpose.

    Raises:
        SpecError: inconsistent settings (see :func:`check_bucket_settings`).
    """
    problem = check_bucket_settings(resolution, min_size, max_size, step)
    if problem:
        raise SpecError(f"aspect-ratio buckets: {problem}")
    max_area = resolution * resolution
    side = int(math.sqrt(max_area) // step) * step
    resolutions = {(side, side)}
    for width in range(min_size, max_size + 1, step):
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            resolutions.add((width, height))
            resolutions.add((height, width))
    return sorted(resolutions)


def select_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket for a ``width x height`` image: its own size if that is a bucket, else the
    bucket with the closest aspect ratio (the first in sorted order on a tie, as numpy's
    ``argmin`` in Kohya)."""
    if (width, height) in buckets:
        return (width, height)
    aspect = width / height
    return min(buckets, key=lambda b: abs(b[0] / b[1] - aspect))


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` as training sees the image: after its EXIF orientation.

    Reads the header only.

    Raises:
        SpecError: the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SpecError(
            f"{path}: cannot be read as an image ({err}). Replace or remove the file."
        ) from err
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def size_label(size: tuple[int, int]) -> str:
    """``(448, 576)`` -> ``"448x576"``."""
    return f"{size[0]}x{size[1]}"
