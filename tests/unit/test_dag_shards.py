"""Shards and several face models in the DAG (issue #4)."""

from types import SimpleNamespace

import pytest

from dreamgrid import config as cfg
from dreamgrid import dag, paths
from dreamgrid.errors import SpecError
from dreamgrid.sample import SampleSettings, shard_ranges


def grid(sample=None, score=None):
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
    g = grid({"batch_size": 8})
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
    small, large = grid({"count": 8, "shard_size": 4}), grid({"count": 12, "shard_size": 4})
    for k in (0, 1):
        wc = SimpleNamespace(shard=str(k), prompt_set="main")
        assert small.get_shard_settings(wc) == large.get_shard_settings(wc)
        assert small.get_shard_first(wc) == large.get_shard_first(wc) == 4 * k
    last = large.get_shard_settings(SimpleNamespace(shard="2", prompt_set="main"))
    assert last["count"] == 12 and "shard_size" not in last
    assert large.get_shard_first(SimpleNamespace(shard="2")) == 8


def test_score_inputs_list_every_shard_per_model():
    g = grid({"count": 8, "shard_size": 4}, {"models": ["ArcFace", "Dlib"]})
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
    g = grid(score={"metric": "euclidean_l2", "thresholds": [0.5]})
    embed = g.get_embed_params(SimpleNamespace(model="Dlib"))
    assert set(embed) == {"align", "deepface_home", "detector", "model"}
    scoring = g.scoring_params
    assert "thresholds" not in scoring and scoring["models"] == ["Dlib"]
    assert scoring["multiple_faces"] == "closest"


BLEED = "headshot photo of a {class}"


def test_prompt_sets_are_main_then_the_extras():
    g = grid({"prompt_sets": {"bleed": BLEED, "painting": "oil painting of {token} {class}"}})
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
    assert grid().get_shard_settings(wc) == grid(
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
        grid({"prompt_sets": prompt_sets})


def test_extra_prompt_sets_may_render_fewer_images_than_main():
    sets = {"bleed": BLEED, "painting": "oil painting of {token} {class}"}
    g = grid({"count": 12, "shard_size": 4, "prompt_sets": sets, "prompt_sets_count": 6})
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
    assert g.get_shard_settings(wc) == grid({"count": 12, "shard_size": 4}).get_shard_settings(wc)
    assert grid({"count": 12, "prompt_sets": sets}).prompt_set_count("bleed") == 12
    with pytest.raises(SpecError, match="prompt_sets_count"):
        grid({"prompt_sets": sets, "prompt_sets_count": 0})
