"""The base model as a grid axis (#17): config forms, arm ids, per-base-model settings and
every job's inputs and params, without building a model."""

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dreamgrid import config as cfg
from dreamgrid import dag, models, paths
from dreamgrid.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
DEMO["axes"]["token"]["celebrity"] = "will smith"  # given, not auto (no ranking needed)
FAMILIES_DEMO = ROOT / "config" / "demo-families.yaml"


def axis_config(bases: dict, auto: bool = False, **sections) -> dict:
    """The demo with ``axes.base_model: bases`` instead of ``base_model``."""
    config = copy.deepcopy(DEMO)
    if auto:
        config["axes"]["token"]["celebrity"] = "auto"
    del config["base_model"]
    config["axes"]["base_model"] = bases
    config["axes"]["method"] = ["full", "lora"]
    for section, override in sections.items():
        config.setdefault(section, {})["by_base_model"] = override
    return cfg.validate(config)


TWO = {"sd15": "tiny", "sdxl": "tiny-sdxl"}
THREE = {**TWO, "flux": {"source": "tiny-flux", "family": "flux"}}


def test_one_base_model_keeps_todays_ids_params_and_folders():
    single = dag.Grid(cfg.validate(copy.deepcopy(DEMO)))
    stated = copy.deepcopy(DEMO)
    stated["base_model"] = {"source": "tiny", "family": "sd15"}
    one_axis = copy.deepcopy(DEMO)
    one_axis["axes"]["base_model"] = {"sd15": one_axis.pop("base_model")}
    for other in (dag.Grid(cfg.validate(stated)), dag.Grid(cfg.validate(one_axis))):
        assert other.arm_ids == single.arm_ids
        assert other.arm_axes == single.arm_axes  # no base_model factor
        for arm in single.arm_ids:
            job = SimpleNamespace(arm=arm)
            assert other.get_arm_params(job) == single.get_arm_params(job)
            assert other.get_training_params(job) == single.get_training_params(job)
    assert single.train_files("rare-genreg-nocap", 1)["base"] == paths.BASE_MODEL_DIR
    assert (
        single.train_files("rare-genreg-nocap", 1)["reg"]
        == "results/regularization/generated/images"
    )
    assert single.prepared_folders == ["base"] and single.finder_folders == ["token_finder"]
    assert single.ranking_pages == ["ranking"] and single.lora_target_files == ["lora_targets"]
    assert single.families == {"": "sd15"}


def test_arm_ids_name_the_base_model_only_on_an_axis_of_several():
    grid = dag.Grid(axis_config(THREE))
    assert len(grid.arm_ids) == 2 * 2 * 2 * 2 * 3
    assert "rare-genreg-nocap-lora-sdxl" in grid.arm_ids
    assert "celebrity-noreg-blip-flux" in grid.arm_ids
    arm = grid.arms["rare-genreg-nocap-lora-sdxl"]
    assert arm.base_model == "sdxl" and "base_model" not in arm.as_params()
    assert grid.arm_axes["rare-genreg-nocap-lora-sdxl"]["base_model"] == "sdxl"
    assert grid.families == {"sd15": "sd15", "sdxl": "sdxl", "flux": "flux"}


def test_each_arm_trains_samples_and_regularizes_with_its_own_base_model():
    grid = dag.Grid(axis_config(THREE))
    files = grid.train_files("rare-genreg-nocap-lora-sdxl", 2)
    assert files["base"] == "results/models/base-sdxl"
    assert files["reg"] == "results/regularization/generated-sdxl/images"
    assert files["lora_targets"] == "results/models/lora_targets-sdxl.json"
    job = SimpleNamespace(arm="rare-noreg-nocap-flux", epoch="1", prompt_set="main", shard="0")
    assert grid.get_base_dir(job) == "results/models/base-flux"
    assert grid.get_family(job) == "flux"
    assert grid.train_job_params("rare-noreg-nocap-flux")["family"] == "flux"
    assert grid.train_job_params("rare-noreg-nocap-sd15")["family"] == "sd15"
    # The per-base-model rules' wildcards map back to their model.
    assert grid.get_base_source(SimpleNamespace(prepared="base-sdxl")) == "tiny-sdxl"
    assert grid.get_family(SimpleNamespace(reg="generated-flux")) == "flux"
    assert grid.get_base_dir(SimpleNamespace(targets="lora_targets-sd15")) == paths.base_model_dir(
        "sd15"
    )
    assert grid.get_prepare_kind(SimpleNamespace(prepared="base-flux")) == "flux"
    assert grid.get_prepare_kind(SimpleNamespace(prepared="base-sdxl")) == "sd"  # not stated
    assert grid.prepared_folders == ["base-sd15", "base-sdxl", "base-flux"]
    assert grid.reg_folders("ground_truth") == [
        "ground_truth-sd15", "ground_truth-sdxl", "ground_truth-flux"
    ]  # fmt: skip


def test_by_base_model_settings_reach_only_that_models_jobs():
    grid = dag.Grid(
        axis_config(
            TWO,
            training={"sdxl": {"resolution": 128, "bucket_max_size": 256}},
            lora={"sdxl": {"rank": 8}},
            sample={"sdxl": {"width": 128, "height": 128, "cfg": 5.0}},
        )
    )
    sd15, sdxl = (SimpleNamespace(arm=f"rare-noreg-nocap-lora-{b}") for b in ("sd15", "sdxl"))
    assert grid.get_training_params(sdxl)["resolution"] == 128
    assert grid.get_training_params(sd15)["resolution"] == 64
    assert "by_base_model" not in grid.get_training_params(sd15)
    assert grid.get_method_params(sdxl)["lora_rank"] == 8
    assert grid.get_method_params(sd15)["lora_rank"] == 4
    shard = {"prompt_set": "main", "shard": "0"}
    sdxl_sample = grid.get_shard_settings(SimpleNamespace(arm=sdxl.arm, **shard))
    sd15_sample = grid.get_shard_settings(SimpleNamespace(arm=sd15.arm, **shard))
    assert (sdxl_sample["width"], sdxl_sample["cfg"]) == (128, 5.0)
    assert (sd15_sample["width"], sd15_sample["cfg"]) == (64, 8.0)
    # Paired renders: the same seeds and prompts for every base model.
    assert sdxl_sample["seed"] == sd15_sample["seed"]
    assert sdxl_sample["prompt"] == sd15_sample["prompt"]
    assert grid.class_image_params_for("sdxl")["resolution"] == 128
    assert grid.ground_truth_params_for("sdxl") == {"resolution": 128, "max_side": 256}
    assert grid.candidate_settings_of("sdxl")["width"] == 128
    assert grid.candidate_settings_of("sd15")["width"] == 64


def test_settings_one_family_reads_are_in_that_familys_params_only():
    """FLUX's and SDXL's own settings never reach other arms' params (adding them to the
    schema must not rerun SD 1.5 jobs, and editing them reruns only their family's)."""
    from dreamgrid.sample import FLUX_ONLY_SETTINGS
    from dreamgrid.train.spec import FLUX_FIELDS

    assert dag.FLUX_TRAINING_KEYS == FLUX_FIELDS
    assert dag.FLUX_SAMPLE_KEYS == FLUX_ONLY_SETTINGS
    grid = dag.Grid(axis_config(THREE, sample={"flux": {"negative": "", "true_cfg": 1.0}}))
    shard = {"prompt_set": "main", "shard": "0"}
    for base in THREE:
        job = SimpleNamespace(arm=f"rare-noreg-nocap-lora-{base}", **shard)
        training = grid.get_training_params(job)
        sample = grid.get_shard_settings(job)
        flux = base == "flux"
        assert all((key in training) == flux for key in FLUX_FIELDS), base
        assert all((key in sample) == flux for key in FLUX_ONLY_SETTINGS), base
        assert sample.get("family") == ("flux" if flux else None)
        assert "vae" not in training  # null: SDXL's own VAE
    assert grid.candidate_settings_of("flux")["family"] == "flux"
    assert "true_cfg" not in grid.candidate_settings_of("sdxl")


def test_adding_a_base_model_leaves_every_existing_jobs_params_as_they_were():
    two, three = dag.Grid(axis_config(TWO)), dag.Grid(axis_config(THREE))
    assert set(three.arm_ids) - set(two.arm_ids) == {a for a in three.arm_ids if a.endswith("flux")}
    methods = (
        "get_arm_params", "get_training_params", "get_method_params", "get_train_passes",
        "get_resume_state", "get_family", "get_base_dir",
    )  # fmt: skip
    for arm in two.arm_ids:
        job = SimpleNamespace(arm=arm, epoch="2", prompt_set="main", shard="0")
        for method in methods:
            assert getattr(two, method)(job) == getattr(three, method)(job), (arm, method)
        assert two.train_files(arm, 2) == three.train_files(arm, 2)
        assert two.get_shard_settings(job) == three.get_shard_settings(job)
    for name in TWO:
        assert two.class_image_params_for(name) == three.class_image_params_for(name)
        assert two.candidate_settings_of(name) == three.candidate_settings_of(name)
        assert two.candidate_render_dirs_of(name) == three.candidate_render_dirs_of(name)


def test_auto_tokens_take_their_own_base_models_pick():
    asked = []

    def ranking(finder):
        asked.append(finder)
        return str(rankings[finder])

    import pandas as pd

    rankings = {}
    grid = dag.Grid(axis_config(TWO, auto=True), ranking=ranking)
    for name, pick in (("sd15", "Will Smith"), ("sdxl", "Idris Elba")):
        folder = paths.finder_folder(name)
        path = Path(pytest.importorskip("tempfile").mkdtemp()) / "ranking.csv"
        pd.DataFrame({"candidate": [pick], "rank": [1]}).to_csv(path)
        rankings[folder] = path
    params = grid.get_arm_params(SimpleNamespace(arm="celebrity-noreg-nocap-sdxl"))
    assert params["token"] == "Idris Elba" and asked == ["token_finder/sdxl"]
    params = grid.get_arm_params(SimpleNamespace(arm="celebrity-noreg-nocap-sd15"))
    assert params["token"] == "Will Smith"
    assert grid.finder_folders == ["token_finder/sd15", "token_finder/sdxl"]
    assert paths.RANKING_OF.format(finder="token_finder/sdxl") in grid.final_outputs
    assert grid.candidate_group_dirs_of("sdxl")[0] == "results/token_finder/sdxl/renders/group-0"
    assert grid.get_ranking_of_page(SimpleNamespace(page="ranking-sdxl")) == (
        "results/token_finder/sdxl/ranking.csv"
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(base_model="tiny"), "both base_model and axes.base_model"),
        (lambda c: c["axes"].pop("base_model"), "no base model"),
        (
            lambda c: c["training"].update(by_base_model={"sdx": {"resolution": 128}}),
            r"training.by_base_model.sdx: no base model 'sdx' \(did you mean 'sdxl'\?\)",
        ),
        (
            lambda c: c["training"].update(by_base_model={"sdxl": {"resolutoin": 128}}),
            r"at training.by_base_model.sdxl: unknown key 'resolutoin' \(did you mean "
            + r"'resolution'\?\)",
        ),
        (
            lambda c: c["sample"].update(by_base_model={"sdxl": {"width": 100}}),
            "at sample.by_base_model.sdxl.width: 100 is not a multiple of 8",
        ),
        (
            lambda c: c["sample"].update(by_base_model={"sdxl": {"steps": 2.0}}),
            r"sample.by_base_model.sdxl.steps is 2.0, a decimal number",
        ),
        (
            lambda c: c["training"].update(by_base_model={"sdxl": {"epochs": 3}}),
            "training.epochs is the same for every base model",
        ),
        (
            lambda c: c["sample"].update(by_base_model={"sdxl": {"seed": 3}}),
            "sample.seed is the same for every base model",
        ),
        (
            lambda c: c["sample"].update(by_base_model={"sdxl": {"batch_size": 3}}),
            r"\(base model sdxl\).*shard_size \(4\) must be a multiple of sample.batch_size",
        ),
        (
            lambda c: c["axes"]["base_model"].update(
                sdxl={"source": "tiny-sdxl", "family": "flux"}
            ),
            "tiny-sdxl is a sdxl model, but family: flux is stated",
        ),
        (
            lambda c: c["axes"]["base_model"].update(sdxl={"source": "tiny-sdxl", "famly": "sdxl"}),
            r"unknown key 'famly' \(did you mean 'family'\?\)",
        ),
        (lambda c: c["axes"]["base_model"].update({"SDXL": "tiny"}), "SDXL"),
    ],
)
def test_bad_base_model_settings_name_the_key_and_the_fix(edit, message):
    config = copy.deepcopy(DEMO)
    del config["base_model"]
    config["axes"]["base_model"] = dict(TWO)
    edit(config)
    with pytest.raises(SpecError, match=message):
        cfg.validate(config)


def test_by_base_model_needs_the_axis():
    config = copy.deepcopy(DEMO)
    config["training"]["by_base_model"] = {"sd15": {"resolution": 128}}
    with pytest.raises(SpecError, match="there is no axes.base_model"):
        cfg.validate(config)


def test_family_is_known_before_any_job_and_a_hub_id_states_its_own(tmp_path):
    assert models.classify("tiny-sdxl") == models.classify("tiny-flux") == "tiny"
    assert models.plan_family("tiny-flux", None) == "flux"
    assert models.plan_family("org/model", None) == "sd15"  # as before the axis
    assert models.plan_family("org/model", "sdxl") == "sdxl"
    folder = tmp_path / "model"
    folder.mkdir()
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "unet": ["diffusers", "UNet2DConditionModel"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    assert models.plan_family(str(folder), None) == "sdxl"
    with pytest.raises(SpecError, match="states family: flux, but the model is sdxl"):
        models.plan_family(str(folder), "flux")


def test_the_families_demo_and_study_configs_are_valid():
    demo = cfg.load(FAMILIES_DEMO)
    grid = dag.Grid(demo)
    assert cfg.is_demo(demo) and grid.families == {"sd15": "sd15", "sdxl": "sdxl", "flux": "flux"}
    assert grid.arm_ids == [f"rare-noreg-nocap-lora-{b}" for b in ("sd15", "sdxl", "flux")]
    for name, family in (("sdxl", "sdxl"), ("flux", "flux")):
        study = cfg.load(ROOT / "config" / f"experiment-{name}.yaml")
        grid = dag.Grid(study)
        assert grid.families == {"": family} and not cfg.is_demo(study)
        assert len(grid.arm_ids) == 12 * 3  # the seed study's recipes, 3 runs each
        assert all(arm.endswith("-lora") or "-lora-r" in arm for arm in grid.arm_ids)
        assert grid.get_prepare_kind(SimpleNamespace(prepared="base")) == family


def test_check_refuses_a_negative_prompt_for_flux_without_true_cfg_before_any_job(tmp_path):
    from dreamgrid import preflight

    config = axis_config(THREE)  # the demo's negative prompt, FLUX without true CFG
    with pytest.raises(SpecError, match=r"sample\.by_base_model\.flux.*true_cfg"):
        preflight.check_specs(config, tmp_path / "results")
    fixed = axis_config(THREE, sample={"flux": {"true_cfg": 4.0}})
    assert preflight.check_specs(fixed, tmp_path / "results") > 0
    assert not (tmp_path / "results").exists()  # nothing written
