"""Prompt following as CLIPScore: how well a render matches the text it was prompted with.

CLIPScore (Hessel et al., 2021; torchmetrics' ``CLIPScore``): ``100 * max(cos(image, text), 0)``
between CLIP's image and text embeddings. The CLIP model is the user's (a local transformers
folder such as a download of ``openai/clip-vit-large-patch14``): nothing is fetched here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path, load_rgb

log = logging.getLogger(__name__)

#: Columns of a checkpoint's CLIP table (:func:`clip_score`).
COLUMNS = ("arm", "epoch", "prompt_set", "seed", "image", "clip_score")


def load(model_dir: Path, device: str | None = None):
    """CLIPModel and CLIPProcessor from a local folder, in eval mode on ``device``."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise SpecError(
            f"{model_dir}: not a transformers CLIP folder (no config.json). Set "
            "score.clip_model to a local copy of a CLIP model, e.g. "
            "openai/clip-vit-large-patch14 saved with save_pretrained, or to null."
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = CLIPModel.from_pretrained(model_dir, use_safetensors=True).to(device).eval()
    return model, CLIPProcessor.from_pretrained(model_dir)


def scores(
    model, processor, images: Sequence[Path], prompts: Sequence[str], batch_size: int = 16
) -> np.ndarray:
    """CLIPScore of each image against its own prompt (0..100)."""
    import torch

    if len(images) != len(prompts):
        raise ValueError("one prompt per image")
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = [load_rgb(p) for p in images[start : start + batch_size]]
        texts = list(prompts[start : start + batch_size])
        inputs = processor(
            text=texts, images=batch, return_tensors="pt", padding=True, truncation=True
        ).to(device)
        with torch.no_grad():
            image = model.get_image_features(pixel_values=inputs["pixel_values"])
            text = model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
        image = _embedding(image)
        text = _embedding(text)
        cosine = torch.nn.functional.cosine_similarity(image, text, dim=-1)
        out.append((100 * cosine.clamp(min=0)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _embedding(output):
    # transformers 5 returns a model output object from get_*_features; 4.x a tensor.
    return getattr(output, "pooler_output", output)


def clip_score(
    model_dir: Path,
    tables: Sequence[Path],
    render_dirs: Sequence[Path],
    out: Path,
    *,
    arm: str = "",
    epoch: int = 0,
) -> pd.DataFrame:
    """Workflow step: CLIPScore of one checkpoint's renders (one prompt set) as CSV.

    Args:
        model_dir: local CLIP folder.
        tables: the shards' render tables (``image`` relative to ``renders/``, ``prompt``).
        render_dirs: the shards' folders, in the order of ``tables``.
        out: CSV with :data:`COLUMNS`.
        arm, epoch: the checkpoint, written into the table (the prompt set comes from the
            render tables).
    """
    frames = []
    for table, folder in zip(tables, render_dirs, strict=True):
        frame = pd.read_csv(table)
        frame["path"] = [Path(folder).parent / name for name in frame["image"]]
        frames.append(frame)
    renders = pd.concat(frames, ignore_index=True)
    model, processor = load(model_dir)
    renders["arm"], renders["epoch"] = arm, epoch
    renders["clip_score"] = scores(model, processor, list(renders["path"]), list(renders["prompt"]))
    result = renders[list(COLUMNS)].sort_values("seed", kind="stable")
    with atomic_path(Path(out)) as tmp:
        result.to_csv(tmp, index=False)
    log.info("CLIPScore of %d renders: mean %.2f", len(result), result["clip_score"].mean())
    return result


def summarize(clip_files: Sequence[Path]) -> pd.DataFrame:
    """Mean CLIPScore per checkpoint and prompt set: ``arm, epoch, prompt_set, clip_score``."""
    keys = ["arm", "epoch", "prompt_set"]
    if not clip_files:
        return pd.DataFrame(columns=[*keys, "clip_score"])
    table = pd.concat([pd.read_csv(p) for p in clip_files], ignore_index=True)
    table["arm"] = table["arm"].astype(str)
    return table.groupby(keys, as_index=False, sort=True)["clip_score"].mean()
