import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from dreamgrid import config as cfg
from dreamgrid import dag, paths
from dreamgrid.errors import SpecError
from dreamgrid.sample import SampleSettings, shard_ranges


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


# ---- sample shards, prompt sets and several face models -----------------------------------
def shard_grid(sample=None, score=None):
    """One arm; ``sample`` and ``score`` sections as given."""
    config = cfg.validate(
        {
            "subject": {"class_word": "woman", "train_images": "photos", "references": "refs"},
            "base_model": "tiny",
            "axes": {"token": {"rare": "ohwx"}, "regularization": ["none"], "captions": ["none"]},
            "sample": sample or {},
            "score": score or {},
        }
    )
    return dag.Grid(config)


def test_shard_ranges_align_with_batches_and_only_grow():
    assert shard_ranges(200, 40, 8) == [(0, 40), (40, 80), (80, 120), (120, 160), (160, 200)]
    assert shard_ranges(10, 4, 4) == [(0, 4), (4, 8), (8, 10)]
    # More renders keep every full shard as it was.
    assert shard_ranges(14, 4, 4)[:2] == shard_ranges(10, 4, 4)[:2]
    with pytest.raises(SpecError, match="multiple of sample.batch_size"):
        shard_ranges(200, 50, 8)


def test_default_shards_of_the_study():
    g = shard_grid({"batch_size": 8})
    assert g.shard_ids() == [0]  # 200 renders in one job: the checkpoint is loaded once


def test_the_study_loads_each_checkpoint_once_for_sampling():
    # config/experiment.yaml as the workflow sees it (schema defaults filled in): one
    # sampling job, so one load of the checkpoint, per checkpoint; 216 in all.
    from pathlib import Path

    study = cfg.load(Path(__file__).parents[2] / "config" / "experiment.yaml")
    g = dag.Grid(cfg.validate(study))
    jobs = [(p, k) for p in g.prompt_set_names for k in g.shard_ids(p)]
    assert jobs == [("main", 0)]
    # 12 recipes x 3 training runs (training.replicates) x 6 epochs
    assert len(g.checkpoints(paths.CHECKPOINT)) * len(jobs) == 12 * 3 * 6
    # 40 more renders add one shard (one more load), the first is left alone.
    more = dag.Grid(cfg.validate({**study, "sample": {**study["sample"], "count": 240}}))
    assert more.shard_ranges() == [(0, 200), (200, 240)]


def test_shard_params_do_not_change_when_renders_are_added():
    small, large = (
        shard_grid({"count": 8, "shard_size": 4}),
        shard_grid({"count": 12, "shard_size": 4}),
    )
    for k in (0, 1):
        wc = SimpleNamespace(shard=str(k), prompt_set="main")
        assert small.get_shard_settings(wc) == large.get_shard_settings(wc)
        assert small.get_shard_first(wc) == large.get_shard_first(wc) == 4 * k
    last = large.get_shard_settings(SimpleNamespace(shard="2", prompt_set="main"))
    assert last["count"] == 12 and "shard_size" not in last
    assert large.get_shard_first(SimpleNamespace(shard="2")) == 8


def test_score_inputs_list_every_shard_per_model():
    g = shard_grid({"count": 8, "shard_size": 4}, {"models": ["ArcFace", "Dlib"]})
    assert g.face_models == ["Dlib", "ArcFace"]
    inputs = g.get_score_inputs(
        SimpleNamespace(arm="rare-noreg-nocap", epoch="2", prompt_set="main")
    )
    base = "results/arms/rare-noreg-nocap/epoch-2/main"
    assert inputs["checkpoint_meta"] == "results/arms/rare-noreg-nocap/checkpoints/epoch-2.json"
    assert inputs["tables"] == [f"{base}/renders/shard-0.csv", f"{base}/renders/shard-1.csv"]
    assert inputs["faces_1"] == [
        f"{base}/faces/ArcFace-dlib/shard-0.json",
        f"{base}/faces/ArcFace-dlib/shard-1.json",
    ]
    assert inputs["references_0"] == "results/references/Dlib-dlib.json"
    assert inputs["references_1"] == "results/references/ArcFace-dlib.json"


def test_embedding_params_leave_out_metric_and_scoring_params_thresholds():
    g = shard_grid(score={"metric": "euclidean_l2", "thresholds": [0.5]})
    embed = g.get_embed_params(SimpleNamespace(model="Dlib"))
    assert set(embed) == {"align", "deepface_home", "detector", "model"}
    scoring = g.scoring_params
    assert "thresholds" not in scoring and scoring["models"] == ["Dlib"]
    assert scoring["multiple_faces"] == "closest"


BLEED = "headshot photo of a {class}"


def test_prompt_sets_are_main_then_the_extras():
    g = shard_grid({"prompt_sets": {"bleed": BLEED, "painting": "oil painting of {token} {class}"}})
    assert g.prompt_set_names == ["main", "bleed", "painting"]
    assert g.prompt_sets["main"] == "headshot photo of {token} {class}"
    bleed = g.get_shard_settings(SimpleNamespace(shard="0", prompt_set="bleed"))
    assert bleed["prompt"] == BLEED and bleed["prompt_set"] == "bleed"
    assert "prompt_sets" not in bleed
    scores = g.checkpoints(paths.SCORES)
    assert len(scores) == 3 * len(g.epochs)
    assert "results/arms/rare-noreg-nocap/epoch-1/bleed/scores.csv" in scores
    # Paths without {prompt_set} are not repeated per set.
    assert len(g.checkpoints(paths.CHECKPOINT)) == len(g.epochs)
    outputs = g.final_outputs
    assert "results/plots/curves/painting/by-steps.png" in outputs
    assert "results/plots/histograms/rare-noreg-nocap/bleed/all-epochs.png" in outputs
    assert "results/plots/contact-sheets/rare-noreg-nocap/painting/epoch-1.png" in outputs


def test_adding_a_prompt_set_leaves_the_main_sets_params_alone():
    # Snakemake reruns a job whose params change: adding a set must not touch `main`'s shards.
    wc = SimpleNamespace(shard="0", prompt_set="main")
    assert shard_grid().get_shard_settings(wc) == shard_grid(
        {"prompt_sets": {"bleed": BLEED}}
    ).get_shard_settings(wc)


@pytest.mark.parametrize(
    "prompt_sets, match",
    [
        ({"main": "a {token}"}, "main"),
        ({"Bad Name": "a {token}"}, "Bad Name"),
        ({"bleed": ""}, "bleed"),
    ],
)
def test_bad_prompt_sets_are_refused(prompt_sets, match):
    with pytest.raises(SpecError, match=match):
        shard_grid({"prompt_sets": prompt_sets})


def test_extra_prompt_sets_may_render_fewer_images_than_main():
    sets = {"bleed": BLEED, "painting": "oil painting of {token} {class}"}
    g = shard_grid({"count": 12, "shard_size": 4, "prompt_sets": sets, "prompt_sets_count": 6})
    assert g.prompt_set_count("main") == 12 and g.prompt_set_count("bleed") == 6
    assert g.shard_ranges("main") == [(0, 4), (4, 8), (8, 12)]
    assert g.shard_ranges("bleed") == [(0, 4), (4, 6)]
    last = g.get_shard_settings(SimpleNamespace(shard="1", prompt_set="bleed"))
    assert last["count"] == 6 and "prompt_sets_count" not in last
    assert SampleSettings(**last).seeds[4:] == [4, 5]  # the first of main's seeds: paired
    where = SimpleNamespace(arm="rare-noreg-nocap", epoch="1", prompt_set="painting")
    assert len(g.get_score_inputs(where)["tables"]) == len(g.get_render_dirs(where)) == 2
    main = SimpleNamespace(arm="rare-noreg-nocap", epoch="1", prompt_set="main")
    assert len(g.get_score_inputs(main)["tables"]) == 3
    # Setting it leaves `main`'s jobs alone; without it every set renders `count`.
    wc = SimpleNamespace(shard="2", prompt_set="main")
    assert g.get_shard_settings(wc) == shard_grid(
        {"count": 12, "shard_size": 4}
    ).get_shard_settings(wc)
    assert shard_grid({"count": 12, "prompt_sets": sets}).prompt_set_count("bleed") == 12
    with pytest.raises(SpecError, match="prompt_sets_count"):
        shard_grid({"prompt_sets": sets, "prompt_sets_count": 0})


def test_wildcard_constraints_match_exactly_the_configured_names():
    pattern = dag.one_of(["VGG-Face", "Facenet512", "a.b"])
    assert re.fullmatch(pattern, "VGG-Face") and re.fullmatch(pattern, "a.b")
    assert not re.fullmatch(pattern, "axb") and not re.fullmatch(pattern, "Facenet")
