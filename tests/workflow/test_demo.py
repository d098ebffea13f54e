"""The embedded demo end to end: outputs, the HTML report, and honest face-rate-0 numbers."""

import json
from collections import Counter

import pandas as pd
import pytest
from conftest import demo_config, planned_jobs, snakemake
from PIL import Image

pytestmark = pytest.mark.slow

ARMS = [
    f"{token}-{reg}-{cap}"
    for token in ("celebrity", "rare")
    for reg in ("noreg", "genreg")
    for cap in ("blip", "nocap")
]


def test_summary_has_a_row_per_checkpoint_with_kohya_steps(demo_run):
    summary = pd.read_csv(demo_run / "results" / "summary.csv")
    # The contract's columns in order (model / prompt_set may sit after epoch), then the
    # appended ones: median, bootstrap intervals and the uncertainty-aware best epoch.
    assert [c for c in summary.columns if c not in ("model", "prompt_set")] == [
        "arm", "epoch", "steps", "renders", "face_rate", "average",
        "pct_below_0.6", "pct_below_0.7", "best",
        "median", "average_ci_low", "average_ci_high",
        "pct_below_0.6_ci_low", "pct_below_0.6_ci_high",
        "pct_below_0.7_ci_low", "pct_below_0.7_ci_high", "best_not_worse",
    ]  # fmt: skip
    assert sorted(summary["arm"].unique()) == sorted(ARMS)
    assert len(summary) == len(ARMS) * 2
    config = demo_config()
    images = len(list((demo_run / "resources/demo/train").iterdir()))
    per_epoch = images * config["training"]["repeats"] // config["training"]["batch_size"]
    for row in summary.itertuples():
        doubled = 2 if "-genreg-" in row.arm else 1
        assert row.steps == per_epoch * doubled * row.epoch
        assert row.renders == config["sample"]["count"]


def test_portraits_trained_in_aspect_ratio_buckets(demo_run):
    from dreamgrid.buckets import image_size

    photos = sorted((demo_run / "resources/demo/train").iterdir())
    assert all(w < h for w, h in map(image_size, photos))  # the demo's photos are portraits
    for arm in ARMS:
        meta = json.loads((demo_run / f"results/arms/{arm}/checkpoints/epoch-1.json").read_text())
        assert meta["aspect_ratio"] == "buckets"
        sizes = [tuple(map(int, label.split("x"))) for label in meta["train_sizes"]]
        assert sum(meta["train_sizes"].values()) == len(photos)
        assert any(w < h for w, h in sizes)  # not all squeezed into the square bucket
        assert all(w * h <= 64 * 64 for w, h in sizes)


def test_faceless_renders_are_face_rate_zero_not_distance_zero(demo_run):
    summary = pd.read_csv(demo_run / "results" / "summary.csv")
    assert (summary["face_rate"] == 0).all()
    assert set(summary["prompt_set"]) == {"main"}
    assert summary["average"].isna().all()
    assert not summary["best"].any()
    scores = pd.read_csv(demo_run / "results" / "scores.tsv", sep="\t")
    assert len(scores) == len(ARMS) * 2 * demo_config()["sample"]["count"]
    assert not scores["face_found"].any()
    assert scores["mean_distance"].isna().all()
    distance_columns = [c for c in scores.columns if c.startswith("d:")]
    assert len(distance_columns) == 3
    assert scores[distance_columns].isna().all().all()


def test_seeds_are_paired_across_arms_and_epochs(demo_run):
    scores = pd.read_csv(demo_run / "results" / "scores.tsv", sep="\t")
    seed_sets = scores.groupby(["arm", "epoch"])["seed"].apply(lambda s: tuple(sorted(s)))
    assert seed_sets.nunique() == 1


def test_score_tables_carry_their_deepface_settings(demo_run):
    meta = json.loads(
        (demo_run / "results/arms/rare-noreg-nocap/epoch-1/main/scores.meta.json").read_text()
    )
    assert meta["model"] == "Dlib" and meta["detector"] == "dlib" and meta["metric"] == "cosine"
    assert meta["deepface_version"]


def test_histograms_and_demo_warning(demo_run):
    for arm in ARMS:
        for epoch in (1, 2):
            with Image.open(
                demo_run / f"results/plots/histograms/{arm}/main/epoch-{epoch}.png"
            ) as im:
                assert im.size[0] > 300 and im.size[1] > 200
    text = (demo_run / "results/report/summary.md").read_text()
    assert "mean nothing" in text.splitlines()[0]
    assert "config/experiment.yaml" in text


def test_class_images_are_generated_once_and_shared(demo_run):
    images = list((demo_run / "results/regularization/generated/images").glob("*.png"))
    assert len(images) == len(list((demo_run / "resources/demo/train").iterdir()))


def test_user_files_are_untouched(demo_run):
    from conftest import ROOT

    for folder in ("train", "references", "ground_truth", "captions"):
        for path in (ROOT / "resources/demo" / folder).iterdir():
            assert (demo_run / "resources/demo" / folder / path.name).read_bytes() == (
                path.read_bytes()
            )


def test_html_report(demo_run):
    result = snakemake(demo_run, "--report", "results/report.html", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (demo_run / "results/report.html").read_text(errors="replace")
    assert len(html) > 50_000
    assert "summary.csv" in html and "epoch-2.png" in html
    for name in ("by-steps.png", "all-epochs.png", "comparisons.csv", "effects.csv", "summary.md"):
        assert name in html, name
    assert "Contact sheets" in html and "Verdict and statistics" in html


def test_statistics_curves_and_contact_sheets(demo_run):
    results = demo_run / "results"
    comparisons = pd.read_csv(results / "comparisons.csv")
    assert list(comparisons.columns[:9]) == [
        "arm_a", "arm_b", "epoch", "n_pairs", "mean_diff", "ci_low", "ci_high",
        "p_value", "p_adjusted",
    ]  # fmt: skip
    assert len(comparisons) == len(ARMS) * (len(ARMS) - 1) // 2 * 2
    assert (comparisons["n_pairs"] == 0).all() and comparisons["mean_diff"].isna().all()
    effects = pd.read_csv(results / "effects.csv")
    assert set(effects["view"]) == {"equal_steps"}  # no arm has a best epoch without faces
    assert effects["estimate"].isna().all()
    baseline = pd.read_csv(next((results / "references").glob("*.baseline.csv")))
    # 3 references leave-one-out, 5 training photos without their own close-up.
    assert Counter(baseline["source"]) == {"reference": 3, "training": 5}
    assert baseline["mean_distance"].dropna().between(0, 2).all()
    own = baseline.set_index("photo")["excluded"]
    assert own["obama.jpg"] == "obama_closeup.jpg" and own["obama3.jpg"] == "obama3_closeup.jpg"
    for name in ("by-epoch.png", "by-steps.png"):
        with Image.open(results / "plots/curves/main" / name) as im:
            assert im.size[0] > 600 and im.size[1] > 400
    for arm in ARMS:
        with Image.open(results / f"plots/histograms/{arm}/main/all-epochs.png") as im:
            assert im.size[0] > 600
        for epoch in (1, 2):
            sheet = results / f"plots/contact-sheets/{arm}/main/epoch-{epoch}.png"
            assert sheet.stat().st_size > 0
    flex = pd.read_csv(results / "flexibility.csv")
    assert len(flex) == len(ARMS) * 2 and not flex["tradeoff_best"].any()
    assert {"likeness_pct", "bleed_pct", "prompts_face_rate"} <= set(flex.columns)
    text = (results / "report/summary.md").read_text()
    assert "Nothing to conclude" in text
    assert "As alike as real photos" in text


def test_nothing_to_do_after_a_complete_run(demo_run):
    assert [rule for rule, _ in planned_jobs(demo_run)] == []


def test_token_finder_ranks_the_candidates_and_celebrity_arms_train_on_the_winner(demo_run):
    results = demo_run / "results"
    ranking = pd.read_csv(results / "token_finder/ranking.csv")
    assert list(ranking.columns) == [
        "candidate", "renders", "face_rate", "average", "pct_below_0.6", "consistency", "rank",
    ]  # fmt: skip
    names = ["Denzel Washington", "Idris Elba", "Will Smith", "Morgan Freeman"]
    # Random weights render no face: every average is empty and the list order decides.
    assert list(ranking["candidate"]) == names and list(ranking["rank"]) == [1, 2, 3, 4]
    assert (ranking["face_rate"] == 0).all() and (ranking["renders"] == 2).all()
    renders = pd.read_csv(results / "token_finder/renders/idris-elba.csv")
    assert set(renders["prompt"]) == {"headshot photo of Idris Elba man"}
    with Image.open(results / "token_finder/top.png") as im:
        assert im.size[0] > 300
    table = results / "arms/celebrity-genreg-blip/epoch-2/main/renders/shard-0.csv"
    assert set(pd.read_csv(table)["prompt"]) == {"headshot photo of Denzel Washington man"}
