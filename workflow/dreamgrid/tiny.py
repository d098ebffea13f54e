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


# ---- Tiny SDXL and FLUX.1 (foundations of the base-model axis, issue #17) -----------------
def _write_marker(out: Path) -> None:
    (out / TINY_MARKER).write_text(
        "random weights, built by dreamgrid.tiny; numbers mean nothing\n"
    )


def _tiny_clip_text_config(tokenizer, projection_dim: int = 32, hidden_size: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=projection_dim,
    )


def _tiny_vae(latent_channels: int, **config):
    """A VAE shaped like build_tiny_sd's (downsamples by 2) with ``latent_channels``."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=64,
        **config,
    )


#: SDXL's added conditioning: 6 micro-conditioning numbers (original size, crop corner,
#: target size), each embedded in ``addition_time_embed_dim`` channels, plus the pooled
#: embedding of the second text encoder (its projection_dim).
TINY_SDXL_TIME_EMBED_DIM = 8
TINY_SDXL_POOLED_DIM = 32
#: The second text encoder is wider than the first, as OpenCLIP-G (1280) is than CLIP-L (768):
#: diffusers' single-file loader tells the two apart by their width.
TINY_SDXL_CLIP_G_WIDTH = 48

#: The tiny SDXL UNet's config: build_tiny_sd's UNet with SDXL's "text_time" conditioning and
#: cross-attention over both text encoders' hidden states concatenated (32 + 48).
TINY_SDXL_UNET = {
    **TINY_UNET,
    "cross_attention_dim": 32 + TINY_SDXL_CLIP_G_WIDTH,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TINY_SDXL_TIME_EMBED_DIM,
    "projection_class_embeddings_input_dim": 6 * TINY_SDXL_TIME_EMBED_DIM + TINY_SDXL_POOLED_DIM,
}


def build_tiny_sdxl(out: str | Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionXLPipeline (diffusers layout) with random weights to ``out``.

    Two CLIP text encoders (the second with a projection, whose pooled output feeds SDXL's
    added conditioning), a UNet with ``addition_embed_type="text_time"``, the tiny SD VAE with
    SDXL's scaling factor, and SDXL's default Euler scheduler. A foundation of the base-model
    axis (#17); like build_tiny_sd, 64 px renders use 32 px latents.
    """
    import shutil

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer_dir = write_clip_tokenizer(out / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    tokenizer_2 = CLIPTokenizer.from_pretrained(tokenizer_dir)
    unet = UNet2DConditionModel(**TINY_SDXL_UNET)
    vae = _tiny_vae(4, scaling_factor=0.13025, force_upcast=True)
    text_encoder = CLIPTextModel(_tiny_clip_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(
        _tiny_clip_text_config(
            tokenizer_2, projection_dim=TINY_SDXL_POOLED_DIM, hidden_size=TINY_SDXL_CLIP_G_WIDTH
        )
    )
    # stabilityai/stable-diffusion-xl-base-1.0's scheduler config.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type="epsilon",
        use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(tokenizer_dir)
    _write_marker(out)
    logger.info("tiny SDXL pipeline with random weights written to %s", out)
    return out


# A few lines of prompt-like text: the tiny T5 tokenizer's Unigram model is trained on them.
_T5_TRAINING_TEXT = (
    "a photo of a woman smiling, close up portrait",
    "a picture of a man wearing a suit and tie in front of a white background",
    "headshot of a person sitting, black and blue shirt",
    "ohwx woman, sks man, zwx person standing outdoors",
)


def write_t5_tokenizer(out: Path, vocab_size: int = 256) -> Path:
    """Write a T5 tokenizer whose Unigram model is trained offline on a few lines of text.

    ``tokenizers``' UnigramTrainer plays sentencepiece's part (no extra dependency); every
    printable ASCII character is in the vocab, so any prompt tokenizes without ``<unk>``.
    T5's special tokens keep their ids (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2).
    """
    import string

    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer
    from transformers import T5Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    trainer_tokenizer = Tokenizer(Unigram())
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁")
    trainer = UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        show_progress=False,
    )
    trainer_tokenizer.train_from_iterator(_T5_TRAINING_TEXT, trainer=trainer)
    vocab = [tuple(item) for item in json.loads(trainer_tokenizer.to_str())["model"]["vocab"]]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_flux(out: str | Path, seed: int = 0) -> Path:
    """Save a tiny FluxPipeline (diffusers layout) with random weights to ``out``.

    A FluxTransformer2DModel with one double- and one single-stream block and a guidance
    embedding (as FLUX.1-dev, guidance-distilled), a CLIP text encoder (pooled), a tiny T5
    encoder with an offline-trained tokenizer (:func:`write_t5_tokenizer`), a VAE with FLUX's
    16 latent channels, scaling and shift factors, and FLUX.1-dev's flow-matching Euler
    scheduler. A foundation of the base-model axis (#17); the VAE downsamples by 2, so 64 px
    renders use 32 px latents packed into 16 x 16 tokens.
    """
    import shutil

    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    out = Path(out)
    torch.manual_seed(seed)
    clip_dir = write_clip_tokenizer(out / "_tokenizer_src")
    t5_dir = write_t5_tokenizer(out / "_tokenizer_2_src")
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    tokenizer_2 = T5Tokenizer.from_pretrained(t5_dir)
    text_encoder = CLIPTextModel(_tiny_clip_text_config(tokenizer))
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX's T5-XXL
            is_encoder_decoder=False,
            use_cache=False,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
        )
    )
    latent_channels = 16
    # FLUX.1's VAE: 16 channels, no quant convs, latents = (z - shift) * scale.
    vae = _tiny_vae(
        latent_channels,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=latent_channels * 4,  # 2 x 2 latent patches packed into one token
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_encoder_2.config.d_model,
        pooled_projection_dim=text_encoder.config.hidden_size,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    # black-forest-labs/FLUX.1-dev's scheduler config.
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(clip_dir)
    shutil.rmtree(t5_dir)
    _write_marker(out)
    logger.info("tiny FLUX.1 pipeline with random weights written to %s", out)
    return out
