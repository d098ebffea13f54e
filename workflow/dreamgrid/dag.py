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
#: VAE latents of training and class images, by content (dreamgrid.train.cache), shared by arms.
LATENT_CACHE = f"{RESULTS}/cache/latents"
#: One arm's training loss against steps (from its epochs' .loss.csv files).
LOSS_CURVE = f"{RESULTS}/plots/loss/{{arm}}.png"
#: What keep_checkpoints: best kept and removed of one arm's checkpoints.
CHECKPOINTS_KEPT = f"{ARM_DIR}/checkpoints/kept.json"
#: The arm's one resume state (full-precision weights + optimizer), rewritten by every epoch.
#: Not a declared output: epoch e+1 reads it, and it must survive the last epoch so that added
#: epochs continue (Snakemake would delete a temp() output no job needs yet).
RESUME_STATE = f"{ARM_DIR}/state/resume.safetensors"
RENDERS = f"{ARM_DIR}/epoch-{{epoch}}/renders"
SCORES = f"{ARM_DIR}/epoch-{{epoch}}/scores.csv"
SCORES_META = f"{ARM_DIR}/epoch-{{epoch}}/scores.meta.json"
REFERENCES = f"{RESULTS}/references/{{model}}-{{detector}}.json"
HISTOGRAM = f"{RESULTS}/plots/histograms/{{arm}}/epoch-{{epoch}}.png"
SCORES_TABLE = f"{RESULTS}/scores.tsv"
SUMMARY = f"{RESULTS}/summary.csv"
SUMMARY_MD = f"{RESULTS}/report/summary.md"

# Training settings that are not passed to every job as they are: `epochs` and
# `keep_checkpoints` do not change what an epoch's job computes (more epochs only add jobs),
# and `match_steps` reaches only the arms it changes, as `passes` (Grid.train_passes).
NOT_PER_EPOCH = ("epochs", "keep_checkpoints", "match_steps")

# ---- issue #4: sample shards, per-shard face embeddings (block added for sampling/scoring) ----
#: One shard of a checkpoint's renders (a folder under renders/) and its render table.
RENDER_SHARD = f"{RENDERS}/shard-{{shard}}"
RENDER_SHARD_TABLE = f"{RENDERS}/shard-{{shard}}.csv"
#: Faces (embeddings, box areas, content hashes) of one shard for one (model, detector).
FACES_SHARD = f"{ARM_DIR}/epoch-{{epoch}}/faces/{{model}}-{{detector}}/shard-{{shard}}.json"
#: Render embeddings by file content hash, shared by all jobs (dreamgrid.faces.EmbeddingCache).
FACE_CACHE = f"{RESULTS}/cache/faces"
# Sample settings that are not a render's settings (each shard gets its own range instead).
NOT_PER_SHARD = ("count", "shard_size")
# ---- end of issue #4 constants -----------------------------------------------------------


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

    def method_params(self, arm: str) -> dict[str, Any]:
        """TrainSpec fields of the arm's method: LoRA settings (and the LoRA learning rate)
        for lora arms, nulls for full arms, so editing `lora` reruns only the lora arms."""
        if self.arms[arm].method != "lora":
            return {
                "method": "full",
                **dict.fromkeys(("lora_rank", "lora_alpha", "lora_target_modules"), None),
            }
        lora = self.config["lora"]
        return {
            "method": "lora",
            "lora_rank": lora["rank"],
            "lora_alpha": float(lora["alpha"]),
            "lora_target_modules": list(lora["target_modules"]),
            "learning_rate": lora["learning_rate"],
        }

    def train_passes(self, arm: str) -> int:
        """Data passes per epoch: 2 for a no-regularization arm under ``match_steps`` when
        regularization doubles the steps (Kohya mode), so its checkpoints fall at the same
        step counts as the regularized arms'; else 1."""
        training = self.config["training"]
        doubled = training.get("reg_mode", "kohya") == "kohya"
        no_reg = self.arms[arm].regularization == "none"
        return 2 if training.get("match_steps", False) and doubled and no_reg else 1

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
            # The small JSON, not the weights: checkpoints may be removed once scored
            # (keep_checkpoints) without making the next epoch's job want them back.
            inputs["previous_meta"] = CHECKPOINT_META.format(arm=arm.arm, epoch=epoch - 1)
        return inputs

    # ---- targets --------------------------------------------------------------------------
    def checkpoints(self, path: str) -> list[str]:
        """``path`` (with {arm} and {epoch}) for every checkpoint of the grid."""
        return [path.format(arm=a, epoch=e) for a in self.arms for e in self.epochs]

    @property
    def keep_checkpoints(self) -> str:
        return self.config["training"].get("keep_checkpoints", "all")

    def arm_checkpoints(self, arm: str) -> dict[int, str]:
        """Epoch -> checkpoint path of one arm (the only files keep_checkpoints removes)."""
        return {e: CHECKPOINT.format(arm=arm, epoch=e) for e in self.epochs}

    def retention_outputs(self) -> list[str]:
        if self.keep_checkpoints != "best":
            return []
        return [CHECKPOINTS_KEPT.format(arm=a) for a in self.arms]

    def arm_loss_logs(self, wildcards: Any) -> list[str]:
        return [LOSS_LOG.format(arm=wildcards.arm, epoch=e) for e in self.epochs]

    def final_outputs(self) -> list[str]:
        return [
            *self.retention_outputs(),
            *[LOSS_CURVE.format(arm=a) for a in self.arms],
            SUMMARY,
            SUMMARY_MD,
            SCORES_TABLE,
            *self.checkpoints(HISTOGRAM),
            *self.report_outputs(),
        ]

    # ---- issue #4: sample shards and several face models ----------------------------------
    def shard_ranges(self) -> list[tuple[int, int]]:
        """Render index ranges ``[start, stop)`` of every checkpoint's shards."""
        from dreamgrid.sample import shard_ranges

        sample = self.config["sample"]
        return shard_ranges(sample["count"], sample["shard_size"], sample["batch_size"])

    def shard_ids(self) -> list[int]:
        return list(range(len(self.shard_ranges())))

    def shard_settings(self, wildcards: Any) -> dict[str, Any]:
        """SampleSettings of one shard: ``count`` is the shard's end, so raising the total
        count changes only the last (partial) shard's params and adds new shards."""
        sample = self.config["sample"]
        settings = {k: v for k, v in sample.items() if k not in NOT_PER_SHARD}
        settings["count"] = self.shard_ranges()[int(wildcards.shard)][1]
        return canonical(settings)

    def shard_first(self, wildcards: Any) -> int:
        """Index of the first render of one shard."""
        return self.shard_ranges()[int(wildcards.shard)][0]

    def face_models(self) -> list[str]:
        """Recognition models scored: ``score.model`` first, then ``score.models``."""
        score = self.config["score"]
        models = [score["model"]]
        for model in score.get("models") or []:
            if model not in models:
                models.append(model)
        return models

    def embed_params(self, wildcards: Any) -> dict[str, Any]:
        """What one (model, detector) embedding job depends on (not the metric)."""
        score = self.config["score"]
        return canonical(
            {
                "model": wildcards.model,
                "detector": score["detector"],
                "align": score["align"],
                "deepface_home": score["deepface_home"],
            }
        )

    def scoring_params(self) -> dict[str, Any]:
        """What merging and scoring one checkpoint depends on (not the thresholds)."""
        score = self.config["score"]
        return canonical(
            {
                **{k: score[k] for k in ("detector", "metric", "align", "deepface_home")},
                "models": self.face_models(),
                "multiple_faces": score["multiple_faces"],
            }
        )

    def references_for(self, model: str) -> str:
        return REFERENCES.format(model=model, detector=self.config["score"]["detector"])

    def score_inputs(self, wildcards: Any) -> dict[str, Any]:
        """Inputs of one checkpoint's score job: every shard's table, and per model (in the
        order of :meth:`face_models`) ``faces_<i>`` (one file per shard) and
        ``references_<i>``."""
        detector = self.config["score"]["detector"]
        where = {"arm": wildcards.arm, "epoch": wildcards.epoch}
        shards = self.shard_ids()
        inputs: dict[str, Any] = {
            "tables": [RENDER_SHARD_TABLE.format(**where, shard=k) for k in shards],
            "checkpoint_meta": CHECKPOINT_META.format(**where),
        }
        # Named by position (model names such as VGG-Face are not identifiers).
        for i, model in enumerate(self.face_models()):
            inputs[f"faces_{i}"] = [
                FACES_SHARD.format(**where, model=model, detector=detector, shard=k) for k in shards
            ]
            inputs[f"references_{i}"] = self.references_for(model)
        return inputs

    def model_pattern(self) -> str:
        """Regex of the configured model names (for the {model} wildcard)."""
        import re

        return "|".join(re.escape(m) for m in self.face_models())

    # ---- end of issue #4 block --------------------------------------------------------------

    # ---- issue #5: statistics, curves, contact sheets, report -------------------------------
    def reference_baseline_file(self) -> str:
        """Baseline of the primary scoring model (``score.model``)."""
        score = self.config["score"]
        return REFERENCE_BASELINE.format(model=score["model"], detector=score["detector"])

    def primary_references(self) -> str:
        return self.references_for(self.config["score"]["model"])

    def arm_scores(self, wildcards: Any) -> list[str]:
        """Score tables of every epoch of one arm."""
        return [SCORES.format(arm=wildcards.arm, epoch=e) for e in self.epochs]

    def render_dirs(self, wildcards: Any) -> list[str]:
        """Folders holding one checkpoint's renders (one per sample shard)."""
        where = {"arm": wildcards.arm, "epoch": wildcards.epoch}
        return [RENDER_SHARD.format(**where, shard=k) for k in self.shard_ids()]

    def arm_axes(self) -> dict[str, dict[str, str]]:
        """Axis levels per arm for the factorial view (token names, not token strings)."""
        return {
            arm.arm: {
                "token": arm.token_name,
                "regularization": arm.regularization,
                "captions": arm.captions,
            }
            for arm in self.arms.values()
        }

    def statistics_params(self) -> dict[str, Any]:
        """Bootstrap and test settings (the ``report`` section without figure-only keys)."""
        report = self.config["report"]
        keys = ("alpha", "bootstrap_resamples", "confidence", "seed")
        return canonical({k: report[k] for k in keys})

    def report_outputs(self) -> list[str]:
        """Targets of the reporting rules added by issue #5."""
        return [
            COMPARISONS,
            EFFECTS,
            CURVES_EPOCH,
            CURVES_STEPS,
            self.reference_baseline_file(),
            *[ARM_HISTOGRAMS.format(arm=a) for a in self.arms],
            *self.checkpoints(CONTACT_SHEET),
        ]

    # ---- end of issue #5 block ----------------------------------------------------------------


# ---- issue #5: report paths (module level, used by the methods above at call time) ----------
#: Leave-one-out distances among the reference photos (the "as alike as real photos" line).
REFERENCE_BASELINE = f"{RESULTS}/references/{{model}}-{{detector}}.baseline.csv"
#: Paired comparisons between arms at each epoch, and the factorial effects.
COMPARISONS = f"{RESULTS}/comparisons.csv"
EFFECTS = f"{RESULTS}/effects.csv"
#: Metrics against epoch and against training steps, one line per arm with CI bands.
CURVES_EPOCH = f"{RESULTS}/plots/curves/by-epoch.png"
CURVES_STEPS = f"{RESULTS}/plots/curves/by-steps.png"
#: All checkpoints of one arm as one faceted histogram figure.
ARM_HISTOGRAMS = f"{RESULTS}/plots/histograms/{{arm}}/all-epochs.png"
#: Renders of one checkpoint sorted by distance (best, median, worst).
CONTACT_SHEET = f"{RESULTS}/plots/contact-sheets/{{arm}}/epoch-{{epoch}}.png"
