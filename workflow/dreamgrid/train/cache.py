"""VAE latents computed once per image and reused by every epoch and every arm.

An image's latent distribution (mean and std of the VAE's diagonal Gaussian) depends only on
its pixels, the size it is fitted to (the training resolution, or its aspect-ratio bucket) and
the VAE, so its file is named by those three: arms that share images (the same photos, the
same class images) share the files, and an edited photo gets a new file rather than a stale
one. Training still draws a fresh latent sample per step from the cached distribution, as
the uncached path does.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from dreamgrid.io import atomic_path, file_hash, update_hash

logger = logging.getLogger(__name__)


def vae_key(base_model: Path, vae: Path | None = None) -> str:
    """Hash of the VAE's weights (and config) files: the base model's, or ``vae``'s (a
    separate AutoencoderKL folder, TrainSpec.vae) when given."""
    digest = hashlib.sha256()
    folder = Path(vae) if vae is not None else Path(base_model) / "vae"
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        update_hash(digest, path)
    return digest.hexdigest()[:16]


class LatentCache:
    """Latent distributions by image, on disk in ``folder`` (one small safetensors each)."""

    def __init__(self, folder: Path, vae: Any, vae_id: str, device: Any, dtype: Any) -> None:
        self.folder = Path(folder)
        self.vae, self.vae_id = vae, vae_id
        self.device, self.dtype = device, dtype
        self._memory: dict[tuple[Path, tuple[int, int]], tuple[Any, Any]] = {}
        self.encoded = 0  # images encoded by this process (the rest came from disk)

    def path_for(self, image: Path, size: tuple[int, int]) -> Path:
        content = file_hash(image)[:32]
        # A square keeps the name it had before buckets existed, so old caches stay valid.
        fitted = str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
        return self.folder / f"{content}-{self.vae_id}-{fitted}.safetensors"

    def get(self, image: Path, size: tuple[int, int]) -> tuple[Any, Any]:
        """(mean, std) float32 tensors of shape (C, h, w) for ``image`` fitted to ``size``."""
        key = (image, tuple(size))
        if key not in self._memory:
            self._memory[key] = self._load_or_encode(image, key[1])
        return self._memory[key]

    def _load_or_encode(self, image: Path, size: tuple[int, int]) -> tuple[Any, Any]:
        import torch
        from safetensors.torch import load_file, save_file

        from dreamgrid.train.data import preprocess

        path = self.path_for(image, size)
        if path.is_file():
            tensors = load_file(str(path))
            return tensors["mean"], tensors["std"]
        pixels = preprocess(image, size)[None].to(self.device, dtype=self.dtype)
        with torch.no_grad():
            dist = self.vae.encode(pixels).latent_dist
        mean = dist.mean[0].float().cpu().contiguous()
        std = dist.std[0].float().cpu().contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"mean": mean, "std": std}, str(tmp))
        self.encoded += 1
        return mean, std
