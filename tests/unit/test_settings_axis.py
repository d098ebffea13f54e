"""Any training, LoRA or sampling key as a grid axis (#18, item 1): the config forms and their
errors, arm ids and names, every job's params from the arm's own view, sampling axes that
share one training, and every settings axis a factor of the effects and the verdict."""

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dreamgrid import aggregate, dag, inference, paths, preflight, scoretable
from dreamgrid import config as cfg
from dreamgrid.errors import SpecError

BASE = {
    "subject": {"class_word": "woman", "train_images": "photos", "references": "refs"},
    "base_model": "tiny",
    "axes": {"token": {"rare": "ohwx"}, "regularization": ["none", "generated"]},
    "training": {"epochs": 2, "learning_rate": 1.0e-4},
}
LR = {"low": 1.0e-4, "high": 2.0e-4}


def config_with(settings=None, **axes):
    config = copy.deepcopy(BASE)
    config["axes"].update(axes)
    if settings is not None:
        config["axes"]["settings"] = settings
    return cfg.validate(config)


def job(arm, **more):
    return SimpleNamespace(arm=arm, epoch="2", prompt_set="main", shard="0", **more)


def test_ids_names_and_shared_trainings(tmp_path):
    grid = dag.Grid(config_with({"training.learning_rate": LR, "sample.cfg": [5, 8.5]}))
    # ids with a value name's dot pass every job's checks (4 trainings x 2 epochs, 2 cfgs)
    assert preflight.check_specs(grid.config, tmp_path / "results") == 4 * 2 + 2
    # -<name> per axis in config order; a list's values named from the key and the value
    assert grid.arm_ids[:4] == [
        "rare-noreg-nocap-low-cfg5",
        "rare-noreg-nocap-low-cfg8.5",
        "rare-noreg-nocap-high-cfg5",
        "rare-noreg-nocap-high-cfg8.5",
    ]
    assert len(grid.arm_ids) == 2 * 2 * 2
    arm = grid.arms["rare-genreg-nocap-high-cfg8.5"]
    assert arm.settings == (
        ("training.learning_rate", "high", 2.0e-4),
        ("sample.cfg", "cfg8.5", 8.5),
    )
    # a sampling level never retrains: cfg8.5 renders the cfg5 arm's checkpoints
    assert arm.trained_as == "rare-genreg-nocap-high-cfg5"
    assert grid.training_arms == [a for a in grid.arm_ids if a.endswith("cfg5")]
    assert grid.get_checkpoint(job(arm.arm)) == paths.CHECKPOINT.format(
        arm="rare-genreg-nocap-high-cfg5", epoch="2"
    )
    score = grid.get_score_inputs(job(arm.arm, prompt_set_="main"))
    assert (
        score["checkpoint_meta"]
        == "results/arms/rare-genreg-nocap-high-cfg5/checkpoints/epoch-2.json"
    )
    outputs = grid.final_outputs
    assert paths.LOSS_CURVE.format(arm="rare-genreg-nocap-high-cfg5") in outputs
    assert paths.LOSS_CURVE.format(arm=arm.arm) not in outputs
    assert paths.STATE_RELEASED.format(arm=arm.arm) not in outputs
    # but it renders, scores and is plotted as an arm of its own
    assert paths.HISTOGRAM.format(arm=arm.arm, epoch=2, prompt_set="main") in outputs
    # the params an arm passes itself are as before the axis (settings reach jobs as settings)
    assert set(arm.as_params()) == {"arm", "token_name", "token", "regularization", "captions"}


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"training.learning_rate": [1.0e-6, 2.0e-6]}, ["learning_rate1e-06", "learning_rate2e-06"]),
        ({"lora.rank": [8, 32]}, ["rank8", "rank32"]),
        ({"sample.scheduler": ["ddim", "euler_a"]}, ["schedulerddim", "schedulereuler_a"]),
        ({"training.train_text_encoder": [False, True]}, ["train_text_encoderfalse", "train_text_encodertrue"]),
        ({"training.noise_offset": [0.0, 0.05]}, ["noise_offset0", "noise_offset0.05"]),
    ],
)  # fmt: skip
def test_default_names_are_readable_path_safe_and_distinct(values, names):
    config = config_with(values)
    assert list(cfg.settings_axes(config)[next(iter(values))]) == names
    ids = [a.arm for a in cfg.expand_arms(config)]
    assert len(set(ids)) == len(ids) and all("/" not in a and " " not in a for a in ids)


def test_values_that_would_share_a_name_get_their_position():
    assert list(cfg.value_names("sample.negative", ["a b", "a_b"])) == [
        "negativea_b_1",
        "negativea_b_2",
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"training.epochs": [1, 2]}, r"axes.settings.training.epochs: training.epochs shapes the grid"),
        ({"sample.seed": [1, 2]}, r"axes.settings.sample.seed: sample.seed shapes the grid"),
        ({"training.by_base_model": [{}, {}]}, r"shapes the grid"),
        ({"training.learning_rat": [1e-6, 2e-6]}, r"no key 'learning_rat' \(did you mean training.learning_rate\?\)"),
        ({"optimizer": ["adamw", "adamw8bit"]}, r"axes.settings.optimizer: an axis is a key of training"),
        ({"score.model": ["Facenet", "ArcFace"]}, r"an axis is a key of training, lora or sample"),
        ({"sample.cfg": [5]}, r"axes.settings.sample.cfg: give at least two values"),
        ({"sample.cfg": {"low": 5}}, r"give at least two values"),
        ({"sample.cfg": {"Low": 5, "high": 8}}, r"value name 'Low' goes into arm ids"),
        ({"sample.cfg": {"a-b": 5, "high": 8}}, r"value name 'a-b'"),
        ({"sample.cfg": [5, 5]}, r"axes.settings.sample.cfg: the value 5 is given twice"),
        ({"lora.rank": [8, 0]}, r"axes.settings.lora.rank\[1\]: 0 is not a value lora.rank accepts: 0 is less than the minimum of 1"),
        ({"lora.rank": {"small": 8, "big": 32.0}}, r"axes.settings.lora.rank.big is 32.0, a decimal number"),
        ({"sample.scheduler": ["ddim", "dpm"]}, r"axes.settings.sample.scheduler\[1\]: 'dpm' is not a value sample.scheduler accepts"),
        ({"training.learning_rate": [1e-6, "fast"]}, r"axes.settings.training.learning_rate\[1\]: 'fast' is not a value"),
        ({"training.learning_rate": [1e-6, float("nan")]}, r"axes.settings.training.learning_rate\[1\] is nan; give a finite number"),
        # a cross-key rule, checked on each arm as it sees its settings
        ({"sample.batch_size": [1, 3]}, r"arm rare-noreg-nocap-batch_size3: axes.settings.sample.batch_size: batch_size3.*multiple of sample.batch_size \(3\)"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_axis_and_the_fix(settings, message):
    with pytest.raises(SpecError, match=message):
        config_with(settings)


def test_an_axis_and_a_per_base_model_value_of_the_same_key_are_refused():
    config = copy.deepcopy(BASE)
    del config["base_model"]
    config["axes"]["base_model"] = {"sd15": "tiny", "sdxl": "tiny-sdxl"}
    config["axes"]["settings"] = {"sample.cfg": [5, 8]}
    config["sample"] = {"by_base_model": {"sdxl": {"cfg": 6}}}
    with pytest.raises(SpecError, match=r"sample.by_base_model.sdxl.cfg sets it too"):
        cfg.validate(config)


def test_every_jobs_params_come_from_the_arms_own_settings(tmp_path):
    grid = dag.Grid(
        config_with(
            {"lora.learning_rate": LR, "lora.rank": [4, 8], "sample.cfg": [5, 8]},
            method=["lora"],
        )
    )
    low = job("rare-noreg-nocap-lora-low-rank4-cfg5")
    high = job("rare-noreg-nocap-lora-high-rank8-cfg8")
    assert grid.get_method_params(low)["learning_rate"] == 1.0e-4
    assert grid.get_method_params(high)["learning_rate"] == 2.0e-4
    assert grid.get_method_params(low)["lora_rank"] == 4
    assert grid.get_method_params(high)["lora_rank"] == 8
    assert grid.get_shard_settings(low)["cfg"] == 5
    assert grid.get_shard_settings(high)["cfg"] == 8
    full = dag.Grid(config_with({"training.learning_rate": LR}))
    for name, rate in LR.items():
        params = full.get_training_params(job(f"rare-noreg-nocap-{name}"))
        assert params["learning_rate"] == rate
    # the sampling level shares the training: the same training params, another cfg
    shared = job("rare-noreg-nocap-lora-high-rank8-cfg5")
    assert grid.arms[high.arm].trained_as == shared.arm
    assert grid.train_job_params(high.arm) == {
        **grid.train_job_params(shared.arm),
        "arm": grid.get_arm_params(high),
        "state": grid.get_resume_state(high),
    }
    # the memory estimate sees each arm's rank; the preflight builds each training once
    from dreamgrid import memory

    lines = memory.check_config(grid.config, gpu_gib=80)
    assert any("rare-noreg-nocap-lora-high-rank8-cfg8" in line for line in lines)
    trainings = len(grid.training_arms)
    shards = 2  # one main-prompt shard for each cfg level
    assert preflight.check_specs(grid.config, tmp_path / "results") == trainings * 2 + shards
    assert trainings == 2 * 2 * 2  # reg x lr x rank; cfg shares


@pytest.mark.parametrize(
    ("settings", "method", "message"),
    [
        ({"lora.rank": [4, 8]}, ["full", "lora"], r"arms rare-noreg-nocap-rank4 and rare-noreg-nocap-rank8 differ only in lora.rank"),
        ({"training.learning_rate": LR}, ["lora"], r"-lora-low and rare-noreg-nocap-lora-high differ only in training.learning_rate"),
        ({"training.logit_mean": [0.0, 0.5]}, ["full"], r"differ only in training.logit_mean"),
    ],
)  # fmt: skip
def test_an_axis_no_job_reads_is_refused(tmp_path, settings, method, message):
    config = config_with(settings, method=method)
    with pytest.raises(SpecError, match=message):
        preflight.check_specs(config, tmp_path / "results")


def test_a_training_spec_error_names_the_settings_axis(tmp_path):
    # The schema lets text_encoder_lr through; only the TrainSpec knows it needs the encoder.
    config = config_with({"training.text_encoder_lr": {"none": None, "some": 1e-5}})
    with pytest.raises(
        SpecError, match=r"config key axes.settings.training.text_encoder_lr \(value some\)"
    ):
        preflight.check_specs(config, tmp_path / "results")


def test_lora_target_axis_checks_every_value(tmp_path):
    config = config_with({"lora.target_modules": [["to_k"], ["to_k", "to_qq"]]}, method=["lora"])
    with pytest.raises(SpecError, match=r"lora.target_modules: 'to_qq' \(did you mean to_q"):
        preflight.check_specs(config, tmp_path / "results")
    grid = dag.Grid(config)
    assert grid.get_lora_targets(SimpleNamespace(targets="lora_targets")) == ["to_k", "to_qq"]


def test_arms_without_settings_keep_every_params_byte_for_byte():
    """An arm whose settings equal the sections' own values gets exactly the params of the
    arm without the axis: the per-arm view adds nothing else, so a grid without settings
    axes (the same code path) reruns no job."""
    plain = dag.Grid(config_with(method=["full", "lora"]))
    same = {
        "training.learning_rate": [1.0e-4, 3.0e-4],
        "lora.rank": [4, 16],
        "sample.cfg": [8.0, 5],
    }
    axis = dag.Grid(config_with(same, method=["full", "lora"]))
    assert plain.config["lora"]["rank"] == 4 and plain.config["sample"]["cfg"] == 8.0
    methods = (
        "get_training_params", "get_method_params", "get_train_passes", "get_family",
        "get_base_dir", "get_shard_settings", "get_shard_first",
    )  # fmt: skip
    for arm in plain.arm_ids:
        twin = f"{arm}-learning_rate0.0001-rank4-cfg8"
        for method in methods:
            got, want = getattr(axis, method)(job(twin)), getattr(plain, method)(job(arm))
            assert json.dumps(got) == json.dumps(want), (arm, method)
        want = {**plain.get_arm_params(job(arm)), "arm": twin}
        assert json.dumps(axis.get_arm_params(job(twin))) == json.dumps(want)
        assert axis.train_files(twin, 2) == {
            k: v.replace(arm, twin) for k, v in plain.train_files(arm, 2).items()
        }
        assert plain.arms[arm].settings == () and plain.arms[arm].trainer == arm
    assert plain.arm_views == {}
    assert plain.get_lora_targets(SimpleNamespace(targets="lora_targets")) == list(
        plain.config["lora"]["target_modules"]
    )
    assert "learning_rate" not in plain.arm_axes[plain.arm_ids[0]]


def test_keep_best_keeps_the_best_epoch_of_every_arm_sharing_the_training(tmp_path):
    from dreamgrid import retention

    grid = dag.Grid(config_with({"sample.cfg": [5, 8]}, regularization=["none"]))
    (trainer,) = grid.training_arms
    recipes = grid.get_recipe(SimpleNamespace(arm=trainer))
    assert recipes == ["rare-noreg-nocap-cfg5", "rare-noreg-nocap-cfg8"]
    summary = tmp_path / "summary.csv"
    pd.DataFrame(
        {"arm": [*recipes, *recipes], "epoch": [1, 1, 2, 2], "best": [True, False, False, True]}
    ).to_csv(summary, index=False)
    checkpoints = {e: tmp_path / f"epoch-{e}.safetensors" for e in (1, 2, 3)}
    for path in checkpoints.values():
        path.touch()
    record = retention.keep_best_checkpoint(summary, recipes, checkpoints, tmp_path / "kept.json")
    assert record["kept"] == [1, 2] and record["removed"] == [3]
    # training runs: each run of a sampling level renders the same run of its training
    config = copy.deepcopy(BASE)
    config["axes"].update(regularization=["none"], settings={"sample.cfg": [5, 8]})
    config["training"]["replicates"] = 2
    runs = dag.Grid(cfg.validate(config))
    second = runs.arms["rare-noreg-nocap-cfg8-r2"]
    assert (second.trainer, second.recipe) == ("rare-noreg-nocap-cfg5-r2", "rare-noreg-nocap-cfg8")
    assert runs.get_recipe(SimpleNamespace(arm="rare-noreg-nocap-cfg5-r2")) == recipes
    assert runs.training_arms == ["rare-noreg-nocap-cfg5", "rare-noreg-nocap-cfg5-r2"]
    # an arm without sharing arms keeps the one recipe string it had
    plain = dag.Grid(config_with(regularization=["none"]))
    assert plain.get_recipe(SimpleNamespace(arm="rare-noreg-nocap")) == "rare-noreg-nocap"


def test_settings_axes_are_factors_in_config_order():
    grid = dag.Grid(config_with({"training.learning_rate": LR, "sample.cfg": [8, 5]}))
    levels = grid.arm_axes["rare-genreg-nocap-high-cfg5"]
    assert levels == {
        "token": "rare",
        "regularization": "generated",
        "captions": "none",
        "training.learning_rate": "high",
        "sample.cfg": "cfg5",
    }
    frame = inference.arm_axes(sorted(grid.arm_axes), grid.arm_axes)
    # the first value in the config is the reference level, though "high" sorts first
    assert (
        inference.axis_levels("training.learning_rate", frame["training.learning_rate"].tolist())[0]
        == "low"
    )
    assert inference.axis_levels("sample.cfg", frame["sample.cfg"].tolist())[0] == "cfg8"


def scores_of(axes, effect, n_seeds=40, seed=5):
    """One checkpoint per arm; ``training.learning_rate=high`` is ``effect`` more alike."""
    rng = np.random.default_rng(seed)
    per_seed = rng.normal(0, 0.04, n_seeds)
    rows = []
    for arm, levels in axes.items():
        for s in range(n_seeds):
            d = 0.62 + per_seed[s] + rng.normal(0, 0.01)
            d -= effect if levels["training.learning_rate"] == "high" else 0.0
            face = rng.random() > 0.05
            rows.append(
                {
                    "arm": arm,
                    "epoch": 1,
                    "steps": 100,
                    "seed": s,
                    "image": f"render-{s}.png",
                    "face_found": face,
                    "mean_distance": d if face else math.nan,
                }
            )
    return pd.DataFrame(rows)


def test_effects_and_verdict_of_settings_axes():
    grid = dag.Grid(config_with({"training.learning_rate": LR, "sample.cfg": [5, 8]}))
    axes = grid.arm_axes
    typed = scoretable._normalise(scores_of(axes, 0.06), "test")
    result = aggregate.build(
        typed,
        thresholds=[0.6, 0.7],
        best_margin=5.0,
        best_margin_relative=0.25,
        min_faces=20,
        arms=axes,
        resamples=500,
    )
    effects = result["effects"]
    main = effects.loc[(effects["term"] == "main") & (effects["view"] == "equal_steps")]
    rows = main.set_index("axis")
    assert rows.loc["training.learning_rate", "contrast"] == "high vs low"
    assert rows.loc["training.learning_rate", "estimate"] == pytest.approx(-0.06, abs=0.01)
    assert rows.loc["sample.cfg", "contrast"] == "cfg8 vs cfg5"
    assert rows.loc["sample.cfg", "estimate"] == pytest.approx(0.0, abs=0.01)
    inter = effects.loc[effects["term"] == "interaction", "axis"]
    assert "training.learning_rate x sample.cfg" in set(inter)
    claims = [c for c in result["verdict"]["claims"] if c["kind"] == "effect"]
    assert {(c["better"], c["worse"]) for c in claims} == {
        ("training.learning_rate=high", "training.learning_rate=low")
    }
    assert (
        "**training.learning_rate=high** is more alike than **training.learning_rate=low**"
        in (result["markdown"])
    )


def test_the_disk_estimate_counts_a_shared_training_once(tmp_path):
    trains = preflight.estimate_disk(config_with({"training.learning_rate": LR}), tmp_path)
    shares = preflight.estimate_disk(config_with({"sample.cfg": [5, 8]}), tmp_path)
    assert shares["renders"] == trains["renders"] > 0  # four rendering arms each
    assert 2 * shares["checkpoints"] == trains["checkpoints"] > 0  # two trainings, not four
    assert 2 * shares["resume_states"] == trains["resume_states"]


def test_the_readme_example_is_a_valid_grid(tmp_path):
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Any setting as an axis", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL).group(1)
    config = copy.deepcopy(BASE)
    config["axes"] = yaml.safe_load(block)["axes"]
    grid = dag.Grid(cfg.validate(config))
    assert "rare-genreg-nocap-lora-high-rank8-cfg5" in grid.arm_ids  # the id the README names
    assert len(grid.arm_ids) == 2 * 2 * 2 * 2 and len(grid.training_arms) == 8
    assert preflight.check_specs(grid.config, tmp_path / "results") > 0
