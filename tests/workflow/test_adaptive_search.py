"""The adaptive grid end to end: a look really stops an arm, through Snakemake's own plan.

Three tiny arms (three tokens, nothing else), 2 epochs, one look after epoch 1, 12 renders
per checkpoint (a look compares at least adaptive.MIN_PAIRS seed pairs). Training and sampling run for real up to the look; then each epoch-1 render is
overwritten with a public-domain photo (resources/demo): another man (Biden) for one arm, the
subject (Obama) for the other two (the same photos, so they tie). The decide_look checkpoint
must then stop the first arm on its interval, and Snakemake must plan epoch 2 only for the
other two, write decisions.tsv and summary.md's section, and plan nothing on a rerun.
"""

import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DEMO_SUBJECT, ROOT, copy_workflow, planned_jobs, snakemake
from PIL import Image

pytestmark = pytest.mark.slow

CONFIG = {
    "subject": DEMO_SUBJECT,
    "base_model": "tiny",
    "axes": {
        "token": {"ohwx": "ohwx", "sks": "sks", "zwx": "zwx"},
        "regularization": ["none"],
        "captions": ["none"],
    },
    "training": {
        "resolution": 64,
        "repeats": 1,
        "epochs": 2,
        "batch_size": 1,
        "learning_rate": 1.0e-4,
    },
    # Renders are replaced, so 2 sampling steps are enough; no extra prompt sets (cost).
    "sample": {"count": 12, "steps": 2, "width": 64, "height": 64, "batch_size": 4},
    "report": {"min_faces": 2},
    "search": {"method": "successive_halving", "looks": [1]},
}
STOPPED = "sks-noreg-nocap"
RUNNING = ["ohwx-noreg-nocap", "zwx-noreg-nocap"]
ARMS = [*RUNNING, STOPPED]
LOOK = "results/search/look-1.tsv"
TARGET = "results/report/verdict.html"
SUBJECT = ["train/obama.jpg", "train/obama2.jpg", "train/obama3.jpg"] * 4
OTHER = ["ground_truth/biden.jpg", "ground_truth/biden_closeup.jpg"] * 6


def place_photos(work: Path) -> None:
    """Overwrite each arm's epoch-1 renders with its photos (seed order)."""
    for arm in ARMS:
        photos = OTHER if arm == STOPPED else SUBJECT
        shard = work / f"results/arms/{arm}/epoch-1/main/renders"
        table = pd.read_csv(shard / "shard-0.csv")
        assert list(table["seed"]) == list(range(12))
        for seed, name in zip(table["seed"], table["image"], strict=True):
            with Image.open(ROOT / "resources/demo" / photos[seed]) as image:
                image.convert("RGB").save(shard / name)


def run(work: Path, *args: str) -> None:
    result = snakemake(work, *args, "--cores", "2")
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in (work / "results/logs").rglob("*.log")
        )
        pytest.fail(f"snakemake {args} failed:\n{result.stderr[-5000:]}\n{logs[-8000:]}")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """(workdir, jobs planned once the look was made, jobs planned on a rerun); the HTML
    report of the run is written last."""
    work = copy_workflow(tmp_path_factory.mktemp("adaptive-search"))
    (work / "config/config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    # Up to the look: before its checkpoint has run, only epoch 1 exists in the plan.
    before = planned_jobs(work, targets=(TARGET,))
    assert {wc["epoch"] for rule, wc in before if rule == "train_dreambooth"} == {"1"}
    run(work, TARGET, "--until", "sample_checkpoint")
    place_photos(work)
    run(work, LOOK)
    after_look = planned_jobs(work, targets=(TARGET,))
    run(work, TARGET)
    rerun = planned_jobs(work, targets=(TARGET,))
    result = snakemake(work, "--report", "results/report.html", TARGET, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, after_look, rerun


def test_the_look_stops_the_arm_far_from_the_subject(searched):
    work, _, _ = searched
    look = pd.read_csv(work / LOOK, sep="\t").set_index("arm")
    assert look.loc[STOPPED, "decision"] == "stop"
    assert look.loc[STOPPED, "ci_low"] > look.loc[STOPPED, "margin"]
    assert set(look.loc[RUNNING, "decision"]) <= {"best", "continue"}
    assert look.loc[STOPPED, "best_arm"] in RUNNING


def test_after_the_look_only_the_running_arms_train_on(searched):
    work, plan, _ = searched
    trained = {(wc["arm"], wc["epoch"]) for rule, wc in plan if rule == "train_dreambooth"}
    assert trained == {(arm, "2") for arm in RUNNING}
    # The stopped arm is neither trained, rendered nor scored again; its epoch 1 stays.
    assert not [wc for rule, wc in plan if wc.get("arm") == STOPPED and wc.get("epoch") == "2"]
    assert Counter(rule for rule, _ in plan)["decide_look"] == 0
    for arm in RUNNING:
        assert (work / f"results/arms/{arm}/checkpoints/epoch-2.safetensors").exists()
    assert not (work / f"results/arms/{STOPPED}/checkpoints/epoch-2.json").exists()
    assert (work / f"results/arms/{STOPPED}/checkpoints/epoch-1.safetensors").exists()
    assert (work / f"results/arms/{STOPPED}/epoch-1/main/scores.csv").exists()


def test_decisions_and_summary_say_where_and_why(searched):
    work, _, _ = searched
    decisions = pd.read_csv(work / "results/search/decisions.tsv", sep="\t")
    assert decisions.equals(pd.read_csv(work / LOOK, sep="\t"))
    text = (work / "results/report/summary.md").read_text()
    section = text[text.index("## Adaptive search") :]
    row = re.search(rf"^\| {STOPPED} \| look at epoch 1 \| worse than (\S+) by .*\| 1 of 2 \|$",
                    section, flags=re.MULTILINE)  # fmt: skip
    assert row and row.group(1) in RUNNING
    for arm in RUNNING:
        assert f"| {arm} | ran to the end |  | 2 of 2 |" in section
    assert "Training epochs used: 5 of 6 in the full grid (17% saved)" in section
    # The summary compares the stopped arm at its one epoch.
    summary = pd.read_csv(work / "results/summary.csv")
    assert sorted(summary.loc[summary["arm"] == STOPPED, "epoch"].unique()) == [1]
    assert sorted(summary.loc[summary["arm"] == RUNNING[0], "epoch"].unique()) == [1, 2]


def test_the_report_shows_the_decisions(searched):
    work, _, _ = searched
    html = (work / "results/report.html").read_text(errors="replace")
    assert "decisions.tsv" in html and "adaptive search decisions" in html


def test_a_rerun_decides_the_same_and_plans_nothing(searched):
    _, _, rerun = searched
    assert rerun == []
