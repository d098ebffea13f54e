"""LAVIS BLIP captioning, run in its own venv (``caption.backend: lavis``).

salesforce-lavis 1.0.2 pins transformers <4.27, so it cannot share an env with our diffusers
and transformers. The caption stage (in the main env) calls :func:`caption_in_venv`, which runs
this module with ``caption.lavis_python`` (the venv from scripts/lavis-venv.sh):
``python -m dreamgrid.lavis_caption REQUEST.json OUT.json``. The venv side imports only the
standard library, torch, PIL and lavis: nothing else of dreamgrid.

``lavis_model: tiny`` builds a random-weight BLIP from a small config with an offline BERT
vocabulary (tests and demo: gibberish captions, real LAVIS code path); any other value is a
LAVIS ``name:model_type`` that ``load_model_and_preprocess`` loads. Its downloads (the
checkpoint through torch.hub, the BERT tokenizer through the hub) happen once, in the local rule
``prepare_lavis_model`` (:func:`prepare_lavis_model`), into a folder whose caches every caption job
then reads offline (:func:`cache_env`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TINY = "tiny"
# The tiny model: a 32 px ViT with one block and a one-layer BERT decoder.
TINY_IMAGE_SIZE = 32
TINY_WIDTH = 32
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]",
    "a", "picture", "photo", "of", "man", "woman", "person", "face", "with", "in", "the",
    "hair", "shirt", "smiling", "standing", "front", "wall", "white", "black", "dark", "light",
    "suit", "tie", "and", "on", "background", "looking", "at", "camera", "portrait", "close",
    "up", "wearing", "glasses", "blue", "red", "green", "short", "long", ".", ",",
]  # fmt: skip
SAMPLING_REPETITION_PENALTY = 1.1  # as the transformers backend (Kohya's)
HELP = (
    "Build the LAVIS venv with scripts/lavis-venv.sh (about 7 GB) and set caption.lavis_python "
    "to its interpreter, e.g. .venv-lavis/bin/python; or use caption.backend: transformers."
)


# ---- main env ------------------------------------------------------------------------------
def check_interpreter(python: str | None) -> Path:
    """The LAVIS venv's interpreter, or one SpecError naming caption.lavis_python and the fix."""
    from dreamgrid.errors import SpecError

    if not python:
        raise SpecError(f"caption.backend is lavis but caption.lavis_python is not set. {HELP}")
    path = Path(python).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise SpecError(f"caption.lavis_python: {path} is not an executable file. {HELP}")
    return path


#: Written into a prepared LAVIS folder: which model its caches hold.
PREPARED = "lavis.json"


def cache_env(home: str | Path) -> dict[str, str]:
    """Where LAVIS looks for its downloads, pointed into a prepared folder: torch.hub's
    checkpoints (``TORCH_HOME``) and the hub cache of its BERT tokenizer (``HF_HOME``)."""
    home = Path(home).resolve()
    return {"TORCH_HOME": str(home / "torch"), "HF_HOME": str(home / "hf")}


def _venv_env(python: Path) -> dict[str, str]:
    package_root = Path(__file__).resolve().parents[1]
    # Only dreamgrid on the path: the venv's own packages must win over this env's.
    return {**os.environ, "PYTHONPATH": str(package_root), "PYTHONNOUSERSITE": "1"}


def prepare_lavis_model(python: str | None, model: str, out: Path) -> Path:
    """Download LAVIS ``model``'s checkpoint and tokenizer once into ``out`` (the local rule
    ``prepare_lavis_model``, on the submitting node; ``tiny`` downloads nothing).

    Raises:
        DreamgridError: LAVIS failed (its last lines in the message).
    """
    from dreamgrid.errors import DreamgridError
    from dreamgrid.io import atomic_path

    interpreter = check_interpreter(python)
    with atomic_path(Path(out)) as tmp:
        tmp.mkdir(parents=True)
        if model != TINY:
            env = {**_venv_env(interpreter), **cache_env(tmp)}
            cmd = [str(interpreter), "-m", "dreamgrid.lavis_caption", "--prepare", model]
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-15:])
                raise DreamgridError(
                    f"LAVIS could not download {model} in {interpreter} "
                    f"(exit {result.returncode}):\n{tail}\nCheck the venv ({HELP})"
                )
        (tmp / PREPARED).write_text(json.dumps({"model": model}) + "\n")
    log.info("LAVIS %s ready in %s", model, out)
    return Path(out)


def caption_in_venv(settings: Any, images: Sequence[Path]) -> dict[str, str]:
    """Caption ``images`` with LAVIS in ``settings.lavis_python``'s venv.

    Args:
        settings: a ``dreamgrid.caption.CaptionSettings`` with backend ``lavis``.
        images: image files to caption.

    Returns:
        Caption by image file name (prompt stripped, as the transformers backend's).
    """
    from dreamgrid.caption import strip_prompt
    from dreamgrid.errors import DreamgridError

    python = check_interpreter(settings.lavis_python)
    request = {
        "model": settings.lavis_model,
        "images": [str(Path(p).resolve()) for p in images],
        "prompt": settings.prompt,
        "sampling": settings.sampling,
        "num_beams": settings.num_beams,
        "top_p": settings.top_p,
        "min_length": settings.min_length,
        "max_length": settings.max_length,
        "seed": settings.seed,
    }
    env = _venv_env(python)
    if settings.lavis_home:  # the prepared caches; the job's offline switches pass through
        env.update(cache_env(settings.lavis_home))
    with tempfile.TemporaryDirectory(prefix="dreamgrid-lavis-") as tmp:
        request_file, out_file = Path(tmp) / "request.json", Path(tmp) / "captions.json"
        request_file.write_text(json.dumps(request))
        cmd = [str(python), "-m", "dreamgrid.lavis_caption", str(request_file), str(out_file)]
        log.info("LAVIS captioning %d images with %s", len(images), python)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        for line in result.stderr.splitlines():
            log.info("lavis: %s", line)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise DreamgridError(
                f"LAVIS captioning failed in {python} (exit {result.returncode}):\n{tail}\n"
                f"Check the venv ({HELP})"
            )
        captions = json.loads(out_file.read_text())
    return {Path(p).name: strip_prompt(captions[p], settings.prompt) for p in request["images"]}


# ---- LAVIS venv ----------------------------------------------------------------------------
def _tiny_model(prompt: str) -> tuple[Any, Any]:
    """A random-weight LAVIS BlipCaption (seeded, so identical every time) and its image
    transform, with a BERT tokenizer from a small vocabulary written to a temp folder."""
    import torch
    from lavis.common.utils import get_abs_path
    from lavis.models.blip_models.blip_caption import BlipCaption
    from lavis.models.med import XBertLMHeadDecoder
    from lavis.models.vit import VisionTransformerEncoder
    from lavis.processors.blip_processors import BlipImageEvalProcessor
    from transformers import BertConfig, BertTokenizer

    vocab_dir = Path(tempfile.mkdtemp(prefix="dreamgrid-lavis-vocab-"))
    (vocab_dir / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")

    class TinyBlipCaption(BlipCaption):
        @classmethod
        def init_tokenizer(cls):
            # LAVIS's own steps (BlipBase.init_tokenizer), from the offline vocabulary.
            tokenizer = BertTokenizer.from_pretrained(str(vocab_dir))
            tokenizer.add_special_tokens({"bos_token": "[DEC]"})
            tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
            tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
            return tokenizer

    torch.manual_seed(0)
    encoder = VisionTransformerEncoder(
        img_size=TINY_IMAGE_SIZE, patch_size=16, embed_dim=TINY_WIDTH, depth=1, num_heads=2
    )
    # LAVIS's own BLIP decoder config (lavis/configs/models/med_config.json), shrunk.
    config = BertConfig.from_json_file(get_abs_path("configs/models/med_config.json"))
    config.update(
        {
            "vocab_size": len(TINY_VOCAB),
            "hidden_size": TINY_WIDTH,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 2 * TINY_WIDTH,
            "max_position_embeddings": 128,
            "encoder_width": TINY_WIDTH,
        }
    )
    decoder = XBertLMHeadDecoder(config=config)
    model = TinyBlipCaption(encoder, decoder, prompt=prompt, max_txt_len=40)
    return model.eval(), BlipImageEvalProcessor(image_size=TINY_IMAGE_SIZE)


def _load(name: str, prompt: str, device: str) -> tuple[Any, Any]:
    if name == TINY:
        model, transform = _tiny_model(prompt)
        return model.to(device), transform
    from lavis.common.registry import registry
    from lavis.models import load_model_and_preprocess

    arch, _, model_type = name.partition(":")
    if registry.get_model_class(arch) is None:
        sys.exit(
            f"caption.lavis_model: LAVIS has no model {arch!r}; use name:model_type with a name "
            f"from {', '.join(sorted(registry.list_models()))} (or tiny)."
        )
    model, processors, _ = load_model_and_preprocess(
        name=arch, model_type=model_type or "base", is_eval=True, device=device
    )
    model.prompt = prompt  # generate() starts every caption with it
    return model, processors["eval"]


def main(request_file: str, out_file: str) -> None:
    """Venv side: caption the request's images, write {image path: caption} as JSON."""
    import torch
    from PIL import Image

    request = json.loads(Path(request_file).read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, transform = _load(request["model"], request["prompt"], device)
    captions = {}
    for path in request["images"]:
        image = transform(Image.open(path).convert("RGB")).unsqueeze(0).to(device)
        # One image per call from a freshly seeded generator: as the transformers backend.
        torch.manual_seed(request["seed"])
        with torch.no_grad():
            (text,) = model.generate(
                {"image": image},
                use_nucleus_sampling=request["sampling"],
                num_beams=1 if request["sampling"] else request["num_beams"],
                max_length=request["max_length"],
                min_length=request["min_length"],
                top_p=request["top_p"],
                repetition_penalty=SAMPLING_REPETITION_PENALTY if request["sampling"] else 1.0,
            )
        captions[path] = text
        print(f"{Path(path).name}: {text}", file=sys.stderr)
    Path(out_file).write_text(json.dumps(captions))


if __name__ == "__main__":
    if sys.argv[1] == "--prepare":  # venv side of prepare_lavis_model: load once, caches filled
        _load(sys.argv[2], "", "cpu")
    else:
        main(*sys.argv[1:])
