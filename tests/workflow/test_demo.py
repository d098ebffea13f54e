"""The embedded demo end to end: outputs, the HTML report, and honest face-rate-0 numbers."""

import json
import re
from collections import Counter

import pandas as pd
import pytest
from conftest import demo_config, planned_jobs
from PIL import Image

pytestmark = pytest.mark.slow

ARMS = [
    f"{token}-{reg}-{cap}"
    for token in ("celebrity", "rare")
    for reg in ("noreg", "genreg")
    for cap in ("blip", "nocap")
]
#: The demo's prompt sets: likeness (main), class bleed (no token), prompt following (token).
SETS = ("main", "bleed", "painting")
#: The name `token: auto` trains on: random weights show no face, so the list's first wins.
CHOSEN = "Denzel Washington"


def renders_per_checkpoint(prompt_set: str) -> int:
    """`sample.count` for main, `sample.prompt_sets_count` for the extra sets."""
    sample = demo_config()["sample"]
    return sample["count"] if prompt_set == "main" else sample["prompt_sets_count"]


def test_summary_has_a_row_per_checkpoint_with_kohya_steps(demo_run):
    summary = pd.read_csv(demo_run / "results" / "summary.csv")
    # The contract's columns in order (model / prompt_set may sit after epoch), then the
    # appended ones: median, bootstrap intervals and the uncertainty-aware best epoch.
    assert [c for c in summary.columns if c not in ("model", "prompt_set")] == [
        "arm", "epoch", "steps", "renders", "face_rate", "average",
        "pct_below_0.06", "pct_below_0.07", "best",
        "median", "average_ci_low", "average_ci_high",
        "pct_below_0.06_ci_low", "pct_below_0.06_ci_high",
        "pct_below_0.07_ci_low", "pct_below_0.07_ci_high", "best_not_worse",
        "faces", "face_rate_ci_low", "face_rate_ci_high",
        "pct_below_0.06_all", "pct_below_0.06_all_ci_low", "pct_below_0.06_all_ci_high",
        "pct_below_0.07_all", "pct_below_0.07_all_ci_low", "pct_below_0.07_all_ci_high",
        "few_faces",
    ]  # fmt: skip
    assert sorted(summary["arm"].unique()) == sorted(ARMS)
    assert len(summary) == len(ARMS) * 2 * len(SETS)  # a row per checkpoint and prompt set
    assert Counter(summary["prompt_set"]) == {s: len(ARMS) * 2 for s in SETS}
    config = demo_config()
    images = len(list((demo_run / "resources/demo/train").iterdir()))
    per_epoch = images * config["training"]["repeats"] // config["training"]["batch_size"]
    for row in summary.itertuples():
        doubled = 2 if "-genreg-" in row.arm else 1
        assert row.steps == per_epoch * doubled * row.epoch
        assert row.renders == renders_per_checkpoint(row.prompt_set)
    assert renders_per_checkpoint("bleed") < renders_per_checkpoint("main")


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
    assert (summary["face_rate"] == 0).all()  # every prompt set, bleed and painting too
    assert set(summary["prompt_set"]) == set(SETS)
    assert summary["average"].isna().all()
    assert not summary["best"].any()
    scores = pd.read_csv(demo_run / "results" / "scores.tsv", sep="\t")
    assert Counter(scores["prompt_set"]) == {
        s: len(ARMS) * 2 * renders_per_checkpoint(s) for s in SETS
    }
    assert not scores["face_found"].any()
    assert scores["mean_distance"].isna().all()
    distance_columns = [c for c in scores.columns if c.startswith("d:")]
    assert len(distance_columns) == 3
    assert scores[distance_columns].isna().all().all()


def test_seeds_are_paired_across_arms_epochs_and_prompt_sets(demo_run):
    scores = pd.read_csv(demo_run / "results" / "scores.tsv", sep="\t")
    seeds = scores.groupby(["prompt_set", "arm", "epoch"])["seed"].apply(lambda s: sorted(s))
    assert len(seeds) == len(ARMS) * 2 * len(SETS)
    main = seeds["main"].iloc[0]
    assert len(main) == renders_per_checkpoint("main")
    for prompt_set in SETS:
        # The same seeds in every arm and epoch; an extra set's are the first of main's.
        assert all(s == main[: renders_per_checkpoint(prompt_set)] for s in seeds[prompt_set])


def test_each_prompt_set_renders_its_own_prompt(demo_run):
    arms = demo_run / "results/arms"
    prompts = {
        ("celebrity-noreg-blip", "main"): f"headshot photo of {CHOSEN} man",
        ("celebrity-noreg-blip", "bleed"): "headshot photo of a man",  # no token: class bleed
        ("celebrity-noreg-blip", "painting"): f"oil painting portrait of {CHOSEN} man",
        ("rare-genreg-nocap", "bleed"): "headshot photo of a man",
        ("rare-genreg-nocap", "painting"): "oil painting portrait of ohwx man",
    }
    for (arm, prompt_set), prompt in prompts.items():
        table = pd.read_csv(arms / arm / "epoch-2" / prompt_set / "renders/shard-0.csv")
        assert set(table["prompt"]) == {prompt}, (arm, prompt_set)


def test_score_tables_carry_their_deepface_settings(demo_run):
    meta = json.loads(
        (demo_run / "results/arms/rare-noreg-nocap/epoch-1/main/scores.meta.json").read_text()
    )
    assert meta["model"] == "Dlib" and meta["detector"] == "dlib" and meta["metric"] == "cosine"
    assert meta["deepface_version"]
    assert meta["deepface_backend"] == "onnx" and meta["device"] == "cpu"  # never a GPU


def test_each_checkpoint_is_loaded_once_per_prompt_set_and_candidates_share_a_load(demo_run):
    # From the jobs' logs: every "loaded <checkpoint>" line, by checkpoint and prompt set.
    logs = demo_run / "results/logs"
    loads = Counter()
    for log in (logs / "sample_checkpoint").rglob("*.log"):
        prompt_set = log.parent.name
        for line in log.read_text().splitlines():
            found = re.search(r"loaded (\S+/checkpoints/epoch-\d+\.safetensors)", line)
            if found:
                loads[found.group(1), prompt_set] += 1
    checkpoints = {c for c, _ in loads}
    assert len(checkpoints) == len(ARMS) * 2  # every arm's 2 epochs
    assert set(loads.values()) == {1} and len(loads) == len(checkpoints) * len(SETS)
    # The token finder (one per base model; the demo's is token_finder): 4 names in 2 jobs of
    # 2 names, one model load each.
    finder_logs = logs / "render_candidates" / "token_finder"
    assert sorted(p.name for p in finder_logs.iterdir()) == [
        "group-0.log",
        "group-1.log",
    ]


def test_histograms_and_demo_warning(demo_run):
    for arm in ARMS:
        for epoch in (1, 2):
            for prompt_set in SETS:
                path = demo_run / f"results/plots/histograms/{arm}/{prompt_set}/epoch-{epoch}.png"
                with Image.open(path) as im:
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


def test_html_report(demo_report):
    html = demo_report.read_text(errors="replace")
    assert len(html) > 50_000
    assert "summary.csv" in html and "epoch-2.png" in html
    for name in (
        "by-steps.png", "all-epochs.png", "comparisons.csv", "effects.csv", "summary.md",
        "flexibility.csv", "tradeoff.png", "ranking.csv", "verdict.json", "gpu_time.csv",
    ):  # fmt: skip
        assert name in html, name
    assert "Contact sheets" in html and "Verdict and statistics" in html


def test_gpu_time_is_measured_from_every_finished_job(demo_run):
    table = pd.read_csv(demo_run / "results/gpu_time.csv").set_index("stage")
    # every arm's epochs trained, every checkpoint's shards of every prompt set sampled
    assert table.loc["training", "jobs_total"] == table.loc["sampling", "jobs_total"] == 8 * 2
    assert (table["jobs_done"] == table["jobs_total"]).all()
    assert (table["hours_done"] > 0).all() and (table["hours_left"] == 0).all()
    assert (table["seconds_per_unit"] > 0).all()


def test_statistics_curves_and_contact_sheets(demo_run):
    results = demo_run / "results"
    comparisons = pd.read_csv(results / "comparisons.csv")
    assert list(comparisons.columns[:9]) == [
        "arm_a", "arm_b", "epoch", "n_pairs", "mean_diff", "ci_low", "ci_high",
        "p_value", "p_adjusted",
    ]  # fmt: skip
    # Arms are compared within a prompt set, never across sets.
    per_set = len(ARMS) * (len(ARMS) - 1) // 2 * 2
    assert Counter(comparisons["prompt_set"]) == {s: per_set for s in SETS}
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
    for prompt_set in SETS:
        for name in ("by-epoch.png", "by-steps.png"):
            with Image.open(results / "plots/curves" / prompt_set / name) as im:
                assert im.size[0] > 600 and im.size[1] > 400
        for arm in ARMS:
            with Image.open(results / f"plots/histograms/{arm}/{prompt_set}/all-epochs.png") as im:
                assert im.size[0] > 600
            for epoch in (1, 2):
                sheet = results / f"plots/contact-sheets/{arm}/{prompt_set}/epoch-{epoch}.png"
                assert sheet.stat().st_size > 0
    text = (results / "report/summary.md").read_text()
    assert "Nothing to conclude" in text
    assert "As alike as real photos" in text
    # one verdict object per prompt set; no face anywhere: no claim, few faces everywhere
    verdicts = json.loads((results / "verdict.json").read_text())
    assert sorted(v["prompt_set"] for v in verdicts) == sorted(SETS)
    for verdict in verdicts:
        assert verdict["replicates"] == 1 and verdict["claims"] == []
        assert verdict["chosen_epochs"] == {} and "single_run" in verdict["warnings"]
        assert f"few_faces:{ARMS[0]}:1" in verdict["warnings"]


def test_nothing_to_do_after_a_complete_run(demo_run):
    assert [rule for rule, _ in planned_jobs(demo_run)] == []


def test_token_finder_ranks_the_candidates_and_celebrity_arms_train_on_the_winner(demo_run):
    results = demo_run / "results"
    ranking = pd.read_csv(results / "token_finder/ranking.csv")
    assert list(ranking.columns) == [
        "candidate", "renders", "face_rate", "average", "pct_below_0.06", "consistency", "rank",
        "faces", "average_ci_low", "average_ci_high",
    ]  # fmt: skip
    names = ["Denzel Washington", "Idris Elba", "Will Smith", "Morgan Freeman"]
    # Random weights render no face: every average is empty and the list order decides.
    assert list(ranking["candidate"]) == names and list(ranking["rank"]) == [1, 2, 3, 4]
    assert (ranking["face_rate"] == 0).all() and (ranking["renders"] == 2).all()
    # 2 names per job: Idris Elba is the second name of group 0.
    renders = pd.read_csv(results / "token_finder/renders/group-0.csv")
    idris = renders[renders["candidate"] == "Idris Elba"]
    assert set(idris["prompt"]) == {"headshot photo of Idris Elba man"} and len(idris) == 2
    assert (results / "token_finder/renders/group-0" / idris["image"].iloc[0]).is_file()
    with Image.open(results / "token_finder/top.png") as im:
        assert im.size[0] > 300
    table = results / "arms/celebrity-genreg-blip/epoch-2/main/renders/shard-0.csv"
    assert set(pd.read_csv(table)["prompt"]) == {"headshot photo of Denzel Washington man"}


def test_flexibility_table_and_tradeoff_figure(demo_run):
    results = demo_run / "results"
    flex = pd.read_csv(results / "flexibility.csv")
    model = ["model"] if "model" in flex.columns else []
    # The columns flexibility.table documents (no prompts_clip: the demo has no CLIP model).
    assert list(flex.columns) == [
        "arm", "epoch", *model, "steps", "likeness_average", "likeness_pct",
        "bleed_average", "bleed_pct", "prompts_face_rate", "prompts_average", "tradeoff_best",
    ]  # fmt: skip
    # One row per arm x epoch.
    assert sorted(zip(flex["arm"], flex["epoch"])) == sorted((a, e) for a in ARMS for e in (1, 2))
    summary = pd.read_csv(results / "summary.csv")
    main = summary.loc[summary["prompt_set"] == "main"].set_index(["arm", "epoch"])["steps"]
    assert flex.set_index(["arm", "epoch"])["steps"].to_dict() == main.to_dict()
    # Random weights render noise: no face in any set, so the prompt-following face rate is a
    # measured 0 and every distance-based column is empty, never 0; nothing is chosen.
    assert (flex["prompts_face_rate"] == 0).all()
    for column in ("likeness_average", "likeness_pct", "bleed_average", "bleed_pct"):
        assert flex[column].isna().all(), column
    assert flex["prompts_average"].isna().all()
    assert not flex["tradeoff_best"].any()
    with Image.open(results / "plots/curves/tradeoff.png") as im:
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 300
        im.load()  # decodes the whole file: a truncated PNG fails here
        darkest, lightest = im.convert("L").getextrema()
        assert darkest < 100 < lightest  # drawn (text, axes), not blank


def test_summary_has_the_flexibility_section_and_names_the_auto_token(demo_run):
    text = (demo_run / "results/report/summary.md").read_text()
    assert f"{len(ARMS) * 2} checkpoints × {len(SETS)} prompt sets" in text
    section = text.split("## Likeness, class bleed and prompt following", 1)[1]
    assert "Class bleed is `bleed`" in section and "Prompt following is `painting`" in section
    assert "| arm | epoch |" in section and "tradeoff_best" in section
    assert "| celebrity-genreg-blip | 2 |" in section
    tokens = text.split("## Tokens", 1)[1].split("\n## ", 1)[0]
    assert f"`celebrity`: `auto`; the token finder chose **{CHOSEN}**, rank 1 of 4" in tokens
    assert "- `rare`: `ohwx`." in tokens
    assert "the pick was not measured" in tokens  # no candidate rendered a face
