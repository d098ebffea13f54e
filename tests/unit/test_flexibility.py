"""Likeness against class bleed and prompt following, on a summary with a known over-training."""

import math

import pandas as pd

from dreamgrid import flexibility

SETS = {
    "main": "headshot photo of {token} {class}",
    "bleed": "headshot photo of a {class}",
    "painting": "oil painting of {token} {class}",
}


def summary():
    # Likeness keeps rising, but from epoch 3 the subject leaks into the class prompt and
    # stops appearing in paintings: over-training.
    likeness = {1: 20.0, 2: 50.0, 3: 70.0, 4: 72.0}
    bleed = {1: 0.0, 2: 2.0, 3: 30.0, 4: 60.0}
    painted = {1: 1.0, 2: 1.0, 3: 0.9, 4: 0.5}
    rows = []
    for epoch, liked in likeness.items():
        common = {"arm": "a", "epoch": epoch, "steps": 100 * epoch}
        rows.append({**common, "prompt_set": "main", "face_rate": 1.0, "average": 0.7 - epoch / 20,
                     "pct_below_0.6": liked, "pct_below_0.7": 90.0})  # fmt: skip
        rows.append({**common, "prompt_set": "bleed", "face_rate": 1.0, "average": 0.9 - epoch / 10,
                     "pct_below_0.6": bleed[epoch], "pct_below_0.7": 50.0})  # fmt: skip
        rows.append({**common, "prompt_set": "painting", "face_rate": painted[epoch],
                     "average": 0.65, "pct_below_0.6": 10.0, "pct_below_0.7": 60.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_prompt_sets_without_the_token_measure_bleed():
    assert flexibility.kinds(SETS) == {"main": "main", "bleed": "bleed", "painting": "prompt"}


def test_tradeoff_best_stops_before_the_subject_leaks_into_the_class():
    flex = flexibility.table(summary(), SETS, best_within=5.0)
    assert list(flex["epoch"]) == [1, 2, 3, 4]
    assert list(flex["likeness_pct"]) == [20.0, 50.0, 70.0, 72.0]  # lowest threshold, main
    assert list(flex["bleed_pct"]) == [0.0, 2.0, 30.0, 60.0]
    assert list(flex["prompts_face_rate"]) == [1.0, 1.0, 0.9, 0.5]
    assert list(flex["steps"]) == [100, 200, 300, 400]
    # Likeness alone would pick epoch 3 (within 5 points of 72); bleed and paintings say 2.
    assert flex.loc[flex["tradeoff_best"], "epoch"].tolist() == [2]
    text = flexibility.markdown(flex, SETS, 5.0)
    assert "Class bleed is `bleed`" in text and "Prompt following is `painting`" in text


def test_without_extra_sets_the_tradeoff_is_the_likeness_best():
    main_only = summary().query("prompt_set == 'main'")
    flex = flexibility.table(main_only, {"main": SETS["main"]}, best_within=5.0)
    assert flex["bleed_pct"].isna().all() and flex["prompts_face_rate"].isna().all()
    assert flex.loc[flex["tradeoff_best"], "epoch"].tolist() == [3]
    text = flexibility.markdown(flex, {"main": SETS["main"]}, 5.0)
    assert "No class-bleed set" in text


def test_no_faces_no_choice():
    faceless = summary().assign(average=math.nan, **{"pct_below_0.6": math.nan})
    flex = flexibility.table(faceless, SETS, best_within=5.0)
    assert not flex["tradeoff_best"].any()


def test_clip_scores_of_the_other_prompts_are_averaged():
    scored = summary()
    scored["clip_score"] = scored["prompt_set"].map({"main": 30.0, "bleed": 20.0, "painting": 25.0})
    flex = flexibility.table(scored, SETS, best_within=5.0)
    assert (flex["prompts_clip"] == 25.0).all()
    assert "prompts_clip" not in flexibility.table(summary(), SETS, best_within=5.0).columns


def test_reads_the_faces_only_share_of_a_real_summary():
    # summarize() also writes all-renders shares (pct_below_<t>_all) and intervals: the view
    # reads the lowest faces-only share, and its numbers equal that column's.
    import numpy as np

    from dreamgrid.summary import summarize

    rng = np.random.default_rng(0)
    scores = pd.DataFrame(
        [
            {"arm": "a", "epoch": e, "seed": s, "prompt_set": p, "face_found": True,
             "mean_distance": float(rng.normal(0.6, 0.05))}
            for e in (1, 2) for p in SETS for s in range(30)
        ]
    )  # fmt: skip
    table = summarize(scores, thresholds=[0.6, 0.7])
    assert "pct_below_0.6_all" in table.columns
    flex = flexibility.table(table, SETS, best_within=5.0)
    main = table[table["prompt_set"] == "main"].sort_values("epoch")
    assert list(flex["likeness_pct"]) == list(main["pct_below_0.6"])
