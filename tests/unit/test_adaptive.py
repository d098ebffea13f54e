"""The adaptive grid's decision rule (dreamgrid.adaptive) and a small run of its benchmark.

The full benchmark (benchmarks/bench_adaptive.py, 5 scenarios of whole simulated studies) is
in benchmarks/RESULTS.md; here a few studies of its clear-winner and null scenarios, decided
without the final analysis except once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamgrid import adaptive
from dreamgrid import config as cfg
from dreamgrid.errors import SpecError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_adaptive

SEARCH = {"method": "successive_halving", "looks": [2, 4], "margin": 0.01, "alpha": 0.05}


# ---- spending ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["obrien_fleming", "pocock"])
def test_spending_reaches_alpha_at_the_end(rule):
    assert adaptive.spending(1.0, 0.05, rule) == pytest.approx(0.05)
    assert adaptive.spending(0.0, 0.05, rule) == 0.0
    values = [adaptive.spending(t, 0.05, rule) for t in np.linspace(0, 1, 11)]
    assert values == sorted(values)


@pytest.mark.parametrize("rule", ["obrien_fleming", "pocock"])
def test_look_increments_spend_alpha_over_the_looks(rule):
    alphas = adaptive.look_alphas({**SEARCH, "looks": [1, 2, 3, 5], "spending": rule}, 6)
    assert list(alphas) == [1, 2, 3, 5]
    assert all(a >= 0 for a in alphas.values())
    assert sum(alphas.values()) <= 0.05 + 1e-12
    assert sum(alphas.values()) == pytest.approx(0.05)  # the last look spends the rest


def test_obrien_fleming_spends_less_early_than_pocock():
    for t in (0.2, 0.5, 0.8):
        assert adaptive.spending(t, 0.05, "obrien_fleming") < adaptive.spending(t, 0.05, "pocock")
    with pytest.raises(ValueError, match="spending rule"):
        adaptive.spending(0.5, 0.05, "linear")


def test_default_looks_are_every_epoch_but_the_first_and_last():
    assert adaptive.look_epochs({}, 6) == [2, 3, 4, 5]
    assert adaptive.look_epochs({"looks": [4, 2, 6, 9]}, 6) == [2, 4]
    assert adaptive.look_epochs({}, 2) == []


# ---- decide on constructed tables ----------------------------------------------------------
def table(curves: dict[str, dict[int, float]], faces: dict[str, float] | None = None):
    """Renders of 200 seeds: each arm's mean distance per epoch, a seed effect shared by the
    arms (paired renders), render noise SD 0.05; ``faces`` arm -> face rate (default 1)."""
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.04, 200)
    rows = []
    for arm, by_epoch in curves.items():
        for epoch, mean in by_epoch.items():
            found = rng.random(200) < (faces or {}).get(arm, 1.0)
            d = mean + seed_effect + rng.normal(0, 0.05, 200)
            rows.append(
                pd.DataFrame(
                    {
                        "arm": arm,
                        "epoch": epoch,
                        "seed": np.arange(200),
                        "face_found": found,
                        "mean_distance": np.where(found, d, np.nan),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


CURVES = {
    "best": {1: 0.60, 2: 0.55},
    "worse": {1: 0.70, 2: 0.65},  # 0.10 behind and not closing
    "close": {1: 0.605, 2: 0.555},  # within the margin
    "slow": {1: 0.80, 2: 0.62},  # 0.07 behind but closing 0.13 an epoch
    "faceless": {1: 0.60, 2: 0.55},
}


def decide(scores, **search):
    return adaptive.decide(
        scores, epoch=2, active=list(CURVES), search={**SEARCH, **search}, epochs=6, seed=3
    ).set_index("arm")


def test_a_clearly_worse_arm_stops_and_a_close_one_continues():
    scores = table(CURVES, faces={"faceless": 0.0})
    out = decide(scores)
    assert list(out.reset_index().columns) == ["arm"] + [
        c for c in adaptive.DECISION_COLUMNS if c != "arm"
    ]
    assert out.loc["best", "decision"] == adaptive.BEST
    assert out.loc["worse", "decision"] == adaptive.STOP
    assert out.loc["worse", "ci_low"] > 0.01
    assert "worse than best@2" in out.loc["worse", "reason"]
    assert out.loc["close", "decision"] == adaptive.CONTINUE
    assert out.loc["close", "ci_low"] <= 0.01
    assert adaptive.still_running(out.reset_index()) == ["best", "close", "slow"]


def test_an_arm_without_faces_stops_on_its_face_rate():
    out = decide(table(CURVES, faces={"faceless": 0.0}))
    assert out.loc["faceless", "decision"] == adaptive.STOP
    assert "too few faces" in out.loc["faceless", "reason"]
    # With as many faces as the best (rate 0.05 each, about 10 of 20 needed), nothing is shown.
    few = table(CURVES, faces={a: 0.05 for a in CURVES})
    out = adaptive.decide(
        few, epoch=2, active=list(CURVES), search=SEARCH, epochs=6, seed=3
    ).set_index("arm")
    assert (out["decision"] == adaptive.CONTINUE).all()
    assert out["reason"].str.contains("nothing to compare").all()


def test_a_slow_starter_still_closing_is_credited():
    scores = table(CURVES)
    on = decide(scores)
    assert on.loc["slow", "decision"] == adaptive.CONTINUE
    assert on.loc["slow", "credit"] > on.loc["slow", "ci_low"] - 0.01
    off = decide(scores, extrapolate=False)
    assert off.loc["slow", "decision"] == adaptive.STOP
    assert off.loc["slow", "credit"] == 0


def test_an_overtrained_arm_is_judged_at_its_best_epoch():
    curves = {"best": {1: 0.60, 2: 0.58}, "peaked": {1: 0.585, 2: 0.70}}
    out = adaptive.decide(
        table(curves), epoch=2, active=list(curves), search=SEARCH, epochs=6, seed=3
    ).set_index("arm")
    assert out.loc["peaked", "arm_epoch"] == 1
    assert out.loc["peaked", "decision"] == adaptive.CONTINUE


def test_decisions_are_deterministic():
    scores = table(CURVES, faces={"faceless": 0.0})
    first, again = decide(scores), decide(scores.sample(frac=1.0, random_state=5))
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(ValueError, match="not a look"):
        adaptive.decide(scores, epoch=3, active=list(CURVES), search=SEARCH, epochs=6)


def test_with_replicates_the_run_is_the_unit():
    curves = {"best": {1: 0.60, 2: 0.55}, "worse": {1: 0.70, 2: 0.65}}
    rng = np.random.default_rng(4)
    runs = []
    for replicate in (1, 2, 3):
        run = table(curves)
        shift = run["arm"].map({a: rng.normal(0, 0.005) for a in curves})
        runs.append(run.assign(replicate=replicate, mean_distance=run["mean_distance"] + shift))
    scores = pd.concat(runs, ignore_index=True)
    out = adaptive.decide(
        scores, epoch=2, active=list(curves), search=SEARCH, epochs=6, seed=3
    ).set_index("arm")
    assert out.loc["worse", "decision"] == adaptive.STOP
    assert "run is the unit" in out.loc["worse", "method"]
    # Runs whose shifts make the whole difference: the mean of runs is 0.05 worse, as one
    # run per arm would see it, but run to run it varies by as much (df = 4 - 2 = 2).
    noisy = scores.loc[scores["replicate"] != 2].copy()
    worse, third = noisy["arm"] == "worse", noisy["replicate"] == 3
    noisy.loc[worse, "mean_distance"] -= 0.1
    noisy.loc[worse & third, "mean_distance"] += 0.1
    noisy.loc[~worse & third, "mean_distance"] -= 0.1
    out = adaptive.decide(
        noisy, epoch=2, active=list(curves), search=SEARCH, epochs=6, seed=3
    ).set_index("arm")
    assert out.loc["worse", "estimate"] > 0.05
    assert out.loc["worse", "decision"] == adaptive.CONTINUE


def test_config_refuses_looks_at_the_last_epoch():
    base = {
        "subject": {"class_word": "woman", "train_images": "a", "references": "b"},
        "base_model": "tiny",
        "axes": {"token": {"rare": "ohwx", "other": "sks"}},
        "search": {"method": "successive_halving"},
    }
    config = cfg.validate(base)
    # The default margin is 0.01 on VGG-Face/cosine's scale, scaled to the face model.
    assert config["score"]["model"] == "Dlib" and config["search"]["margin"] == 0.001
    vgg = cfg.validate({**base, "score": {"model": "VGG-Face"}})
    assert vgg["search"]["margin"] == adaptive.MARGIN
    stated = cfg.validate({**base, "search": {**base["search"], "margin": 0.02}})
    assert stated["search"]["margin"] == 0.02
    assert cfg.validate({**base, "search": {"method": "full"}})["search"]["margin"] is None
    assert config["search"]["extrapolate"] is True
    with pytest.raises(SpecError, match=r"x\.yaml: search\.looks \[6\].*training\.epochs \(6\)"):
        cfg.validate({**base, "search": {**base["search"], "looks": [2, 6]}}, source="x.yaml")
    # decide() takes the run as the unit, but the plan stops arms, and the runs of one recipe
    # are arms of their own: refused until a look decides per recipe.
    with pytest.raises(SpecError, match=r"training\.replicates 2 is not supported"):
        cfg.validate({**base, "training": {"replicates": 2}})
    # Two epochs leave no default look (epochs 2 .. epochs - 1).
    with pytest.raises(SpecError, match=r"has no look.*search\.looks"):
        cfg.validate({**base, "training": {"epochs": 2}})


# ---- a small version of the simulation -----------------------------------------------------
def studies(name: str, n: int):
    rng = np.random.default_rng([18, len(name)])
    for _ in range(n):
        scores, params = bench_adaptive.simulate(bench_adaptive.SCENARIOS[name], rng, 200, 6)
        kept, last, _ = bench_adaptive.run_adaptive(scores, {"margin": 0.01}, 6, 0, 300)
        final = {a: bench_adaptive.curve(p, 6) for a, p in params.items()}
        yield scores, kept, last, final, params


def test_small_simulation_keeps_the_winner_and_saves_epochs():
    for scores, kept, last, final, _ in studies("clear_winner", 3):
        winner = min(final, key=final.get)
        assert last[winner] == 6
        assert sum(last.values()) / 72 < 0.6
        assert len(kept) < len(scores)
    for _, _, last, _, _ in studies("null", 2):
        assert set(last.values()) == {6}  # no recipe effect: no arm stops


def test_small_simulation_final_analysis_agrees_with_the_full_grid():
    scores, kept, last, final, _ = next(studies("slow_starter", 1))
    assert sum(last.values()) < 72
    full = bench_adaptive.analyse(scores, 0, 300, claims=False)
    short = bench_adaptive.analyse(kept, 0, 300, claims=False)
    assert full["top_arm"] == short["top_arm"] == min(final, key=final.get)
    # Stopped arms keep what they trained: their chosen epochs are at or before the stop.
    assert all(short["chosen_epochs"][a] <= last[a] for a in last)
    assert any(short["chosen_epochs"][a] != full["chosen_epochs"][a] for a in last)
