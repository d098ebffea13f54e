"""Bad input stops the workflow before any job, with one message naming the file."""

import json

import pytest
from conftest import copy_workflow, snakemake

pytestmark = pytest.mark.slow


def test_broken_image_stops_the_run_before_any_job(tmp_path):
    work = copy_workflow(tmp_path)
    (work / "resources/demo/train/zz_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    result = snakemake(work, "--cores", "2", timeout=300)
    assert result.returncode != 0
    assert "zz_broken.jpg: cannot be read as an image" in result.stdout + result.stderr
    assert not (work / "results" / "models").exists()
    assert not (work / "results" / "arms").exists()


def test_lora_targets_are_checked_by_a_job_before_any_lora_arm_trains(study_dir):
    # For a hub id the preflight cannot see the UNet: this job checks the converted model.
    config = study_dir / "lora.yaml"
    config.write_text(
        "subject: {class_word: woman, train_images: data/subject/train,"
        " references: data/subject/references}\n"
        "base_model: tiny\ncaption: {model: tiny}\n"
        "axes: {token: {rare: ohwx}, method: [lora]}\n"
        "lora: {target_modules: [to_k, to_v]}\n"
    )
    plan = snakemake(study_dir, "-n", "--cores", "1", "--configfile", "lora.yaml", timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "check_lora_targets" in plan.stdout
    target = "results/models/lora_targets.json"  # before --configfile, which takes a list
    result = snakemake(study_dir, target, "--cores", "1", "--configfile", "lora.yaml", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((study_dir / "results/models/lora_targets.json").read_text())
    assert record["target_modules"] == ["to_k", "to_v"] and record["layers"] > 0
    assert not (study_dir / "results" / "arms").exists()
