"""GPU memory a training job and a sampling job will need, estimated before any job runs.

``dreamgrid check`` prints, per arm, what training and sampling should take and refuses a grid
that cannot fit the GPU it sees (or the one named by ``--gpu-memory``). The parts that follow
from the parameter counts (weights, gradients, optimizer states) are exact arithmetic; the
activations and the framework overhead are ESTIMATES from published measurements (cited where
their coefficients are defined below), not measured by dreamgrid on a GPU yet
(benchmarks/device_check.sh is where those measurements will be recorded).

Parameter counts come from the model itself when it is on disk (:func:`count_folder` builds
each component of a diffusers folder on the ``meta`` device from its config.json: no weights
are read, no memory is used), else from the published sizes in :data:`PUBLISHED`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from dreamgrid.errors import SpecError

FAMILIES = ("sd15", "sdxl", "flux")
GIB = 1024**3

#: Published parameter counts per family and component (diffusers folder names). Each equals
#: ``sum(p.numel())`` of the component built on the meta device from the model's published
#: config, written out below in :data:`CONFIGS` (tests/unit/test_memory.py checks it):
#: SD 1.5 = stable-diffusion-v1-5 (unet 859.52M, CLIP ViT-L/14 text encoder 123.06M, VAE
#: 83.65M); SDXL = stable-diffusion-xl-base-1.0 (unet 2567.46M, CLIP ViT-L 123.06M, OpenCLIP
#: ViT-bigG/14 with projection 694.66M, VAE 83.65M); FLUX.1-dev (transformer 11901.41M with
#: its guidance embedder, T5-XXL v1.1 encoder 4762.31M, CLIP ViT-L 123.06M, 16-channel VAE
#: 83.82M).
PUBLISHED: dict[str, dict[str, int]] = {
    "sd15": {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863},
    "sdxl": {
        "unet": 2_567_463_684,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
        "vae": 83_653_863,
    },
    "flux": {
        "transformer": 11_901_408_320,
        "text_encoder": 123_060_480,
        "text_encoder_2": 4_762_310_656,
        "vae": 83_819_683,
    },
}

#: The denoiser each family trains (the rest is frozen unless a text encoder is trained).
DENOISER = {"sd15": "unet", "sdxl": "unet", "flux": "transformer"}

_CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
}

#: The published configs (the parts that set a parameter's shape), as (library, class,
#: config). Sources: the model repositories' <component>/config.json (stable-diffusion-v1-5,
#: stabilityai/stable-diffusion-xl-base-1.0, black-forest-labs/FLUX.1-dev, whose
#: text_encoder_2 is google/t5-v1_1-xxl's encoder).
CONFIGS: dict[str, dict[str, tuple[str, str, dict[str, Any]]]] = {
    "sd15": {
        "unet": ("diffusers", "UNet2DConditionModel", {
            "attention_head_dim": 8,
            "block_out_channels": (320, 640, 1280, 1280),
            "cross_attention_dim": 768,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "layers_per_block": 2,
            "sample_size": 64,
        }),
        "text_encoder": ("transformers", "CLIPTextModel", _CLIP_L),
        "vae": ("diffusers", "AutoencoderKL", {**_VAE, "sample_size": 512}),
    },
    "sdxl": {
        "unet": ("diffusers", "UNet2DConditionModel", {
            "addition_embed_type": "text_time",
            "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256,
            "attention_head_dim": (5, 10, 20),
            "block_out_channels": (320, 640, 1280),
            "cross_attention_dim": 2048,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "layers_per_block": 2,
            "projection_class_embeddings_input_dim": 2816,
            "sample_size": 128,
            "transformer_layers_per_block": (1, 2, 10),
            "use_linear_projection": True,
        }),
        "text_encoder": ("transformers", "CLIPTextModel", _CLIP_L),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", {
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_attention_heads": 20,
            "num_hidden_layers": 32,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "hidden_act": "gelu",
            "projection_dim": 1280,
        }),
        "vae": ("diffusers", "AutoencoderKL", {**_VAE, "sample_size": 1024}),
    },
    "flux": {
        "transformer": ("diffusers", "FluxTransformer2DModel", {
            "patch_size": 1,
            "in_channels": 64,
            "num_layers": 19,
            "num_single_layers": 38,
            "attention_head_dim": 128,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,
            "pooled_projection_dim": 768,
            "guidance_embeds": True,
            "axes_dims_rope": (16, 56, 56),
        }),
        "text_encoder": ("transformers", "CLIPTextModel", _CLIP_L),
        "text_encoder_2": ("transformers", "T5EncoderModel", {
            "d_model": 4096,
            "d_ff": 10240,
            "d_kv": 64,
            "num_heads": 64,
            "num_layers": 24,
            "vocab_size": 32128,
            "feed_forward_proj": "gated-gelu",
            "is_encoder_decoder": False,
            "use_cache": False,
        }),
        "vae": ("diffusers", "AutoencoderKL", {
            **_VAE,
            "latent_channels": 16,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
            "sample_size": 1024,
        }),
    },
}  # fmt: skip

#: Resolution each family's activation coefficients are given at (its native size).
BASE_RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 1024}

#: Training activations, GiB per image at BASE_RESOLUTION in fp16/bf16 with SDPA attention:
#: (without, with gradient checkpointing). ESTIMATES:
#: - sd15: ShivamShrirao/diffusers examples/dreambooth/README.md, the T4 table (SD 1.4/1.5
#:   UNet, fp16, 8-bit Adam, memory-efficient attention, 512 px): batch 2 minus batch 1 is
#:   13.67 - 11.17 = 2.50 GB without checkpointing and 10.40 - 9.92 = 0.48 GB with it. The rest
#:   of that table agrees within about 0.6 GiB with these parts plus OVERHEAD_GIB, except torch
#:   AdamW (15.79 GB measured, 1.2 GiB above the estimate: the optimizer step's temporaries,
#:   not modelled).
#: - sdxl: kohya-ss/sd-scripts docs/train_SDXL-en.md (full UNet fine-tune at 1024 px, batch 1,
#:   gradient checkpointing, cached latents and text embeddings fits 24 GB) and sd-scripts
#:   PR #1259 (Adafactor with the fused backward pass: 16.4 GB in fp32, 10 GB in bf16 at 1024
#:   px): once the weights (9.6 / 4.8 GiB) and OVERHEAD_GIB are taken off, 3.5-4.7 GiB are
#:   left for activations with checkpointing; 3.5 is used. No measurement without
#:   checkpointing was found: SD 1.5's ratio (5x) is applied.
#: - flux: huggingface.co/blog/flux-qlora (FLUX.1-dev LoRA rank 4 in bf16, 8-bit AdamW,
#:   checkpointing, cached latents and embeddings: 26 GB peak at 512 px) less the bf16
#:   transformer (22.2 GiB) leaves about 2 GiB at 512 px, so 8 GiB at 1024 px. Without
#:   checkpointing: SD 1.5's ratio (5x), as for sdxl.
TRAIN_ACTIVATIONS_GIB = {"sd15": (2.5, 0.5), "sdxl": (17.5, 3.5), "flux": (40.0, 8.0)}

#: Sampling activations, GiB per image of a pipeline call at BASE_RESOLUTION in fp16 (the
#: denoiser's forward with classifier-free guidance, then the VAE decoding the whole batch,
#: which dominates; dreamgrid does not slice the VAE). ESTIMATES, not calibrated on a
#: published measurement: to be replaced by benchmarks/device_check.sh's numbers.
SAMPLE_ACTIVATIONS_GIB = {"sd15": 0.5, "sdxl": 2.0, "flux": 2.0}

#: CUDA context, cuBLAS/cuDNN workspaces and the caching allocator's slack (the ~1.4 GiB the
#: T4 table above leaves once weights, gradients, optimizer and activations are counted).
OVERHEAD_GIB = 1.25

#: Bytes a parameter's optimizer state takes: torch AdamW keeps two fp32 moments;
#: bitsandbytes' 8-bit AdamW two 8-bit moments (its per-block scales are negligible).
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2}

#: Bytes an element takes at each mixed_precision setting (compute dtype).
PRECISION_BYTES = {"no": 4, "fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class Estimate:
    """Bytes of GPU memory by part; :attr:`total` is their sum."""

    frozen_weights: int = 0
    trainable_weights: int = 0
    gradients: int = 0
    optimizer_states: int = 0
    activations: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def parts(self) -> str:
        """``frozen weights 0.4 GiB, ...`` (parts of 0 bytes left out)."""
        return ", ".join(
            f"{f.name.replace('_', ' ')} {gib(getattr(self, f.name))}"
            for f in fields(self)
            if getattr(self, f.name)
        )


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _build(library: str, cls: str, config: dict[str, Any]) -> Any:
    """A component built on the meta device (no memory, no weights)."""
    import torch

    module = __import__(library)
    with torch.device("meta"):
        if library == "transformers":
            model_cls = getattr(module, cls)
            return model_cls(model_cls.config_class(**config))
        return getattr(module, cls).from_config(config)


def _numel(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


@cache
def _published_model(family: str, component: str) -> Any:
    return _build(*CONFIGS[family][component])


def meta_counts(family: str) -> dict[str, int]:
    """Parameters of each component of ``family`` built on the meta device from
    :data:`CONFIGS` (what :data:`PUBLISHED` is checked against)."""
    return {name: _numel(_published_model(family, name)) for name in CONFIGS[family]}


def _folder_component(folder: Path, component: str, library: str, cls: str) -> Any:
    import torch

    path = folder / component
    if library == "transformers":
        import transformers

        model_cls = getattr(transformers, cls)
        config = model_cls.config_class.from_pretrained(str(path))
        with torch.device("meta"):
            return model_cls(config)
    import diffusers

    model_cls = getattr(diffusers, cls)
    with torch.device("meta"):
        return model_cls.from_config(model_cls.load_config(str(path)))


def folder_models(folder: str | Path) -> dict[str, Any]:
    """Each weighted component of a diffusers folder (model_index.json), on the meta device."""
    folder = Path(folder)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise SpecError(f"{folder}: no model_index.json; not a diffusers model folder.")
    index = json.loads(index_file.read_text())
    built = {}
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or len(spec) != 2:
            continue
        library, cls = spec
        if library not in ("diffusers", "transformers") or cls is None:
            continue
        if not (folder / component / "config.json").is_file():
            continue  # tokenizers, schedulers, feature extractors: no weights
        built[component] = _folder_component(folder, component, library, cls)
    return built


def count_folder(folder: str | Path) -> dict[str, int]:
    """Exact parameter counts of the components of a prepared diffusers folder (built on the
    meta device from each component's config.json: nothing is loaded)."""
    return {name: _numel(model) for name, model in folder_models(folder).items()}


def family_of(counts: dict[str, int]) -> str:
    """sd15, sdxl or flux from a folder's components."""
    if "transformer" in counts:
        return "flux"
    return "sdxl" if "text_encoder_2" in counts else "sd15"


def lora_params(denoiser: Any, rank: int, targets: list[str] | tuple[str, ...]) -> int:
    """Parameters of rank-``rank`` LoRA adapters on the ``targets`` layers of ``denoiser`` (as
    peft's LoRA adds them: A is rank x in, B is out x rank; a Conv2d's A takes its kernel).
    Names that match nothing, or match a block, add nothing: the preflight refuses them."""
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=list(targets))
    total = 0
    for name, module in denoiser.named_modules():
        if not name or not check_target_module_exists(config, name):
            continue
        if isinstance(module, torch.nn.Linear):
            total += rank * (module.in_features + module.out_features)
        elif isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += rank * (module.in_channels // module.groups * kernel + module.out_channels)
    return total


@cache
def _published_lora(family: str, rank: int, targets: tuple[str, ...]) -> int:
    return lora_params(_published_model(family, DENOISER[family]), rank, targets)


def estimate_training(
    family: str,
    counts: dict[str, int],
    method: str = "full",
    precision: str = "fp16",
    optimizer: str = "adamw",
    resolution: int | None = None,
    batch_size: int = 1,
    gradient_checkpointing: bool = False,
    train_text_encoder: bool = False,
    lora_rank: int = 4,
    lora_targets: list[str] | tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0"),
    lora_trainable: int | None = None,
    cached_text_embeddings: bool = False,
) -> Estimate:
    """GPU memory of one training job, by part. An ESTIMATE: weights, gradients and optimizer
    states are exact for the counts given; activations and overhead are coefficients from
    published measurements (see :data:`TRAIN_ACTIVATIONS_GIB`).

    As dreamgrid's trainer does it: trained parameters are fp32 masters with fp32 gradients;
    frozen parts (VAE, text encoders unless trained, a LoRA arm's denoiser) sit on the GPU at
    the compute dtype of ``precision``; LoRA trains adapters on ``lora_targets`` of the
    denoiser. Activations scale with batch x (resolution / native resolution)², and double
    in fp32.

    Args:
        family: sd15, sdxl or flux.
        counts: parameters per component (:data:`PUBLISHED` or :func:`count_folder`).
        method: full or lora.
        precision: mixed_precision (no, fp16, bf16).
        optimizer: adamw or adamw8bit.
        resolution: training side in pixels (default: the family's native one).
        batch_size: images per step (class images of paired prior preservation included).
        lora_trainable: the adapters' parameters, when counted already (else from the
            published denoiser's shapes).
        cached_text_embeddings: frozen text encoders are freed once their embeddings are
            cached (diffusers' FLUX and SD3 DreamBooth scripts); dreamgrid's SD 1.5 trainer
            keeps its text encoder on the GPU, so False there.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: one of {', '.join(FAMILIES)}")
    if method not in ("full", "lora"):
        raise ValueError(f"method {method!r}: full or lora")
    denoiser = DENOISER[family]
    compute = PRECISION_BYTES[precision]
    encoders = [name for name in counts if name.startswith("text_encoder")]
    trained = [denoiser] if method == "full" else []
    if train_text_encoder:
        trained += encoders
    trainable = sum(counts[name] for name in trained)
    if method == "lora":
        if lora_trainable is None:
            lora_trainable = _published_lora(family, lora_rank, tuple(lora_targets))
        trainable += lora_trainable
    resident = [n for n in counts if not (cached_text_embeddings and n in encoders)]
    frozen = sum(counts[name] for name in resident if name not in trained)
    side = resolution or BASE_RESOLUTION[family]
    without, with_ = TRAIN_ACTIVATIONS_GIB[family]
    per_image = with_ if gradient_checkpointing else without
    scale = batch_size * (side / BASE_RESOLUTION[family]) ** 2 * compute / 2
    return Estimate(
        frozen_weights=frozen * compute,
        trainable_weights=trainable * 4,
        gradients=trainable * 4,
        optimizer_states=trainable * OPTIMIZER_BYTES[optimizer],
        activations=int(per_image * scale * GIB),
        overhead=int(OVERHEAD_GIB * GIB),
    )


def estimate_sampling(
    family: str,
    counts: dict[str, int],
    precision: str = "fp16",
    width: int | None = None,
    height: int | None = None,
    batch_size: int = 1,
) -> Estimate:
    """GPU memory of one sampling job: every component at ``precision`` (dreamgrid renders in
    fp16 on a GPU), activations per image of a pipeline call scaled by its pixels. An
    ESTIMATE (see :data:`SAMPLE_ACTIVATIONS_GIB`)."""
    base = BASE_RESOLUTION[family]
    compute = PRECISION_BYTES[precision]
    pixels = (width or base) * (height or base) / base**2
    scale = batch_size * pixels * compute / 2
    return Estimate(
        frozen_weights=sum(counts.values()) * compute,
        activations=int(SAMPLE_ACTIVATIONS_GIB[family] * scale * GIB),
        overhead=int(OVERHEAD_GIB * GIB),
    )


def visible_gpu_memory() -> list[int] | None:
    """Total bytes of each visible CUDA device; None when torch sees no CUDA device."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if not torch.cuda.is_available():
        return None
    return [
        torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
    ]


def fits(estimate: Estimate | int, gpu_bytes: int) -> bool:
    """Whether the estimate (or a byte count) fits a GPU of ``gpu_bytes``."""
    total = estimate.total if isinstance(estimate, Estimate) else estimate
    return total <= gpu_bytes


def training_advice(settings: dict[str, Any]) -> list[str]:
    """What would shrink a training job, given the settings it has (config keys)."""
    advice = []
    if not settings.get("gradient_checkpointing"):
        advice.append("training.gradient_checkpointing: true (activations about 5x smaller)")
    if settings.get("optimizer", "adamw") == "adamw":
        advice.append("training.optimizer: adamw8bit (optimizer states 2 instead of 8 bytes a "
                      "parameter)")  # fmt: skip
    if settings.get("mixed_precision", "no") == "no":
        advice.append("training.mixed_precision: bf16 or fp16 (frozen weights and activations "
                      "halved)")  # fmt: skip
    if settings.get("method", "full") == "full":
        advice.append("axes.method: [lora] (trains adapters of a few MB instead of the model)")
    if settings.get("train_text_encoder"):
        advice.append("training.train_text_encoder: false")
    if settings.get("batch_size", 1) > 1:
        advice.append("a smaller training.batch_size")
    advice.append("a smaller training.resolution")
    return advice


def refusal(
    arm: str,
    job: str,
    estimate: Estimate,
    gpu_bytes: int,
    gpu_source: str,
    advice: list[str],
) -> str:
    """One message: the arm, the job, the estimate by part, the GPU's size, what to change."""
    return (
        f"arm {arm}: {job} needs about {gib(estimate.total)} of GPU memory "
        f"({estimate.parts()}), more than the {gib(gpu_bytes)} of {gpu_source}. To fit, set "
        + "; or ".join(advice)
        + ". (Estimates: see README, dreamgrid check.)"
    )


def sampling_advice(sample: dict[str, Any]) -> list[str]:
    advice = []
    if sample.get("batch_size", 1) > 1:
        advice.append("a smaller sample.batch_size")
    advice.append("smaller sample.width and sample.height")
    return advice


def tiny_models() -> dict[str, Any]:
    """dreamgrid's tiny SD model (:mod:`dreamgrid.tiny`) on the meta device, from its configs."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dreamgrid import tiny

    vocab = tiny.tiny_vocab_size()
    # Its tokenizer's start and end tokens are the last two of the vocabulary.
    ids = {"bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1}
    with torch.device("meta"):
        return {
            "text_encoder": CLIPTextModel(
                CLIPTextConfig(**tiny.TINY_TEXT_ENCODER, vocab_size=vocab, **ids)
            ),
            "unet": UNet2DConditionModel(**tiny.TINY_UNET),
            "vae": AutoencoderKL(**tiny.TINY_VAE),
        }


@dataclass
class BaseModel:
    """What the estimates count: the family, parameters per component, the components on
    the meta device (None: the published sizes), and where the counts came from."""

    family: str
    counts: dict[str, int]
    models: dict[str, Any] | None
    source: str


def base_model(
    config: dict[str, Any], prepared: str | Path | None = None, family: str | None = None
) -> BaseModel:
    """The base model's counts: from base_model's folder when it is a local diffusers folder,
    else from the prepared folder (results/models/base) when it exists and is not another
    model (the demo's tiny one beside a real base_model), else from the tiny model's configs,
    else SD 1.5's published sizes (a hub id or single file not yet prepared; today every arm
    trains SD 1.5). A folder prepared from an earlier hub id is counted as it is.

    ``family``: the model's family where the config states it (a hub id not yet downloaded
    is then counted from that family's published sizes); ``base_model`` may be a source or
    ``{source, family}``."""
    from dreamgrid import models, paths
    from dreamgrid.config import TINY, TINY_FAMILIES

    prepared = Path(paths.BASE_MODEL_DIR if prepared is None else prepared)
    source = config["base_model"]
    if isinstance(source, dict):
        source, family = source["source"], family or source.get("family")
    kind = models.classify(source, config["allow_pickle"])
    folder = None
    if kind == "dir":
        folder = Path(source).expanduser()
    elif (prepared / "model_index.json").is_file() and models.is_tiny(prepared) == (kind == "tiny"):
        # A folder another base_model left behind (the demo's tiny one) is not this model.
        folder = prepared
    if folder is not None and (folder / "model_index.json").is_file():
        built = folder_models(folder)
        counts = {name: _numel(model) for name, model in built.items()}
        return BaseModel(family_of(counts), counts, built, f"counted in {folder}")
    if source == TINY:
        built = tiny_models()
        counts = {name: _numel(model) for name, model in built.items()}
        return BaseModel("sd15", counts, built, "counted from the tiny model's configs")
    if source in TINY_FAMILIES:
        # The tiny SDXL and FLUX models are built (random weights, a few MB) and counted.
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            models.TINY_BUILDERS[source](Path(tmp) / "model")
            built = folder_models(Path(tmp) / "model")
        counts = {name: _numel(model) for name, model in built.items()}
        return BaseModel(TINY_FAMILIES[source], counts, built, f"counted in {source}, built here")
    family = family or "sd15"
    names = {"sd15": "SD 1.5", "sdxl": "SDXL", "flux": "FLUX.1"}
    return BaseModel(
        family, dict(PUBLISHED[family]), None, f"from {names[family]}'s published sizes"
    )


@dataclass
class ArmEstimate:
    arm: str
    training: Estimate
    sampling: Estimate
    advice: list[str]


def arm_estimates(
    config: dict[str, Any], base: BaseModel, arms: list[Any] | None = None
) -> list[ArmEstimate]:
    """Training and sampling estimates of every arm of a validated config (or of ``arms``,
    those of one base model, with ``config`` as that base model's arms see it)."""
    from dreamgrid import config as cfg

    training = config["training"]
    lora = config["lora"]
    sample = config["sample"]
    lora_counts: dict[tuple[int, tuple[str, ...]], int] = {}
    sampling = estimate_sampling(
        base.family,
        base.counts,
        precision="fp16",  # sample.py renders in fp16 on a GPU
        width=sample["width"],
        height=sample["height"],
        batch_size=sample["batch_size"],
    )
    estimates = []
    for arm in cfg.expand_arms(config) if arms is None else arms:
        trainable = None
        if arm.method == "lora" and base.models is not None:
            key = (lora["rank"], tuple(lora["target_modules"]))
            if key not in lora_counts:
                lora_counts[key] = lora_params(base.models[DENOISER[base.family]], *key)
            trainable = lora_counts[key]
        paired = training["reg_mode"] == "paired" and arm.regularization != "none"
        batch = training["batch_size"] * (2 if paired else 1)
        settings = {**training, "method": arm.method, "batch_size": batch}
        estimate = estimate_training(
            base.family,
            base.counts,
            method=arm.method,
            precision=training["mixed_precision"],
            optimizer=training["optimizer"],
            resolution=training["resolution"],
            batch_size=batch,
            gradient_checkpointing=training["gradient_checkpointing"],
            train_text_encoder=training["train_text_encoder"],
            lora_rank=lora["rank"],
            lora_targets=tuple(lora["target_modules"]),
            lora_trainable=trainable,
        )
        estimates.append(ArmEstimate(arm.arm, estimate, sampling, training_advice(settings)))
    return estimates


def check_config(
    config: dict[str, Any], gpu_gib: float | None = None, prepared: str | Path | None = None
) -> list[str]:
    """The lines ``dreamgrid check`` prints about memory; refuses an arm that cannot fit.

    Args:
        gpu_gib: the GPU to check against (``--gpu-memory``); default the largest visible.

    Raises:
        SpecError: an arm's training or sampling cannot fit (naming the arm, the estimate
            by part, the GPU and what to change).
    """
    from dreamgrid import config as cfg
    from dreamgrid import paths

    # Each base model's arms with its own model and settings (by_base_model).
    bases, estimates = [], []
    arms = cfg.expand_arms(config)
    for name in cfg.base_models(config):
        view = cfg.base_model_config(config, name) if name else config
        where = None if prepared is None else Path(prepared)
        if name:
            # Beside the one base_model's folder: results/models/base-<name>.
            where = (
                Path(paths.base_model_dir(name))
                if where is None
                else where.parent / (where.name + paths.base_suffix(name))
            )
        base = base_model(view, where)
        bases.append((name, base))
        # Arms of one settings point (axes.settings) with that point's training and sampling.
        points: dict[tuple, list[Any]] = {}
        for arm in arms:
            if arm.base_model == name:
                points.setdefault(arm.settings, []).append(arm)
        for settings, group in points.items():
            seen = cfg.arm_config(config, group[0]) if settings else view
            estimates += arm_estimates(seen, base, group)
    if gpu_gib is not None:
        gpu_bytes, gpu_source = int(gpu_gib * GIB), "--gpu-memory"
    else:
        visible = visible_gpu_memory()
        gpu_bytes = max(visible) if visible else None
        gpu_source = "the largest visible GPU"
    if gpu_bytes is not None:
        for job, attribute in (("training", "training"), ("sampling", "sampling")):
            failing = [e for e in estimates if not fits(getattr(e, attribute), gpu_bytes)]
            if failing:
                first = failing[0]
                advice = first.advice if job == "training" else sampling_advice(config["sample"])
                message = refusal(
                    first.arm, job, getattr(first, attribute), gpu_bytes, gpu_source, advice
                )
                if len(failing) > 1:
                    message += f" {len(failing) - 1} more arm(s) do not fit either."
                raise SpecError(message)
    sources = "; ".join(
        f"{name}: {base.family}, parameters {base.source}" if name else f"parameters {base.source}"
        for name, base in bases
    )
    lines = [f"GPU memory per arm (estimates; {sources}):"]
    lines += [
        f"  arm {e.arm}: train ~{gib(e.training.total)}, sample ~{gib(e.sampling.total)}"
        for e in estimates
    ]
    if gpu_bytes is None:
        lines.append(
            "GPU memory: not checked against a GPU (none visible here); give --gpu-memory GiB "
            "to check against the GPU the jobs will run on"
        )
    else:
        lines.append(f"GPU memory: every arm fits the {gib(gpu_bytes)} of {gpu_source}")
    return lines
