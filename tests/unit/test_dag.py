import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from dreamgrid import config as cfg
from dreamgrid import dag, paths


def grid(**training):
    config = cfg.validate(
        {
            "subject": {"class_word": "woman", "train_images": "photos", "references": "refs"},
            "base_model": "tiny",
            "axes": {
                "token": {"celebrity": "alexa davalos", "rare": "ohwx"},
                "regularization": ["none", "generated"],
                "captions": ["blip", "none"],
            },
            "training": {"epochs": 3, **training},
        }
    )
    return dag.Grid(config)


def test_first_epoch_starts_from_base_model_only():
    inputs = grid().get_train_inputs(SimpleNamespace(arm="rare-noreg-nocap", epoch="1"))
    assert set(inputs) == {"base", "images"}
    assert inputs["base"] == paths.BASE_MODEL_DIR


def test_later_epochs_continue_from_previous_epoch():
    inputs = grid().get_train_inputs(SimpleNamespace(arm="celebrity-genreg-blip", epoch="3"))
    # The previous epoch's small JSON orders the jobs; its weights come from the arm's resume
    # state, so a removed checkpoint (keep_checkpoints) is not wanted back.
    assert inputs["previous_meta"] == "results/arms/celebrity-genreg-blip/checkpoints/epoch-2.json"
    assert not any(str(v).endswith(".safetensors") for v in inputs.values())
    assert inputs["captions"] == "results/captions/blip/captions.csv"
    assert inputs["reg"] == "results/regularization/generated/images"


def test_training_params_exclude_epoch_count():
    # Raising `epochs` must add jobs, not rerun the existing epochs.
    params = grid().training_params
    assert "epochs" not in params
    assert params["repeats"] == 25


def test_params_do_not_depend_on_key_order():
    # Snakemake compares params as text: a reordered config file must not rerun jobs.
    assert list(grid().training_params) == sorted(grid().training_params)
    assert dag.canonical({"b": 1, "a": {"d": 1, "c": 2}}) == {"a": {"c": 2, "d": 1}, "b": 1}
    assert list(dag.canonical({"b": 1, "a": {"d": 1, "c": 2}})["a"]) == ["c", "d"]


def test_arm_params_are_only_that_arm():
    g = grid()
    assert g.get_arm_params(SimpleNamespace(arm="rare-genreg-blip"))["token"] == "ohwx"
    assert (
        g.get_arm_params(SimpleNamespace(arm="celebrity-noreg-nocap"))["token"] == "alexa davalos"
    )


def test_face_params_leave_out_thresholds():
    assert "thresholds" not in grid().scoring_params
    assert "thresholds" not in grid().get_embed_params(SimpleNamespace(model="Dlib"))


def test_final_outputs_cover_every_checkpoint():
    g = grid()
    hists = [
        p for p in g.final_outputs if p.startswith("results/plots/histograms/") and "/epoch-" in p
    ]
    assert len(hists) == 8 * 3
    assert "results/plots/histograms/rare-genreg-nocap/main/epoch-3.png" in hists
    assert paths.SUMMARY in g.final_outputs


def test_references_file_names_model_and_detector():
    assert grid().primary_references == "results/references/Dlib-dlib.json"


def test_report_outputs_and_statistics_params():
    g = grid()
    outputs = g.final_outputs
    for path in (paths.COMPARISONS, paths.EFFECTS):
        assert path in outputs
    for path in (paths.CURVES_EPOCH, paths.CURVES_STEPS):
        assert path.format(prompt_set="main") in outputs
    assert "results/references/Dlib-dlib.baseline.csv" in outputs
    assert len([p for p in outputs if p.endswith("/all-epochs.png")]) == 8
    assert len([p for p in outputs if "/contact-sheets/" in p]) == 8 * 3
    assert set(g.statistics_params) == {
        "best_margin",
        "best_margin_relative",
        "bootstrap_resamples",
        "confidence",
        "min_faces",
        "seed",
    }
    axes = g.arm_axes["rare-genreg-blip"]
    assert axes == {"token": "rare", "regularization": "generated", "captions": "blip"}


def test_match_steps_doubles_passes_of_no_reg_arms_only():
    assert {grid().get_train_passes(SimpleNamespace(arm=a)) for a in grid().arm_ids} == {1}
    matched = grid(match_steps=True)
    passes = {a: matched.get_train_passes(SimpleNamespace(arm=a)) for a in matched.arm_ids}
    no_reg = {a for a in matched.arm_ids if matched.arms[a].regularization == "none"}
    assert {a for a, p in passes.items() if p == 2} == no_reg and len(no_reg) == 4
    assert "match_steps" not in matched.training_params  # reg arms do not rerun
    paired = grid(match_steps=True, reg_mode="paired")  # no doubling to match
    assert {paired.get_train_passes(SimpleNamespace(arm=a)) for a in paired.arm_ids} == {1}


def test_bucket_sizes_reach_the_jobs_only_with_buckets():
    # Editing bucket sizes while center-cropping must not retrain (or redo ground truth).
    plain, edited = grid(), grid(bucket_step=32)
    assert plain.training_params == edited.training_params
    assert plain.training_params["bucket_step"] is None
    assert (
        plain.ground_truth_params
        == edited.ground_truth_params
        == {
            "resolution": 512,
            "max_side": None,
        }
    )
    buckets = grid(aspect_ratio="buckets", bucket_max_size=768)
    params = buckets.training_params
    assert (params["bucket_min_size"], params["bucket_max_size"], params["bucket_step"]) == (
        256,
        768,
        64,
    )
    assert buckets.ground_truth_params["max_side"] == 768


def test_lora_method_axis_adds_arms_with_their_own_settings():
    plain = grid()
    both = dag.Grid(
        cfg.validate(
            {
                **plain.config,
                "axes": {**plain.config["axes"], "method": ["full", "lora"]},
                "lora": {"rank": 8, "alpha": 4},
            }
        )
    )
    assert len(both.arm_ids) == 2 * len(plain.arm_ids)
    assert set(plain.arm_ids) < set(both.arm_ids)  # full arms keep their ids and params
    assert all(
        both.get_arm_params(SimpleNamespace(arm=a)) == plain.get_arm_params(SimpleNamespace(arm=a))
        for a in plain.arm_ids
    )
    lora = both.get_method_params(SimpleNamespace(arm="rare-noreg-nocap-lora"))
    assert lora["method"] == "lora" and lora["lora_rank"] == 8 and lora["lora_alpha"] == 4.0
    assert lora["learning_rate"] == 1e-4 and lora["lora_target_modules"][0] == "to_k"
    assert both.get_method_params(SimpleNamespace(arm="rare-noreg-nocap"))["lora_rank"] is None


def test_the_method_is_a_factorial_axis_when_the_grid_has_several():
    assert "method" not in grid().arm_axes["rare-genreg-blip"]
    config = cfg.validate(
        {
            "subject": {"class_word": "woman", "train_images": "photos", "references": "refs"},
            "base_model": "tiny",
            "axes": {"token": {"rare": "ohwx"}, "method": ["full", "lora"]},
        }
    )
    axes = dag.Grid(config).arm_axes
    assert axes["rare-noreg-nocap"]["method"] == "full"
    assert axes["rare-noreg-nocap-lora"]["method"] == "lora"


def test_replicates_name_their_recipe_for_the_aggregation():
    from dreamgrid import aggregate

    g = grid(replicates=2)
    assert (
        len(g.arm_ids) == 16
        and g.get_recipe(SimpleNamespace(arm="rare-noreg-blip-r2")) == "rare-noreg-blip"
    )
    axes = g.arm_axes
    assert axes["rare-noreg-blip-r2"]["recipe"] == "rare-noreg-blip"
    assert axes["rare-noreg-blip-r2"]["replicate"] == 2
    assert "recipe" not in grid().arm_axes["rare-noreg-blip"]
    scores = pd.DataFrame(
        {"arm": ["rare-noreg-blip", "rare-noreg-blip-r2"], "epoch": [1, 1], "seed": [0, 0]}
    )
    mapped, _, recipes = aggregate.by_recipe(scores, None, axes)
    assert list(mapped["arm"]) == ["rare-noreg-blip"] * 2
    assert list(mapped["replicate"]) == [1, 2]
    assert recipes["rare-noreg-blip"] == {
        "token": "rare",
        "regularization": "none",
        "captions": "blip",
    }
    assert g.get_arm_params(SimpleNamespace(arm="rare-noreg-blip-r2"))["replicate"] == 2
    # the run count is no training setting: run 1's jobs keep their params
    assert g.training_params == grid().training_params


def test_lora_arms_wait_for_the_lora_target_check():
    config = grid().config
    config["axes"]["method"] = ["full", "lora"]
    lora = dag.Grid(config)
    job = SimpleNamespace(arm="rare-noreg-nocap-lora", epoch="1")
    assert lora.get_train_inputs(job)["lora_targets"] == paths.LORA_TARGETS
    assert "lora_targets" not in lora.get_train_inputs(
        SimpleNamespace(arm="rare-noreg-nocap", epoch="1")
    )


def test_train_job_params_are_the_rules_params():
    # The preflight builds specs from these; they must be what train_dreambooth passes.
    rules = Path(__file__).resolve().parents[2] / "workflow" / "rules" / "train.smk"
    block = rules.read_text().split("rule train_dreambooth:")[1].split("\nrule ")[0]
    params = block.split("    params:\n")[1].split("    script:")[0]
    names = set(re.findall(r"^        (\w+)=", params, flags=re.MULTILINE)) - {"impl"}
    assert names == set(grid().train_job_params("rare-noreg-nocap"))
