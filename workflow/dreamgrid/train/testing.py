"""TrainSpecs for tests and benchmarks on the tiny random-weight model (dreamgrid.tiny), and a
spec's training job run in its own process through the rule's shim, as Snakemake runs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dreamgrid.train.spec import TrainSpec


def tiny_train_spec(base_model: Path, instance_dir: Path, out: Path, **changes: Any) -> TrainSpec:
    """Epoch 1 of a plain full fine-tune of a tiny model at 64 px, writing under ``out``.

    For tests and benchmarks (the workflow builds specs from the config schema's defaults):
    one place that names every TrainSpec field, so a new field is added once. ``changes``
    override any field.
    """
    out = Path(out)
    fields = {
        "arm": "ohwx-noreg-nocaptions",
        "base_model": base_model,
        "instance_dir": instance_dir,
        "captions": None,
        "token": "ohwx",
        "class_word": "woman",
        "reg_dir": None,
        "prior_loss_weight": 1.0,
        "reg_mode": "kohya",
        "passes": 1,
        "resolution": 64,
        "repeats": 1,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "lr_scheduler": "constant",
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_weight_decay": 1e-2,
        "adam_epsilon": 1e-8,
        "max_grad_norm": 1.0,
        "seed": 7,
        "epoch": 1,
        "previous_meta": None,
        "state": out / "state" / "resume.safetensors",
        "mixed_precision": "no",
        "gradient_checkpointing": False,
        "train_text_encoder": False,
        "save_precision": "fp16",
        "method": "full",
        "lora_rank": None,
        "lora_alpha": None,
        "lora_target_modules": None,
        "text_encoder_lr": None,
        "text_encoder_stop_epoch": None,
        "optimizer": "adamw",
        "noise_offset": 0.0,
        "min_snr_gamma": None,
        "cache_latents": False,
        "cache_text_embeddings": False,
        "cache_dir": None,
        "aspect_ratio": "center_crop",
        "bucket_min_size": None,
        "bucket_max_size": None,
        "bucket_step": None,
        "out_checkpoint": out / "epoch-1.safetensors",
    }
    return TrainSpec(**{**fields, **changes})


def next_epoch(spec: TrainSpec, out: Path, state: Path | None = None) -> TrainSpec:
    """The arm's next epoch, writing into ``out`` (resume state ``state``, default the same)."""
    e = spec.epoch + 1
    return dataclasses.replace(
        spec,
        epoch=e,
        previous_meta=spec.out_checkpoint.with_suffix(".json"),
        state=state or spec.state,
        out_checkpoint=out / f"epoch-{e}.safetensors",
    )


def copy_state(spec: TrainSpec, out: Path) -> Path:
    """A private copy of the arm's resume state (so two branches can continue from it)."""
    out.mkdir(parents=True, exist_ok=True)
    copy = out / "resume.safetensors"
    copy.write_bytes(spec.state.read_bytes())
    return copy


# --- a training job in its own process, through the workflow's shim ---------------------------

#: The train_dreambooth rule's script: what every training job runs.
SHIM = Path(__file__).resolve().parents[2] / "scripts" / "train_dreambooth.py"


def job_of(spec: TrainSpec) -> dict[str, Any]:
    """The train_dreambooth job whose shim builds ``spec`` (:func:`~dreamgrid.train.spec.job_spec`
    inverted): its params, input, output and wildcards as the rule passes them, JSON-able."""
    fields = spec.to_dict()
    inputs = {"base": fields.pop("base_model"), "images": fields.pop("instance_dir")}
    for field, name in (
        ("captions", "captions"),
        ("reg_dir", "reg"),
        ("previous_meta", "previous_meta"),
    ):
        value = fields.pop(field)
        if value is not None:
            inputs[name] = value
    method = {
        k: fields.pop(k) for k in ("method", "lora_rank", "lora_alpha", "lora_target_modules")
    }
    params = {
        "arm": {"arm": fields.pop("arm"), "token": fields.pop("token")},
        "class_word": fields.pop("class_word"),
        "state": fields.pop("state"),
        "passes": fields.pop("passes"),
        "cache_dir": fields.pop("cache_dir"),
        "family": fields.pop("family"),
        "method": method,
    }
    epoch, checkpoint = fields.pop("epoch"), fields.pop("out_checkpoint")
    return {
        "params": {**params, "training": fields},
        "input": inputs,
        "output": {"checkpoint": checkpoint},
        "wildcards": {"epoch": str(epoch)},
    }


def shim_command(spec: TrainSpec, log: Path) -> list[str]:
    """A command that trains ``spec`` in a fresh process, as Snakemake runs the job: the rule's
    shim with the job's params, logging to ``log`` (no GPU slot: test_gpus.py tests those)."""
    import json
    import sys

    job = {**job_of(spec), "log": [str(log)]}
    code = f"from dreamgrid.train.testing import run_shim; run_shim({json.dumps(job)!r})"
    return [sys.executable, "-c", code]


def run_shim(job: str) -> None:
    """Run the train_dreambooth shim on ``job`` (JSON from :func:`shim_command`) with a
    stand-in for the ``snakemake`` object Snakemake gives a script."""
    import json
    import runpy

    class Named(dict):
        """Snakemake's Namedlist as the shim uses it: items by attribute or ``get``."""

        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    fields = json.loads(job)
    snakemake = Named(
        {name: Named(fields[name]) for name in ("params", "input", "output", "wildcards")},
        log=fields["log"],
        resources={},
        scriptdir=str(SHIM.parent),
    )
    runpy.run_path(str(SHIM), init_globals={"snakemake": snakemake}, run_name="__main__")
