"""Paths and input functions for the Snakemake rules (kept here so they are unit-tested).

Every job gets only the values it uses, so editing one arm's settings reruns that arm alone.
"""

from __future__ import annotations

from typing import Any

from dreamgrid import config as cfg

RESULTS = "results"
BASE_MODEL_DIR = f"{RESULTS}/models/base"
CAPTION_MODEL_DIR = f"{RESULTS}/models/captioner"
PREFLIGHT_CACHE = f"{RESULTS}/preflight/inputs.json"
CAPTIONS = f"{RESULTS}/captions/{{captioner}}/captions.csv"
REG_IMAGES = f"{RESULTS}/regularization/{{reg}}/images"
ARM_DIR = f"{RESULTS}/arms/{{arm}}"
CHECKPOINT = f"{ARM_DIR}/checkpoints/epoch-{{epoch}}.safetensors"
CHECKPOINT_META = f"{ARM_DIR}/checkpoints/epoch-{{epoch}}.json"
LOSS_LOG = f"{ARM_DIR}/checkpoints/epoch-{{epoch}}.loss.csv"
OPTIMIZER_STATE = f"{ARM_DIR}/state/epoch-{{epoch}}.safetensors"
RENDERS = f"{ARM_DIR}/epoch-{{epoch}}/renders"
RENDERS_TABLE = f"{ARM_DIR}/epoch-{{epoch}}/renders.csv"
SCORES = f"{ARM_DIR}/epoch-{{epoch}}/scores.csv"
SCORES_META = f"{ARM_DIR}/epoch-{{epoch}}/scores.meta.json"
REFERENCES = f"{RESULTS}/references/{{model}}-{{detector}}.json"
HISTOGRAM = f"{RESULTS}/plots/histograms/{{arm}}/epoch-{{epoch}}.png"
SCORES_TABLE = f"{RESULTS}/scores.tsv"
SUMMARY = f"{RESULTS}/summary.csv"
SUMMARY_MD = f"{RESULTS}/report/summary.md"

# Training settings that do not change what one epoch's job computes: editing them must not
# rerun existing epochs (more epochs only add jobs).
NOT_PER_EPOCH = ("epochs",)


def canonical(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with sorted keys: Snakemake compares params as text, so reordering keys in
    the config file must not look like an edit and rerun jobs."""
    return {k: canonical(v) if isinstance(v, dict) else v for k, v in sorted(settings.items())}


def count_images(directory: str) -> int:
    """Images in a folder, 0 if it is missing (the preflight check then reports it)."""
    from pathlib import Path

    from dreamgrid.io import IMAGE_SUFFIXES

    folder = Path(directory)
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class Grid:
    """The validated config seen as a grid of arms × epochs, with the rules' input functions."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.arms = {arm.arm: arm for arm in cfg.expand_arms(config)}
        self.epochs = list(range(1, config["training"]["epochs"] + 1))
        self.demo = cfg.is_demo(config)

    @property
    def arm_ids(self) -> list[str]:
        return list(self.arms)

    def arm_params(self, arm: str) -> dict[str, str]:
        """One arm's own settings (token, regularization, captions)."""
        return canonical(self.arms[arm].as_params())

    def training_params(self) -> dict[str, Any]:
        training = self.config["training"]
        return canonical({k: v for k, v in training.items() if k not in NOT_PER_EPOCH})

    def face_params(self) -> dict[str, Any]:
        """Settings that change embeddings or distances (not thresholds: those are reporting)."""
        score = self.config["score"]
        return canonical(
            {k: score[k] for k in ("model", "detector", "metric", "align", "deepface_home")}
        )

    def class_image_params(self) -> dict[str, Any]:
        """Settings of the generated class images; count null = one per training image."""
        settings = dict(self.config["regularization"])
        settings["class_word"] = self.config["subject"]["class_word"]
        settings["resolution"] = self.config["training"]["resolution"]
        if settings["count"] is None:
            settings["count"] = count_images(self.config["subject"]["train_images"])
        return canonical(settings)

    def section(self, name: str) -> dict[str, Any]:
        """A config section as job params (keys sorted)."""
        return canonical(self.config[name])

    # ---- per-run file names (no wildcards) ------------------------------------------------
    def references_file(self) -> str:
        score = self.config["score"]
        return REFERENCES.format(model=score["model"], detector=score["detector"])

    def log_for(self, rule: str) -> str:
        score = self.config["score"]
        return f"{RESULTS}/logs/{rule}/{score['model']}-{score['detector']}.log"

    def benchmark_for(self, rule: str) -> str:
        score = self.config["score"]
        return f"{RESULTS}/benchmarks/{rule}/{score['model']}-{score['detector']}.tsv"

    # ---- input functions ------------------------------------------------------------------
    def caption_inputs(self, wildcards: Any = None) -> dict[str, Any]:
        inputs = {
            "images": self.config["subject"]["train_images"],
            "model": CAPTION_MODEL_DIR,
        }
        if self.config["subject"]["caption_overrides"]:
            inputs["overrides"] = self.config["subject"]["caption_overrides"]
        return inputs

    def train_inputs(self, wildcards: Any) -> dict[str, str]:
        """Inputs of one (arm, epoch) training job: epoch e starts from epoch e-1's outputs."""
        arm = self.arms[wildcards.arm]
        epoch = int(wildcards.epoch)
        inputs = {
            "base": BASE_MODEL_DIR,
            "images": self.config["subject"]["train_images"],
        }
        if arm.captions != "none":
            inputs["captions"] = CAPTIONS.format(captioner=arm.captions)
        if arm.regularization != "none":
            inputs["reg"] = REG_IMAGES.format(reg=arm.regularization)
        if epoch > 1:
            inputs["previous_checkpoint"] = CHECKPOINT.format(arm=arm.arm, epoch=epoch - 1)
            inputs["previous_state"] = OPTIMIZER_STATE.format(arm=arm.arm, epoch=epoch - 1)
        return inputs

    # ---- targets --------------------------------------------------------------------------
    def checkpoints(self, path: str) -> list[str]:
        """``path`` (with {arm} and {epoch}) for every checkpoint of the grid."""
        return [path.format(arm=a, epoch=e) for a in self.arms for e in self.epochs]

    def final_outputs(self) -> list[str]:
        return [SUMMARY, SUMMARY_MD, SCORES_TABLE, *self.checkpoints(HISTOGRAM)]
