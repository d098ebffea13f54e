"""Rebuild resources/demo from the face_recognition 1.3.0 sdist's test images (see SOURCES.md).

Usage:
    pip download --no-deps --no-binary :all: face_recognition==1.3.0
    tar xzf face_recognition-1.3.0.tar.gz
    python resources/demo/make_demo.py face_recognition-1.3.0/tests/test_images

Face boxes for the close-up crops are found with dlib's frontal face detector (HOG).
"""

from __future__ import annotations

import sys
from pathlib import Path

import dlib
import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
LONG_SIDE = 512
CLOSE_UP = 384
QUALITY = 90

# (source file, destination relative to resources/demo, close-up crop?)
FILES = [
    ("obama.jpg", "train/obama.jpg", False),
    ("obama2.jpg", "train/obama2.jpg", False),
    ("obama3.jpg", "train/obama3.jpg", False),
    ("obama_partial_face.jpg", "train/obama_partial_face.jpg", False),
    ("obama_partial_face2.jpg", "train/obama_partial_face2.jpg", False),
    ("obama.jpg", "references/obama_closeup.jpg", True),
    ("obama2.jpg", "references/obama2_closeup.jpg", True),
    ("obama3.jpg", "references/obama3_closeup.jpg", True),
    ("biden.jpg", "ground_truth/biden.jpg", False),
    ("biden.jpg", "ground_truth/biden_closeup.jpg", True),
]


def close_up(image: Image.Image) -> Image.Image:
    """Square crop, twice the face box's side, centred on the single detected face."""
    faces = dlib.get_frontal_face_detector()(np.asarray(image), 1)
    if len(faces) != 1:
        raise SystemExit(f"expected one face, found {len(faces)}")
    face = faces[0]
    cx, cy = face.center().x, face.center().y
    half = min(face.width(), cy, cx, image.width - cx, image.height - cy)
    return image.crop((cx - half, cy - half, cx + half, cy + half)).resize(
        (CLOSE_UP, CLOSE_UP), Image.Resampling.LANCZOS
    )


def main(source: Path) -> None:
    for name, dest, crop in FILES:
        with Image.open(source / name) as raw:
            image = ImageOps.exif_transpose(raw).convert("RGB")
        if crop:
            image = close_up(image)
        else:
            image.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
        out = HERE / dest
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, quality=QUALITY, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
