"""Settings axes through Snakemake's plan (#18, item 1): adding a value plans only its new
arms, and a sampling value renders the existing checkpoints again without training. Dry runs
only (three, about 35 s on 2 cores)."""

import pytest
import yaml
from conftest import (
    copy_workflow,
    demo_config,
    fake_outputs,
    parse_jobs,
    planned_jobs,
    snakemake,
)

pytestmark = pytest.mark.slow

#: Jobs every arm feeds (rerun when an arm is added).
AGGREGATION = {
    "aggregate_scores", "memorization", "plot_curves", "plot_tradeoff", "render_report_pages",
    "write_manifest", "all",
}  # fmt: skip


def settings_demo(learning_rates: dict, cfgs: list) -> dict:
    """The demo reduced to one token and one recipe, with two settings axes."""
    config = demo_config()
    config["axes"] = {
        "token": {"rare": "ohwx"},
        "settings": {"training.learning_rate": learning_rates, "sample.cfg": cfgs},
    }
    config["sample"].pop("prompt_sets")
    return config


def test_adding_a_settings_value_plans_only_its_arms(tmp_path):
    work = copy_workflow(tmp_path)
    config = work / "mine.yaml"
    rates = {"low": 1.0e-4, "high": 2.0e-4}
    config.write_text(yaml.safe_dump(settings_demo(rates, [8, 5]), sort_keys=False))
    dry = snakemake(work, "--dry-run", "--cores", "2", "--configfile", "mine.yaml", timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    # cfg5 arms render the cfg8 arms' checkpoints: two trainings of two epochs, four arms
    jobs = parse_jobs(dry.stdout)
    trained = {(wc["arm"], wc["epoch"]) for rule, wc in jobs if rule == "train_dreambooth"}
    assert trained == {(f"rare-noreg-nocap-{lr}-cfg8", e) for lr in rates for e in ("1", "2")}
    rendered = {wc["arm"] for rule, wc in jobs if rule == "sample_checkpoint"}
    assert rendered == {f"rare-noreg-nocap-{lr}-{c}" for lr in rates for c in ("cfg8", "cfg5")}
    assert fake_outputs(work, dry.stdout) > 20

    # A learning rate more: its two arms only, and only its cfg8 arm trains.
    config.write_text(
        yaml.safe_dump(settings_demo({**rates, "higher": 3.0e-4}, [8, 5]), sort_keys=False)
    )
    jobs = planned_jobs(work, options=("--configfile", "mine.yaml"))
    arms = {wc["arm"] for rule, wc in jobs if "arm" in wc}
    assert arms == {"rare-noreg-nocap-higher-cfg8", "rare-noreg-nocap-higher-cfg5"}
    assert {rule for rule, wc in jobs if "arm" not in wc} <= AGGREGATION
    trained = {wc["arm"] for rule, wc in jobs if rule == "train_dreambooth"}
    assert trained == {"rare-noreg-nocap-higher-cfg8"}

    # A cfg value more: its arms render and score the checkpoints there are, none trains.
    config.write_text(yaml.safe_dump(settings_demo(rates, [8, 5, 6]), sort_keys=False))
    jobs = planned_jobs(work, options=("--configfile", "mine.yaml"))
    arms = {wc["arm"] for rule, wc in jobs if "arm" in wc}
    assert arms == {"rare-noreg-nocap-low-cfg6", "rare-noreg-nocap-high-cfg6"}
    rules = {rule for rule, _ in jobs}
    assert {"sample_checkpoint", "score_faces"} <= rules
    assert "train_dreambooth" not in rules and "release_resume_state" not in rules
    assert {rule for rule, wc in jobs if "arm" not in wc} <= AGGREGATION
