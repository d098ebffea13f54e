"""Caption stage: BLIP captions for the training photos, overridden by the user's own files.

Generation follows Kohya's ``finetune/make_captions.py`` (BLIP with the prompt
``a picture of``, stripped from the result; top-p sampling by default, beam search on
request; lengths count tokens including the prompt), with transformers'
``BlipForConditionalGeneration`` instead of the BLIP repository's code.

User caption files (``<stem>.txt`` or Kohya's ``<stem>.caption``) replace the generated
caption of their image; they are only read. The table keeps the *raw* caption: the train
stage puts each arm's token and class in (``dreamgrid.prompts.compose_caption``).

Reproducibility: beam search is deterministic. With top-p sampling, each image is captioned
on its own with the random generator freshly seeded with ``settings.seed``, so its caption
depends only on the image and the seed, not on the batch size or on which other images
exist or are overridden (``batch_size`` therefore applies to beam search only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path, by_stem, list_images, load_rgb, read_text

log = logging.getLogger(__name__)

#: Caption file suffixes a user may provide, in the order they are looked for.
OVERRIDE_SUFFIXES = (".txt", ".caption")
#: Backends run by this module (``lavis`` is planned, in its own env).
BACKENDS = ("transformers", "lavis")
#: BLIP's own ``generate`` uses this repetition penalty when sampling (1.0 for beam search).
SAMPLING_REPETITION_PENALTY = 1.1
COLUMNS = ("image", "caption", "source")
SOURCE_BLIP = "blip"
SOURCE_OVERRIDE = "override"


@dataclass(frozen=True)
class CaptionSettings:
    """How BLIP captions are generated; defaults live in the config schema.

    Kohya's defaults: prompt ``"a picture of "``, sampling with top_p 0.9, num_beams 1 (used
    with beam search), min_length 5, max_length 75, seed 42, batch_size 1.

    Attributes:
        model: folder of a saved ``BlipForConditionalGeneration`` and its ``BlipProcessor``.
        backend: ``transformers`` (BLIP in this env) or ``lavis`` (LAVIS BLIP, run with
            ``lavis_python``, the interpreter of its own venv: scripts/lavis-venv.sh).
        prompt: text the caption is generated after and stripped from ("" for none).
        sampling: True for top-p (nucleus) sampling, False for beam search.
        num_beams: beams for beam search (ignored when sampling).
        top_p: nucleus mass when sampling (ignored for beam search).
        min_length: minimum caption length in tokens, prompt included.
        max_length: maximum caption length in tokens, prompt included.
        seed: random seed for sampling.
        batch_size: images per ``generate`` call in beam search.
        lavis_python: interpreter of the LAVIS venv (backend ``lavis`` only).
        lavis_model: LAVIS ``name:model_type`` (e.g. ``blip_caption:large_coco``) or ``tiny``
            (backend ``lavis`` only).
        lavis_home: the folder ``prepare_lavis_model`` filled with LAVIS's downloads (backend
            ``lavis`` in the workflow; None: LAVIS's own caches).
    """

    model: Path
    backend: str
    prompt: str
    sampling: bool
    num_beams: int
    top_p: float
    min_length: int
    max_length: int
    seed: int
    batch_size: int
    # Backend plumbing, not hyperparameters: only the lavis backend reads them.
    lavis_python: str | None = None
    lavis_model: str | None = None
    lavis_home: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise SpecError(
                f"caption.backend {self.backend!r} is not supported; choose one of "
                f"{', '.join(BACKENDS)}."
            )
        if self.backend == "lavis":
            from dreamgrid.lavis_caption import check_interpreter

            check_interpreter(self.lavis_python)
            if not self.lavis_model:
                raise SpecError(
                    "caption.lavis_model is empty; set a LAVIS 'name:model_type' such as "
                    "blip_caption:large_coco (or tiny for random weights)."
                )
        for name in ("num_beams", "batch_size", "min_length", "max_length"):
            value = getattr(self, name)
            least = 0 if name == "min_length" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SpecError(f"caption.{name} must be an integer >= {least}, got {value!r}.")
        if self.min_length > self.max_length:
            raise SpecError(
                f"caption.min_length ({self.min_length}) exceeds max_length ({self.max_length})."
            )
        if not 0 < self.top_p <= 1:
            raise SpecError(f"caption.top_p must be in (0, 1], got {self.top_p!r}.")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``BlipForConditionalGeneration.generate``."""
        common = {"min_length": self.min_length, "max_length": self.max_length}
        if self.sampling:
            return {
                **common,
                "do_sample": True,
                "top_p": self.top_p,
                "num_beams": 1,
                "repetition_penalty": SAMPLING_REPETITION_PENALTY,
            }
        return {**common, "do_sample": False, "num_beams": self.num_beams}


def read_overrides(overrides_dir: Path | None, images: Sequence[Path]) -> dict[str, str]:
    """User captions for ``images``: ``<stem>.txt`` or ``<stem>.caption`` in ``overrides_dir``
    (suffixes in any case; hidden files ignored).

    Files are only read. Whitespace (newlines included) is collapsed to single spaces.
    ``overrides_dir`` may be the image folder itself (Kohya keeps captions next to images).

    Args:
        overrides_dir: folder of caption files, or None for no overrides.
        images: the training images.

    Returns:
        Image file name → caption, for the images that have a caption file.

    Raises:
        SpecError: the folder is missing; an image has both a ``.txt`` and a ``.caption``
            file; a caption file is empty or not UTF-8; two images share a stem.
    """
    if overrides_dir is None:
        return {}
    overrides_dir = Path(overrides_dir)
    if not overrides_dir.is_dir():
        raise SpecError(f"{overrides_dir}: caption override folder not found. Fix the path.")
    images_by_stem = by_stem(list(images), "training images")
    # Suffixes match in any case (X.TXT, Y.Caption), as cameras and Windows tools write them.
    caption_files: dict[str, list[Path]] = {}
    for path in sorted(overrides_dir.iterdir()):
        if path.suffix.lower() in OVERRIDE_SUFFIXES and not path.name.startswith("."):
            caption_files.setdefault(path.stem, []).append(path)
    captions: dict[str, str] = {}
    for stem, image in images_by_stem.items():
        found = caption_files.get(stem, [])
        if len(found) > 1:
            raise SpecError(
                f"{found[0]} and {found[1]}: two caption files for {image.name}. Keep one of them."
            )
        if found:
            captions[image.name] = _read_caption_file(found[0])
    stray = sorted(p.name for stem, paths in caption_files.items() for p in paths
                   if stem not in images_by_stem)  # fmt: skip
    if stray:
        log.warning(
            "%s: caption files without a matching image are ignored: %s",
            overrides_dir,
            ", ".join(stray),
        )
    return captions


def _read_caption_file(path: Path) -> str:
    caption = " ".join(read_text(path, "caption file").split())
    if not caption:
        raise SpecError(
            f"{path}: empty caption file. Write a caption in it, or delete it to use BLIP's."
        )
    return caption


def strip_prompt(text: str, prompt: str) -> str:
    """``text`` without a leading ``prompt`` (case-insensitive), whitespace collapsed."""
    text = " ".join(text.split())
    head = " ".join(prompt.split())
    if head and text.lower().startswith(head.lower()):
        text = text[len(head) :]
    return text.strip()


class BlipCaptioner:
    """A loaded transformers BLIP model and processor that caption PIL images."""

    def __init__(self, settings: CaptionSettings, device: str | None = None) -> None:
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        model_dir = Path(settings.model)
        if not (model_dir / "config.json").is_file():
            raise SpecError(
                f"{model_dir}: not a saved BLIP model (no config.json). Point caption.model "
                "at a folder written by save_pretrained (model and processor)."
            )
        self.settings = settings
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = BlipProcessor.from_pretrained(model_dir)
        self.model = BlipForConditionalGeneration.from_pretrained(model_dir).to(self.device)
        self.model.eval()

    def caption(self, images: Sequence[Any]) -> list[str]:
        """Captions of ``images`` (PIL, RGB), prompt stripped, in order."""
        import torch

        settings = self.settings
        text = [settings.prompt] * len(images) if settings.prompt.strip() else None
        inputs = self.processor(images=list(images), text=text, return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.no_grad():
            if settings.sampling:
                torch.manual_seed(settings.seed)
            ids = self.model.generate(**inputs, **settings.generate_kwargs())
        decoded = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [strip_prompt(t, settings.prompt) for t in decoded]


def caption_images(
    images_dir: Path,
    settings: CaptionSettings,
    overrides_dir: Path | None,
    out_csv: Path,
) -> pd.DataFrame:
    """Caption every training image: the user's caption file where present, BLIP otherwise.

    Args:
        images_dir: folder of training images.
        settings: BLIP model and generation settings.
        overrides_dir: folder of user caption files (``.txt``/``.caption``), or None.
        out_csv: CSV to write (atomically).

    Returns:
        One row per image, in file-name order: image (file name), caption (raw, without
        token or class), source (``blip`` or ``override``). BLIP is not loaded when every
        image has a caption file.
    """
    from tqdm.auto import tqdm

    images = list_images(images_dir)
    overrides = read_overrides(overrides_dir, images)
    todo = [path for path in images if path.name not in overrides]
    generated: dict[str, str] = {}
    if todo and settings.backend == "lavis":
        from dreamgrid.lavis_caption import caption_in_venv

        generated = caption_in_venv(settings, todo)
    elif todo:
        from dreamgrid.tiny import TINY_MARKER

        if (Path(settings.model) / TINY_MARKER).exists():
            log.warning("%s has random weights: its captions are gibberish.", settings.model)
        captioner = BlipCaptioner(settings)
        # Sampling: one image per call, each from the freshly seeded generator (module doc).
        step = 1 if settings.sampling else settings.batch_size
        with tqdm(total=len(todo), desc="caption", unit="img") as bar:
            for start in range(0, len(todo), step):
                batch = todo[start : start + step]
                texts = captioner.caption([load_rgb(path) for path in batch])
                for path, caption in zip(batch, texts, strict=True):
                    if not caption:
                        log.warning("%s: BLIP gave an empty caption.", path.name)
                    generated[path.name] = caption
                bar.update(len(batch))
    rows = [
        {"image": path.name, "caption": overrides[path.name], "source": SOURCE_OVERRIDE}
        if path.name in overrides
        else {"image": path.name, "caption": generated[path.name], "source": SOURCE_BLIP}
        for path in images
    ]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    log.info(
        "%d captions (%d from caption files, %d from BLIP) written to %s",
        len(table),
        len(overrides),
        len(generated),
        out_csv,
    )
    return table
