"""Statistics: known effects found, null effects not, against hand and scipy values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from dreamgrid import aggregate, baseline, cli, stats, verdict
from dreamgrid import summary as summary_mod

ARMS = [
    f"{token}-{reg}-{cap}"
    for token in ("celebrity", "rare")
    for reg in ("noreg", "genreg")
    for cap in ("blip", "nocap")
]
AXES = {
    arm: dict(zip(("token", "regularization", "captions"), arm.split("-"), strict=True))
    for arm in ARMS
}


def grid_scores(token_effect=0.05, n_seeds=60, seed=1, epochs=(1, 2, 3), no_face=0.05):
    """Synthetic 2x2x2 grid: rare token +token_effect distance; reg and captions do nothing."""
    rng = np.random.default_rng(seed)
    per_seed = rng.normal(0, 0.04, n_seeds)
    rows = []
    for arm in ARMS:
        token, reg, _ = arm.split("-")
        for epoch in epochs:
            steps = epoch * (100 if reg == "noreg" else 200)
            for s in range(n_seeds):
                d = 0.62 + (token_effect if token == "rare" else 0) - 0.01 * epoch
                d += per_seed[s] + rng.normal(0, 0.02)
                face = rng.random() > no_face
                rows.append(
                    {
                        "arm": arm,
                        "epoch": epoch,
                        "steps": steps,
                        "seed": s,
                        "image": f"render-{s}.png",
                        "face_found": face,
                        "mean_distance": d if face else math.nan,
                    }
                )
    return pd.DataFrame(rows)


def test_holm_hand_computed():
    adjusted = stats.holm([0.01, 0.04, 0.03, math.nan, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 with m=4: 0.04, 0.09, max(0.09, 0.08)=0.09, 0.5
    assert adjusted[0] == pytest.approx(0.04)
    assert adjusted[2] == pytest.approx(0.09)
    assert adjusted[1] == pytest.approx(0.09)
    assert math.isnan(adjusted[3])
    assert adjusted[4] == pytest.approx(0.5)


def test_bootstrap_matches_normal_theory_and_scipy():
    values = np.random.default_rng(3).normal(0.6, 0.05, 400)
    low, high = stats.bootstrap_ci(values, rng=stats.rng_for(0, "x"), resamples=4000)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.15 * half)
    ref = sps.bootstrap(
        (values,), np.mean, method="percentile", n_resamples=4000, random_state=0
    ).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.1 * half)
    assert high == pytest.approx(ref.high, abs=0.1 * half)


def test_bootstrap_is_seeded_and_handles_few_values():
    values = np.arange(20.0)
    first = stats.bootstrap_ci(values, rng=stats.rng_for(7, "a"))
    assert first == stats.bootstrap_ci(values, rng=stats.rng_for(7, "a"))
    assert first != stats.bootstrap_ci(values, rng=stats.rng_for(8, "a"))
    assert all(math.isnan(v) for v in stats.bootstrap_ci([], rng=stats.rng_for(0)))
    assert stats.bootstrap_ci([0.5], rng=stats.rng_for(0)) == (0.5, 0.5)


def test_paired_difference_matches_scipy_wilcoxon():
    rng = np.random.default_rng(5)
    a = rng.normal(0.6, 0.05, 50)
    b = a + 0.03 + rng.normal(0, 0.01, 50)
    a[3] = math.nan  # no face: that seed is not a pair
    result = stats.paired_difference(a, b, rng=stats.rng_for(0))
    mask = np.isfinite(a)
    assert result["n_pairs"] == 49
    assert result["mean_diff"] == pytest.approx(np.mean(a[mask] - b[mask]))
    assert result["p_value"] == pytest.approx(sps.wilcoxon(a[mask] - b[mask]).pvalue)
    assert result["ci_low"] < result["mean_diff"] < result["ci_high"] < 0


def test_compare_detects_real_effect_not_null_effect():
    table = stats.compare_arms(grid_scores())
    assert list(table.columns) == list(stats.COMPARE_COLUMNS)
    assert len(table) == 28 * 3
    token = table[
        (table["arm_a"] == "celebrity-noreg-blip") & (table["arm_b"] == "rare-noreg-blip")
    ]
    assert (token["p_adjusted"] < 0.05).all()
    assert token["mean_diff"].between(-0.07, -0.03).all()
    assert (token["ci_high"] < 0).all()
    null = table[
        (table["arm_a"] == "celebrity-genreg-blip") & (table["arm_b"] == "celebrity-noreg-blip")
    ]
    assert (null["p_adjusted"] > 0.05).all()
    assert ((null["ci_low"] < 0) & (null["ci_high"] > 0)).all()
    again = stats.compare_arms(grid_scores())
    pd.testing.assert_frame_equal(table, again)


def test_holm_families_are_per_prompt_set_so_a_new_set_leaves_main_alone():
    main = grid_scores().assign(prompt_set="main")
    alone = stats.compare_arms(main)
    bleed = grid_scores(token_effect=0.0, seed=2).assign(prompt_set="bleed")
    both = stats.compare_arms(pd.concat([main, bleed], ignore_index=True))
    main_rows = both[both["prompt_set"] == "main"].reset_index(drop=True)
    pd.testing.assert_series_equal(main_rows["p_adjusted"], alone["p_adjusted"])
    # Pooled into one family of twice the tests, main's adjusted p-values would have grown.
    pooled = stats.holm(both["p_value"].to_numpy(dtype=float))[both["prompt_set"] == "main"]
    assert (pooled >= alone["p_adjusted"].to_numpy()).all()
    assert (pooled > alone["p_adjusted"].to_numpy()).any()


def test_factorial_effects_known_effect_and_nulls():
    scores = grid_scores()
    summary = summary_mod.summarize(scores)
    axes = stats.arm_axes(ARMS, AXES)
    assert list(axes.columns) == ["token", "regularization", "captions"]
    chosen = stats.select_checkpoints(summary, "equal_steps")
    # budget = 300 steps (noreg, epoch 3); genreg arms contribute epoch 1 (200 steps)
    assert chosen["celebrity-noreg-blip"] == 3 and chosen["celebrity-genreg-blip"] == 1
    effects = stats.factorial_effects(scores, axes, chosen, view="equal_steps")
    main = effects[effects["term"] == "main"].set_index("axis")
    assert main.loc["token", "contrast"] == "rare vs celebrity"
    assert main.loc["token", "estimate"] == pytest.approx(0.05, abs=0.01)
    assert main.loc["token", "p_adjusted"] < 0.05
    assert main.loc["captions", "p_adjusted"] > 0.05
    assert main.loc["captions", "ci_low"] < 0 < main.loc["captions", "ci_high"]
    # regularization at equal steps: genreg arms are at epoch 1 (-0.01/epoch less trained)
    assert main.loc["regularization", "estimate"] == pytest.approx(0.02, abs=0.01)
    inter = effects[effects["term"] == "interaction"]
    assert len(inter) == 3 and (inter["p_adjusted"] > 0.05).all()


def test_verdict_states_effect_and_null_and_nothing_without_faces():
    scores = grid_scores()
    summary = summary_mod.summarize(scores)
    comparisons, effects = aggregate.comparisons_and_effects(scores, summary, AXES)
    text = verdict.verdict(summary, comparisons, effects, baseline=0.5)
    assert "token: celebrity beats rare by 0.05" in text
    assert "captions (blip vs nocap): no significant effect" in text
    faceless = grid_scores(no_face=1.1)
    summary = summary_mod.summarize(faceless)
    comparisons, effects = aggregate.comparisons_and_effects(faceless, summary, AXES)
    text = verdict.verdict(summary, comparisons, effects, baseline=0.5)
    assert text.startswith("**Nothing to conclude.**")


def test_prompt_sets_are_summarized_apart_and_the_verdict_reads_main(tmp_path):
    main = grid_scores()
    # A class-bleed set where the rare token's arms come out "closest": it must not leak
    # into the verdict, which answers the likeness question from `main`.
    bleed = grid_scores(token_effect=-0.3, seed=2)
    scores = pd.concat([main.assign(prompt_set="main"), bleed.assign(prompt_set="bleed")])
    paths = []
    for (arm, epoch), group in scores.groupby(["arm", "epoch"]):
        path = tmp_path / f"{arm}-{epoch}.csv"
        group.to_csv(path, index=False)
        paths.append(path)
    out = {name: tmp_path / name for name in ("s.tsv", "s.csv", "s.md", "c.csv", "e.csv")}
    summary = aggregate.run(
        paths, [0.6, 0.7], 5.0, out["s.tsv"], out["s.csv"], out["s.md"], demo=False,
        out_comparisons=out["c.csv"], out_effects=out["e.csv"], resamples=200, arms=AXES,
    )  # fmt: skip
    assert len(summary) == 2 * len(ARMS) * 3
    assert set(summary["prompt_set"]) == {"main", "bleed"}
    comparisons = pd.read_csv(out["c.csv"])
    assert len(comparisons) == 2 * 28 * 3  # pairs of arms within each set, never across
    text = out["s.md"].read_text()
    verdict = text.split("## Verdict", 1)[1].split("## Per checkpoint", 1)[0]
    assert "Read from prompt set `main`" in verdict
    assert "**celebrity-" in verdict and "token: celebrity beats rare" in verdict
    assert "rare beats celebrity" not in verdict


def test_summary_intervals_and_best_not_worse():
    scores = grid_scores()
    summary = summary_mod.summarize(scores)
    assert (summary["average_ci_low"] < summary["average"]).all()
    assert (summary["average"] < summary["average_ci_high"]).all()
    assert (summary["pct_below_0.6_ci_low"] <= summary["pct_below_0.6"]).all()
    assert summary.groupby("arm")["best_not_worse"].sum().eq(1).all()
    # the uncertainty-aware best is never later than the arm's highest share
    for _, group in summary.groupby("arm"):
        top = group.loc[group["pct_below_0.6"].idxmax(), "epoch"]
        assert group.loc[group["best_not_worse"], "epoch"].iloc[0] <= top
    pd.testing.assert_frame_equal(summary, summary_mod.summarize(scores))


def test_reference_baseline_matches_deepface_find_distance():
    from dreamgrid import faces

    faces.setup_deepface()
    from deepface.modules.verification import find_distance

    rng = np.random.default_rng(0)
    embeddings = {name: rng.normal(size=128) for name in ("a.jpg", "b.jpg", "c.jpg")}
    for metric in baseline.METRICS:
        table = baseline.reference_baseline(embeddings, metric)
        assert list(table["reference"]) == ["a.jpg", "b.jpg", "c.jpg"]
        for name, value in table[["reference", "mean_distance"]].to_numpy():
            others = [o for o in embeddings if o != name]
            expected = np.mean(
                [float(find_distance(embeddings[name], embeddings[o], metric)) for o in others]
            )
            assert value == pytest.approx(expected, abs=1e-12)
    assert baseline.reference_baseline({"a": np.ones(3)}, "cosine").empty


def test_compare_cli(tmp_path):
    path = tmp_path / "scores.csv"
    grid_scores(n_seeds=20, epochs=(1,)).drop(columns=["steps", "image"]).to_csv(path, index=False)
    out = tmp_path / "comparisons.csv"
    assert cli.main(["compare", "--scores", str(path), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == list(stats.COMPARE_COLUMNS)
    assert len(table) == 28
    bad = tmp_path / "bad.csv"
    pd.read_csv(path).drop(columns="seed").to_csv(bad, index=False)
    assert cli.main(["compare", "--scores", str(bad), "--out", str(out)]) == 2
