"""Inference and verdict on constructed score tables whose right answer is known by design."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dreamgrid import aggregate, cli, inference, scoretable, verdict

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
OPTIONS = {"thresholds": [0.6, 0.7], "best_margin": 5.0, "best_margin_relative": 0.25}


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


def renders(arm, epoch, distances, steps=None):
    """One checkpoint; None = no face; seed = position."""
    rows = []
    for s, d in enumerate(distances):
        row = {"arm": arm, "epoch": epoch, "seed": s, "face_found": d is not None}
        row["mean_distance"] = math.nan if d is None else d
        if steps is not None:
            row["steps"] = steps
        rows.append(row)
    return rows


def build(scores, arms=None, min_faces=20, resamples=1000):
    typed = scoretable._normalise(pd.DataFrame(scores), "test")
    return aggregate.build(typed, **OPTIONS, min_faces=min_faces, arms=arms, resamples=resamples)


def test_verdict_follows_paired_evidence_and_says_how_face_rates_compare():
    # The contradiction: A finds a face on every seed, B only on the hard half, where
    # it is better by 0.058 on every seed. A's unpaired average is lower; paired, B wins.
    rng = np.random.default_rng(0)
    n = 200
    hard = np.arange(n) % 2 == 1
    base = np.where(hard, 0.60, 0.44) + rng.normal(0, 0.01, n)
    a = list(base)
    shift = 0.058 + rng.normal(0, 0.002, n)
    b = [d - x if h else None for d, x, h in zip(base, shift, hard, strict=True)]
    result = build(renders("A", 1, a) + renders("B", 1, b))
    summary = result["summary"]
    average = summary.set_index("arm")["average"]
    assert average["A"] < average["B"]
    obj = result["verdict"]
    assert obj["top_arm"] == "B"
    pairs = [c for c in obj["claims"] if c["kind"] == "pair"]
    assert pairs and all(c["better"] == "B" and c["worse"] == "A" for c in pairs)
    for claim in pairs:
        assert claim["estimate"] == pytest.approx(0.058, abs=0.001)
        assert 0 < claim["ci_low"] < claim["estimate"] < claim["ci_high"]
        assert claim["face_diff"] == pytest.approx(-0.5, abs=0.05)  # B finds fewer faces
        assert claim["face_p"] < 1e-6
    text = result["markdown"].split("## Verdict", 1)[1].split("## Per checkpoint", 1)[0]
    assert "**A** is more alike" not in text
    assert "**B** is more alike than **A**" in text and "lower than A's" in text


def test_estimate_and_test_agree_so_no_claim_on_an_interval_that_holds_zero():
    # 85% of seeds better by 0.01, 15% worse by 0.05: mean difference -0.001, CI holds 0
    n = 200
    base = 0.55 + 0.03 * np.sin(np.arange(n))
    worse = np.arange(n) % 20 < 3
    a = list(np.where(worse, base + 0.05, base - 0.01))
    result = build(renders("A", 1, a) + renders("B", 1, list(base)))
    row = result["comparisons"].iloc[0]
    assert row["mean_diff"] == pytest.approx(-0.001, abs=1e-9)
    assert row["ci_low"] < 0 < row["ci_high"]
    assert row["p_value"] > 0.05
    assert row["share_a_better"] == pytest.approx(0.85)
    assert row["median_diff"] == pytest.approx(-0.01)
    assert result["verdict"]["claims"] == []


def test_a_collapsed_checkpoint_cannot_be_best_and_gets_a_warning():
    # epoch 1: 1 face in 200 renders at 0.55 (100% of faces below 0.6); epoch 2: 120 of 200
    # faces below 0.6
    collapsed = [0.55] + [None] * 199
    healthy = [0.5] * 120 + [0.65] * 80
    result = build(renders("A", 1, collapsed) + renders("A", 2, healthy))
    summary = result["summary"].set_index("epoch")
    assert summary.loc[1, "pct_below_0.6"] == 100.0
    assert summary.loc[1, "pct_below_0.6_all"] == pytest.approx(0.5)
    assert bool(summary.loc[1, "few_faces"]) and not bool(summary.loc[2, "few_faces"])
    assert list(summary["best"]) == [False, True]
    assert list(summary["best_not_worse"]) == [False, True]
    assert "few_faces:A:1" in result["verdict"]["warnings"]
    assert "| few faces |" in result["markdown"]


def test_best_epoch_survives_low_shares():
    # Shares below 0.6 (all renders): 2%, 5%, 8%. "Within 5 points" would pick epoch 1; the
    # relative margin (25% of 8% = 2 points) on the paired interval keeps epoch 3.
    n = 200

    def epoch(e, below):
        return renders("A", e, [0.5] * below + [0.7] * (n - below))

    scores = epoch(1, 4) + epoch(2, 10) + epoch(3, 16)
    summary = build(scores)["summary"]
    assert list(summary["pct_below_0.6_all"]) == pytest.approx([2.0, 5.0, 8.0])
    assert list(summary["best_not_worse"]) == [False, False, True]
    # chosen on the selection half: the same answer
    assert list(summary["best"]) == [False, False, True]
    assert inference.effective_margin(8.0, 5.0, 0.25) == pytest.approx(2.0)
    # an arm peaking at 4% gets the low-share warning
    low = renders("B", 1, [0.5] * 8 + [0.7] * (n - 8))
    assert "low_share:B" in build(scores + low)["verdict"]["warnings"]


def test_not_significantly_worse_is_not_the_same_as_not_worse():
    # 8 seeds: 25% against a best of 75%; the old rule flagged epoch 1 "not worse"
    scores = renders("A", 1, [0.5] * 2 + [0.7] * 6) + renders("A", 2, [0.5] * 6 + [0.7] * 2)
    summary = build(scores, min_faces=1)["summary"]
    assert list(summary["best_not_worse"]) == [False, True]
    # equal shares on a big sample: the earlier epoch is chosen
    same = renders("A", 1, [0.5] * 100 + [0.7] * 100) + renders("A", 2, [0.5] * 100 + [0.7] * 100)
    assert list(build(same)["summary"]["best_not_worse"]) == [True, False]


def test_equal_steps_means_equal_steps():
    rng = np.random.default_rng(2)
    rows = []
    for arm, per_epoch in (("noreg", 100), ("genreg", 200)):
        for e in (1, 2, 3):
            rows += renders(arm, e, list(0.55 + rng.normal(0, 0.02, 40)), steps=per_epoch * e)
    axes = {"noreg": {"regularization": "noreg"}, "genreg": {"regularization": "genreg"}}
    result = build(rows, arms=axes)
    assert result["verdict"]["equal_steps"] == 200
    at = result["effects"].loc[result["effects"]["view"] == "equal_steps"]
    assert len(at) and set(at["checkpoints"]) >= {"genreg@1(200 steps); noreg@2(200 steps)"}
    assert "no_equal_steps" not in result["verdict"]["warnings"]
    # 150 vs 200 steps per epoch over two epochs: no common count, nothing compared
    rows = []
    for arm, per_epoch in (("noreg", 150), ("genreg", 200)):
        for e in (1, 2):
            rows += renders(arm, e, list(0.55 + rng.normal(0, 0.02, 40)), steps=per_epoch * e)
    result = build(rows, arms=axes)
    assert result["verdict"]["equal_steps"] is None
    assert "no_equal_steps" in result["verdict"]["warnings"]
    assert "equal_steps" not in set(result["effects"]["view"])
    assert "No equal steps" in result["markdown"]
    # without a steps column: said, not compared under the equal-steps label
    no_steps = pd.DataFrame(rows).drop(columns="steps")
    assert "no_equal_steps" in build(no_steps, arms=axes)["verdict"]["warnings"]


def test_known_token_effect_is_claimed_and_null_axes_are_not():
    result = build(grid_scores(), arms=AXES)
    claims = result["verdict"]["claims"]
    effects = [c for c in claims if c["kind"] == "effect"]
    assert {(c["better"], c["worse"], c["at"]) for c in effects} == {
        ("token=celebrity", "token=rare", "chosen"),
        ("token=celebrity", "token=rare", "equal_steps"),
    }
    for claim in effects:
        assert claim["estimate"] == pytest.approx(0.05, abs=0.015)
        assert claim["ci_low"] > 0
    # the planned family's intervals are simultaneous: coverage 1 - 0.05 / m
    planned = result["effects"]
    m = int(np.isfinite(planned["p_value"]).sum())
    assert planned["confidence"].unique() == pytest.approx([1 - 0.05 / m])
    assert planned["p_adjusted"].to_numpy() == pytest.approx(
        np.minimum(1, planned["p_value"].to_numpy() * m)
    )
    assert "**Power.** With about 27 paired seeds" in result["markdown"]  # 30 seeds x 90%
    # the sentence's numbers are power.csv's, and power.csv's are a t test's power solved
    from statsmodels.stats.power import TTestPower

    (power,) = result["power"].to_dict("records")
    assert power["pairs"] == 27 and power["family"] == m
    assert power["alpha_per_contrast"] == pytest.approx(0.05 / m)
    size = TTestPower().solve_power(nobs=27, alpha=0.05 / m, power=0.8)
    assert power["detectable"] == pytest.approx(size * power["paired_sd"])
    assert f"power is {power['detectable']:.4f}" in result["markdown"]
    # every pair claim involves the top arm, and every claimed arm is a celebrity arm
    top = result["verdict"]["top_arm"]
    assert top.startswith("celebrity-")
    for claim in claims:
        if claim["kind"] == "pair":
            assert claim["better"] == top and claim["worse"].startswith("rare-")


def test_exploratory_table_columns_and_its_own_holm_family():
    scores = grid_scores(n_seeds=20, epochs=(1,))
    main, bleed = scores.assign(prompt_set="main"), scores.assign(prompt_set="bleed")
    both = scoretable._normalise(pd.concat([main, bleed], ignore_index=True), "t")
    table = inference.compare_arms(both, resamples=500)
    assert list(table.columns) == [*inference.COMPARE_COLUMNS, "prompt_set"]
    alone = inference.compare_arms(scoretable._normalise(main, "t"), resamples=500)
    in_both = table.loc[table["prompt_set"] == "main"].reset_index(drop=True)
    pd.testing.assert_series_equal(in_both["p_adjusted"], alone["p_adjusted"])
    assert table["method"].str.contains("Holm over all pairs x epochs").all()


def test_one_verdict_object_per_prompt_set_and_main_is_the_headline():
    main = grid_scores(n_seeds=40, epochs=(1, 2))
    bleed = grid_scores(token_effect=-0.3, seed=2, n_seeds=40, epochs=(1, 2))
    scores = pd.concat([main.assign(prompt_set="main"), bleed.assign(prompt_set="bleed")])
    result = build(scores, arms=AXES, resamples=500)
    assert isinstance(result["verdict"], list)
    assert [o["prompt_set"] for o in result["verdict"]] == ["bleed", "main"]
    text = result["markdown"].split("## Verdict", 1)[1].split("## Per checkpoint", 1)[0]
    assert "Read from prompt set `main`" in text
    assert "**token=celebrity** is more alike than **token=rare**" in text
    assert "**token=rare** is more alike" not in text


def test_nothing_to_conclude_without_faces():
    result = build(grid_scores(no_face=1.1, n_seeds=10, epochs=(1,)), arms=AXES)
    assert "**Nothing to conclude.**" in result["markdown"]
    assert result["verdict"]["claims"] == []
    assert result["verdict"]["chosen_epochs"] == {}


def test_report_and_compare_cli(tmp_path):
    path = tmp_path / "scores.csv"
    table = grid_scores(n_seeds=20, epochs=(1, 2))
    table["token"] = table["arm"].str.split("-").str[0]
    table.drop(columns=["image"]).to_csv(path, index=False)
    out = tmp_path / "report"
    argv = ["report", "--scores", str(path), "--out", str(out), "--resamples", "300"]
    assert cli.main(argv) == 0
    names = {"summary.csv", "comparisons.csv", "effects.csv", "power.csv", "summary.md"}
    names.add("verdict.json")
    assert {p.name for p in out.iterdir()} == names
    obj = json.loads((out / "verdict.json").read_text())
    assert set(obj) >= {"replicates", "chosen_epochs", "claims", "warnings"}
    assert obj["replicates"] == 1 and "single_run" in obj["warnings"]
    for claim in obj["claims"]:
        assert claim["estimate"] > 0 and claim["ci_low"] > 0
        assert claim["kind"] in ("pair", "effect") and claim["at"] in ("chosen", "equal_steps")
    effects = pd.read_csv(out / "effects.csv")
    assert set(effects.loc[effects["term"] == "main", "axis"]) == {"token"}
    compared = tmp_path / "comparisons.csv"
    assert cli.main(["compare", "--scores", str(path), "--out", str(compared)]) == 0
    assert list(pd.read_csv(compared).columns) == list(inference.COMPARE_COLUMNS)
    bad = tmp_path / "bad.csv"
    pd.read_csv(path).drop(columns="seed").to_csv(bad, index=False)
    assert cli.main(["report", "--scores", str(bad), "--out", str(out)]) == 2


def test_claims_orientation():
    row = pd.Series(
        {
            "family": "planned", "view": "chosen", "term": "vs_top", "axis": "arm",
            "contrast": "x vs top", "estimate": -0.02, "ci_low": -0.03, "ci_high": -0.01,
            "p_adjusted": 0.01, "face_diff": 0.1, "face_p": 0.2,
        }
    )  # fmt: skip
    (claim,) = verdict.claims(pd.DataFrame([row]))
    assert (claim["better"], claim["worse"]) == ("x", "top")
    assert (claim["estimate"], claim["ci_low"], claim["ci_high"]) == pytest.approx(
        (0.02, 0.01, 0.03)
    )
    assert claim["face_diff"] == pytest.approx(0.1)
    row["ci_high"] = 0.001
    assert verdict.claims(pd.DataFrame([row])) == []


def test_power_by_known_values():
    # one-sample t test, effect size 0.5, two-sided 5%, 80% power: 34 pairs (normal theory
    # gives 31.4; the t distribution adds ~2)
    assert inference.pairs_needed(0.5, 1.0, 0.05) == 34
    assert inference.detectable(34, 1.0, 0.05) == pytest.approx(0.5, abs=0.01)
    # the study's grid: 12 arms of 2 tokens x 3 regularizations x 2 captions, two views:
    # 2 x (11 arms vs top + 4 main levels + 5 interaction cells) = 40
    axes = inference.arm_axes(
        [f"a{i}" for i in range(12)],
        {
            f"a{i}": {"token": t, "regularization": r, "captions": c}
            for i, (t, r, c) in enumerate(
                (t, r, c) for t in "ab" for r in "xyz" for c in ("blip", "nocap")
            )
        },
    )
    assert inference.family_size(12, axes) == 40


def test_power_plan_from_a_pilot(tmp_path):
    rng = np.random.default_rng(4)
    n = 200
    base = 0.55 + rng.normal(0, 0.04, n)
    diff = 0.02 + rng.normal(0, 0.03, n)
    rows = renders("A", 1, list(base)) + renders("B", 1, list(base + diff))
    scores = scoretable._normalise(pd.DataFrame(rows), "t")
    plan = inference.power_plan(scores, 0.01, run_sd=0.005)
    assert plan["family"] == 2 and plan["alpha_per_contrast"] == pytest.approx(0.025)
    assert plan["paired_sd"] == pytest.approx(np.std(diff, ddof=1))
    pairs = inference.pairs_needed(0.01, np.std(diff, ddof=1), 0.025)
    assert plan["renders_per_checkpoint"] == 2 * pairs  # half the seeds estimate
    z = 2.2414 + 0.8416  # norm.ppf(1 - 0.025/2), norm.ppf(0.8)
    expected = math.ceil(z**2 * (2 * 0.005**2 + np.var(diff, ddof=1) / pairs) / 0.01**2)
    assert plan["replicates"] == expected
    path = tmp_path / "pilot.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert cli.main(["power", "--scores", str(path), "--effect", "0.01"]) == 0


def replicated(effect, run_sd, n=60, runs=3, seed=0):
    """Two recipes A, B with `runs` training runs each; B is `effect` farther; each run is
    shifted by N(0, run_sd); tiny render noise."""
    rng = np.random.default_rng(seed)
    base = 0.55 + rng.normal(0, 0.03, n)
    rows = []
    for arm, offset in (("A", 0.0), ("B", effect)):
        for r in range(1, runs + 1):
            shift = rng.normal(0, run_sd)
            for row in renders(arm, 1, list(base + offset + shift + rng.normal(0, 0.002, n))):
                rows.append({**row, "replicate": r})
    return pd.DataFrame(rows)


def test_replicates_make_the_run_the_unit():
    from scipy import stats as sps

    scores = replicated(effect=0.0, run_sd=0.02)
    result = build(scores)
    assert result["verdict"]["replicates"] == 3 and result["verdict"]["run_sd"] > 0.005
    assert "**3 training runs per arm.**" in result["markdown"]
    assert "single_run" not in result["verdict"]["warnings"]
    # run shifts of SD 0.02 against render noise of 0.002: without the run as the unit every
    # shift would look like a recipe effect
    assert result["verdict"]["claims"] == []
    row = result["effects"].iloc[0]
    assert row["method"].startswith("t test of seed-adjusted run effects")
    # every face found, so run effects are run means, by hand: the difference of the mean
    # run means (estimation half of the seeds, chosen epoch 1), pooled run variance, t with
    # 6 - 2 = 4 df at the family's level
    _, estimation = inference.split_seeds(range(60))
    half = scores.loc[scores["seed"].isin(estimation)]
    means = half.groupby(["arm", "replicate"])["mean_distance"].mean()
    a, b = means["A"].to_numpy(), means["B"].to_numpy()
    top = result["verdict"]["top_arm"]
    other = "A" if top == "B" else "B"
    sign = 1 if other == "A" else -1
    assert row["estimate"] == pytest.approx(sign * (a.mean() - b.mean()))
    pooled = (a.var(ddof=1) + b.var(ddof=1)) / 2
    half_width = sps.t.ppf(1 - (1 - row["confidence"]) / 2, 4) * math.sqrt(pooled * 2 / 3)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * half_width)
    assert row["run_sd"] == pytest.approx(math.sqrt(pooled))
    # a recipe effect far above the run-to-run noise is claimed
    strong = build(replicated(effect=0.1, run_sd=0.005))
    (claim,) = strong["verdict"]["claims"]
    assert (claim["better"], claim["worse"]) == ("A", "B")
    assert claim["estimate"] == pytest.approx(0.1, abs=0.01)


def test_a_run_with_faces_only_on_easy_seeds_does_not_look_better():
    """No render noise: distance = seed effect + recipe offset + run shift. One run of B
    found faces only on the easiest third of the seeds. The contrast equals the truth (the
    mean run shifts and the offset, known here), where plain run means are pulled down."""
    rng = np.random.default_rng(5)
    n = 30
    seed_effect = rng.normal(0, 0.04, n)
    easy = seed_effect < np.quantile(seed_effect, 1 / 3)
    shifts = {("A", r): rng.normal(0, 0.01) for r in (1, 2, 3)}
    shifts |= {("B", r): rng.normal(0, 0.01) for r in (1, 2, 3)}
    rows = []
    for (arm, r), shift in shifts.items():
        offset = 0.02 if arm == "B" else 0.0
        for seed in range(n):
            rows.append(
                {
                    "arm": arm,
                    "epoch": 1,
                    "replicate": r,
                    "seed": seed,
                    "d": 0.55 + seed_effect[seed] + offset + shift
                    if (arm, r) != ("B", 2) or easy[seed]
                    else math.nan,
                }
            )
    runs = pd.DataFrame(rows)
    row = inference.run_contrast(runs, {("A", 1): 1.0, ("B", 1): -1.0}, None, 0.95)
    truth = np.mean([shifts["A", r] for r in (1, 2, 3)]) - np.mean(
        [0.02 + shifts["B", r] for r in (1, 2, 3)]
    )
    assert row["estimate"] == pytest.approx(truth, abs=1e-9)
    assert row["method"].startswith("t test of seed-adjusted run effects")
    # plain run means: B's thin run looks 0.04 SD-units better than it is
    means = runs.groupby(["arm", "replicate"])["d"].mean()
    assert means["A"].mean() - means["B"].mean() > truth + 0.01
    # the run-to-run SD is the SD of the shifts around each recipe's mean (4 df)
    a = np.array([shifts["A", r] for r in (1, 2, 3)])
    b = np.array([shifts["B", r] for r in (1, 2, 3)])
    pooled = (a.var(ddof=1) + b.var(ddof=1)) / 2
    assert row["run_sd"] == pytest.approx(math.sqrt(pooled), rel=1e-6)


def test_the_real_photos_baseline_has_an_interval():
    from scipy import stats as sps

    from dreamgrid import baseline as baseline_mod
    from dreamgrid import stats

    values = [0.43, 0.47, 0.45, 0.41, 0.49, 0.44, 0.46]
    photos = pd.DataFrame(
        {"source": "reference", "photo": list("abcdefg"), "mean_distance": values}
    )
    low, high = baseline_mod.baseline_interval(photos)
    direct = sps.bootstrap(
        (np.array(values),),
        np.mean,
        method="BCa",
        n_resamples=stats.RESAMPLES,
        random_state=stats.rng_for(0, "baseline"),
    ).confidence_interval
    assert (low, high) == pytest.approx((direct.low, direct.high))
    assert low < np.mean(values) < high
    typed = scoretable._normalise(pd.DataFrame(renders("A", 1, [0.455] * 30)), "t")
    result = aggregate.build(typed, **OPTIONS, min_faces=20, baseline=photos)
    text = result["markdown"]
    assert "bootstrap over the photos" in text
    # 0.455 lies inside the photos' interval: as alike as real photos, not "below" them
    assert "as alike as real photos of the person are to each other" in text


# ---- base model as an axis ----------------------------------------------------------------
BASES = ("sd15", "sdxl", "flux")
#: Arm ids that sort flux first: the reference level is still sd15 (inference.AXIS_ORDER).
BASE_ARMS = [
    f"{base}-{token}-{reg}"
    for base in sorted(BASES)
    for token in ("celebrity", "rare")
    for reg in ("noreg", "genreg")
]
BASE_AXES = {
    arm: {"token": arm.split("-")[1], "regularization": arm.split("-")[2], "base_model": base}
    for arm in BASE_ARMS
    for base in [arm.split("-")[0]]
}
#: Distance offsets by design: sdxl and flux are more alike than sd15, and the rare token
#: costs 0.06 on sd15 only (a recipe effect that differs by base model).
BASE_OFFSET = {"sd15": 0.0, "sdxl": -0.03, "flux": -0.05}
RARE_ON_SD15 = 0.06


def base_model_scores(n_seeds=40, seed=3, no_face=0.05):
    rng = np.random.default_rng(seed)
    per_seed = rng.normal(0, 0.04, n_seeds)
    rows = []
    for arm in BASE_ARMS:
        base, token, _ = arm.split("-")
        for s in range(n_seeds):
            d = 0.62 + BASE_OFFSET[base] + per_seed[s] + rng.normal(0, 0.01)
            d += RARE_ON_SD15 if (token, base) == ("rare", "sd15") else 0.0
            face = rng.random() > no_face
            rows += renders(arm, 1, [d if face else None], steps=100)
            rows[-1]["seed"] = s
    return pd.DataFrame(rows)


def per_seed_contrast(matrix, pairs, seeds=None):
    """Mean over seeds of the per-seed mean over (arm1, arm0) pairs of d(arm1) - d(arm0),
    NaN-skipping, by numpy."""
    data = matrix if seeds is None else matrix.loc[matrix.index.isin(list(seeds))]
    diffs = np.stack([(data[a1] - data[a0]).to_numpy(dtype=float) for a1, a0 in pairs])
    seen = np.isfinite(diffs).any(axis=0)
    per_seed = np.nansum(diffs[:, seen], axis=0) / np.isfinite(diffs[:, seen]).sum(axis=0)
    return float(per_seed.mean())


def test_base_model_is_a_factor_with_effects_within_each_base_model():
    scores = base_model_scores()
    result = build(scores, arms=BASE_AXES, resamples=500)
    effects = result["effects"]
    matrix = scores.pivot(index="seed", columns="arm", values="mean_distance")
    _, estimation = inference.split_seeds(range(40))
    regs = ("noreg", "genreg")

    def row(view, term, axis, contrast):
        rows = effects.loc[
            (effects["view"] == view)
            & (effects["term"] == term)
            & (effects["axis"] == axis)
            & (effects["contrast"] == contrast)
        ]
        assert len(rows) == 1, (view, term, axis, contrast)
        return rows.iloc[0]

    for view, seeds in (("equal_steps", None), ("chosen", estimation)):
        # sd15 is the reference level although flux arms sort first
        for base in ("sdxl", "flux"):
            pairs = [
                (f"{base}-{t}-{r}", f"sd15-{t}-{r}") for t in ("celebrity", "rare") for r in regs
            ]
            got = row(view, "main", "base_model", f"{base} vs sd15")["estimate"]
            assert got == pytest.approx(per_seed_contrast(matrix, pairs, seeds))
        # the token's effect within each base model: only sd15's arms, only flux's arms...
        for base in BASES:
            pairs = [(f"{base}-rare-{r}", f"{base}-celebrity-{r}") for r in regs]
            within = row(view, "within", f"token | base_model={base}", "rare vs celebrity")
            assert within["estimate"] == pytest.approx(per_seed_contrast(matrix, pairs, seeds))
            truth = RARE_ON_SD15 if base == "sd15" else 0.0
            assert within["estimate"] == pytest.approx(truth, abs=0.01)
        # the interaction is the difference of the within effects (seed by seed)
        inter = row(
            view, "interaction", "token x base_model", "(rare vs celebrity) x (sdxl vs sd15)"
        )
        assert inter["estimate"] == pytest.approx(-RARE_ON_SD15, abs=0.01)
    # one Bonferroni family per view set: main 1 + 1 + 2, interactions 1 + 2 + 2, within
    # 3 x (1 + 1), each of 11 arms against the top, at both views
    axes = inference.arm_axes(BASE_ARMS, BASE_AXES)
    m = int(np.isfinite(effects["p_value"]).sum())
    assert m == 2 * (4 + 5 + 6 + 11) == inference.family_size(len(BASE_ARMS), axes)
    assert effects["confidence"].unique() == pytest.approx([1 - 0.05 / m])
    # the verdict: the rare token is worse on sd15 only, said within that base model
    claims = result["verdict"]["claims"]
    within = {(c["better"], c["worse"], c["within"], c["at"]) for c in claims if "within" in c}
    assert within == {
        ("token=celebrity", "token=rare", "base_model=sd15", "chosen"),
        ("token=celebrity", "token=rare", "base_model=sd15", "equal_steps"),
    }
    better = {c["better"] for c in claims if c["kind"] == "effect" and "within" not in c}
    assert {"base_model=sdxl", "base_model=flux"} <= better
    assert result["verdict"]["top_arm"].startswith("flux-")
    text = result["markdown"]
    assert "480 renders, 12 arms on 3 base models (sd15, sdxl, flux)" in text
    assert (
        "**token=celebrity** is more alike than **token=rare** with base model **sd15** at "
        "equal training steps: by "
    ) in text
    top = result["verdict"]["top_arm"]
    assert f"most alike arm is **{top}** (base model flux) at its chosen" in text
    assert "| arm | base_model | epoch |" in text
    assert "- **sd15-rare-noreg** (base model sd15): epoch 1" in text
    assert "Rows with term `within`" in text
    # the summary carries the base model beside the arm; the report's verdict page too
    summary = result["summary"]
    assert list(summary.columns[:3]) == ["arm", "base_model", "epoch"]
    assert (summary["base_model"] == summary["arm"].str.split("-").str[0]).all()
    from dreamgrid import report_pages

    assert "with base model **sd15**" in report_pages.verdict_markdown(text)


def test_one_base_model_changes_nothing():
    """Today's single-model outputs: a base_model level shared by every arm is no factor, so
    summary.md, verdict.json and every table are exactly what they are without it."""
    scores = grid_scores(n_seeds=24, epochs=(1, 2))
    plain = build(scores, arms=AXES, resamples=200)
    one = {arm: {**levels, "base_model": "sd15"} for arm, levels in AXES.items()}
    same = build(scores, arms=one, resamples=200)
    assert same["markdown"] == plain["markdown"]
    assert json.dumps(aggregate._plain(same["verdict"])) == json.dumps(
        aggregate._plain(plain["verdict"])
    )
    for name in ("summary", "effects", "comparisons", "power"):
        pd.testing.assert_frame_equal(same[name], plain[name])
    assert "base_model" not in plain["summary"].columns
    assert "within" not in set(plain["effects"]["term"])
    assert "base model" not in plain["markdown"]
    # the same from the score table's axis columns (``dreamgrid report``)
    columns = scores.assign(
        **{
            k: scores["arm"].map({a: v[k] for a, v in AXES.items()})
            for k in ("token", "regularization", "captions")
        }
    )
    typed = scoretable._normalise(columns, "t")
    options = {**OPTIONS, "min_faces": 20, "resamples": 200, "exploratory": False}
    with_column = aggregate.build(typed.assign(base_model="sdxl"), **options)
    assert with_column["markdown"] == aggregate.build(typed, **options)["markdown"]


def test_replicated_recipes_keep_their_base_model():
    arms = {
        f"{base}-a-r{r}": {"base_model": base, "recipe": f"{base}-a", "replicate": r}
        for base in ("sd15", "sdxl")
        for r in (1, 2)
    }
    scores = pd.DataFrame(renders("sd15-a-r1", 1, [0.5]) + renders("sdxl-a-r2", 1, [0.4]))
    table, _, axes = aggregate.by_recipe(scores, None, arms)
    assert axes == {"sd15-a": {"base_model": "sd15"}, "sdxl-a": {"base_model": "sdxl"}}
    assert list(table["arm"]) == ["sd15-a", "sdxl-a"] and list(table["replicate"]) == [1, 2]
    assert inference.base_models(axes) == {"sd15-a": "sd15", "sdxl-a": "sdxl"}
    assert inference.base_models({"x": {"base_model": "sd15"}, "y": {"base_model": "sd15"}}) == {}


def test_a_term_without_matched_arms_is_left_out_not_a_crash():
    # 20 seeds, 5% without a face: some arms never reach min_faces = 20, so they have no
    # chosen epoch and some interactions lack a corner in the chosen view
    result = build(grid_scores(n_seeds=20, epochs=(1, 2)), arms=AXES, resamples=300)
    missing = set(ARMS) - set(result["verdict"]["chosen_epochs"])
    assert missing == {"celebrity-genreg-blip", "rare-noreg-nocap"}
    effects = result["effects"]
    chosen = effects.loc[effects["view"] == "chosen"]
    assert set(chosen["term"]) == {"main", "vs_top"}  # every interaction lacks a corner
    assert (effects.loc[effects["view"] == "equal_steps", "term"] == "interaction").sum() == 3
    assert np.isfinite(effects["estimate"]).all()


# ---- a one at a time design ---------------------------------------------------------------
OAT_ARMS = {  # the baseline, then one arm per changed value (axes.design: one_at_a_time)
    "celebrity-noreg-nocap": ("celebrity", "noreg", "nocap"),
    "rare-noreg-nocap": ("rare", "noreg", "nocap"),
    "celebrity-genreg-nocap": ("celebrity", "genreg", "nocap"),
    "celebrity-gtreg-nocap": ("celebrity", "gtreg", "nocap"),
    "celebrity-noreg-blip": ("celebrity", "noreg", "blip"),
}
OAT_AXES = {
    arm: dict(zip(("token", "regularization", "captions"), levels, strict=True))
    for arm, levels in OAT_ARMS.items()
}
OAT_TRUTH = {"rare-noreg-nocap": 0.05, "celebrity-genreg-nocap": -0.03}


def oat_scores(n_seeds=40, seed=3):
    rng = np.random.default_rng(seed)
    per_seed = rng.normal(0, 0.04, n_seeds)
    rows = []
    for arm in OAT_ARMS:
        for epoch in (1, 2):
            for s in range(n_seeds):
                d = 0.62 + OAT_TRUTH.get(arm, 0.0) + per_seed[s] + rng.normal(0, 0.01)
                rows.append(
                    {"arm": arm, "epoch": epoch, "seed": s, "steps": 100 * epoch}
                    | {"face_found": True, "mean_distance": d}
                )
    return pd.DataFrame(rows)


def test_one_at_a_time_gives_main_effects_against_the_baseline_and_no_interactions():
    scores = oat_scores()
    result = build(scores, arms=OAT_AXES, min_faces=5, resamples=500)
    effects = result["effects"]
    assert set(effects["term"]) == {"main", "vs_top"}  # no interaction, no within
    matrix = scores.pivot_table(index="seed", columns=["arm", "epoch"], values="mean_distance")
    _, estimation = inference.split_seeds(range(40))
    for view in ("chosen", "equal_steps"):
        part = effects.loc[(effects["view"] == view) & (effects["term"] == "main")]
        assert sorted(part["contrast"]) == [
            "blip vs nocap",
            "genreg vs noreg",
            "gtreg vs noreg",
            "rare vs celebrity",
        ]
        for contrast, arm in (
            ("rare vs celebrity", "rare-noreg-nocap"),
            ("genreg vs noreg", "celebrity-genreg-nocap"),
            ("gtreg vs noreg", "celebrity-gtreg-nocap"),
            ("blip vs nocap", "celebrity-noreg-blip"),
        ):
            got = part.loc[part["contrast"] == contrast].iloc[0]
            # exactly the changed arm minus the baseline, seed by seed, at the view's epochs
            at = (part.split("(")[0].split("@") for part in got["checkpoints"].split("; "))
            epochs = {a: int(e) for a, e in at}
            base = "celebrity-noreg-nocap"
            diff = matrix[(arm, epochs[arm])] - matrix[(base, epochs[base])]
            if view == "chosen":
                diff = diff.loc[diff.index.isin(estimation)]
            assert got["estimate"] == pytest.approx(diff.mean())
            assert got["estimate"] == pytest.approx(OAT_TRUTH.get(arm, 0.0), abs=0.01)
    # the family counts the contrasts that exist: 4 main + 4 vs top, two views
    axes = inference.arm_axes(sorted(OAT_ARMS), OAT_AXES)
    m = int(np.isfinite(effects["p_value"]).sum())
    assert m == 2 * (4 + 4) == inference.family_size(len(OAT_ARMS), axes)
    assert inference.family_size(len(OAT_ARMS), axes) < 2 * (4 + 4 + 5)  # the full count
    assert inference.design_of(axes) == "one_at_a_time"
    text = result["markdown"]
    assert "**Design: one at a time**" in text
    assert "`celebrity-noreg-nocap`" in text and "No interactions are estimated" in text


def test_a_full_grid_is_not_called_one_at_a_time():
    axes = inference.arm_axes(ARMS, AXES)
    assert inference.design_of(axes) == "full" and inference.baseline_arm(axes) is None
    # one axis: the same arms either way
    one = inference.arm_axes(["a", "b", "c"], {a: {"token": a} for a in "abc"})
    assert inference.design_of(one) == "full"
    assert "Design: one at a time" not in build(grid_scores(n_seeds=30), AXES)["markdown"]
