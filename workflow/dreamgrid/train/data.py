"""Training data with Kohya's step semantics: repeats, regularization doubling, captions.

One epoch holds every training image ``repeats`` times, each with its composed caption
(``"<token> <class>, <raw caption>"``), plus, with regularization, as many class images as
instance items (cycling through the class folder), captioned ``"<class>"`` and weighted by
``prior_loss_weight`` in the loss: as extra items (Kohya) or in the same batch (``paired``).
The order is shuffled per epoch from a generator seeded by ``(seed, epoch)``, so an epoch's
batches do not depend on what ran before it.

Images are center-cropped to ``resolution²``, or with ``aspect_ratio: buckets`` fitted to
Kohya's aspect-ratio buckets (:mod:`dreamgrid.buckets`); then each batch holds one
bucket's images and an epoch has one short batch per bucket, as in Kohya.

Importing this module needs only the standard library (``steps_per_epoch`` is used by the
report stage); torch, numpy and PIL are imported where images are loaded.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamgrid.buckets import bucket_resolutions, image_size, select_bucket
from dreamgrid.errors import SpecError
from dreamgrid.io import cover_crop_box, list_images, load_rgb, resize_cover_crop
from dreamgrid.prompts import check_caption, compose_caption
from dreamgrid.train.spec import REG_MODES


def steps_per_epoch(
    n_images: int,
    repeats: int,
    batch_size: int,
    regularization: bool,
    reg_mode: str = "kohya",
    passes: int = 1,
) -> int:
    """Optimizer steps in one center-cropped epoch, as Kohya counts them.

    ``ceil(n_images * repeats * (2 if regularization else 1) / batch_size)`` per pass: with
    regularization each epoch adds as many class items as instance items. In diffusers'
    ``paired`` mode a class item rides in the same batch as each instance item, so
    regularization adds no steps. ``passes`` > 1 (``match_steps``) runs the data that many
    times per epoch, each pass shuffled anew. With aspect-ratio buckets every bucket ends in
    its own short batch: see :func:`bucket_steps`.
    """
    for name, value in (
        ("n_images", n_images),
        ("repeats", repeats),
        ("batch_size", batch_size),
        ("passes", passes),
    ):
        if value < 1:
            raise SpecError(f"steps_per_epoch: {name} must be >= 1, got {value}.")
    if reg_mode not in REG_MODES:
        raise SpecError(f"steps_per_epoch: reg_mode must be one of {REG_MODES}, got {reg_mode!r}.")
    doubled = regularization and reg_mode == "kohya"
    items = n_images * repeats * (2 if doubled else 1)
    return passes * math.ceil(items / batch_size)


def bucket_steps(bucket_items: list[int], batch_size: int, passes: int = 1) -> int:
    """Optimizer steps in one bucketed epoch: ``passes * sum(ceil(n_b / batch_size))`` over
    the items per bucket ``n_b`` (Kohya's ``BucketBatchIndex`` count). In ``paired`` mode
    count only the instance items: class items ride along."""
    return passes * sum(math.ceil(n / batch_size) for n in bucket_items if n)


def derive_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one random stream (``"order"``, ``"noise"``, ...) of one epoch.

    Hash-based, so it is stable across processes, platforms and Python versions.
    """
    digest = hashlib.sha256(f"dreamgrid:{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class Item:
    """One training example of an epoch; ``size`` is the ``(width, height)`` it is fitted to
    (``(resolution, resolution)`` when center-cropped)."""

    image: Path
    caption: str
    weight: float
    is_reg: bool
    size: tuple[int, int]


def read_captions(path: Path, images: list[Path]) -> dict[str, str]:
    """Raw captions per training image name from a CSV with columns ``image, caption``.

    Raises:
        SpecError: missing columns, an image named twice or not in the training folder, or a
            training image without a row.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            if not {"image", "caption"} <= columns:
                raise SpecError(
                    f"{path}: captions CSV needs columns 'image' and 'caption', "
                    f"found {sorted(columns)}."
                )
            rows = list(reader)
    except OSError as err:
        raise SpecError(f"{path}: cannot read the captions CSV ({err}).") from err
    names = {p.name for p in images}
    captions: dict[str, str] = {}
    for row in rows:
        name = Path(row["image"] or "").name
        if name in captions:
            raise SpecError(f"{path}: image {name!r} has more than one caption row.")
        if name not in names:
            raise SpecError(
                f"{path}: captions image {name!r} is not in the training folder "
                f"{images[0].parent}. Fix the name or remove the row."
            )
        captions[name] = row["caption"] or ""
    missing = sorted(names - set(captions))
    if missing:
        raise SpecError(
            f"{path}: no caption row for training image(s) {missing}. Add rows "
            f"(an empty caption means '<token> <class>')."
        )
    return captions


def instance_items(spec: Any) -> list[Item]:
    """Every training image ``spec.repeats`` times with its checked caption (image order)."""
    images = list_images(spec.instance_dir)
    raw = read_captions(spec.captions, images) if spec.captions is not None else {}
    items = []
    for image in images:
        caption = compose_caption(raw.get(image.name), spec.token, spec.class_word)
        source = f"{image} (caption from {spec.captions})" if spec.captions else str(image)
        check_caption(caption, spec.token, spec.class_word, source=source)
        items.append(Item(image, caption, 1.0, False, (spec.resolution, spec.resolution)))
    return [item for _ in range(spec.repeats) for item in items]


def epoch_batches(spec: Any) -> list[list[Item]]:
    """The epoch's batches in training order, one pass after another.

    Center crop: ``kohya`` shuffles instance and class items together; ``paired`` shuffles
    each and lays every batch out as ``batch_size`` instance items followed by as many
    class items (diffusers' prior-preservation batches). Buckets: see
    :func:`_bucket_batches`. Each pass ends in its own short batch, as a Kohya epoch does.
    """
    import torch

    def shuffled(items: list[Any], stream: str) -> list[Any]:
        generator = torch.Generator().manual_seed(derive_seed(spec.seed, spec.epoch, stream))
        return [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]

    instance = instance_items(spec)
    reg: list[Item] = []
    if spec.reg_dir is not None:
        class_images = list_images(spec.reg_dir)
        weight = float(spec.prior_loss_weight)
        square = (spec.resolution, spec.resolution)
        reg = [
            Item(class_images[i % len(class_images)], spec.class_word, weight, True, square)
            for i in range(len(instance))
        ]
    if spec.aspect_ratio == "buckets":
        return _bucket_batches(spec, instance, reg, shuffled)
    paired = spec.reg_mode == "paired" and bool(reg)
    size = spec.batch_size
    out: list[list[Item]] = []
    for index in range(spec.passes):
        # Pass 0 keeps the stream name of one-pass epochs, so their order is unchanged.
        suffix = f":{index}" if index else ""
        if paired:
            inst, cls = shuffled(instance, f"order{suffix}"), shuffled(reg, f"class{suffix}")
            out += [i + c for i, c in zip(_chunks(inst, size), _chunks(cls, size), strict=True)]
        else:
            order = shuffled(instance + reg, f"order{suffix}")
            out += _chunks(order, size)
    return out


def _chunks(items: list[Item], size: int) -> list[list[Item]]:
    """``items`` cut into batches of ``size``, the last one short."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _bucket_batches(
    spec: Any, instance: list[Item], reg: list[Item], shuffled: Any
) -> list[list[Item]]:
    """Kohya's bucketed epoch: items grouped by bucket, each bucket shuffled and cut into
    batches, then the batches shuffled. In ``paired`` mode only instance items are bucketed;
    each batch's class items (drawn in shuffled order) are fitted to that batch's bucket."""
    buckets = bucket_resolutions(
        spec.resolution, spec.bucket_min_size, spec.bucket_max_size, spec.bucket_step
    )
    fitted: dict[Path, tuple[int, int]] = {}

    def fit(item: Item) -> Item:
        if item.image not in fitted:
            fitted[item.image] = select_bucket(*image_size(item.image), buckets)
        return dataclasses.replace(item, size=fitted[item.image])

    paired = spec.reg_mode == "paired" and bool(reg)
    bucketed = [fit(item) for item in (instance if paired else instance + reg)]
    size = spec.batch_size
    out: list[list[Item]] = []
    for index in range(spec.passes):
        suffix = f":{index}" if index else ""
        batches: list[list[Item]] = []
        for bucket in sorted({item.size for item in bucketed}):
            members = [item for item in bucketed if item.size == bucket]
            members = shuffled(members, f"bucket:{bucket[0]}x{bucket[1]}{suffix}")
            batches += _chunks(members, size)
        batches = shuffled(batches, f"batches{suffix}")
        if paired:
            classes = iter(shuffled(reg, f"class{suffix}"))
            batches = [
                batch + [dataclasses.replace(next(classes), size=batch[0].size) for _ in batch]
                for batch in batches
            ]
        out += batches
    return out


def preprocess(path: Path, size: tuple[int, int]) -> Any:
    """Load an image, resize it to cover ``size = (width, height)``, center-crop to it and
    scale to [-1, 1] (a square ``size`` is the plain center crop).

    Returns a float32 tensor of shape (3, height, width).
    """
    import numpy as np
    import torch

    image = resize_cover_crop(load_rgb(path), *size)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def crop_conditioning(path: Path, size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """SDXL's micro-conditioning of an image fitted to ``size = (width, height)`` by
    :func:`preprocess`: ``original_size`` (height, width as loaded, EXIF applied) and
    ``crop_top_left`` (top, left of the crop in the resized image), in diffusers' order."""
    width, height = image_size(path)
    _, _, left, top = cover_crop_box(width, height, *size)
    return {"original_size": (height, width), "crop_top_left": (top, left)}


class DreamBoothDataset:
    """Map-style dataset over an epoch's items (a ``torch.utils.data.Dataset`` by protocol).

    Each image is preprocessed once per size and cached: with repeats the same few images
    recur. With a ``latents`` cache (:class:`dreamgrid.train.cache.LatentCache`) items carry
    the VAE's latent mean and std instead of pixels. ``tokenize`` turns a caption into the
    family's ``input_ids*`` tensors (one per text encoder). Every item also carries its
    image's ``original_size`` and ``crop_top_left`` (:func:`crop_conditioning`), which SDXL
    conditions on; other families ignore them.
    """

    def __init__(
        self,
        items: list[Item],
        tokenize: Callable[[str], dict[str, Any]],
        latents: Any = None,
    ) -> None:
        self.items = items
        self.tokenize = tokenize
        self.latents = latents
        self._pixels: dict[tuple[Path, tuple[int, int]], Any] = {}
        self._crops: dict[tuple[Path, tuple[int, int]], dict[str, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        key = (item.image, item.size)
        if key not in self._crops:
            self._crops[key] = crop_conditioning(item.image, item.size)
        if self.latents is not None:
            latent = self.latents.get(item.image, item.size)
            image = dict(zip(("latent_mean", "latent_std"), latent))
        else:
            if key not in self._pixels:
                self._pixels[key] = preprocess(item.image, item.size)
            image = {"pixel_values": self._pixels[key]}
        return {
            **image,
            **self.tokenize(item.caption),
            **self._crops[key],
            "weight": item.weight,
            "is_reg": item.is_reg,
        }


def collate_fn(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch: pixel_values (B,3,H,W) or latent_mean/latent_std (B,C,h,w),
    input_ids* (B, tokens) per text encoder, original_size and crop_top_left (B, 2) as
    (y, x) integers, weight (B,), is_reg (B,)."""
    import torch

    first = examples[0]
    images = [k for k in ("pixel_values", "latent_mean", "latent_std") if k in first]
    token_ids = [k for k in first if k.startswith("input_ids")]
    return {
        **{k: torch.stack([e[k] for e in examples]).float() for k in images},
        **{k: torch.stack([e[k] for e in examples]) for k in token_ids},
        **{
            k: torch.tensor([e[k] for e in examples], dtype=torch.long)
            for k in ("original_size", "crop_top_left")
        },
        "weight": torch.tensor([e["weight"] for e in examples], dtype=torch.float32),
        "is_reg": torch.tensor([e["is_reg"] for e in examples], dtype=torch.bool),
    }
