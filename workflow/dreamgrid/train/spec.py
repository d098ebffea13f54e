"""TrainSpec: every setting of one training job (one arm, one epoch), checked up front.

The spec has no hyperparameter defaults: they live in the config schema and reach the job
through the spec file the workflow writes. Conflicting settings fail in ``__post_init__``.
Importing this module needs only the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamgrid.buckets import check_bucket_settings
from dreamgrid.errors import SpecError

ARM_PATTERN = re.compile(r"[a-z0-9_-]+")
MIXED_PRECISION = ("no", "fp16", "bf16")
# Each job trains one epoch, so a schedule that needs the total number of steps (cosine,
# linear decay) would change when epochs are added; only step-count-free ones are allowed.
LR_SCHEDULERS = ("constant",)
_PATH_FIELDS = (
    "base_model",
    "instance_dir",
    "captions",
    "reg_dir",
    "previous_meta",
    "state",
    "cache_dir",
    "out_checkpoint",
)
# Fields that say where files go, not what is trained: left out of the fingerprint that ties a
# resume state to the settings that made it.
_LOCATION_FIELDS = ("epoch", "previous_meta", "state", "cache_dir", "out_checkpoint")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
REG_MODES = ("kohya", "paired")
METHODS = ("full", "lora")
_BOOL_FIELDS = (
    "gradient_checkpointing",
    "train_text_encoder",
    "cache_latents",
    "cache_text_embeddings",
)
OPTIMIZERS = ("adamw", "adamw8bit")
ASPECT_RATIOS = ("center_crop", "buckets")
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

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if isinstance(self.lora_target_modules, list):  # JSON gives lists
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))
        self._check_types()
        self._check_values()
        self._check_resume()

    def _check_types(self) -> None:
        for name in ("resolution", "repeats", "batch_size", "seed", "epoch", "passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(f"train spec {self.arm}: {name} must be an integer, got {value!r}.")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"train spec {self.arm}: {name} must be true or false.")
        for name in ("token", "class_word", "arm"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise SpecError(f"train spec: {name} must be a non-empty string, got {value!r}.")

    def _check_values(self) -> None:
        def fail(message: str) -> None:
            raise SpecError(f"train spec {self.arm}: {message}")

        if not ARM_PATTERN.fullmatch(self.arm):
            fail("arm id must match [a-z0-9_-]+.")
        if self.epoch < 1:
            fail(f"epoch must be >= 1, got {self.epoch}.")
        if self.repeats < 1:
            fail(f"repeats must be >= 1, got {self.repeats}.")
        if self.batch_size < 1:
            fail(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.passes < 1:
            fail(f"passes must be >= 1, got {self.passes}.")
        if self.reg_mode not in REG_MODES:
            fail(f"reg_mode must be one of {REG_MODES}, got {self.reg_mode!r}.")
        self._check_method(fail)
        self._check_buckets(fail)
        if self.optimizer not in OPTIMIZERS:
            fail(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if not _finite(self.noise_offset) or self.noise_offset < 0:
            fail(f"noise_offset must be a number >= 0, got {self.noise_offset!r}.")
        gamma = self.min_snr_gamma
        if gamma is not None and (not _finite(gamma) or gamma <= 0):
            fail(f"min_snr_gamma must be a positive number or null, got {gamma!r}.")
        if self.cache_latents and self.cache_dir is None:
            fail("cache_latents needs cache_dir (the workflow sets results/cache/latents).")
        if self.resolution < 8 or self.resolution % 8:
            fail(f"resolution must be a positive multiple of 8, got {self.resolution}.")
        if self.seed < 0:
            fail(f"seed must be >= 0, got {self.seed}.")
        positive = {
            "learning_rate": self.learning_rate,
            "adam_epsilon": self.adam_epsilon,
            "max_grad_norm": self.max_grad_norm,
        }
        non_negative = {
            "prior_loss_weight": self.prior_loss_weight,
            "adam_weight_decay": self.adam_weight_decay,
        }
        for name, value in positive.items():
            if not _finite(value) or value <= 0:
                fail(f"{name} must be a positive number, got {value!r}.")
        for name, value in non_negative.items():
            if not _finite(value) or value < 0:
                fail(f"{name} must be a number >= 0, got {value!r}.")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if not _finite(value) or not 0 <= value < 1:
                fail(f"{name} must be in [0, 1), got {value!r}.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            fail(
                f"lr_scheduler {self.lr_scheduler!r} is not supported; use one of {LR_SCHEDULERS}."
            )
        if self.mixed_precision not in MIXED_PRECISION:
            fail(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}.")
        if self.save_precision not in SAVE_PRECISIONS:
            fail(f"save_precision must be one of {SAVE_PRECISIONS}, got {self.save_precision!r}.")
        for name in ("out_checkpoint", "state"):
            if getattr(self, name).suffix != ".safetensors":
                fail(f"{name} must end in .safetensors, got {getattr(self, name)}.")
        if self.out_checkpoint == self.state:
            fail("out_checkpoint and state must be different files.")

    def _check_method(self, fail: Any) -> None:
        if self.method not in METHODS:
            fail(f"method must be one of {METHODS}, got {self.method!r}.")
        lora = {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_target_modules": self.lora_target_modules,
        }
        if self.method == "lora":
            missing = [k for k, v in lora.items() if v is None]
            if missing:
                fail(f"method lora needs {', '.join(missing)} (config section lora).")
            if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int):
                fail(f"lora_rank must be an integer, got {self.lora_rank!r}.")
            if self.lora_rank < 1:
                fail(f"lora_rank must be >= 1, got {self.lora_rank}.")
            if not _finite(self.lora_alpha) or self.lora_alpha <= 0:
                fail(f"lora_alpha must be a positive number, got {self.lora_alpha!r}.")
            if not self.lora_target_modules or not all(
                isinstance(m, str) and m for m in self.lora_target_modules
            ):
                fail("lora_target_modules must be a non-empty list of module names.")
            if self.train_text_encoder:
                fail("method lora trains UNet adapters only; set train_text_encoder false.")
        elif any(v is not None for v in lora.values()):
            fail("lora_* settings are for method lora; leave them null for a full fine-tune.")
        te = {"text_encoder_lr": self.text_encoder_lr, "stop": self.text_encoder_stop_epoch}
        if not self.train_text_encoder and any(v is not None for v in te.values()):
            fail("text_encoder_lr / text_encoder_stop_epoch need train_text_encoder true.")
        if self.text_encoder_lr is not None and (
            not _finite(self.text_encoder_lr) or self.text_encoder_lr <= 0
        ):
            fail(f"text_encoder_lr must be a positive number, got {self.text_encoder_lr!r}.")
        stop = self.text_encoder_stop_epoch
        if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int) or stop < 1):
            fail(f"text_encoder_stop_epoch must be an integer >= 1, got {stop!r}.")

    def _check_buckets(self, fail: Any) -> None:
        if self.aspect_ratio not in ASPECT_RATIOS:
            fail(f"aspect_ratio must be one of {ASPECT_RATIOS}, got {self.aspect_ratio!r}.")
        values = [getattr(self, name) for name in _BUCKET_FIELDS]
        if self.aspect_ratio == "center_crop":
            if any(v is not None for v in values):
                fail("bucket_* settings are for aspect_ratio buckets; leave them null.")
            return
        for name, value in zip(_BUCKET_FIELDS, values):
            if isinstance(value, bool) or not isinstance(value, int):
                fail(f"aspect_ratio buckets needs {name} as an integer, got {value!r}.")
        problem = check_bucket_settings(self.resolution, *values)
        if problem:
            fail(problem)

    def text_encoder_trains(self, epoch: int) -> bool:
        """Whether the text encoder is updated in ``epoch`` (until its stop epoch)."""
        stop = self.text_encoder_stop_epoch
        return self.train_text_encoder and (stop is None or epoch <= stop)

    def _check_resume(self) -> None:
        # previous_meta None with epoch > 1 is allowed only inside the job (replaying epochs).
        if self.epoch == 1 and self.previous_meta is not None:
            raise SpecError(
                f"train spec {self.arm}: epoch 1 starts from the base model; remove previous_meta."
            )

    def check_job(self) -> None:
        """What a job's spec (not a replayed epoch) must also satisfy."""
        if self.epoch > 1 and self.previous_meta is None:
            raise SpecError(
                f"train spec {self.arm}: epoch {self.epoch} continues epoch "
                f"{self.epoch - 1}; set previous_meta to its checkpoint's .json."
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
        return {k: v for k, v in self.to_dict().items() if k not in leave_out}

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

    def to_json(self) -> str:
        """The spec as a JSON document (keys sorted, so equal specs give equal files)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "train spec") -> TrainSpec:
        """Build a spec from a dict; unknown or missing keys raise SpecError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data))
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown keys {unknown}")
            if missing:
                parts.append(f"missing keys {missing}")
            raise SpecError(f"{source}: {'; '.join(parts)}. Regenerate the spec with the workflow.")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str, source: str = "train spec") -> TrainSpec:
        """Parse a spec written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"{source}: not valid JSON ({err}).") from err
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a JSON object.")
        return cls.from_dict(data, source=source)

    @classmethod
    def read(cls, path: str | Path) -> TrainSpec:
        """Read a spec file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise SpecError(f"{path}: cannot read the train spec ({err}).") from err
        return cls.from_json(text, source=str(path))


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
        **{**training, **params["method"]},
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
