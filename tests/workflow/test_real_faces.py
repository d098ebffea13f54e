"""Real faces through the workflow: a reduced grid whose renders are replaced by real photos.

The demo's random-weight models render no face, so every number after scoring is NaN there.
Here a reduced grid (a plain arm, a ground-truth-regularization arm, each as full fine-tune and
LoRA, two training runs each, one epoch) is trained and sampled for real; then each render is
overwritten with a public-domain photo (resources/demo): the subject (Obama) for the arms
without regularization, another man (Biden) for the ground-truth arms. Snakemake's own plan
must then keep training and sampling as done, and scoring, aggregation and the report pages
must carry distances that equal DeepFace's, computed here independently.
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import DEMO_SUBJECT, ROOT, copy_workflow, planned_jobs, snakemake
from PIL import Image

pytestmark = pytest.mark.slow

#: Ground-truth regularization vs none, full fine-tune vs LoRA; 2 runs each, 1 epoch, 4 renders.
CONFIG = {
    "subject": {**DEMO_SUBJECT, "ground_truth": "resources/demo/ground_truth"},
    "base_model": "tiny",
    "axes": {
        "token": {"rare": "ohwx"},
        "regularization": ["none", "ground_truth"],
        "captions": ["none"],
        "method": ["full", "lora"],
    },
    "training": {
        "replicates": 2,
        "resolution": 64,
        "repeats": 1,
        "epochs": 1,
        "batch_size": 1,
        "learning_rate": 1.0e-4,
    },
    # Renders are replaced, so 2 sampling steps are enough; no extra prompt sets (cost).
    "sample": {"count": 4, "steps": 2, "width": 64, "height": 64, "batch_size": 4},
    # 4 renders per checkpoint: the default 20 faces would leave every checkpoint unchosen.
    "report": {"min_faces": 2},
}
RECIPES = ["rare-noreg-nocap", "rare-noreg-nocap-lora", "rare-gtreg-nocap", "rare-gtreg-nocap-lora"]
RUNS = [arm + suffix for arm in RECIPES for suffix in ("", "-r2")]
TARGET = "results/report/verdict.html"
SUBJECT = ["train/obama.jpg", "train/obama2.jpg", "train/obama3.jpg"]
OTHER = ["ground_truth/biden.jpg", "ground_truth/biden_closeup.jpg"]


def photos_for(run: str) -> list[str]:
    """The photo each of the run's 4 renders (seeds 0-3) becomes. The two runs of a recipe
    get different photos (run-to-run noise); full and LoRA arms get the same (no method
    effect)."""
    people = OTHER if "-gtreg-" in run else SUBJECT
    second = run.endswith("-r2")
    return [people[(seed + 2 * second) % len(people)] for seed in range(4)]


def place_photos(work: Path) -> dict[Path, str]:
    """Overwrite every render with its photo (as PNG); returns render file -> photo."""
    placed = {}
    for run in RUNS:
        shard = work / f"results/arms/{run}/epoch-1/main/renders"
        table = pd.read_csv(shard / "shard-0.csv")
        assert list(table["seed"]) == [0, 1, 2, 3]
        for seed, name in zip(table["seed"], table["image"], strict=True):
            photo = photos_for(run)[seed]
            with Image.open(ROOT / "resources/demo" / photo) as image:
                image.convert("RGB").save(shard / name)
            placed[shard / name] = photo
    return placed


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory):
    """(workdir, render file -> photo, jobs planned after the photos were put in place)."""
    work = copy_workflow(tmp_path_factory.mktemp("real-faces"))
    (work / "config/config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    # Train and sample for real, two jobs at a time (on CPU the "GPU" slots only cap jobs).
    result = snakemake(
        work, TARGET, "--until", "sample_checkpoint", "--cores", "2", "--resources", "gpu=2"
    )
    assert result.returncode == 0, result.stderr[-5000:]
    placed = place_photos(work)
    plan = planned_jobs(work, targets=(TARGET,))
    # Several jobs embed the same photo at once: they share its face-cache entry.
    result = snakemake(work, TARGET, "--cores", "2")
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in (work / "results/logs").rglob("*.log")
        )
        pytest.fail(f"scoring failed:\n{result.stderr[-5000:]}\n{logs[-10000:]}")
    return work, placed, plan


def test_replaced_renders_are_scored_without_retraining_or_resampling(real_faces):
    _, _, plan = real_faces
    # A closed set: scoring and aggregation of every run, nothing upstream of the renders.
    assert Counter(rule for rule, _ in plan) == {
        "embed_references": 1,
        "embed_renders": 8,
        "score_faces": 8,
        "reference_baseline": 1,
        "memorization": 1,
        "aggregate_scores": 1,
        "render_report_pages": 1,
    }
    assert {wc["arm"] for rule, wc in plan if rule == "score_faces"} == set(RUNS)


@pytest.fixture(scope="module")
def deepface_distances(real_faces, tmp_path_factory):
    """photo -> reference -> ``DeepFace.verify`` distance (Dlib, dlib detector, cosine), on
    the render file the workflow scored."""
    from dreamgrid.scoring import deepface_adapter

    work, placed, _ = real_faces
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DEEPFACE_HOME", deepface_adapter.BACKEND_VAR, *deepface_adapter.CPU_ENV):
            mp.delenv(name, raising=False)
        deepface_adapter.setup_deepface(tmp_path_factory.mktemp("deepface"))
        from deepface import DeepFace

        references = sorted((work / "resources/demo/references").iterdir())
        first = {}
        for render, photo in placed.items():
            first.setdefault(photo, render)
        return {
            photo: {
                ref.name: DeepFace.verify(
                    str(render), str(ref), model_name="Dlib", detector_backend="dlib"
                )["distance"]
                for ref in references
            }
            for photo, render in first.items()
        }


def checkpoint_scores(work: Path) -> pd.DataFrame:
    frames = [
        pd.read_csv(work / f"results/arms/{run}/epoch-1/main/scores.csv").assign(run=run)
        for run in RUNS
    ]
    return pd.concat(frames, ignore_index=True)


def test_distances_equal_deepface_verify(real_faces, deepface_distances):
    work, placed, _ = real_faces
    scores = checkpoint_scores(work)
    assert len(scores) == 8 * 4 and scores["face_found"].all()
    assert {c for c in scores.columns if c.startswith("d:")} == {
        f"d:{ref}" for ref in next(iter(deepface_distances.values()))
    }
    for row in scores.to_dict("records"):
        render = work / f"results/arms/{row['run']}/epoch-1/main/renders" / row["image"]
        expected = deepface_distances[placed[render]]
        for ref, distance in expected.items():
            assert row[f"d:{ref}"] == pytest.approx(distance, abs=1e-6), (render, ref)
        assert row["mean_distance"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    # The subject's photos are near the references, the other man's far (DeepFace's 0.07).
    subject = scores["run"].str.contains("-noreg-")
    assert (
        scores.loc[subject, "mean_distance"].max()
        < 0.07
        < scores.loc[~subject, "mean_distance"].min()
    )


def test_summary_equals_pandas_on_the_scores(real_faces):
    work, _, _ = real_faces
    scores = checkpoint_scores(work)
    scores["recipe"] = scores["run"].str.removesuffix("-r2")
    summary = pd.read_csv(work / "results/summary.csv").set_index("arm")
    assert sorted(summary.index) == sorted(RECIPES)  # replicates pooled per recipe
    thresholds = [c.removeprefix("pct_below_") for c in summary.columns]
    thresholds = [t for t in thresholds if t.replace(".", "", 1).isdigit()]
    assert thresholds  # the fitted Dlib thresholds, e.g. 0.06 and 0.07
    for recipe, group in scores.groupby("recipe"):
        row = summary.loc[recipe]
        assert row["renders"] == 8 and row["face_rate"] == pytest.approx(1.0)
        assert row["average"] == pytest.approx(group["mean_distance"].mean(), abs=1e-9)
        assert row["median"] == pytest.approx(group["mean_distance"].median(), abs=1e-9)
        for t in thresholds:
            share = 100 * (group["mean_distance"] < float(t)).mean()
            assert row[f"pct_below_{t}"] == pytest.approx(share), (recipe, t)
    assert (
        summary.loc[["rare-noreg-nocap", "rare-noreg-nocap-lora"], f"pct_below_{thresholds[0]}"]
        == 100
    ).all()
    assert (
        summary.loc[["rare-gtreg-nocap", "rare-gtreg-nocap-lora"], f"pct_below_{thresholds[-1]}"]
        == 0
    ).all()
    # The aggregated table is the checkpoints' rows, each run named by its recipe and replicate.
    table = pd.read_csv(work / "results/scores.tsv", sep="\t")
    assert len(table) == len(scores)
    assert Counter(zip(table["arm"], table["replicate"], strict=True)) == {
        (recipe, r): 4 for recipe in RECIPES for r in (1, 2)
    }

    flexibility = pd.read_csv(work / "results/flexibility.csv").set_index("arm")
    np.testing.assert_allclose(
        flexibility.loc[summary.index, "likeness_average"], summary["average"], atol=1e-9
    )


def test_comparisons_are_paired_means_of_the_scores(real_faces):
    work, _, _ = real_faces
    scores = checkpoint_scores(work)
    comparisons = pd.read_csv(work / "results/comparisons.csv")
    assert not comparisons.empty
    per_seed = scores.assign(recipe=scores["run"].str.removesuffix("-r2")).pivot_table(
        index="seed", columns="recipe", values="mean_distance", aggfunc="mean"
    )
    for row in comparisons.itertuples():
        diff = per_seed[row.arm_a] - per_seed[row.arm_b]  # the runs' mean on each seed
        assert row.n_pairs == 4
        assert row.mean_diff == pytest.approx(diff.mean(), abs=1e-9), (row.arm_a, row.arm_b)
        assert row.median_diff == pytest.approx(diff.median(), abs=1e-9), (row.arm_a, row.arm_b)
    # Only the regularization level separates arms; full against LoRA differs by nothing.
    between = comparisons["arm_a"].str.contains("-gtreg-") != comparisons["arm_b"].str.contains(
        "-gtreg-"
    )
    assert (comparisons.loc[between, "mean_diff"].abs() > 0.1).all()
    assert (comparisons.loc[~between, "mean_diff"] == 0).all()


def test_verdict_finds_ground_truth_regularization_less_alike(real_faces):
    work, _, _ = real_faces
    verdict = json.loads((work / "results/verdict.json").read_text())
    assert verdict["replicates"] == 2
    assert "single_run" not in verdict["warnings"]
    assert verdict["top_arm"] in ("rare-noreg-nocap", "rare-noreg-nocap-lora")
    effects = [c for c in verdict["claims"] if c["kind"] == "effect"]
    assert any(
        c["better"] == "regularization=none" and c["worse"] == "regularization=ground_truth"
        for c in effects
    ), effects
    # Full and LoRA runs got the same photos: no claim about the method.
    assert not [c for c in effects if "method" in c["better"] + c["worse"]]
    # Every claim points the way the photos do: no-regularization arms are more alike.
    for claim in verdict["claims"]:
        assert claim["estimate"] > 0.05 and claim["ci_low"] > 0
    # The summary states it in words, with the run as the unit.
    text = (work / "results/report/summary.md").read_text()
    assert "**regularization=none** is more alike than **regularization=ground_truth**" in text
    assert "2 training runs per arm" in text
    assert "regularization=none" in (work / TARGET).read_text()


def test_the_trainers_lora_file_loads_in_diffusers_as_the_trained_adapter(real_faces):
    """The LoRA arm's checkpoint (Kohya keys), read by diffusers' ``load_lora_weights``,
    gives the UNet the trainer ended with: the base UNet plus the peft adapter in the arm's
    resume state (kept here: release_resume_state is not among the targets)."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from safetensors.torch import load_file

    from dreamgrid.sample import load_pipeline
    from dreamgrid.train.export import read_metadata

    work, _, _ = real_faces
    arm = work / "results/arms/rare-noreg-nocap-lora"
    checkpoint = arm / "checkpoints/epoch-1.safetensors"
    base = work / "results/models/base"
    meta = read_metadata(checkpoint)
    assert meta["method"] == "lora" and meta["epoch"] == 1

    loaded = load_pipeline(base, checkpoint, device="cpu").unet  # goes through load_lora_weights
    plain = UNet2DConditionModel.from_pretrained(base / "unet")
    trained = UNet2DConditionModel.from_pretrained(base / "unet")
    trained.add_adapter(
        LoraConfig(
            r=meta["lora_rank"],
            lora_alpha=meta["lora_alpha"],
            target_modules=meta["lora_target_modules"],
        )
    )
    state = load_file(str(arm / "state/resume.safetensors"))
    adapter = {
        k.removeprefix("weights.unet."): v
        for k, v in state.items()
        if k.startswith("weights.unet.")
    }
    missing, unexpected = trained.load_state_dict(adapter, strict=False)
    assert adapter and not unexpected
    assert not [k for k in missing if "lora_" in k]  # every adapter weight came from the state

    config = plain.config
    generator = torch.Generator().manual_seed(0)
    size = (1, config.in_channels, config.sample_size, config.sample_size)
    sample = torch.randn(size, generator=generator)
    text = torch.randn((1, 8, config.cross_attention_dim), generator=generator)
    with torch.no_grad():
        out = {
            name: unet(sample, 500, encoder_hidden_states=text).sample
            for name, unet in (("plain", plain), ("trained", trained), ("loaded", loaded))
        }
    change = (out["trained"] - out["plain"]).abs().max()
    assert change > 0  # the adapter was trained: it changes the output
    # Equal up to the file's fp16 rounding, far below the adapter's own effect.
    assert (out["loaded"] - out["trained"]).abs().max() < 0.01 * change


def test_renders_that_are_training_photos_are_flagged_as_memorized(real_faces):
    """The plain arms' "renders" are the training photos themselves: every one is closer to a
    training photo than the closest two training photos are; Biden's photos never are."""
    work, placed, _ = real_faces
    table = pd.read_csv(work / "results/memorization.csv").set_index("arm")
    assert set(table.index) == set(RUNS)
    for run in RUNS:
        row = table.loc[run]
        assert row["faces"] == 4, run
        expected = 0.0 if "-gtreg-" in run else 100.0
        assert row["pct_closer_than_pairs"] == expected, run
    renders = pd.read_csv(work / "results/memorization/renders.tsv", sep="\t")
    for _, render in renders.iterrows():
        photo = placed[
            work / f"results/arms/{render['arm']}/epoch-1/main/renders" / render["image"]
        ]
        if photo.startswith("train/"):
            # a re-saved copy of the photo: its own nearest training photo, at distance 0
            assert render["nearest_photo"] == Path(photo).name
            assert render["nearest_training"] < 1e-6
    summary_md = (work / "results/report/summary.md").read_text()
    assert "## Memorization" in summary_md
