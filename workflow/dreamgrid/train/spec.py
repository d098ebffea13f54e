"""TrainSpec: every setting of one training job (one arm, one epoch), checked up front.

The config schema owns each setting's type, range and default; the workflow validates the
config before any job and builds each job's spec from the rule's params (:func:`job_spec`,
which the preflight calls too). ``__post_init__`` checks only what the schema cannot see: rules
between settings (LoRA settings only with LoRA, bucket sizes only with buckets, the text
encoder's own rate only when it trains, ``previous_meta`` only after epoch 1) and the values the
workflow derives per job (arm id, epoch, passes, file names). Importing this module needs only
the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from dreamgrid.buckets import check_bucket_settings
from dreamgrid.errors import SpecError
from dreamgrid.families import FAMILIES

# Dots come from axes.settings value names (cfg7.5); an id never starts with one.
ARM_PATTERN = re.compile(r"[a-z0-9_][a-z0-9_.-]*")
_PATH_FIELDS = (
    "base_model",
    "instance_dir",
    "captions",
    "reg_dir",
    "previous_meta",
    "state",
    "cache_dir",
    "out_checkpoint",
    "vae",
)
# Fields that say where files go, not what is trained: left out of the fingerprint that ties a
# resume state to the settings that made it.
_LOCATION_FIELDS = ("epoch", "previous_meta", "state", "cache_dir", "out_checkpoint")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
REG_MODES = ("kohya", "paired")
#: Timestep sampling / loss weighting of flow-matching training (diffusers' SD3 and FLUX
#: DreamBooth scripts' ``--weighting_scheme``).
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
#: Settings only FLUX training reads. Other families leave them out of their fingerprint and
#: checkpoint metadata, so adding them changed no SD 1.5 resume state or checkpoint .json.
FLUX_FIELDS = (
    "weighting_scheme",
    "logit_mean",
    "logit_std",
    "mode_scale",
    "flux_guidance",
    "max_sequence_length",
)
_BUCKET_FIELDS = ("bucket_min_size", "bucket_max_size", "bucket_step")
# Fields a checkpoint's metadata has never recorded: input and output paths, optimizer and
# memory details, bucket sizes. Recording one more would change every checkpoint's .json.
_NOT_IN_CHECKPOINT = (
    *_PATH_FIELDS,
    "adam_beta1",
    "adam_beta2",
    "adam_weight_decay",
    "adam_epsilon",
    "max_grad_norm",
    "gradient_checkpointing",
    "cache_latents",
    "cache_text_embeddings",
    *_BUCKET_FIELDS,
)


@dataclass(frozen=True)
class TrainSpec:
    """One DreamBooth training job: train epoch ``epoch`` of arm ``arm``.

    Paths may be given as ``str``; they are stored as ``Path``. ``None`` for ``captions`` means
    no captions (every caption is ``"<token> <class_word>"``), for ``reg_dir`` no
    regularization. ``previous_meta`` (epoch e-1's checkpoint JSON) must be ``None`` exactly
    when ``epoch == 1``. ``state`` is the arm's one resume file (full-precision weights and
    optimizer state of the last finished epoch), rewritten by every epoch.
    """

    arm: str
    base_model: Path
    instance_dir: Path
    captions: Path | None
    token: str
    class_word: str
    reg_dir: Path | None
    prior_loss_weight: float
    reg_mode: str
    passes: int
    resolution: int
    repeats: int
    batch_size: int
    learning_rate: float
    lr_scheduler: str
    adam_beta1: float
    adam_beta2: float
    adam_weight_decay: float
    adam_epsilon: float
    max_grad_norm: float
    seed: int
    epoch: int
    previous_meta: Path | None
    state: Path
    mixed_precision: str
    gradient_checkpointing: bool
    train_text_encoder: bool
    save_precision: str
    method: str
    lora_rank: int | None
    lora_alpha: float | None
    lora_target_modules: tuple[str, ...] | None
    text_encoder_lr: float | None
    text_encoder_stop_epoch: int | None
    optimizer: str
    noise_offset: float
    min_snr_gamma: float | None
    cache_latents: bool
    cache_text_embeddings: bool
    cache_dir: Path | None
    aspect_ratio: str
    bucket_min_size: int | None
    bucket_max_size: int | None
    bucket_step: int | None
    out_checkpoint: Path
    # The base model's family (dreamgrid.families): picks the trainer module
    # dreamgrid.train.<family>. Detected from the model by the workflow, never guessed here.
    family: str = "sd15"
    # A diffusers AutoencoderKL folder that replaces the base model's VAE in training (SDXL:
    # e.g. madebyollin/sdxl-vae-fp16-fix, which runs in fp16 where SDXL's own VAE overflows).
    vae: Path | None = None
    # FLUX.1 only (FLUX_FIELDS; defaults as diffusers' train_dreambooth_lora_flux.py):
    # timestep sampling and loss weighting of the flow-matching objective, the guidance
    # value fed to a guidance-distilled transformer while training, and T5's token count.
    weighting_scheme: str = "none"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    flux_guidance: float = 3.5
    max_sequence_length: int = 512

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if isinstance(self.lora_target_modules, list):  # the job's params give lists
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))
        self._check_job()
        self._check_family()
        self._check_method()
        self._check_buckets()
        self._check_resume()

    def _check_family(self) -> None:
        if self.family not in FAMILIES:
            self._fail(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}.")
        if self.family == "sdxl" and self.train_text_encoder:
            self._fail(
                "training the text encoders of SDXL is not supported yet; "
                "set training.train_text_encoder false for SDXL arms."
            )
        if self.vae is not None and self.family != "sdxl":
            self._fail(f"training.vae is for SDXL base models; this one is {self.family}.")
        if self.weighting_scheme not in WEIGHTING_SCHEMES:
            self._fail(
                f"weighting_scheme must be one of {', '.join(WEIGHTING_SCHEMES)}, "
                f"got {self.weighting_scheme!r}."
            )
        if self.family == "flux":
            self._check_flux()

    def _check_flux(self) -> None:
        """What FLUX training refuses: options of the DDPM objective, and training the text
        encoders (diffusers' FLUX script keeps T5 frozen and caches its embeddings)."""
        if self.noise_offset:
            self._fail(
                "noise_offset is for the DDPM objective (SD 1.5, SDXL); FLUX trains with flow "
                "matching. Set training.noise_offset 0 for the FLUX base model."
            )
        if self.min_snr_gamma is not None:
            self._fail(
                "min_snr_gamma is for the DDPM objective; FLUX weights its flow-matching loss "
                "with training.weighting_scheme. Set min_snr_gamma null for the FLUX base model."
            )
        if self.train_text_encoder:
            self._fail(
                "FLUX trains the transformer only; its CLIP and T5 text encoders stay frozen "
                "with their embeddings cached. Set training.train_text_encoder false."
            )
        if self.max_sequence_length < 1 or self.max_sequence_length > 512:
            self._fail(f"max_sequence_length must be 1..512 (T5), got {self.max_sequence_length}.")

    def _fail(self, message: str) -> NoReturn:
        raise SpecError(f"train spec {self.arm}: {message}")

    def _check_job(self) -> None:
        """Values the workflow derives for each job (arm id, epoch, passes, file names)."""
        if not isinstance(self.arm, str) or not ARM_PATTERN.fullmatch(self.arm):
            raise SpecError(f"train spec: arm id {self.arm!r} must match [a-z0-9_][a-z0-9_.-]*.")
        for name in ("epoch", "passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                self._fail(f"{name} must be an integer, got {value!r}.")
            if value < 1:
                self._fail(f"{name} must be >= 1, got {value}.")
        for name in ("out_checkpoint", "state"):
            if getattr(self, name).suffix != ".safetensors":
                self._fail(f"{name} must end in .safetensors, got {getattr(self, name)}.")
        if self.out_checkpoint == self.state:
            self._fail("out_checkpoint and state must be different files.")
        if self.cache_latents and self.cache_dir is None:
            self._fail("cache_latents needs cache_dir (the workflow sets results/cache/latents).")

    def _check_method(self) -> None:
        lora = {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_target_modules": self.lora_target_modules,
        }
        if self.method == "lora":
            missing = [k for k, v in lora.items() if v is None]
            if missing:
                self._fail(f"method lora needs {', '.join(missing)} (config section lora).")
            if self.train_text_encoder:
                self._fail("method lora trains UNet adapters only; set train_text_encoder false.")
        elif any(v is not None for v in lora.values()):
            self._fail("lora_* settings are for method lora; leave them null for a full fine-tune.")
        te = {"text_encoder_lr": self.text_encoder_lr, "stop": self.text_encoder_stop_epoch}
        if not self.train_text_encoder and any(v is not None for v in te.values()):
            self._fail("text_encoder_lr / text_encoder_stop_epoch need train_text_encoder true.")

    def _check_buckets(self) -> None:
        values = [getattr(self, name) for name in _BUCKET_FIELDS]
        if self.aspect_ratio != "buckets":
            if any(v is not None for v in values):
                self._fail("bucket_* settings are for aspect_ratio buckets; leave them null.")
            return
        for name, value in zip(_BUCKET_FIELDS, values):
            if isinstance(value, bool) or not isinstance(value, int):
                self._fail(f"aspect_ratio buckets needs {name} as an integer, got {value!r}.")
        problem = check_bucket_settings(self.resolution, *values)
        if problem:
            self._fail(problem)

    def text_encoder_trains(self, epoch: int) -> bool:
        """Whether the text encoder is updated in ``epoch`` (until its stop epoch)."""
        stop = self.text_encoder_stop_epoch
        return self.train_text_encoder and (stop is None or epoch <= stop)

    def _check_resume(self) -> None:
        # previous_meta None with epoch > 1 is allowed only inside the job (replaying epochs).
        if self.epoch == 1 and self.previous_meta is not None:
            self._fail("epoch 1 starts from the base model; remove previous_meta.")

    def check_job(self) -> None:
        """What a job's spec (not a replayed epoch) must also satisfy."""
        if self.epoch > 1 and self.previous_meta is None:
            self._fail(
                f"epoch {self.epoch} continues epoch {self.epoch - 1}; set previous_meta to its "
                "checkpoint's .json."
            )

    def fingerprint(self) -> str:
        """Hash of every setting that changes what the epochs compute (not where files go).

        A resume state records it; a state made with other settings is never resumed from.
        """
        import hashlib

        text = json.dumps(self._settings(leave_out=_LOCATION_FIELDS), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def checkpoint_settings(self) -> dict[str, Any]:
        """The settings a checkpoint's metadata records (JSON-able; paths, optimizer and
        memory details and bucket sizes left out)."""
        return self._settings(leave_out=_NOT_IN_CHECKPOINT)

    def _settings(self, leave_out: tuple[str, ...]) -> dict[str, Any]:
        settings = {k: v for k, v in self.to_dict().items() if k not in leave_out}
        if settings.get("vae", "") is None:
            # No separate VAE: fingerprints stay those of specs made before the field existed.
            del settings["vae"]
        if self.family != "flux":
            for name in FLUX_FIELDS:
                settings.pop(name, None)
        return settings

    @property
    def regularization(self) -> bool:
        """Whether class (regularization) images are mixed in."""
        return self.reg_dir is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths as strings)."""
        out = dataclasses.asdict(self)
        if out["lora_target_modules"] is not None:
            out["lora_target_modules"] = list(out["lora_target_modules"])
        for name in _PATH_FIELDS:
            if out[name] is not None:
                out[name] = str(out[name])
        return out


def job_spec(
    params: dict[str, Any],
    inputs: Any,
    *,
    base_model: str | Path,
    epoch: int,
    out_checkpoint: str | Path,
) -> TrainSpec:
    """The spec of one ``train_dreambooth`` job from the rule's params and inputs.

    The rule's shim and the preflight both build specs here, so the preflight refuses
    exactly what a job would. ``params`` has the rule's param names (``arm``, ``training``,
    ``method``, ``passes``, ``state``, ``cache_dir``, ``class_word``); ``inputs`` its input
    names (``images``, optional ``captions``, ``reg``, ``previous_meta``).
    """
    arm = params["arm"]
    training = dict(params["training"])
    training["seed"] += int(arm.get("replicate", 1)) - 1  # each training run its own seed
    return TrainSpec(
        arm=arm["arm"],
        token=arm["token"],
        class_word=params["class_word"],
        base_model=base_model,
        instance_dir=inputs.get("images"),
        captions=inputs.get("captions"),
        reg_dir=inputs.get("reg"),
        epoch=epoch,
        previous_meta=inputs.get("previous_meta"),
        state=params["state"],
        passes=params["passes"],
        cache_dir=params["cache_dir"],
        out_checkpoint=out_checkpoint,
        family=params.get("family", "sd15"),
        **{**training, **params["method"]},
    )
