"""A config file given on the command line stands alone: the study plans its own grid.

`snakemake --configfile config/experiment.yaml` once merged the demo's `config/config.yaml`
under the study, so demo keys leaked in (buckets for 64 px, 2 renders per extra prompt set,
shards of 4). These dry runs check the plan the study and a partial user config get.
"""

import math
import subprocess
import sys
from collections import Counter

import pytest
import yaml
from conftest import ROOT, planned_jobs

pytestmark = pytest.mark.slow

SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
#: The models swapped for tiny local ones: nothing can be downloaded here.
TINY_MODELS = ("--config", "base_model=tiny", 'caption={"model": "tiny"}')


def schema_default(*keys: str):
    node = SCHEMA
    for key in keys:
        node = node["properties"][key]
    return node["default"]


def per_checkpoint(jobs, rule: str) -> Counter:
    return Counter((wc["arm"], int(wc["epoch"])) for name, wc in jobs if name == rule)


def test_the_study_config_plans_the_studys_grid(study_dir):
    study = yaml.safe_load((ROOT / "config/experiment.yaml").read_text())
    jobs = planned_jobs(study_dir, options=("--configfile", "config/experiment.yaml", *TINY_MODELS))
    rules = Counter(rule for rule, _ in jobs)
    recipes = [
        f"{token}-{reg}-{cap}"
        for token in study["axes"]["token"]
        for reg in ("noreg", "genreg", "gtreg")
        for cap in ("blip", "nocap")
    ]
    runs = study["training"]["replicates"]
    # Run 1 keeps the recipe's id; runs 2.. are separate arms "<recipe>-r<k>".
    arms = [arm if run == 1 else f"{arm}-r{run}" for arm in recipes for run in range(1, runs + 1)]
    epochs = study["training"]["epochs"]
    assert len(recipes) == 12 and epochs == 6 and runs == 3
    assert rules["train_dreambooth"] == len(recipes) * runs * epochs == 216
    trained = per_checkpoint(jobs, "train_dreambooth")
    assert set(trained) == {(arm, e) for arm in arms for e in range(1, epochs + 1)}
    # Every checkpoint renders the study's 200 in shards of its shard size, and only the main
    # prompt set: the demo's extra sets and its shards of 4 do not leak in.
    sample = study["sample"]
    assert sample["count"] == 200
    shards = math.ceil(
        sample["count"] / sample.get("shard_size", schema_default("sample", "shard_size"))
    )
    assert set(per_checkpoint(jobs, "sample_checkpoint").values()) == {shards}
    assert len(per_checkpoint(jobs, "sample_checkpoint")) == len(arms) * epochs
    assert {wc["prompt_set"] for rule, wc in jobs if rule == "sample_checkpoint"} == {"main"}
    # One scoring job and one histogram per checkpoint; no token finder (tokens are given).
    assert rules["score_faces"] == rules["plot_histogram"] == len(arms) * epochs
    assert not {r for r in rules if r.startswith("render_candidate")}


@pytest.fixture(scope="module")
def partial_config(study_dir) -> str:
    """A user's own file with only the keys they care about."""
    partial = {
        "subject": {
            "class_word": "woman",
            "train_images": "data/subject/train",
            "references": "data/subject/references",
        },
        "base_model": "tiny",
        "caption": {"model": "tiny"},
        "axes": {"token": {"rare": "ohwx"}},
    }
    (study_dir / "mine.yaml").write_text(yaml.safe_dump(partial))
    return "mine.yaml"


def test_a_partial_user_config_gets_schema_defaults_not_demo_values(study_dir, partial_config):
    jobs = planned_jobs(study_dir, options=("--configfile", partial_config))
    epochs = schema_default("training", "epochs")
    assert schema_default("axes", "captions") == ["none"]
    assert per_checkpoint(jobs, "train_dreambooth") == {
        ("rare-noreg-nocap", e): 1 for e in range(1, epochs + 1)
    }
    sample = SCHEMA["properties"]["sample"]["properties"]
    shards = math.ceil(sample["count"]["default"] / sample["shard_size"]["default"])
    assert set(per_checkpoint(jobs, "sample_checkpoint").values()) == {shards}
    # The demo's prompt sets and its regularization images are not the user's.
    assert {wc["prompt_set"] for rule, wc in jobs if "prompt_set" in wc} == {"main"}
    assert not {"generate_class_images", "render_candidate"} & {rule for rule, _ in jobs}


def test_without_a_config_file_the_demo_is_planned(study_dir):
    demo = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    jobs = planned_jobs(study_dir)
    sets = {wc["prompt_set"] for rule, wc in jobs if rule == "sample_checkpoint"}
    assert sets == {"main", *demo["sample"]["prompt_sets"]}
    assert set(per_checkpoint(jobs, "train_dreambooth").values()) == {1}
    assert len(per_checkpoint(jobs, "train_dreambooth")) == 8 * demo["training"]["epochs"]


def test_dreamgrid_check_reads_the_file_alone(study_dir, partial_config):
    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "check", partial_config],
        cwd=study_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shard_size = schema_default("sample", "shard_size")
    assert "1 arm x 6 epochs" in result.stdout
    assert f"200 renders per checkpoint in shards of {shard_size}" in result.stdout
    assert "prompt sets: main" in result.stdout
