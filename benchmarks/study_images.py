"""Real-photo stand-ins for a study checkpoint: 200 distinct 512 px "renders" and 7 references.

The renders are augmented copies (random square crop around the middle, optional mirror,
brightness and contrast jitter, resize to 512 px) of the public-domain portraits in
``resources/demo`` and the face_recognition 1.3.0 test images; the references are the three
close-ups in ``resources/demo/references`` plus four close-up crops of the source portraits.
They are made at benchmark time into a temp dir (never committed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
FR_IMAGES = Path("/tmp/fr/face_recognition-1.3.0/tests/test_images")


def sources(fr_images: Path = FR_IMAGES) -> list[Path]:
    """Portraits to augment: the demo's photos plus the face_recognition test images."""
    found = sorted((DEMO / "train").glob("*.jpg")) + sorted((DEMO / "ground_truth").glob("*.jpg"))
    if fr_images.is_dir():
        found += sorted(p for p in fr_images.glob("*.jpg"))
    return found


def make_renders(out: Path, count: int = 200, size: int = 512, seed: int = 0) -> list[Path]:
    """``count`` distinct ``size`` px PNGs made from real photos by crops, flips, brightness."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sources()]
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.6, 1.0))
        left = int(rng.uniform(0, w - side + 1))
        top = int(rng.uniform(0, (h - side) * 0.4 + 1))  # portraits: faces sit in the upper part
        image = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
        path = out / f"render-{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def make_references(out: Path, fr_images: Path = FR_IMAGES) -> list[Path]:
    """Seven one-face close-ups: the demo's three plus crops of four source portraits."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sorted((DEMO / "references").glob("*.jpg")):
        path = out / src.name
        path.write_bytes(src.read_bytes())
        paths.append(path)
    extra = [fr_images / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    extra.append(DEMO / "train" / "obama.jpg")
    for k, src in enumerate(p for p in extra if p.is_file()):
        image = Image.open(src).convert("RGB")
        w, h = image.size
        side = int(min(w, h) * 0.8)
        box = ((w - side) // 2, int(h * 0.08), (w + side) // 2, int(h * 0.08) + side)
        image = image.crop(box).resize((384, 384), Image.LANCZOS)
        if k % 2:
            image = ImageOps.mirror(image)
        path = out / f"ref-{k}-{src.stem}.png"
        image.save(path)
        paths.append(path)
    return paths
