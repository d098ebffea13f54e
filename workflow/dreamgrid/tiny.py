"""Tiny random-weight models built from configs, for the demo and the tests.

Nothing is downloaded: the tokenizers are written as files, the weights are random. Renders
from these models are noise and contain no faces; numbers computed from them mean nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Marker file written into every tiny model dir so later stages can say "demo numbers".
TINY_MARKER = "DREAMGRID_TINY_RANDOM_WEIGHTS"


def _byte_vocab() -> list[str]:
    # Byte-level BPE alphabet as CLIP/GPT-2 tokenizers encode it; every word splits into
    # single characters, which is enough for a tiny model.
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def write_clip_tokenizer(out: Path) -> Path:
    """Write a CLIP BPE tokenizer with a character-level vocab (no merges) to ``out``."""
    from transformers import CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    chars = _byte_vocab()
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(out)
    return out


#: The tiny UNet's config (the preflight builds it on the meta device to check LoRA targets).
TINY_UNET = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}


#: The tiny VAE's config (downsamples by 2).
TINY_VAE = {
    "block_out_channels": (32, 64),
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
}

#: The tiny CLIP text encoder's config, less its tokenizer's ids and vocabulary size.
TINY_TEXT_ENCODER = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}


def tiny_vocab_size() -> int:
    """The tiny CLIP tokenizer's vocabulary: byte characters, their end-of-word forms, and
    the start and end tokens (see :func:`write_clip_tokenizer`)."""
    return 2 * len(_byte_vocab()) + 2


def build_tiny_sd(out: str | Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionPipeline (diffusers layout) with random weights to ``out``.

    The VAE downsamples by 2 (not 8), so 64 px renders use 32 px latents.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer_dir = write_clip_tokenizer(out / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    unet = UNet2DConditionModel(**TINY_UNET)
    vae = AutoencoderKL(**TINY_VAE)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
            **TINY_TEXT_ENCODER,
        )
    )
    # SD 1.5 ships a PNDM scheduler with these settings; training reads it as DDPM.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    import shutil

    shutil.rmtree(tokenizer_dir)
    (out / TINY_MARKER).write_text(
        "random weights, built by dreamgrid.tiny; numbers mean nothing\n"
    )
    logger.info("tiny SD pipeline with random weights written to %s", out)
    return out


def write_bert_vocab(out: Path) -> Path:
    """Write a small BERT WordPiece vocab (special tokens, common words, characters)."""
    out.mkdir(parents=True, exist_ok=True)
    words = [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "with",
        "and",
        "photo",
        "picture",
        "image",
        "man",
        "woman",
        "person",
        "face",
        "smiling",
        "wearing",
        "shirt",
        "suit",
        "tie",
        "standing",
        "sitting",
        "front",
        "background",
        "white",
        "black",
        "blue",
        "close",
        "up",
        "portrait",
        "headshot",
    ]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + words
    tokens += chars + ["##" + c for c in chars]
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return out


def build_tiny_blip(out: str | Path, seed: int = 0) -> Path:
    """Save a tiny BlipForConditionalGeneration + BlipProcessor with random weights to ``out``."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    out = Path(out)
    torch.manual_seed(seed)
    vocab_dir = write_bert_vocab(out / "_vocab_src")
    tokenizer = BertTokenizer(str(vocab_dir / "vocab.txt"), bos_token="[DEC]")
    image_size = 32
    config = BlipConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": 8,
            # BLIP's vision default (1e-10) makes a random model blind: every image would
            # get the same caption, hiding per-image bugs.
            "initializer_range": 0.02,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "encoder_hidden_size": 32,
            "max_position_embeddings": 128,  # room for Kohya's max_length 75
            "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        },
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    import shutil

    shutil.rmtree(vocab_dir)
    (out / TINY_MARKER).write_text(
        "random weights, built by dreamgrid.tiny; numbers mean nothing\n"
    )
    logger.info("tiny BLIP captioner with random weights written to %s", out)
    return out


def build_tiny_clip(out: str | Path, seed: int = 0) -> Path:
    """Save a tiny CLIPModel and CLIPProcessor (transformers layout) with random weights."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(out / "_tokenizer_src"))
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    (out / TINY_MARKER).write_text("random weights: CLIP scores mean nothing\n")
    return out
