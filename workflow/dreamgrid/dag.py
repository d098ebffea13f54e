"""The validated config as a grid of arms × epochs, and the rules' input functions.

Kept out of the rule files so they are unit-tested. Every job gets only the values it uses, so
editing one arm's settings reruns that arm alone. :class:`Grid`'s methods are grouped by the
rule file that uses them: ``get_*`` methods take a job's ``wildcards`` (input and params
functions, called once per job); properties are values read once, when the workflow is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from dreamgrid import config as cfg
from dreamgrid import offline, paths
from dreamgrid.prompts import AUTO_TOKEN, MAIN_PROMPT_SET

# Training settings that are not passed to every job as they are: `epochs` and
# `keep_checkpoints` do not change what an epoch's job computes (more epochs only add jobs),
# and `match_steps` reaches only the arms it changes, as `passes` (Grid.get_train_passes).
NOT_PER_EPOCH = ("epochs", "keep_checkpoints", "keep_resume_state", "match_steps", "replicates")
BUCKET_KEYS = ("bucket_min_size", "bucket_max_size", "bucket_step")
# Sampler settings the token finder's renders share with the checkpoints' renders.
SAMPLER_KEYS = ("negative", "scheduler", "steps", "cfg", "width", "height", "batch_size")
# Sample settings that are not a render's settings (each shard gets its own range instead,
# and its own prompt set's template).
NOT_PER_SHARD = ("count", "shard_size", "prompt_sets", "prompt_sets_count")
# Settings one family alone reads (train/spec.FLUX_FIELDS, sample.FLUX_ONLY_SETTINGS; kept
# here to import neither at parse time). Other families' jobs leave them out of their params,
# so adding them to the schema reran no job, and editing them reruns only that family's arms.
FLUX_TRAINING_KEYS = (
    "weighting_scheme",
    "logit_mean",
    "logit_std",
    "mode_scale",
    "flux_guidance",
    "max_sequence_length",
)
FLUX_SAMPLE_KEYS = ("true_cfg", "max_sequence_length")


def one_of(values: Iterable[str]) -> str:
    """Regex matching exactly the given names (a wildcard's ``wildcard_constraints``)."""
    return "|".join(re.escape(value) for value in values)


def canonical(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with sorted keys: Snakemake compares params as text, so reordering keys in
    the config file must not look like an edit and rerun jobs."""
    return {k: canonical(v) if isinstance(v, dict) else v for k, v in sorted(settings.items())}


def count_images(directory: str) -> int:
    """Images in a folder, 0 if it is missing (the preflight check then reports it)."""
    from pathlib import Path

    from dreamgrid.io import is_image

    folder = Path(directory)
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if is_image(p))


class Grid:
    """The validated config seen as a grid of arms × epochs, with the rules' input functions."""

    def __init__(
        self,
        config: dict[str, Any],
        ranking: Callable[[str], str] | None = None,
        decisions: Callable[[int], str] | None = None,
    ):
        """``ranking(finder)`` returns the ranking file of one base model's token finder
        (``finder``: its ``{finder}`` folder, ``token_finder`` for the one base_model) once it
        is final (in the workflow: the rank_candidates checkpoint's output, which raises
        Snakemake's IncompleteCheckpointException before then); needed only with ``token:
        auto``. ``decisions(epoch)`` likewise returns a look's decision table (the decide_look
        checkpoint's output); needed only with ``search.method: successive_halving``."""
        self.config = config
        self.arms = {arm.arm: arm for arm in cfg.expand_arms(config)}
        #: Base model name ("" = the one ``base_model``) -> its entry, and the config its
        #: arms see (``by_base_model`` settings merged in; the config itself for "").
        self.base_models = cfg.base_models(config)
        self.views = {
            name: cfg.base_model_config(config, name) if name else config
            for name in self.base_models
        }
        #: Arm id -> the config it sees with its ``axes.settings`` values merged in (arms
        #: without settings axes see their base model's view, as before the axis).
        self.arm_views = {
            arm.arm: cfg.arm_config(config, arm) for arm in self.arms.values() if arm.settings
        }
        self._families: dict[str, str] = {}
        self.epochs = list(range(1, config["training"]["epochs"] + 1))
        self.demo = cfg.is_demo(config)
        self._ranking = ranking
        self._decisions = decisions
        self._look_tables: dict[tuple[str, int], Any] = {}
        search = config.get("search") or {}
        #: Whether arms stop at looks (successive_halving); with full every arm reaches every
        #: epoch and no method below reads a decision (the plan is the fixed grid).
        self.adaptive = search.get("method", "full") == "successive_halving"
        if self.adaptive:
            from dreamgrid import adaptive

            self.looks = adaptive.look_epochs(search, config["training"]["epochs"])
        else:
            self.looks = []

    # ---- the grid ----------------------------------------------------------------------------
    @property
    def arm_ids(self) -> list[str]:
        return list(self.arms)

    @property
    def base_model_names(self) -> list[str]:
        """Names of the base models ([""] for the one ``base_model``)."""
        return list(self.base_models)

    def view(self, arm_id: str) -> dict[str, Any]:
        """The config as ``arm_id`` sees it: its base model's ``by_base_model`` settings and
        its ``axes.settings`` values merged in."""
        if arm_id in self.arm_views:
            return self.arm_views[arm_id]
        return self.views[self.arms[arm_id].base_model]

    @property
    def training_arms(self) -> list[str]:
        """Arms that train (the others render a training arm's checkpoints with their own
        ``sample.*`` settings: :attr:`dreamgrid.config.Arm.trained_as`)."""
        return [a for a, arm in self.arms.items() if arm.trainer == a]

    def trainer_of(self, arm_id: str) -> str:
        """The training arm whose checkpoints ``arm_id`` renders."""
        return self.arms[arm_id].trainer

    def family(self, name: str) -> str:
        """The family of base model ``name``, known before any job runs: stated, a tiny
        model's, or read from a local folder or file (:func:`dreamgrid.models.plan_family`;
        a hub id without ``family:`` is SD 1.5, and its prepare job refuses another)."""
        if name not in self._families:
            from dreamgrid import models

            entry = self.base_models[name]
            self._families[name] = models.plan_family(
                entry["source"], entry["family"], self.config["allow_pickle"]
            )
        return self._families[name]

    @property
    def families(self) -> dict[str, str]:
        """Base model name -> family ("" for the one ``base_model``)."""
        return {name: self.family(name) for name in self.base_models}

    def get_family(self, wildcards: Any, input: Any = None) -> str:
        """The family of a job's base model (``params.family`` of the jobs that load it).

        A params function taking ``input`` is one Snakemake derives from the job's inputs
        and leaves out of its params rerun trigger: the family is a property of the prepared
        base model, an input of the job, so jobs run before the param existed are not
        rerun."""
        return self.family(self._base_of(wildcards))

    def _base_of(self, wildcards: Any) -> str:
        """The base model name of a job's wildcards (arm, reg or prepared folder)."""
        if hasattr(wildcards, "arm"):
            return self.arms[wildcards.arm].base_model
        for key in ("reg", "prepared", "targets", "finder", "page"):
            value = getattr(wildcards, key, None)
            if value is not None:
                return self._names_by_folder(key)[value]
        raise KeyError(f"no base model in wildcards {wildcards}")

    def _names_by_folder(self, key: str) -> dict[str, str]:
        """Wildcard value -> base model name, for the per-base-model folders."""
        if key == "prepared":
            return {paths.base_model_dir(n).rsplit("/", 1)[1]: n for n in self.base_models}
        if key == "targets":
            return {f"lora_targets{paths.base_suffix(n)}": n for n in self.base_models}
        if key == "finder":
            return {paths.finder_folder(n): n for n in self.base_models}
        if key == "page":
            return {paths.ranking_page(n): n for n in self.base_models}
        return {
            f"{reg}{paths.base_suffix(n)}": n
            for n in self.base_models
            for reg in ("generated", "ground_truth")
        }

    @property
    def prepared_folders(self) -> list[str]:
        """The prepare rule's ``{prepared}`` values (``base``, or ``base-<name>`` each)."""
        return list(self._names_by_folder("prepared"))

    @property
    def lora_target_files(self) -> list[str]:
        """The check_lora_targets rule's ``{targets}`` values."""
        return list(self._names_by_folder("targets"))

    def reg_folders(self, reg: str) -> list[str]:
        """``{reg}`` values of one regularization level's rule (one per base model)."""
        return [f"{reg}{paths.base_suffix(n)}" for n in self.base_models]

    def get_base_source(self, wildcards: Any) -> str:
        """The config's source of the base model a prepare job makes."""
        return self.base_models[self._base_of(wildcards)]["source"]

    def get_prepare_kind(self, wildcards: Any) -> str:
        """``kind`` of a prepare job (:func:`dreamgrid.models.prepare_model`): ``sd``, or the
        stated family when it is not SD 1.5 (the pipeline a hub id or single file is
        converted with)."""
        family = self.base_models[self._base_of(wildcards)]["family"]
        return "sd" if family in (None, "sd15") else family

    def get_lora_targets(self, wildcards: Any) -> list[str]:
        """``lora.target_modules`` of one base model's lora arms (``lora.by_base_model``, and
        each value of a ``lora.target_modules`` settings axis), each module once."""
        name = self._base_of(wildcards)
        targets = list(self.views[name]["lora"]["target_modules"])
        if any(self.arms[a].base_model == name for a in self.arm_views):
            lora = [
                a for a, arm in self.arms.items() if arm.base_model == name and arm.method == "lora"
            ]
            seen = [t for a in lora for t in self.view(a)["lora"]["target_modules"]]
            targets = list(dict.fromkeys(seen)) or targets
        return targets

    def get_base_dir(self, wildcards: Any) -> str:
        """The prepared base model folder of a job's base model."""
        return paths.base_model_dir(self._base_of(wildcards))

    @property
    def class_word(self) -> str:
        return self.config["subject"]["class_word"]

    @property
    def prompt_sets(self) -> dict[str, str]:
        """Prompt set name -> template: ``main`` (``sample.prompt``) first, then the extras."""
        sample = self.config["sample"]
        return {MAIN_PROMPT_SET: sample["prompt"], **(sample.get("prompt_sets") or {})}

    @property
    def prompt_set_names(self) -> list[str]:
        return list(self.prompt_sets)

    @property
    def face_models(self) -> list[str]:
        """Recognition models scored: ``score.model`` first, then ``score.models``."""
        score = self.config["score"]
        models = [score["model"]]
        for model in score.get("models") or []:
            if model not in models:
                models.append(model)
        return models

    def checkpoints(self, path: str) -> list[str]:
        """``path`` (with {arm} and {epoch}, and maybe {prompt_set}) for every checkpoint of
        the grid (and every prompt set)."""
        sets = self.prompt_set_names if "{prompt_set}" in path else [None]
        return [
            path.format(arm=a, epoch=e, prompt_set=p)
            for a in self.arms
            for e in self.arm_epochs(a)
            for p in sets
        ]

    def get_checkpoints(self, path: str) -> Callable[[Any], list[str]]:
        """:meth:`checkpoints` as an input function: with an adaptive search the epochs an
        arm reaches are known only once its looks' checkpoints have run."""
        return lambda wildcards: self.checkpoints(path)

    def get_final_outputs(self, wildcards: Any = None) -> list[str]:
        """Targets of ``rule all`` (an input function: see :meth:`get_checkpoints`)."""
        return self.final_outputs

    @property
    def final_outputs(self) -> list[str]:
        """Targets of ``rule all``."""
        finder = [
            path
            for name in self.base_model_names
            for path in (
                paths.RANKING_OF.format(finder=paths.finder_folder(name)),
                paths.RANKING_PAGE_OF.format(page=paths.ranking_page(name)),
                paths.CANDIDATE_SHEET_OF.format(finder=paths.finder_folder(name)),
            )
            if self.finder_active
        ]
        return [
            *self.retention_outputs,
            *self.state_release_outputs,
            *[paths.LOSS_CURVE.format(arm=a) for a in self.training_arms],
            paths.SUMMARY,
            paths.SUMMARY_MD,
            paths.SCORES_TABLE,
            *self.checkpoints(paths.HISTOGRAM),
            *self.report_outputs,
            *finder,
            *([paths.SEARCH_DECISIONS] if self.adaptive else []),
            paths.MANIFEST,
        ]

    # ---- search.smk ----------------------------------------------------------------------------
    @property
    def look_files(self) -> list[str]:
        """Every look's decision table ([] without an adaptive search)."""
        return [paths.SEARCH_LOOK.format(epoch=e) for e in self.looks]

    def look_table(self, epoch: int) -> Any:
        """The decision table of the look at ``epoch`` (in the workflow, waits for the
        decide_look checkpoint: Snakemake's IncompleteCheckpointException until it ran)."""
        import os

        import pandas as pd

        path = self._decisions(epoch)
        # Every input function of every arm asks; parse each version of the file once (a look
        # rerun in the same Snakemake process writes a new one).
        key = (str(path), os.stat(path).st_mtime_ns)
        if key not in self._look_tables:
            self._look_tables[key] = pd.read_csv(path, sep="\t", dtype={"arm": str})
        return self._look_tables[key]

    def stop_look(self, arm_id: str, before: int | None = None) -> int | None:
        """The look epoch at which ``arm_id`` stopped (among the looks before epoch
        ``before``, if given), or None if it trains on.

        Reads the looks in order and only as far as the arm got, so an arm stopped at the
        first look never waits for a later look's checkpoint. Without the decisions (the
        preflight, the CLI) every arm may reach the end: the most the search can train."""
        from dreamgrid import adaptive

        if self._decisions is None:
            return None
        for look in self.looks:
            if before is not None and look >= before:
                break
            if arm_id not in adaptive.still_running(self.look_table(look)):
                return look
        return None

    def arm_epochs(self, arm_id: str) -> list[int]:
        """Epochs ``arm_id`` trains and is scored at: every epoch, or up to the look that
        stopped it."""
        if not self.adaptive:
            return self.epochs
        stop = self.stop_look(arm_id)
        return self.epochs if stop is None else self.epochs[:stop]

    def trained_epochs(self, trainer: str) -> list[int]:
        """Epochs training arm ``trainer`` trains: as far as the farthest arm rendering its
        checkpoints gets (a look may stop one ``sample.*`` level of a training and not
        another, whose renders still need its later epochs and its resume state)."""
        reached = max(len(self.arm_epochs(a)) for a in self.arms if self.trainer_of(a) == trainer)
        return self.epochs[:reached]

    def active_at(self, epoch: int) -> list[str]:
        """Arms still training when the look at ``epoch`` is made (every arm at the first)."""
        return [a for a in self.arms if self.stop_look(a, before=epoch) is None]

    def get_look_scores(self, wildcards: Any) -> list[str]:
        """Main-prompt score tables of the arms active at a look, of every epoch up to it (a
        look judges each arm at its best epoch so far, and a gap still closing by its rate)."""
        epoch = int(wildcards.epoch)
        return [
            paths.SCORES.format(arm=a, epoch=e, prompt_set=MAIN_PROMPT_SET)
            for a in self.active_at(epoch)
            for e in self.epochs
            if e <= epoch
        ]

    def get_previous_look(self, wildcards: Any) -> list[str]:
        """The previous look's table, which says which arms this look compares."""
        earlier = [e for e in self.looks if e < int(wildcards.epoch)]
        return [paths.SEARCH_LOOK.format(epoch=earlier[-1])] if earlier else []

    def get_look_active(self, wildcards: Any) -> list[str]:
        return self.active_at(int(wildcards.epoch))

    @property
    def search_params(self) -> dict[str, Any]:
        """What a look's decision depends on: the search section, training.epochs, the face
        model, and the report's seed (the seed split), resamples and min_faces."""
        report = self.config["report"]
        return canonical(
            {
                **dict(self.config.get("search") or {}),
                "epochs": self.config["training"]["epochs"],
                "model": self.config["score"]["model"],
                "seed": report["seed"],
                "resamples": report["bootstrap_resamples"],
                "min_faces": report["min_faces"],
            }
        )

    # ---- prepare.smk ---------------------------------------------------------------------------
    @property
    def face_record_pattern(self) -> str:
        """Output of ``prepare_face_models``, inside ``score.deepface_home`` (shared by
        every job, so the weights are fetched once)."""
        return str(
            offline.face_record(self.config["score"]["deepface_home"], "{model}", "{detector}")
        )

    def get_face_record(self, wildcards: Any) -> str:
        """The prepare step's record of one (model, detector) pair: an embedding job's
        promise that the weights are on disk before it starts (it never downloads)."""
        return self.face_record_pattern.format(model=wildcards.model, detector=wildcards.detector)

    # ---- caption.smk ---------------------------------------------------------------------------
    @property
    def caption_params(self) -> dict[str, Any]:
        """The caption section as job params; the LAVIS keys only for that backend, so that
        adding them did not rerun (and retrain) every transformers-captioned arm."""
        settings = self.config["caption"]
        if settings["backend"] != "lavis":
            settings = {k: v for k, v in settings.items() if not k.startswith("lavis_")}
        return canonical(settings)

    def get_caption_inputs(self, wildcards: Any = None) -> dict[str, Any]:
        inputs = {"images": self.config["subject"]["train_images"]}
        # The LAVIS backend loads its own model in its own venv (dreamgrid.lavis_caption).
        if self.config["caption"]["backend"] == "transformers":
            inputs["model"] = paths.CAPTION_MODEL_DIR
        else:
            inputs["lavis"] = paths.LAVIS_MODEL_DIR
        if self.config["subject"]["caption_overrides"]:
            inputs["overrides"] = self.config["subject"]["caption_overrides"]
        return inputs

    # ---- regularization.smk --------------------------------------------------------------------
    @property
    def class_image_params(self) -> dict[str, Any]:
        """Settings of the generated class images; count null = one per training image."""
        return self.class_image_params_for(self.base_model_names[0])

    def get_class_image_params(self, wildcards: Any) -> dict[str, Any]:
        return self.class_image_params_for(self._base_of(wildcards))

    def class_image_params_for(self, name: str) -> dict[str, Any]:
        """:attr:`class_image_params` of base model ``name`` (at its training resolution)."""
        settings = dict(self.config["regularization"])
        settings["class_word"] = self.class_word
        settings["resolution"] = self.views[name]["training"]["resolution"]
        if settings["count"] is None:
            settings["count"] = count_images(self.config["subject"]["train_images"])
        return canonical(settings)

    @property
    def ground_truth_params(self) -> dict[str, Any]:
        return self.ground_truth_params_for(self.base_model_names[0])

    def get_ground_truth_params(self, wildcards: Any) -> dict[str, Any]:
        return self.ground_truth_params_for(self._base_of(wildcards))

    def ground_truth_params_for(self, name: str) -> dict[str, Any]:
        """How ground-truth photos are prepared for base model ``name``'s arms: center-cropped
        at the training resolution, or (buckets) kept in shape, only shrunk to the longest
        bucket side."""
        training = self.views[name]["training"]
        buckets = training["aspect_ratio"] == "buckets"
        return {
            "resolution": training["resolution"],
            "max_side": training["bucket_max_size"] if buckets else None,
        }

    # ---- token_finder.smk ----------------------------------------------------------------------
    @property
    def finder_active(self) -> bool:
        return cfg.finder_runs(self.config)

    @property
    def candidate_names(self) -> dict[str, str]:
        """Candidate slug -> name, in list order ({} when the finder does not run)."""
        if not self.finder_active:
            return {}
        from dreamgrid import candidates

        path = candidates.list_path(self.config["token_finder"], self.class_word)
        return {candidates.slug(n): n for n in candidates.read_names(path)}

    @property
    def candidate_groups(self) -> list[dict[str, str]]:
        """The candidates (slug -> name) of each render job: ``names_per_job`` names in list
        order, so appending names changes only the last group and adds new ones."""
        names = list(self.candidate_names.items())
        size = self.config["token_finder"]["names_per_job"]
        return [dict(names[start : start + size]) for start in range(0, len(names), size)]

    def get_candidate_group_names(self, wildcards: Any) -> dict[str, str]:
        """Slug -> name of one render job's candidates."""
        return self.candidate_groups[int(wildcards.group)]

    @property
    def finder_folders(self) -> list[str]:
        """``{finder}`` values: one token finder per base model."""
        return [paths.finder_folder(n) for n in self.base_model_names]

    @property
    def ranking_pages(self) -> list[str]:
        """``{page}`` values: one ranking page per base model."""
        return [paths.ranking_page(n) for n in self.base_model_names]

    def get_ranking_of_page(self, wildcards: Any) -> str:
        """The ranking a ranking page shows."""
        name = self._names_by_folder("page")[wildcards.page]
        return paths.RANKING_OF.format(finder=paths.finder_folder(name))

    @property
    def candidate_group_dirs(self) -> list[str]:
        """Every render job's folder (one sub-folder per candidate inside), of the first base
        model."""
        return self.candidate_group_dirs_of(self.base_model_names[0])

    def get_candidate_group_dirs(self, wildcards: Any) -> list[str]:
        return self.candidate_group_dirs_of(self._base_of(wildcards))

    def candidate_group_dirs_of(self, name: str) -> list[str]:
        """Base model ``name``'s render jobs' folders (every base model renders every name)."""
        finder = paths.finder_folder(name)
        return [
            paths.CANDIDATE_GROUP_OF.format(finder=finder, group=k)
            for k in range(len(self.candidate_groups))
        ]

    @property
    def candidate_settings(self) -> dict[str, Any]:
        """:meth:`candidate_settings_of` the first base model."""
        return self.candidate_settings_of(self.base_model_names[0])

    def get_candidate_settings(self, wildcards: Any) -> dict[str, Any]:
        return self.candidate_settings_of(self._base_of(wildcards))

    def candidate_settings_of(self, name: str) -> dict[str, Any]:
        """SampleSettings of every candidate's renders with base model ``name``: the finder's
        prompt and seeds, the sampler and negative prompt of its ``sample`` settings."""
        finder, sample = self.config["token_finder"], self.views[name]["sample"]
        settings = {k: sample[k] for k in SAMPLER_KEYS}
        settings["prompt"] = finder["prompt"].replace("{name}", "{token}")
        settings["prompt_set"] = "token_finder"
        settings["count"] = finder["renders"]
        settings["seed"] = finder["seed"]
        return self.family_sample_settings(name, settings)

    @property
    def candidate_render_dirs(self) -> list[str]:
        """Each candidate's folder of renders, in list order (inside its job's folder), of
        the first base model."""
        return self.candidate_render_dirs_of(self.base_model_names[0])

    def get_candidate_render_dirs(self, wildcards: Any) -> list[str]:
        return self.candidate_render_dirs_of(self._base_of(wildcards))

    def candidate_render_dirs_of(self, name: str) -> list[str]:
        finder = paths.finder_folder(name)
        return [
            f"{paths.CANDIDATE_GROUP_OF.format(finder=finder, group=k)}/{slug}"
            for k, group in enumerate(self.candidate_groups)
            for slug in group
        ]

    @property
    def ranking_params(self) -> dict[str, Any]:
        """What ranking depends on: names, threshold and the scoring settings."""
        score = self.config["score"]
        return canonical(
            {
                "names": list(self.candidate_names.values()),
                "threshold": self.config["token_finder"]["threshold"],
                **{k: score[k] for k in ("model", "detector", "metric", "align")},
                "multiple_faces": score["multiple_faces"],
                "deepface_home": score["deepface_home"],
            }
        )

    def chosen_token(self, name: str | None = None) -> str:
        """The top-ranked name of base model ``name``'s finder (default: the first base
        model's; waits for the ranking inside Snakemake)."""
        from dreamgrid import candidates

        if self._ranking is None:
            raise RuntimeError("token: auto needs the grid's ranking resolver")
        name = self.base_model_names[0] if name is None else name
        return candidates.chosen(self._ranking(paths.finder_folder(name)))

    # ---- train.smk -----------------------------------------------------------------------------
    def get_wait_for_token(self, wildcards: Any) -> list[str]:
        """Input function of jobs that use an arm's token: none, but for an ``auto`` token
        it asks for the final ranking first (no file, so a re-ranking with the same winner
        reruns nothing; a new winner changes the token param, which reruns the arm)."""
        arm = self.arms[wildcards.arm]
        if arm.token == AUTO_TOKEN:
            self.chosen_token(arm.base_model)
        return []

    def get_train_inputs(self, wildcards: Any) -> dict[str, str]:
        """Inputs of one (arm, epoch) training job: epoch e starts from epoch e-1's outputs."""
        self.get_wait_for_token(wildcards)
        return self.train_files(wildcards.arm, int(wildcards.epoch))

    def train_files(self, arm_id: str, epoch: int) -> dict[str, str]:
        """:meth:`get_train_inputs` without waiting for an ``auto`` token (for the preflight)."""
        arm = self.arms[arm_id]
        inputs = {
            "base": paths.base_model_dir(arm.base_model),
            "images": self.config["subject"]["train_images"],
        }
        if arm.captions != "none":
            inputs["captions"] = paths.CAPTIONS
        if arm.regularization != "none":
            inputs["reg"] = paths.reg_images(arm.regularization, arm.base_model)
        if arm.method == "lora":
            inputs["lora_targets"] = paths.lora_targets(arm.base_model)
        if epoch > 1:
            # The small JSON, not the weights: checkpoints may be removed once scored
            # (keep_checkpoints) without making the next epoch's job want them back.
            inputs["previous_meta"] = paths.CHECKPOINT_META.format(arm=arm.arm, epoch=epoch - 1)
        return inputs

    def get_arm_params(self, wildcards: Any) -> dict[str, str]:
        """One arm's own settings (token, regularization, captions); an ``auto`` token is
        the finder's top-ranked name, so a new ranking with the same winner reruns nothing."""
        arm = self.arms[wildcards.arm]
        params = arm.as_params()
        if params["token"] == AUTO_TOKEN:
            # Each base model's arms get the pick of its own finder.
            params["token"] = self.chosen_token(arm.base_model)
        return canonical(params)

    def get_resume_state(self, wildcards: Any) -> str:
        return paths.RESUME_STATE.format(arm=wildcards.arm)

    def get_train_passes(self, wildcards: Any) -> int:
        """Data passes per epoch: 2 for a no-regularization arm under ``match_steps`` when
        regularization doubles the steps (Kohya mode), so its checkpoints fall at the same
        step counts as the regularized arms'; else 1."""
        training = self.view(wildcards.arm)["training"]
        doubled = training.get("reg_mode", "kohya") == "kohya"
        no_reg = self.arms[wildcards.arm].regularization == "none"
        return 2 if training.get("match_steps", False) and doubled and no_reg else 1

    def get_method_params(self, wildcards: Any) -> dict[str, Any]:
        """TrainSpec fields of the arm's method: LoRA settings (and the LoRA learning rate)
        for lora arms, nulls for full arms, so editing `lora` reruns only the lora arms."""
        if self.arms[wildcards.arm].method != "lora":
            return {
                "method": "full",
                **dict.fromkeys(("lora_rank", "lora_alpha", "lora_target_modules"), None),
            }
        lora = self.view(wildcards.arm)["lora"]
        return {
            "method": "lora",
            "lora_rank": lora["rank"],
            "lora_alpha": float(lora["alpha"]),
            "lora_target_modules": list(lora["target_modules"]),
            "learning_rate": lora["learning_rate"],
        }

    @property
    def training_params(self) -> dict[str, Any]:
        """:meth:`get_training_params` of the first base model."""
        return self.training_params_for(self.base_model_names[0])

    def get_training_params(self, wildcards: Any) -> dict[str, Any]:
        """The training settings of an arm (its base model's ``training.by_base_model`` and
        its ``axes.settings``)."""
        arm = self.arms[wildcards.arm]
        return self.training_params_for(arm.base_model, self.view(arm.arm))

    def training_params_for(self, name: str, view: dict[str, Any] | None = None) -> dict[str, Any]:
        """The training section of base model ``name`` (or of ``view``, an arm's config) as
        TrainSpec fields; bucket sizes are null unless aspect_ratio is buckets, so editing
        them does not retrain center-cropped arms."""
        settings = (view or self.views[name])["training"]
        training = {k: v for k, v in settings.items() if k not in NOT_PER_EPOCH}
        if training["aspect_ratio"] != "buckets":
            training.update(dict.fromkeys(BUCKET_KEYS, None))
        if self.family(name) != "flux":
            for key in FLUX_TRAINING_KEYS:
                training.pop(key, None)
        if training.get("vae", "") is None:
            del training["vae"]  # SDXL's optional training VAE; null for every other arm
        return canonical(training)

    def train_job_params(self, arm: str, resolve_token: bool = True) -> dict[str, Any]:
        """The params of ``arm``'s train_dreambooth jobs as the rule passes them (less
        ``impl``), for the preflight to build the jobs' specs. ``resolve_token=False`` keeps an
        ``auto`` token as the word ``auto`` (the ranking does not exist before the run)."""
        job = SimpleNamespace(arm=arm)
        return {
            "arm": (
                self.get_arm_params(job) if resolve_token else canonical(self.arms[arm].as_params())
            ),
            "state": self.get_resume_state(job),
            "passes": self.get_train_passes(job),
            "cache_dir": paths.LATENT_CACHE,
            "method": self.get_method_params(job),
            "training": self.get_training_params(job),
            "class_word": self.class_word,
            "family": self.get_family(job),
        }

    def get_arm_checkpoint_metas(self, wildcards: Any) -> list[str]:
        """Every planned epoch's checkpoint JSON of one arm: the state is released after
        all of them (and again after epochs added later)."""
        return [
            paths.CHECKPOINT_META.format(arm=wildcards.arm, epoch=e)
            for e in self.trained_epochs(wildcards.arm)
        ]

    @property
    def keep_checkpoints(self) -> str:
        return self.config["training"].get("keep_checkpoints", "all")

    def get_arm_checkpoints(self, wildcards: Any) -> dict[int, str]:
        """Epoch -> checkpoint path of one arm (the only files keep_checkpoints removes)."""
        return {
            e: paths.CHECKPOINT.format(arm=wildcards.arm, epoch=e)
            for e in self.trained_epochs(wildcards.arm)
        }

    def get_recipe(self, wildcards: Any) -> str | list[str]:
        """The recipe an arm id trains (itself for run 1, without ``-r<r>`` otherwise); for a
        training that arms with other ``sample.*`` settings share, every such recipe (its
        checkpoints then keep each one's best epoch)."""
        recipes = [
            arm.recipe or arm.arm for arm in self.arms.values() if arm.trainer == wildcards.arm
        ]
        return recipes if len(recipes) > 1 else self.arms[wildcards.arm].recipe or wildcards.arm

    @property
    def retention_outputs(self) -> list[str]:
        if self.keep_checkpoints != "best":
            return []
        return [paths.CHECKPOINTS_KEPT.format(arm=a) for a in self.training_arms]

    @property
    def state_release_outputs(self) -> list[str]:
        """One marker per arm whose resume state is deleted after its last planned epoch
        ([] with ``training.keep_resume_state``)."""
        if self.config["training"].get("keep_resume_state", False):
            return []
        return [paths.STATE_RELEASED.format(arm=a) for a in self.training_arms]

    def get_arm_loss_logs(self, wildcards: Any) -> list[str]:
        return [
            paths.LOSS_LOG.format(arm=wildcards.arm, epoch=e)
            for e in self.trained_epochs(wildcards.arm)
        ]

    # ---- sample.smk ----------------------------------------------------------------------------
    def get_checkpoint(self, wildcards: Any) -> str:
        """The checkpoint an arm's shard renders: its training arm's (arms differing only in
        ``sample.*`` settings share one training)."""
        return paths.CHECKPOINT.format(arm=self.trainer_of(wildcards.arm), epoch=wildcards.epoch)

    def get_arm_token(self, wildcards: Any) -> str:
        """The arm's token as its renders fill it in (an ``auto`` token: the ranking's pick)."""
        return self.get_arm_params(wildcards)["token"]

    def prompt_set_count(self, prompt_set: str = MAIN_PROMPT_SET) -> int:
        """Renders per checkpoint of one prompt set: ``sample.count`` for ``main``, else
        ``sample.prompt_sets_count`` when set."""
        sample = self.config["sample"]
        extra = sample.get("prompt_sets_count")
        return sample["count"] if prompt_set == MAIN_PROMPT_SET or extra is None else extra

    def shard_ranges(self, prompt_set: str = MAIN_PROMPT_SET) -> list[tuple[int, int]]:
        """Render index ranges ``[start, stop)`` of one prompt set's shards (every
        checkpoint's)."""
        sample = self.config["sample"]
        count = self.prompt_set_count(prompt_set)
        return cfg.shard_ranges(count, sample["shard_size"], sample["batch_size"])

    def shard_ids(self, prompt_set: str = MAIN_PROMPT_SET) -> list[int]:
        return list(range(len(self.shard_ranges(prompt_set))))

    def get_shard_settings(self, wildcards: Any) -> dict[str, Any]:
        """SampleSettings of one shard: ``count`` is the shard's end, so raising the total
        count changes only the last (partial) shard's params and adds new shards."""
        # The arm's base model's sampler settings (sample.by_base_model); without an arm, as
        # in the preflight's per-prompt-set checks, the first base model's.
        arm = getattr(wildcards, "arm", None)
        name = self.arms[arm].base_model if arm else self.base_model_names[0]
        sample = self.view(arm)["sample"] if arm else self.views[name]["sample"]
        settings = {k: v for k, v in sample.items() if k not in NOT_PER_SHARD}
        settings["count"] = self.shard_ranges(wildcards.prompt_set)[int(wildcards.shard)][1]
        settings["prompt"] = self.prompt_sets[wildcards.prompt_set]
        settings["prompt_set"] = wildcards.prompt_set
        return self.family_sample_settings(name, settings, sample)

    def family_sample_settings(
        self, name: str, settings: dict[str, Any], sample: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``settings`` with FLUX's own sampler settings only for a FLUX base model, whose
        settings also name the family (SampleSettings then checks FLUX's rules, e.g. no
        negative prompt without true CFG, wherever they are built); ``sample``: the sample
        section they come from (default base model ``name``'s)."""
        if self.family(name) == "flux":
            sample = sample or self.views[name]["sample"]
            settings.update({k: sample[k] for k in FLUX_SAMPLE_KEYS}, family="flux")
        else:
            for key in FLUX_SAMPLE_KEYS:
                settings.pop(key, None)
        return canonical(settings)

    def get_shard_first(self, wildcards: Any) -> int:
        """Index of the first render of one shard."""
        prompt_set = getattr(wildcards, "prompt_set", MAIN_PROMPT_SET)
        return self.shard_ranges(prompt_set)[int(wildcards.shard)][0]

    # ---- score.smk -----------------------------------------------------------------------------
    def get_embed_params(self, wildcards: Any) -> dict[str, Any]:
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

    @property
    def scoring_params(self) -> dict[str, Any]:
        """What merging and scoring one checkpoint depends on (not the thresholds)."""
        score = self.config["score"]
        return canonical(
            {
                **{k: score[k] for k in ("detector", "metric", "align", "deepface_home")},
                "models": self.face_models,
                "multiple_faces": score["multiple_faces"],
            }
        )

    def references_for(self, model: str) -> str:
        return paths.REFERENCES.format(model=model, detector=self.config["score"]["detector"])

    @property
    def primary_references(self) -> str:
        return self.references_for(self.config["score"]["model"])

    @property
    def reference_baseline_file(self) -> str:
        """Baseline of the primary scoring model (``score.model``)."""
        score = self.config["score"]
        return paths.REFERENCE_BASELINE.format(model=score["model"], detector=score["detector"])

    def get_score_inputs(self, wildcards: Any) -> dict[str, Any]:
        """Inputs of one checkpoint's score job: every shard's table, and per model (in the
        order of :attr:`face_models`) ``faces_<i>`` (one file per shard) and
        ``references_<i>``."""
        detector = self.config["score"]["detector"]
        where = self._where(wildcards)
        shards = self.shard_ids(wildcards.prompt_set)
        inputs: dict[str, Any] = {
            "tables": self.get_render_tables(wildcards),
            "checkpoint_meta": paths.CHECKPOINT_META.format(
                arm=self.trainer_of(wildcards.arm), epoch=wildcards.epoch
            ),
        }
        # Named by position (model names such as VGG-Face are not identifiers).
        for i, model in enumerate(self.face_models):
            inputs[f"faces_{i}"] = [
                paths.FACES_SHARD.format(**where, model=model, detector=detector, shard=k)
                for k in shards
            ]
            inputs[f"references_{i}"] = self.references_for(model)
        return inputs

    def get_render_tables(self, wildcards: Any) -> list[str]:
        """Render tables of one checkpoint's prompt set (one per sample shard)."""
        where = self._where(wildcards)
        shards = self.shard_ids(wildcards.prompt_set)
        return [paths.RENDER_SHARD_TABLE.format(**where, shard=k) for k in shards]

    def get_render_dirs(self, wildcards: Any) -> list[str]:
        """Folders holding one checkpoint's renders (one per sample shard)."""
        where = self._where(wildcards)
        shards = self.shard_ids(wildcards.prompt_set)
        return [paths.RENDER_SHARD.format(**where, shard=k) for k in shards]

    @staticmethod
    def _where(wildcards: Any) -> dict[str, str]:
        """The arm, epoch and prompt set of a checkpoint's prompt-set job."""
        return {
            "arm": wildcards.arm,
            "epoch": wildcards.epoch,
            "prompt_set": wildcards.prompt_set,
        }

    @property
    def clip_model_input(self) -> list[str]:
        """The CLIP folder a CLIPScore job loads: a hub id's download (prepared once by
        ``prepare_clip_model``; ``tiny`` is built there), else the user's folder as it is;
        [] without CLIP."""
        from dreamgrid import models

        source = self.config["score"]["clip_model"]
        if not source:
            return []
        return [source if models.classify(source) == "dir" else paths.CLIP_MODEL_DIR]

    def get_clip_files(self, wildcards: Any) -> list[str]:
        return self.clip_files

    @property
    def clip_files(self) -> list[str]:
        """Every checkpoint's CLIPScore tables ([] without ``score.clip_model``)."""
        return self.checkpoints(paths.CLIP_SCORES) if self.config["score"]["clip_model"] else []

    @property
    def memorization_checkpoints(self) -> list[dict[str, Any]]:
        """Every checkpoint's main-prompt renders and their faces shards of the primary face
        model, for the memorization job (which needs to know which files are whose)."""
        score = self.config["score"]
        shards = self.shard_ids(MAIN_PROMPT_SET)
        return [
            {
                "arm": arm,
                "epoch": epoch,
                "prompt_set": MAIN_PROMPT_SET,
                "faces": [
                    paths.FACES_SHARD.format(
                        arm=arm,
                        epoch=epoch,
                        prompt_set=MAIN_PROMPT_SET,
                        model=score["model"],
                        detector=score["detector"],
                        shard=k,
                    )
                    for k in shards
                ],
            }
            for arm in self.arms
            for epoch in self.arm_epochs(arm)
        ]

    def get_memorization_checkpoints(self, wildcards: Any) -> list[dict[str, Any]]:
        return self.memorization_checkpoints

    @property
    def memorization_faces(self) -> list[str]:
        return [f for c in self.memorization_checkpoints for f in c["faces"]]

    def get_memorization_faces(self, wildcards: Any) -> list[str]:
        return self.memorization_faces

    # ---- report.smk ----------------------------------------------------------------------------
    @property
    def ranking_files(self) -> list[str]:
        """The finder's ranking as an input of the summary, which names the pick ([] when
        the finder does not run)."""
        if not self.finder_active:
            return []
        return [paths.RANKING_OF.format(finder=f) for f in self.finder_folders]

    @property
    def tokens(self) -> dict[str, str]:
        """Token name -> configured string (``auto`` included), for the summary."""
        return dict(self.config["axes"]["token"])

    @property
    def arm_axes(self) -> dict[str, dict[str, str]]:
        """Axis levels per arm for the factorial view (token names, not token strings); the
        training method is an axis when the grid has more than one (full and LoRA arms must
        not be pooled); so is the base model (``base_model``: its name in axes.base_model) with
        more than one. With ``training.replicates`` > 1, each arm also names its ``recipe``
        and ``replicate`` (the aggregation analyses recipes, with the run as the unit)."""
        methods = {arm.method for arm in self.arms.values()}
        replicated = any(arm.replicate > 1 for arm in self.arms.values())
        named = cfg.base_model_axis(self.config)
        return {
            arm.arm: {
                "token": arm.token_name,
                "regularization": arm.regularization,
                "captions": arm.captions,
                **({"method": arm.method} if len(methods) > 1 else {}),
                # A factor only with more than one base model (the single model's arms keep
                # the params they had before the axis).
                **({"base_model": arm.base_model} if named else {}),
                # Each settings axis: column = its dotted key, level = the value's name.
                **arm.setting_levels,
                **({"recipe": arm.recipe, "replicate": arm.replicate} if replicated else {}),
            }
            for arm in self.arms.values()
        }

    def get_budget_plan(self, wildcards: Any = None) -> list[dict[str, Any]]:
        """Per arm, what it trains and renders (:func:`dreamgrid.budget.plan`): the
        aggregation measures GPU time per step and per render from the benchmark files. A
        params function: with an adaptive search the epochs each arm reached come from the
        looks, inputs of the aggregation."""
        from dreamgrid import budget

        return budget.plan(self.config, self).to_dict("records")

    @property
    def statistics_params(self) -> dict[str, Any]:
        """Bootstrap and test settings (the ``report`` section without figure-only keys)."""
        report = self.config["report"]
        keys = (
            "best_margin",
            "best_margin_relative",
            "bootstrap_resamples",
            "confidence",
            "min_faces",
            "seed",
        )
        return canonical({k: report[k] for k in keys})

    def get_arm_scores(self, wildcards: Any) -> list[str]:
        """Score tables of every epoch of one arm, for one prompt set."""
        return [
            paths.SCORES.format(arm=wildcards.arm, epoch=e, prompt_set=wildcards.prompt_set)
            for e in self.arm_epochs(wildcards.arm)
        ]

    @property
    def report_outputs(self) -> list[str]:
        """Targets of the reporting rules: tables, figures and the report's pages."""
        sets = self.prompt_set_names
        return [
            paths.COMPARISONS,
            paths.EFFECTS,
            *[paths.CURVES_EPOCH.format(prompt_set=p) for p in sets],
            *[paths.CURVES_STEPS.format(prompt_set=p) for p in sets],
            self.reference_baseline_file,
            *[paths.ARM_HISTOGRAMS.format(arm=a, prompt_set=p) for a in self.arms for p in sets],
            *self.checkpoints(paths.CONTACT_SHEET),
            *([paths.TRADEOFF] if len(sets) > 1 else []),
            # A panel per base model; with one, the per-arm histograms show the same renders.
            *(
                [paths.CHOSEN_HISTOGRAMS.format(prompt_set=p) for p in sets]
                if len(self.base_model_names) > 1
                else []
            ),
            paths.VERDICT_PAGE,
            *paths.TABLE_PAGES.values(),
            paths.LANDING_PAGE,
        ]

    # ---- manifest.smk --------------------------------------------------------------------------
    def get_manifest_inputs(self, wildcards: Any = None) -> dict[str, str]:
        """The prepared models the manifest hashes, and the tables it fingerprints (so it is
        rewritten whenever the results change)."""
        inputs = {
            # Each base model as base_<name> (names may start with a digit).
            **{
                f"base_{n}" if n else "base": paths.base_model_dir(n) for n in self.base_model_names
            },
            "summary": paths.SUMMARY,
            "scores": paths.SCORES_TABLE,
        }
        captions = any(arm.captions != "none" for arm in self.arms.values())
        if captions and self.config["caption"]["backend"] == "transformers":
            inputs["captioner"] = paths.CAPTION_MODEL_DIR
        return inputs
