"""Regularization stage: class images, generated once from the base model or real photos.

Two kinds of regularization set, each written as a folder of PNGs plus ``index.csv``:

* generated: ``count`` renders of the class prompt (e.g. ``photo of a woman``) by the base
  model with the Euler scheduler, image ``i`` from seed ``seed + i`` (one generator per image,
  so the set does not depend on the batch size). Made once and shared by every arm.
* ground truth: the user's real photos of other people, decoded, resized and center-cropped
  exactly like the training images (:func:`resize_center_crop`), or with aspect-ratio buckets
  kept in shape for training to fit. The source files are only read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dreamgrid.io import atomic_path, by_stem, list_images, load_rgb, resize_center_crop

log = logging.getLogger(__name__)

INDEX = "index.csv"
#: Scheduler for generated class images (the study used Euler, as for its renders).
SCHEDULER = "euler"


def class_image_name(i: int) -> str:
    """File name of generated class image ``i``."""
    return f"class-{i:05d}.png"


def generate_class_images(
    model: Path,
    prompt: str,
    negative: str,
    count: int,
    seed: int,
    steps: int,
    cfg: float,
    size: int,
    batch_size: int,
    out_dir: Path,
) -> pd.DataFrame:
    """Render ``count`` class images with the base model into ``out_dir``.

    Args:
        model: diffusers folder of the base model.
        prompt: the class prompt, already filled (e.g. ``photo of a woman``).
        negative: negative prompt (may be empty).
        count: number of images.
        seed: image ``i`` uses seed ``seed + i``.
        steps: inference steps (Euler).
        cfg: classifier-free guidance scale.
        size: width and height in pixels (multiple of 8).
        batch_size: images per pipeline call (does not change the images' noise).
        out_dir: folder to create; built under a temporary name and renamed when complete.

    Returns:
        The index (also written to ``out_dir/index.csv``): columns image (file name), seed,
        prompt.
    """
    from dreamgrid import sample_flux
    from dreamgrid.sample import (
        base_family,
        generate_images,
        load_pipeline,
        png_info,
        set_scheduler,
        warn_if_tiny,
    )

    warn_if_tiny(model)
    family = base_family(model)
    flux = family == "flux"
    if flux:
        # FLUX renders with its own flow-matching Euler, cfg as distilled guidance.
        sample_flux.check_class_image_negative(negative)
        generate = sample_flux.generate_images
    else:
        generate = generate_images
    pipe = load_pipeline(model, None, family=family)
    if not flux:
        set_scheduler(pipe, SCHEDULER)
    seeds = [seed + i for i in range(count)]
    rows = []
    log.info("generating %d class images of %r into %s", count, prompt, out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        images = generate(
            pipe, prompt, negative, seeds, steps, cfg, size, size, batch_size, desc="class images"
        )
        for i, (s, image) in enumerate(images):
            name = class_image_name(i)
            meta = {
                "seed": s,
                "prompt": prompt,
                "negative": negative,
                "steps": steps,
                "cfg": cfg,
                "scheduler": SCHEDULER,
                "checkpoint": "base",
            }
            image.save(tmp / name, pnginfo=png_info(meta))
            rows.append({"image": name, "seed": s, "prompt": prompt})
        index = pd.DataFrame(rows, columns=["image", "seed", "prompt"])
        index.to_csv(tmp / INDEX, index=False)
    return index


def prepare_ground_truth(
    src_dir: Path, resolution: int, out_dir: Path, max_side: int | None = None
) -> pd.DataFrame:
    """Decode, resize and center-crop real photos of other people into ``out_dir``.

    Args:
        src_dir: the user's folder of photos (only read, never modified).
        resolution: side of the square output images, as in training.
        out_dir: folder to create; built under a temporary name and renamed when complete.
        max_side: with aspect-ratio buckets: keep each photo's shape (training fits it to its
            bucket), only shrinking it so its longer side is at most ``max_side``.

    Returns:
        The index (also written to ``out_dir/index.csv``): columns image (output file name,
        ``<source stem>.png``) and source (the original path).

    Raises:
        SpecError: the folder is missing or empty, a photo cannot be decoded (naming it), or
            two photos share a file stem.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    sources = list_images(src_dir)
    by_stem(sources, "ground-truth photos")
    # Built under a temporary name: a bad photo (SpecError from load_rgb) leaves no output.
    rows = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for path in tqdm(sources, desc="ground truth", unit="img"):
            image = load_rgb(path)
            if max_side is None:
                image = resize_center_crop(image, resolution)
            elif max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            name = f"{path.stem}.png"
            image.save(tmp / name)
            rows.append({"image": name, "source": str(path)})
        index = pd.DataFrame(rows, columns=["image", "source"])
        index.to_csv(tmp / INDEX, index=False)
    fitted = f"{resolution} px" if max_side is None else f"their own shape (at most {max_side} px)"
    log.info("%d ground-truth photos prepared at %s in %s", len(index), fitted, out_dir)
    return index
