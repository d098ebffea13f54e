"""Training data with Kohya's step semantics: repeats, regularization doubling, captions.

One epoch holds every training image ``repeats`` times, each with its composed caption
(``"<token> <class>, <raw caption>"``), plus, with regularization, as many class images as
instance items (cycling through the class folder), captioned ``"<class>"`` and weighted by
``prior_loss_weight`` in the loss: as extra items (Kohya) or in the same batch (``paired``). The order is shuffled per epoch from a generator seeded by
``(seed, epoch)``, so an epoch's batches do not depend on what ran before it.

Importing this module needs only the standard library (``steps_per_epoch`` is used by the
report stage); torch, numpy and PIL are imported where images are loaded.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError
from dreamgrid.io import list_images, load_rgb, resize_center_crop
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
    """Optimizer steps in one epoch, as Kohya counts them.

    ``ceil(n_images * repeats * (2 if regularization else 1) / batch_size)`` per pass: with
    regularization each epoch adds as many class items as instance items. In diffusers'
    ``paired`` mode a class item rides in the same batch as each instance item, so
    regularization adds no steps. ``passes`` > 1 (``match_steps``) runs the data that many
    times per epoch, each pass shuffled anew.
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


def derive_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one random stream (``"order"``, ``"noise"``, ...) of one epoch.

    Hash-based, so it is stable across processes, platforms and Python versions.
    """
    digest = hashlib.sha256(f"dreamgrid:{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class Item:
    """One training example of an epoch."""

    image: Path
    caption: str
    weight: float
    is_reg: bool


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
        items.append(Item(image, caption, 1.0, False))
    return [item for _ in range(spec.repeats) for item in items]


def epoch_items(spec: Any) -> list[Item]:
    """The epoch's items in training order, one pass after another.

    ``kohya``: instance and class items shuffled together. ``paired``: instance items
    shuffled, class items shuffled, then laid out batch by batch as ``batch_size`` instance
    items followed by as many class items (a loader with ``2 * batch_size`` per batch then
    yields diffusers' prior-preservation batches).
    """
    import torch

    def shuffled(items: list[Item], stream: str) -> list[Item]:
        generator = torch.Generator().manual_seed(derive_seed(spec.seed, spec.epoch, stream))
        return [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]

    instance = instance_items(spec)
    reg: list[Item] = []
    if spec.reg_dir is not None:
        class_images = list_images(spec.reg_dir)
        weight = float(spec.prior_loss_weight)
        reg = [
            Item(class_images[i % len(class_images)], spec.class_word, weight, True)
            for i in range(len(instance))
        ]
    passes = spec.passes
    out: list[Item] = []
    for index in range(passes):
        # Pass 0 keeps the stream name of one-pass epochs, so their order is unchanged.
        suffix = f":{index}" if index else ""
        if spec.reg_mode == "paired" and reg:
            inst, cls = shuffled(instance, f"order{suffix}"), shuffled(reg, f"class{suffix}")
            size = spec.batch_size
            for start in range(0, len(inst), size):
                out += inst[start : start + size] + cls[start : start + size]
        else:
            out += shuffled(instance + reg, f"order{suffix}")
    return out


def preprocess(path: Path, resolution: int) -> Any:
    """Load an image, resize its shorter side to ``resolution``, center-crop, scale to [-1, 1].

    Returns a float32 tensor of shape (3, resolution, resolution).
    """
    import numpy as np
    import torch

    image = resize_center_crop(load_rgb(path), resolution)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class DreamBoothDataset:
    """Map-style dataset over an epoch's items (a ``torch.utils.data.Dataset`` by protocol).

    Each image is preprocessed once and cached: with repeats the same few images recur. With
    a ``latents`` cache (:class:`dreamgrid.train.cache.LatentCache`) items carry the VAE's
    latent mean and std instead of pixels.
    """

    def __init__(
        self, items: list[Item], tokenizer: Any, resolution: int, latents: Any = None
    ) -> None:
        self.items = items
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.latents = latents
        self._pixels: dict[Path, Any] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        if self.latents is not None:
            image = dict(zip(("latent_mean", "latent_std"), self.latents.get(item.image)))
        else:
            if item.image not in self._pixels:
                self._pixels[item.image] = preprocess(item.image, self.resolution)
            image = {"pixel_values": self._pixels[item.image]}
        input_ids = self.tokenizer(
            item.caption,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids[0]
        return {
            **image,
            "input_ids": input_ids,
            "weight": item.weight,
            "is_reg": item.is_reg,
        }


def collate_fn(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch: pixel_values (B,3,H,W) or latent_mean/latent_std (B,C,h,w),
    input_ids (B,77), weight (B,), is_reg (B,)."""
    import torch

    images = [k for k in ("pixel_values", "latent_mean", "latent_std") if k in examples[0]]
    return {
        **{k: torch.stack([e[k] for e in examples]).float() for k in images},
        "input_ids": torch.stack([e["input_ids"] for e in examples]),
        "weight": torch.tensor([e["weight"] for e in examples], dtype=torch.float32),
        "is_reg": torch.tensor([e["is_reg"] for e in examples], dtype=torch.bool),
    }
