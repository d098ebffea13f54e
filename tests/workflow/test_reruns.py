"""Rerun semantics: an edit reruns exactly the branches it touches (from Snakemake's own plan)."""

import hashlib
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import demo_config, edited_config, planned_jobs, snakemake

pytestmark = pytest.mark.slow

UPSTREAM = {
    "check_inputs",
    "prepare_base_model",
    "prepare_caption_model",
    "prepare_face_models",
    "caption_images",
    "generate_class_images",
    "embed_references",
}
#: Prompt sets of the demo (main + sample.prompt_sets): each checkpoint renders every set.
SETS = 1 + len(demo_config()["sample"]["prompt_sets"])


#: Jobs downstream of every arm's scores: a change to any arm reruns them.
AGGREGATION = {
    "aggregate_scores",
    "memorization",
    "plot_curves",
    "plot_tradeoff",
    "render_report_pages",
    "write_manifest",
    "all",
}


def job_set(jobs) -> Counter:
    """Planned jobs as a multiset of (rule, sorted wildcards): comparable as a closed set."""
    return Counter((rule, tuple(sorted(wc.items()))) for rule, wc in jobs)


@pytest.fixture(scope="module")
def every_job(demo_run) -> list:
    """Every job of the demo's DAG (a forced dry run), as (rule, wildcards)."""
    return planned_jobs(demo_run, options=("--forceall",))


def branch(every_job, arms, *rules: str) -> Counter:
    """The jobs of ``arms`` (every job with one of them as its arm wildcard), the
    aggregation after them, and every job of ``rules``: what an edit of those arms reruns."""
    return job_set(
        (rule, wc)
        for rule, wc in every_job
        if wc.get("arm") in arms or rule in AGGREGATION or rule in rules
    )


def test_editing_one_token_reruns_only_its_arms(demo_run, every_job):
    config = demo_config()
    config["axes"]["token"]["rare"] = "sks"
    jobs = planned_jobs(demo_run, config)
    rare = {wc["arm"] for _, wc in every_job if wc.get("arm", "").startswith("rare-")}
    assert len(rare) == 4
    # Nothing else: exactly the rare arms' jobs (training to plots) and the aggregation.
    assert job_set(jobs) == branch(every_job, rare)
    rules = Counter(rule for rule, _ in jobs)
    assert not UPSTREAM & set(rules)
    per_checkpoint = {"train_dreambooth", "sample_checkpoint", "score_faces", "plot_histogram"}
    assert rules["train_dreambooth"] == 4 * 2  # 4 rare arms x 2 epochs
    for rule in per_checkpoint - {"train_dreambooth"}:
        assert rules[rule] == 4 * 2 * SETS, rule  # ... x every prompt set
    assert rules["aggregate_scores"] == 1
    arms = {wc["arm"] for rule, wc in jobs if rule in per_checkpoint}
    assert arms == {"rare-noreg-blip", "rare-noreg-nocap", "rare-genreg-blip", "rare-genreg-nocap"}


def test_changing_thresholds_reruns_only_aggregation(demo_run):
    config = demo_config()
    config["score"]["thresholds"] = [0.5, 0.65]
    rules = Counter(rule for rule, _ in planned_jobs(demo_run, config))
    # Only aggregation, the report's figures and pages; the reference baseline and the contact
    # sheets do not depend on thresholds. The manifest records the config's hash, so it follows
    # every edit. (The trade-off figure is drawn from flexibility.csv, which aggregation
    # rewrites.)
    assert set(rules) == {
        "aggregate_scores",
        "plot_histogram",
        "plot_arm_histograms",
        "plot_curves",
        "plot_tradeoff",
        "render_report_pages",
        "write_manifest",
        "all",
    }


def test_adding_renders_adds_shards_only(demo_run):
    # The demo renders 4 per checkpoint in shards of 4: 2 more renders add shard 1 to each of
    # the 16 checkpoints; shard 0 is neither re-rendered nor re-embedded, nothing retrains.
    # The extra prompt sets keep their own count (sample.prompt_sets_count): untouched.
    config = demo_config()
    config["sample"]["count"] += 2
    jobs = planned_jobs(demo_run, config)
    rules = Counter(rule for rule, _ in jobs)
    assert rules["sample_checkpoint"] == 16
    assert rules["embed_renders"] == 16
    for rule in ("sample_checkpoint", "embed_renders"):
        assert {wc["shard"] for r, wc in jobs if r == rule} == {"1"}, rule
    assert rules["score_faces"] == 16  # merges the shards of each checkpoint
    for rule in ("sample_checkpoint", "embed_renders", "score_faces"):
        assert {wc["prompt_set"] for r, wc in jobs if r == rule} == {"main"}, rule
    assert "train_dreambooth" not in rules
    assert not UPSTREAM & set(rules)
    # More renders of the extra sets shard the same way: their partial shard 0 (2 of 4) is
    # redone and shard 1 added; main's full shard 0 is still left alone.
    config["sample"]["prompt_sets_count"] = 6
    jobs = planned_jobs(demo_run, config)
    sampled = Counter(
        (wc["prompt_set"] == "main", wc["shard"]) for r, wc in jobs if r == "sample_checkpoint"
    )
    assert sampled == {
        (True, "1"): 16,
        (False, "0"): 16 * (SETS - 1),
        (False, "1"): 16 * (SETS - 1),
    }
    assert not {"train_dreambooth", *UPSTREAM} & {rule for rule, _ in jobs}


def test_adding_an_epoch_trains_only_the_new_epoch(demo_run):
    config = demo_config()
    config["training"]["epochs"] = 3
    jobs = planned_jobs(demo_run, config)
    trained = [wc for rule, wc in jobs if rule == "train_dreambooth"]
    assert len(trained) == 8
    assert {wc["epoch"] for wc in trained} == {"3"}
    assert {wc["epoch"] for rule, wc in jobs if rule == "sample_checkpoint"} == {"3"}
    assert not UPSTREAM & {rule for rule, _ in jobs}
    # Each arm's state is released again once its new last epoch is trained.
    assert sum(rule == "release_resume_state" for rule, _ in jobs) == 8


def test_changing_the_metric_rescores_without_retraining(demo_run):
    config = demo_config()
    config["score"]["metric"] = "euclidean_l2"
    jobs = planned_jobs(demo_run, config)
    rules = Counter(rule for rule, _ in jobs)
    assert rules["score_faces"] == 16 * SETS
    # Embeddings do not depend on the metric: only distances are recomputed.
    assert not {"generate_class_images", "embed_references"} & set(rules)
    # The look-alike ranking is redone with the new metric. Until it has run, a dry run
    # cannot know whether its winner changes, so it lists the `auto` arms' jobs; the run
    # itself retrains them only if it does (test_a_longer_candidate_list_...).
    assert rules["rank_candidates"] == 1
    for rule in ("train_dreambooth", "sample_checkpoint", "embed_renders"):
        assert {wc["arm"].split("-")[0] for r, wc in jobs if r == rule} <= {"celebrity"}, rule


def test_a_killed_sampling_shard_is_redone_alone(demo_run):
    # A killed job leaves no output (everything is written under a temp name, then renamed),
    # and the jobs after it never ran: remove exactly those files and ask for the
    # checkpoint's scores again.
    where = "results/arms/rare-genreg-blip/epoch-2/main"
    checkpoint = demo_run / where
    lost = [
        checkpoint / "renders/shard-0",
        checkpoint / "renders/shard-0.csv",
        checkpoint / "faces/Dlib-dlib/shard-0.json",
        checkpoint / "scores.csv",
        checkpoint / "scores.meta.json",
    ]
    backup = demo_run / "killed-backup"
    backup.mkdir()
    for i, path in enumerate(lost):
        path.rename(backup / str(i))
    try:
        jobs = planned_jobs(demo_run, targets=(f"{where}/scores.csv",))
    finally:
        for i, path in enumerate(lost):
            (backup / str(i)).rename(path)
        backup.rmdir()
    assert sorted(rule for rule, _ in jobs) == ["embed_renders", "sample_checkpoint", "score_faces"]
    sampled = [wc for rule, wc in jobs if rule == "sample_checkpoint"]
    assert sampled == [
        {"arm": "rare-genreg-blip", "epoch": "2", "prompt_set": "main", "shard": "0"}
    ]


def test_a_new_prompt_set_renders_and_scores_only_that_set(demo_run):
    # A set beside the demo's own (main, bleed, painting): those are never redone.
    config = demo_config()
    config["sample"]["prompt_sets"]["closeup"] = "close-up photo of a {class}"
    jobs = planned_jobs(demo_run, config)
    rules = Counter(rule for rule, _ in jobs)
    assert not {"train_dreambooth", *UPSTREAM} & set(rules)
    per_checkpoint = ("sample_checkpoint", "embed_renders", "score_faces", "plot_contact_sheet")
    for rule in per_checkpoint:
        assert rules[rule] == 16, rule
        assert {wc["prompt_set"] for r, wc in jobs if r == rule} == {"closeup"}, rule
    for rule in ("plot_histogram", "plot_arm_histograms"):
        assert {wc["prompt_set"] for r, wc in jobs if r == rule} == {"closeup"}, rule
    # The other sets are only re-aggregated (the summary gains the new set's rows, so their
    # curves are redrawn from the new summary file), never re-rendered or re-scored.
    assert rules["aggregate_scores"] == 1

    # And it really runs: one checkpoint's close-up renders, scored as their own set.
    target = "results/arms/rare-noreg-nocap/epoch-1/closeup/scores.csv"
    with edited_config(demo_run, config):
        result = snakemake(demo_run, "--cores", "2", target)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = pd.read_csv(demo_run / target)
    assert set(scores["prompt_set"]) == {"closeup"}
    count = config["sample"]["prompt_sets_count"]  # an extra set: the extra sets' count
    assert len(scores) == count
    renders = pd.read_csv(demo_run / target.replace("scores.csv", "renders/shard-0.csv"))
    assert set(renders["prompt"]) == {"close-up photo of a man"}
    main = pd.read_csv(demo_run / target.replace("closeup", "main"))
    assert sorted(scores["seed"]) == sorted(main["seed"])[:count]  # paired with main's first


def test_a_longer_candidate_list_renders_only_the_new_name(demo_run):
    # The demo renders 2 names per job: its 4 names fill groups 0 and 1, a 5th starts group 2.
    candidates = demo_run / "resources/demo/candidates.txt"
    original = candidates.read_text()
    candidates.write_text(original + "Mahershala Ali\n")
    try:
        jobs = planned_jobs(demo_run)
        rendered = [wc for rule, wc in jobs if rule == "render_candidates"]
        assert rendered == [{"finder": "token_finder", "group": "2"}]
        assert "rank_candidates" in {rule for rule, _ in jobs}
        # Run it: the ranking is redone and its winner is unchanged, so nothing retrains or
        # re-renders. (Jobs Snakemake planned after the auto arms' training before the
        # ranking ran, embedding to plots, still run; their embeddings come from the cache.)
        result = snakemake(demo_run, "--cores", "2")
        assert result.returncode == 0, result.stderr[-3000:]
        ran = executed_jobs(result.stderr)
        assert ran["render_candidates"] == 1 and ran["rank_candidates"] == 1
        assert not {"train_dreambooth", "sample_checkpoint"} & set(ran)
        assert "found in the cache" in embed_logs(demo_run)
    finally:
        candidates.write_text(original)
        snakemake(demo_run, "--cores", "2")  # back to the demo's own state for later tests


def executed_jobs(log: str) -> Counter:
    """Rule -> jobs a (non-dry) run executed, from the job headers it prints."""
    return Counter(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", log, flags=re.MULTILINE))


def embed_logs(workdir) -> str:
    logs = (workdir / "results/logs/embed_renders").rglob("*.log")
    return "".join(p.read_text() for p in logs)


def test_clip_scores_add_one_job_per_checkpoint_and_run(demo_run):
    from dreamgrid.tiny import build_tiny_clip

    clip = build_tiny_clip(demo_run / "tiny-clip")
    config = demo_config()
    config["score"]["clip_model"] = str(clip)
    jobs = planned_jobs(demo_run, config)
    rules = Counter(rule for rule, _ in jobs)
    assert rules["clip_score"] == 16 * SETS  # every checkpoint's every prompt set
    assert not {"train_dreambooth", "sample_checkpoint", "embed_renders"} & set(rules)
    target = "results/arms/rare-genreg-nocap/epoch-2/main/clip.csv"
    with edited_config(demo_run, config):
        result = snakemake(demo_run, "--cores", "2", target)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(demo_run / target)
    assert len(table) == config["sample"]["count"]
    assert table["clip_score"].between(0, 100).all() and set(table["epoch"]) == {2}


def test_removed_checkpoints_are_not_retrained_and_epochs_still_add(demo_run):
    # keep_checkpoints removes scored checkpoints; the next epoch's job needs only the
    # previous epoch's JSON (its weights come from the arm's resume state), and Snakemake
    # leaves a missing intermediate alone while everything after it is up to date.
    checkpoints = sorted((demo_run / "results" / "arms").glob("*/checkpoints/epoch-*.safetensors"))
    assert len(checkpoints) == 16
    states = sorted((demo_run / "results" / "arms").glob("*/state/*"))
    # Each arm's resume state was deleted after its last epoch (keep_resume_state: false),
    # so epoch 3 replays epochs 1-2 from the base model: the same weights, more time.
    assert [p.name for p in states] == ["released.json"] * 8
    backup = demo_run / "checkpoints-backup"
    backup.mkdir()
    for i, path in enumerate(checkpoints):
        path.rename(backup / str(i))
    try:
        assert planned_jobs(demo_run) == []
        config = demo_config()
        config["training"]["epochs"] = 3
        jobs = planned_jobs(demo_run, config)
    finally:
        for i, path in enumerate(checkpoints):
            (backup / str(i)).rename(path)
        backup.rmdir()
    assert {wc["epoch"] for rule, wc in jobs if rule == "train_dreambooth"} == {"3"}


@pytest.mark.parametrize("keep", ["none", "best"])
def test_keep_checkpoints_retrains_nothing(demo_run, keep):
    config = demo_config()
    config["training"]["keep_checkpoints"] = keep
    rules = Counter(rule for rule, _ in planned_jobs(demo_run, config))
    # Only the manifest (it records the config's hash), and with best the cleanup per arm.
    expected = {"write_manifest": 1, "all": 1}
    if keep == "best":
        expected["keep_best_checkpoint"] = 8
    assert dict(rules) == expected


def test_more_training_replicates_add_only_the_new_runs(demo_run):
    # training.replicates 1 -> 3: two more runs of each of the 8 arms (2 epochs each); the
    # first run (the arm's own id) is neither retrained nor re-rendered.
    config = demo_config()
    config["training"]["replicates"] = 3
    jobs = planned_jobs(demo_run, config)
    rules = Counter(rule for rule, _ in jobs)
    assert rules["train_dreambooth"] == 8 * 2 * 2
    trained = {wc["arm"] for rule, wc in jobs if rule == "train_dreambooth"}
    assert all(re.search(r"-r[23]$", arm) for arm in trained) and len(trained) == 16
    for rule in ("sample_checkpoint", "score_faces"):
        assert all(re.search(r"-r[23]$", wc["arm"]) for r, wc in jobs if r == rule), rule
    assert rules["aggregate_scores"] == 1
    assert not UPSTREAM & set(rules)


def test_a_stage_version_bump_reruns_that_stage_and_downstream_only(demo_run, every_job):
    # versions.REGULARIZATION stamps the class images (generate_class_images): bumping it
    # reruns that job and the arms trained on its images (genreg), nothing else.
    versions = demo_run / "workflow/dreamgrid/versions.py"
    original = versions.read_text()
    assert re.search(r"^REGULARIZATION = (\d+)", original, flags=re.MULTILINE)
    versions.write_text(
        re.sub(
            r"^REGULARIZATION = (\d+)",
            lambda m: f"REGULARIZATION = {int(m.group(1)) + 1}",
            original,
            flags=re.MULTILINE,
        )
    )
    try:
        jobs = planned_jobs(demo_run)
    finally:
        versions.write_text(original)
    genreg = {wc["arm"] for _, wc in every_job if "-genreg-" in wc.get("arm", "")}
    assert len(genreg) == 4
    assert job_set(jobs) == branch(every_job, genreg, "generate_class_images")
    assert Counter(rule for rule, _ in jobs)["generate_class_images"] == 1
    assert planned_jobs(demo_run) == []  # restored: nothing to do


def copy_run(demo_run: Path, work: Path) -> Path:
    """A copy of the finished demo (files, times and Snakemake's records) to run edits in."""
    shutil.copytree(demo_run, work, symlinks=True)
    return work


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights(path: Path) -> tuple[dict, dict]:
    """Tensors and metadata of a safetensors file (its bytes are not reproducible: the
    metadata map is written in a random order)."""
    from safetensors import safe_open

    with safe_open(path, framework="np") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118


def test_keep_none_deletes_rendered_checkpoints_and_rebuilds_them_alike(demo_run, tmp_path):
    work = copy_run(demo_run, tmp_path / "work")
    config = demo_config()
    config["training"]["keep_checkpoints"] = "none"
    config["sample"]["count"] += 2  # a shard 1 per checkpoint: it needs the checkpoint again
    arm = "rare-noreg-nocap"
    checkpoint = work / f"results/arms/{arm}/checkpoints/epoch-2.safetensors"
    shard = f"results/arms/{arm}/epoch-2/main/renders/shard-1"
    original, original_meta = weights(checkpoint)
    with edited_config(work, config):
        # 1. The checkpoint exists: its new shard renders from it, then temp() deletes it.
        first = snakemake(work, "--cores", "2", f"{shard}.csv")
        assert first.returncode == 0, first.stderr[-3000:]
        assert "train_dreambooth" not in executed_jobs(first.stderr)
        assert not checkpoint.exists()
        renders = {p.name: sha256(p) for p in (work / shard).glob("*.png")}
        assert len(renders) == 2
        # 2. Once removed, nothing retrains while no job needs it ...
        assert "train_dreambooth" not in {rule for rule, _ in planned_jobs(work, config)}
        # 3. ... and when a job does (the shard lost), it is rebuilt: the same weights (kept
        # with --notemp to compare) and so the same renders.
        shutil.rmtree(work / shard)
        (work / f"{shard}.csv").unlink()
        plan = planned_jobs(work, targets=(f"{shard}.csv",))
        assert sorted(rule for rule, _ in plan) == ["sample_checkpoint", "train_dreambooth"]
        again = snakemake(work, "--cores", "2", "--notemp", f"{shard}.csv")
        assert again.returncode == 0, again.stderr[-3000:]
    rebuilt, rebuilt_meta = weights(checkpoint)
    assert rebuilt_meta == original_meta and rebuilt.keys() == original.keys()
    for key, tensor in rebuilt.items():
        np.testing.assert_array_equal(tensor, original[key], err_msg=key)
    assert {p.name: sha256(p) for p in (work / shard).glob("*.png")} == renders


def test_a_new_look_alike_winner_reruns_only_the_auto_arms(demo_run, every_job, tmp_path):
    # No face in random renders: the ranking is the list's order. Swapping the first two
    # names re-renders their group, and the new first name becomes the `auto` token.
    work = copy_run(demo_run, tmp_path / "work")
    candidates = work / "resources/demo/candidates.txt"
    lines = candidates.read_text().splitlines()
    names = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    first, second = names[0], names[1]
    lines[first], lines[second] = lines[second], lines[first]
    candidates.write_text("\n".join(lines) + "\n")
    result = snakemake(work, "--cores", "2", "--until", "rank_candidates")
    assert result.returncode == 0, result.stderr[-3000:]
    assert executed_jobs(result.stderr) == {"render_candidates": 1, "rank_candidates": 1}
    ranking = pd.read_csv(work / "results/token_finder/ranking.csv")
    assert ranking.loc[ranking["rank"] == 1, "candidate"].tolist() == [lines[first]]
    jobs = planned_jobs(work)
    celebrity = {wc["arm"] for _, wc in every_job if wc.get("arm", "").startswith("celebrity-")}
    assert len(celebrity) == 4
    # The ranking's own page and figure, then exactly the auto arms' branch.
    assert job_set(jobs) == branch(every_job, celebrity, "plot_candidates", "render_ranking_page")
