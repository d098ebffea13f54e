"""The budget: the plan's counts, the estimate's arithmetic, and GPU time measured from
Snakemake's benchmark files."""

import math

import pandas as pd
import pytest

from dreamgrid import budget, cli
from dreamgrid import config as cfg


def study(tmp_path, photos=5, **overrides):
    train = tmp_path / "train"
    train.mkdir(exist_ok=True)
    for i in range(photos):
        (train / f"p{i}.png").write_bytes(b"")  # counted by name; never opened here
    config = {
        "subject": {"class_word": "woman", "train_images": str(train), "references": "refs"},
        "base_model": "tiny",
        "axes": {
            "token": {"rare": "ohwx", "celebrity": "alexa davalos"},
            "regularization": ["none", "generated"],
        },
        "training": {"epochs": 3, "repeats": 10, "batch_size": 2},
        "sample": {"count": 8, "shard_size": 4, "batch_size": 2, "width": 512, "height": 512},
    }
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return cfg.validate(config)


def test_the_plan_counts_kohya_steps_and_renders(tmp_path):
    table = budget.plan(study(tmp_path)).set_index("arm")
    # 5 photos x 10 repeats / batch 2 = 25 steps; regularization doubles them (kohya mode)
    assert table.loc["rare-noreg-nocap", "steps_per_epoch"] == 25
    assert table.loc["rare-genreg-nocap", "steps_per_epoch"] == 50
    assert set(table["renders_per_checkpoint"]) == {8}
    assert set(table["shards_per_checkpoint"]) == {2}
    # match_steps: the no-regularization arms run their data twice per epoch
    matched = budget.plan(study(tmp_path, training__match_steps=True)).set_index("arm")
    assert matched.loc["rare-noreg-nocap", "steps_per_epoch"] == 50
    # diffusers' paired mode: class images ride in the same batch, no extra steps
    paired = budget.plan(study(tmp_path, training__reg_mode="paired")).set_index("arm")
    assert paired.loc["rare-genreg-nocap", "steps_per_epoch"] == 25


def test_the_estimate_is_the_plan_times_the_cited_rates(tmp_path):
    config = study(tmp_path, sample__prompt_sets={"bleed": "a photo of a {class}"})
    table = budget.plan(config)
    est = budget.estimate(config, table, "a100")
    assert (est["arms"], est["epochs"]) == (4, 12)
    assert est["steps"] == 3 * (25 + 25 + 50 + 50)
    assert est["renders"] == 4 * 3 * (8 + 8)  # two prompt sets of 8
    # training: seconds per step on the A100 = the T4's measured 1/0.93 s, times the T4/A100
    # sampling speed ratio, at SD 1.5's base resolution (training.resolution default 512)
    per_step = (1 / 0.93) * (6.9 / 21.66)
    assert est["train_hours"] == pytest.approx((450 * per_step + 12 * 50.0) / 3600)
    # sampling: 30 Euler steps at 512 px, four renders a call at 11.6 it/s
    per_render = 30 / (4 * 11.6)
    assert est["sample_hours"] == pytest.approx((192 * per_render + 12 * 4 * 15.0) / 3600)
    # a bigger render costs its pixels; an SDXL step its measured factor
    assert budget.seconds_per_render(budget.CARDS["a100"], "sd15", 30, 1024 * 1024) == (
        pytest.approx(4 * per_render)
    )
    assert budget.seconds_per_render(budget.CARDS["a100"], "sdxl", 30, 1024 * 1024) == (
        pytest.approx(2.39 * per_render)
    )
    text = "\n".join(budget.lines(est, config))
    assert "budget: 4 arms; 12 training epochs (training arms x epochs); 192 renders" in text
    assert "(8 + 1 prompt sets x 8)" in text
    assert "GPU-hours on one A100: ~" in text
    assert "estimate, not measured here" in text and "ShivamShrirao" in text
    assert "successive_halving" not in text


def test_the_adaptive_grid_is_said_to_train_at_most_this(tmp_path):
    config = study(tmp_path, search__method="successive_halving")
    text = "\n".join(budget.lines(budget.estimate(config, budget.plan(config)), config))
    assert "the most the adaptive grid trains" in text


def test_missing_photos_say_the_steps_are_unknown(tmp_path):
    config = study(tmp_path, photos=0)
    est = budget.estimate(config, budget.plan(config))
    assert est["steps"] == 0 and not est["steps_known"]
    assert "subject.train_images not found" in "\n".join(budget.lines(est, config))


def test_the_check_options_name_every_card():
    check = cli.build_parser()._subparsers._group_actions[0].choices["check"]
    (gpu,) = [a for a in check._actions if a.dest == "gpu"]
    assert list(gpu.choices) == list(budget.CARDS) and gpu.default == budget.DEFAULT_CARD


# ---- measured by the run -------------------------------------------------------------------
def bench(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        f"{seconds}\t0:00:00\t1\t1\t1\t1\t0\t0\t0\t0\n"
    )


PLAN = pd.DataFrame(
    [
        # arm, family, method, epochs, trained, steps/epoch, side, renders, shards, steps, pixels
        ("a", "sd15", "full", 2, 2, 100, 512, 8, 2, 30, 512 * 512),
        ("b", "sd15", "full", 2, 2, 200, 512, 8, 2, 30, 512 * 512),
        ("c", "sdxl", "lora", 2, 2, 100, 1024, 8, 2, 30, 1024 * 1024),
    ],
    columns=list(budget.PLAN_COLUMNS),
)


def test_nothing_measured_before_any_job(tmp_path):
    assert budget.measured(PLAN, tmp_path) is None
    assert budget.measured_lines(None) == []


def test_measured_hours_extrapolate_the_finished_jobs(tmp_path):
    root = tmp_path / "results"
    b = root / "benchmarks"
    # sd15: arm a's epoch 1 (100 steps, 50 s) and arm b's epoch 1 (200 steps, 100 s) done:
    # 0.5 s per step; 300 steps left -> 150 s
    bench(b / "train_dreambooth/a/epoch-1.tsv", 50)
    bench(b / "train_dreambooth/b/epoch-1.tsv", 100)
    # a's epoch-1 checkpoint sampled (two shards, 8 renders, 4 s): 0.5 s per render;
    # b's epoch 1 has one shard of two: not counted yet
    bench(b / "sample_checkpoint/a/epoch-1/main/shard-0.tsv", 1.5)
    bench(b / "sample_checkpoint/a/epoch-1/main/shard-1.tsv", 2.5)
    bench(b / "sample_checkpoint/b/epoch-1/main/shard-0.tsv", 9.0)
    frame = budget.measured(PLAN, root).set_index(["stage", "family"])
    train = frame.loc[("training", "sd15")]
    assert (train["jobs_done"], train["jobs_total"]) == (2, 4)
    assert train["seconds_per_unit"] == pytest.approx(0.5)
    assert train["hours_done"] * 3600 == pytest.approx(150)
    assert train["hours_left"] * 3600 == pytest.approx(150)
    sample = frame.loc[("sampling", "sd15")]
    assert (sample["jobs_done"], sample["jobs_total"]) == (1, 4)
    assert sample["seconds_per_unit"] == pytest.approx(0.5)
    assert sample["hours_left"] * 3600 == pytest.approx(24 * 0.5)
    # sdxl has nothing finished: no rate, no guess
    assert frame.loc[("training", "sdxl"), "jobs_done"] == 0
    assert math.isnan(frame.loc[("training", "sdxl"), "hours_left"])
    text = "\n".join(budget.measured_lines(budget.measured(PLAN, root)))
    assert "training (sd15): 2/4 jobs, 0.04 h done, ~0.04 h left (0.5 s per step)" in text
    assert "training (sdxl): nothing finished yet" in text
    # the report's table
    out = tmp_path / "gpu_time.csv"
    budget.write_measured(PLAN, out, root)
    assert list(pd.read_csv(out).columns) == list(budget.MEASURED_COLUMNS)


def test_a_finished_grid_has_nothing_left(tmp_path):
    b = tmp_path / "benchmarks"
    for arm in "abc":
        for epoch in (1, 2):
            bench(b / f"train_dreambooth/{arm}/epoch-{epoch}.tsv", 10)
            for shard in (0, 1):
                bench(b / f"sample_checkpoint/{arm}/epoch-{epoch}/main/shard-{shard}.tsv", 1)
    frame = budget.measured(PLAN, tmp_path)
    assert (frame["hours_left"] == 0).all()
    assert frame["hours_done"].sum() * 3600 == pytest.approx(6 * 10 + 12 * 1)


def test_the_aggregation_writes_the_table_from_the_grids_plan(tmp_path):
    from dreamgrid.dag import Grid

    records = Grid(study(tmp_path)).get_budget_plan()  # the aggregate rule's params
    assert {r["arm"] for r in records} == {
        "rare-noreg-nocap", "rare-genreg-nocap", "celebrity-noreg-nocap", "celebrity-genreg-nocap"
    }  # fmt: skip
    bench(tmp_path / "results/benchmarks/train_dreambooth/rare-noreg-nocap/epoch-1.tsv", 5)
    out = tmp_path / "gpu_time.csv"
    budget.write_measured(records, out, tmp_path / "results")
    table = pd.read_csv(out).set_index("stage")
    assert table.loc["training", "jobs_done"] == 1 and table.loc["training", "jobs_total"] == 12
    assert table.loc["training", "seconds_per_unit"] == pytest.approx(5 / 25)
