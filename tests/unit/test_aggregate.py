"""Aggregate stage: summary numbers computed by hand, file round-trips, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamgrid.aggregate import aggregate_scores
from dreamgrid.cli import run_summarize_cli
from dreamgrid.errors import SpecError
from dreamgrid.scoretable import collect_scores, pct_column
from dreamgrid.summary import summarize

NAN = float("nan")
#: Columns appended after the contract's (``best``) ones: median, intervals, best_not_worse.
APPENDED = [
    "median",
    "average_ci_low",
    "average_ci_high",
    "pct_below_0.6_ci_low",
    "pct_below_0.6_ci_high",
    "pct_below_0.7_ci_low",
    "pct_below_0.7_ci_high",
    "best_not_worse",
    "faces",
    "face_rate_ci_low",
    "face_rate_ci_high",
    "pct_below_0.6_all",
    "pct_below_0.6_all_ci_low",
    "pct_below_0.6_all_ci_high",
    "pct_below_0.7_all",
    "pct_below_0.7_all_ci_low",
    "pct_below_0.7_all_ci_high",
    "few_faces",
]


def renders(arm: str, epoch: int, distances: list[float | None], steps: int | None = None):
    """Rows of one checkpoint; None is a render without a face."""
    rows = []
    for seed, d in enumerate(distances):
        row = {
            "arm": arm,
            "epoch": epoch,
            "seed": seed,
            "image": f"{arm}/epoch-{epoch}/{seed:04d}.png",
            "face_found": d is not None,
            "n_faces": 0 if d is None else 1,
            "mean_distance": NAN if d is None else d,
            "d:ref-a": NAN if d is None else d - 0.01,
            "d:ref-b": NAN if d is None else d + 0.01,
        }
        if steps is not None:
            row["steps"] = steps
        rows.append(row)
    return rows


def table(*groups) -> pd.DataFrame:
    return pd.DataFrame([row for group in groups for row in group])


def row(summary: pd.DataFrame, arm: str, epoch: int) -> pd.Series:
    hit = summary[(summary["arm"] == arm) & (summary["epoch"] == epoch)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_pct_column_names():
    assert pct_column(0.6) == "pct_below_0.6"
    assert pct_column(0.7) == "pct_below_0.7"
    assert pct_column(1) == "pct_below_1"
    assert pct_column(0.65) == "pct_below_0.65"


def test_summarize_hand_computed():
    scores = table(
        # 4 renders, 3 faces: 0.5, 0.65, 0.8 (+ one without face)
        renders("a", 1, [0.5, 0.65, None, 0.8]),
        # 2 faces: 0.55, 0.59
        renders("a", 2, [0.55, 0.59]),
    )
    summary = summarize(scores, min_faces=2)
    assert list(summary.columns) == [
        "arm",
        "epoch",
        "renders",
        "face_rate",
        "average",
        "pct_below_0.6",
        "pct_below_0.7",
        "best",
        *APPENDED,
    ]
    first = row(summary, "a", 1)
    assert first["renders"] == 4
    assert first["face_rate"] == pytest.approx(0.75)
    assert first["average"] == pytest.approx((0.5 + 0.65 + 0.8) / 3)
    assert first["pct_below_0.6"] == pytest.approx(100 / 3)
    assert first["pct_below_0.7"] == pytest.approx(200 / 3)
    second = row(summary, "a", 2)
    assert second["face_rate"] == 1.0
    assert second["average"] == pytest.approx(0.57)
    assert second["pct_below_0.6"] == 100.0
    assert second["pct_below_0.7"] == 100.0
    # all renders: a render without a face counts as not below
    assert first["pct_below_0.6_all"] == pytest.approx(25.0)
    assert first["pct_below_0.7_all"] == pytest.approx(50.0)
    assert first["faces"] == 3 and not first["few_faces"]
    assert list(summary["best_not_worse"]) == [False, True]
    assert list(summarize(scores)["few_faces"]) == [True, True]  # default 20 faces
    assert not summarize(scores)["best"].any()


def test_strictly_below_threshold():
    summary = summarize(table(renders("a", 1, [0.6, 0.7, 0.59])))
    assert summary.loc[0, "pct_below_0.6"] == pytest.approx(100 / 3)
    assert summary.loc[0, "pct_below_0.7"] == pytest.approx(200 / 3)


def test_sorted_by_arm_then_epoch():
    scores = table(
        renders("b", 2, [0.5]),
        renders("a", 10, [0.5]),
        renders("b", 1, [0.5]),
        renders("a", 2, [0.5]),
    )
    summary = summarize(scores)
    assert list(zip(summary["arm"], summary["epoch"], strict=True)) == [
        ("a", 2),
        ("a", 10),
        ("b", 1),
        ("b", 2),
    ]


def test_best_is_the_earliest_non_inferior_epoch():
    # all-renders share below 0.6 per epoch: 1 -> 50, 2 -> 80, 3 -> 90 (max), 4 -> 85, on
    # nested seeds (seed s is below at epoch e when s < share), 200 seeds
    def epoch(e, below, total=200):
        return renders("a", e, [0.5] * below + [0.65] * (total - below))

    scores = table(epoch(1, 100), epoch(2, 160), epoch(3, 180), epoch(4, 170))
    summary = summarize(scores, best_margin=5.0)
    assert list(summary["pct_below_0.6_all"]) == [50.0, 80.0, 90.0, 85.0]
    # epoch 2 is 10 points below the best: more than 5, not chosen
    assert list(summary["best_not_worse"]) == [False, False, True, False]
    assert list(summary["best"]) == [False, False, True, False]
    # a 20-point margin admits epoch 2 (its interval's low end is about -14), not epoch 1
    assert list(summarize(scores, best_margin=20.0)["best_not_worse"]) == [
        False,
        True,
        False,
        False,
    ]
    # ...unless the relative cap is tighter: 10% of 90 = 9 points
    capped = summarize(scores, best_margin=20.0, best_margin_relative=0.1)
    assert list(capped["best_not_worse"]) == [False, False, True, False]


def test_best_tie_picks_earliest_and_is_per_arm():
    same = [0.5] * 30 + [0.7] * 10
    scores = table(
        renders("a", 1, [0.7] * 40),
        renders("a", 2, same),
        renders("a", 3, same),
        renders("b", 1, same),
        renders("b", 2, [0.7] * 40),
    )
    summary = summarize(scores)
    assert list(summary["best_not_worse"]) == [False, True, False, True, False]
    assert list(summary["best"]) == [False, True, False, True, False]


def test_arm_without_faces_has_no_best_and_no_numbers():
    scores = table(
        renders("demo", 1, [None, None, None]),
        renders("demo", 2, [None, None]),
        renders("real", 1, [0.5]),
    )
    summary = summarize(scores)
    demo = summary[summary["arm"] == "demo"]
    assert list(demo["renders"]) == [3, 2]
    assert list(demo["face_rate"]) == [0.0, 0.0]
    assert demo["average"].isna().all()
    assert demo["pct_below_0.6"].isna().all()
    assert demo["pct_below_0.7"].isna().all()
    assert not demo["best"].any()
    assert row(summary, "real", 1)["few_faces"] and not row(summary, "real", 1)["best"]
    assert row(summarize(scores, min_faces=1), "real", 1)["best"]


def test_no_face_distance_is_never_scored():
    """A stray 0 distance on a faceless render must not enter average or percentages."""
    scores = table(renders("a", 1, [0.8, None]))
    scores.loc[1, "mean_distance"] = 0.0
    summary = summarize(scores)
    assert summary.loc[0, "average"] == pytest.approx(0.8)
    assert summary.loc[0, "pct_below_0.6"] == 0.0
    assert summary.loc[0, "face_rate"] == 0.5


def test_face_found_without_distance_is_an_error():
    scores = table(renders("a", 1, [0.8, 0.5]))
    scores.loc[1, "mean_distance"] = NAN
    with pytest.raises(SpecError, match="mean_distance"):
        summarize(scores)


@pytest.mark.parametrize(
    "true, false", [("true", "false"), ("True", "False"), ("TRUE", "FALSE"), (1, 0)]
)
def test_face_found_as_strings(true, false):
    scores = table(renders("a", 1, [0.5, None, 0.65, None]))
    expected = summarize(scores)
    scores["face_found"] = [true if f else false for f in scores["face_found"]]
    got = summarize(scores)
    pd.testing.assert_frame_equal(got, expected)
    assert got.loc[0, "face_rate"] == 0.5


def test_face_found_bad_value():
    scores = table(renders("a", 1, [0.5]))
    scores["face_found"] = ["maybe"]
    with pytest.raises(SpecError, match="face_found"):
        summarize(scores)


def test_steps_passed_through():
    scores = table(renders("a", 1, [0.5], steps=625), renders("a", 2, [0.5], steps=1250))
    summary = summarize(scores)
    assert list(summary.columns[:4]) == ["arm", "epoch", "steps", "renders"]
    assert list(summary["steps"]) == [625, 1250]


def test_conflicting_steps_in_one_checkpoint():
    scores = table(renders("a", 1, [0.5], steps=625), renders("a", 1, [0.5], steps=1250))
    with pytest.raises(SpecError, match="step"):
        summarize(scores)


def test_thresholds_order_agnostic():
    scores = table(
        renders("a", 1, [0.55, 0.65, 0.75, 0.58]),  # <0.6: 50%, <0.7: 75%
        renders("a", 2, [0.65, 0.65, 0.65, 0.65]),  # <0.6: 0%,  <0.7: 100%
    )
    forward = summarize(scores, thresholds=(0.6, 0.7))
    backward = summarize(scores, thresholds=[0.7, 0.6])
    pd.testing.assert_frame_equal(forward, backward)
    # best follows the lowest threshold (0.6), not the first given.
    assert list(summarize(scores, thresholds=[0.7, 0.6], min_faces=1)["best_not_worse"]) == [
        True,
        False,
    ]
    three = summarize(scores, thresholds=[0.7, 0.5, 0.6])
    assert [c for c in three.columns if c.startswith("pct") and c[-1].isdigit()] == [
        "pct_below_0.5",
        "pct_below_0.6",
        "pct_below_0.7",
    ]


@pytest.mark.parametrize("thresholds", [(), ("x",), (float("nan"),)])
def test_bad_thresholds(thresholds):
    with pytest.raises(SpecError, match="thresholds"):
        summarize(table(renders("a", 1, [0.5])), thresholds=thresholds)


def test_negative_best_margin():
    with pytest.raises(SpecError, match="best_margin"):
        summarize(table(renders("a", 1, [0.5])), best_margin=-1)


@pytest.mark.parametrize("column", ["arm", "epoch", "face_found", "mean_distance"])
def test_summarize_missing_column(column):
    scores = table(renders("a", 1, [0.5])).drop(columns=column)
    with pytest.raises(SpecError, match=column):
        summarize(scores)


def test_empty_scores_give_empty_summary():
    scores = table(renders("a", 1, [0.5])).iloc[:0]
    summary = summarize(scores)
    assert summary.empty
    assert "pct_below_0.6" in summary.columns


# --- files -----------------------------------------------------------------------------


def write_csv(path: Path, rows) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_collect_scores_concatenates_and_types(tmp_path):
    files = [
        write_csv(tmp_path / "b-1.csv", renders("b", 1, [0.5, None], steps=625)),
        write_csv(tmp_path / "a-2.csv", renders("a", 2, [0.6], steps=1250)),
        write_csv(tmp_path / "a-1.csv", renders("a", 1, [None, 0.7], steps=625)),
    ]
    scores = collect_scores(files)
    assert len(scores) == 5
    assert list(zip(scores["arm"], scores["epoch"], strict=True)) == [
        ("a", 1),
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("b", 1),
    ]
    assert scores["face_found"].dtype == bool
    assert scores["mean_distance"].isna().tolist() == [True, False, False, False, True]
    assert {"d:ref-a", "d:ref-b", "n_faces", "image", "seed", "steps"} <= set(scores.columns)


def test_collect_scores_missing_column_names_file(tmp_path):
    good = write_csv(tmp_path / "good.csv", renders("a", 1, [0.5]))
    bad_rows = pd.DataFrame(renders("a", 2, [0.5])).drop(columns="mean_distance")
    bad = tmp_path / "bad.csv"
    bad_rows.to_csv(bad, index=False)
    with pytest.raises(SpecError, match=r"bad\.csv.*mean_distance"):
        collect_scores([good, bad])


def test_collect_scores_reference_mismatch(tmp_path):
    good = write_csv(tmp_path / "good.csv", renders("a", 1, [0.5]))
    other = pd.DataFrame(renders("a", 2, [0.5])).rename(columns={"d:ref-b": "d:ref-c"})
    other_path = tmp_path / "other.csv"
    other.to_csv(other_path, index=False)
    with pytest.raises(SpecError, match=r"other\.csv"):
        collect_scores([good, other_path])


def test_collect_scores_empty_and_missing_files(tmp_path):
    with pytest.raises(SpecError):
        collect_scores([])
    with pytest.raises(SpecError, match=r"nope\.csv"):
        collect_scores([tmp_path / "nope.csv"])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SpecError, match=r"empty\.csv"):
        collect_scores([empty])


def test_run_summarize_cli_round_trip(tmp_path):
    rows = table(
        renders("a", 1, [0.5, None, 0.65], steps=625),
        renders("a", 2, [0.55, 0.58, 0.9], steps=1250),
        renders("z", 1, [None, None], steps=625),
    )
    scores = tmp_path / "scores.csv"
    rows.to_csv(scores, index=False)
    out = tmp_path / "out" / "summary.csv"
    returned = run_summarize_cli(scores, out, thresholds=[0.7, 0.6], best_margin=5.0, min_faces=2)
    assert out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name != "summary.csv"], "temp files left"
    back = pd.read_csv(out)
    assert list(back.columns) == list(returned.columns)
    assert list(back.columns) == [
        "arm",
        "epoch",
        "steps",
        "renders",
        "face_rate",
        "average",
        "pct_below_0.6",
        "pct_below_0.7",
        "best",
        *APPENDED,
    ]
    pd.testing.assert_frame_equal(back, returned, check_dtype=False)
    assert back.loc[2, "face_rate"] == 0.0
    assert math.isnan(back.loc[2, "average"])
    assert list(back["best"]) == [False, True, False]
    # The CSV stores face_found as True/False text; lower-case text reads the same.
    rows["face_found"] = rows["face_found"].map({True: "true", False: "false"})
    rows.to_csv(scores, index=False)
    again = run_summarize_cli(scores, out, thresholds=[0.6, 0.7], best_margin=5.0, min_faces=2)
    pd.testing.assert_frame_equal(again, returned)


def test_run_summarize_cli_missing_column_names_file(tmp_path):
    scores = tmp_path / "scores.csv"
    table(renders("a", 1, [0.5])).drop(columns="face_found").to_csv(scores, index=False)
    with pytest.raises(SpecError, match=r"scores\.csv.*face_found"):
        run_summarize_cli(scores, tmp_path / "summary.csv", thresholds=[0.6], best_margin=5.0)
    assert not (tmp_path / "summary.csv").exists()


@pytest.fixture
def score_files(tmp_path):
    files = []
    for arm, epoch, distances in [
        ("celebrity-noreg-captions", 1, [0.55, 0.62, None, 0.71]),
        ("celebrity-noreg-captions", 2, [0.52, 0.58, 0.59, 0.66]),
        ("ohwx-genreg-captions", 1, [None, None, None, None]),
    ]:
        files.append(write_csv(tmp_path / f"{arm}-{epoch}.csv", renders(arm, epoch, distances)))
    return files


def outputs(tmp_path):
    out = tmp_path / "results"
    return {
        "out_scores": out / "scores.tsv",
        "out_summary": out / "summary.csv",
        "out_markdown": out / "report" / "summary.md",
    }


@pytest.mark.parametrize("demo", [True, False])
def test_run_writes_all_outputs(tmp_path, score_files, demo):
    paths = outputs(tmp_path)
    summary = aggregate_scores(
        score_files, thresholds=(0.6, 0.7), best_margin=5.0, demo=demo, min_faces=3, **paths
    )
    tidy = pd.read_csv(paths["out_scores"], sep="\t")
    assert len(tidy) == 12
    assert tidy["face_found"].sum() == 7
    back = pd.read_csv(paths["out_summary"])
    pd.testing.assert_frame_equal(back, summary, check_dtype=False)
    assert len(summary) == 3
    text = paths["out_markdown"].read_text()
    assert "| arm |" in text
    assert "celebrity-noreg-captions**: epoch 2" in text
    assert "ohwx-genreg-captions**: no checkpoint with at least 3 faces" in text
    assert "7 of 12 renders" in text
    assert "by more than 5 points" in text
    if demo:
        first = text.splitlines()[0].lower()
        assert "demo" in first and "random" in first and "mean nothing" in first
        assert "config/experiment.yaml" in text.split("\n\n")[0]
    else:
        assert "demo" not in text.lower()
        assert "random" not in text.lower()


def test_run_all_faceless_demo(tmp_path):
    """Random-weight demo models render no faces: aggregate must still work."""
    files = [
        write_csv(tmp_path / f"e{e}.csv", renders("demo-arm", e, [None] * 5, steps=10 * e))
        for e in (1, 2)
    ]
    paths = outputs(tmp_path)
    summary = aggregate_scores(files, thresholds=(0.6, 0.7), best_margin=5.0, demo=True, **paths)
    assert list(summary["face_rate"]) == [0.0, 0.0]
    assert summary["average"].isna().all()
    assert not summary["best"].any()
    back = pd.read_csv(paths["out_summary"])
    assert back["average"].isna().all()  # written empty, never 0
    assert not (back["average"] == 0).any()
    text = paths["out_markdown"].read_text()
    assert "so no chosen epoch" in text
    assert np.isnan(pd.read_csv(paths["out_scores"], sep="\t")["mean_distance"]).all()


def test_run_warns_when_score_tables_come_from_other_deepface_versions(tmp_path):
    import json

    files = []
    for arm, version in (("a-noreg-nocap", "0.0.103"), ("b-noreg-nocap", "0.0.99")):
        path = tmp_path / arm / "scores.csv"
        path.parent.mkdir()
        pd.DataFrame(
            {
                "arm": [arm] * 2,
                "epoch": [1, 1],
                "steps": [10, 10],
                "seed": [0, 1],
                "image": ["r0.png", "r1.png"],
                "face_found": ["true", "true"],
                "mean_distance": [0.5, 0.6],
            }
        ).to_csv(path, index=False)
        meta = {"deepface_version": version, "model": "Dlib", "detector": "dlib"}
        (path.parent / "scores.meta.json").write_text(json.dumps(meta))
        files.append(path)
    out = tmp_path / "out"
    aggregate_scores(
        files, [0.6], 5.0, out / "s.tsv", out / "summary.csv", out / "summary.md", demo=False
    )
    text = (out / "summary.md").read_text()
    assert "## Warnings" in text and "deepface_version" in text and "0.0.99" in text
    # The config's warnings (thresholds far above the model's own) go in the same section.
    from dreamgrid import config as cfg

    config = {"score": {"model": "Dlib", "metric": "cosine", "thresholds": [0.6]}}
    warnings = cfg.threshold_warnings(config)
    assert len(warnings) == 1
    aggregate_scores(
        files, [0.6], 5.0, out / "s.tsv", out / "summary.csv", out / "summary.md", demo=False,
        warnings=warnings,
    )  # fmt: skip
    warned = (out / "summary.md").read_text().split("## Warnings")[1]
    assert f"- {warnings[0]}" in warned and "deepface_version" in warned


def ranking_csv(path: Path, averages: list[float | None]) -> Path:
    """A token-finder ranking (rank order = the given order)."""
    names = ["Denzel Washington", "Idris Elba", "Will Smith"][: len(averages)]
    pd.DataFrame(
        {
            "candidate": names,
            "renders": [2] * len(names),
            "face_rate": [NAN if a is None else 1.0 for a in averages],
            "average": [NAN if a is None else a for a in averages],
            "pct_below_0.6": [NAN] * len(names),
            "consistency": [NAN] * len(names),
            "rank": range(1, len(names) + 1),
        }
    ).to_csv(path, index=False)
    return path


def test_summary_names_the_token_the_finder_chose_for_an_auto_token(tmp_path, score_files):
    paths = outputs(tmp_path)
    ranking = ranking_csv(tmp_path / "ranking.csv", [0.58, 0.64, None])
    tokens = {"celebrity": "auto", "rare": "ohwx"}
    aggregate_scores(
        score_files, (0.6, 0.7), 5.0, demo=False, tokens=tokens, ranking=ranking, **paths
    )
    text = paths["out_markdown"].read_text()
    section = text.split("## Tokens", 1)[1].split("\n## ", 1)[0]
    assert "`celebrity`: `auto`; the token finder chose **Denzel Washington**" in section
    assert f"rank 1 of 3 candidates in `{ranking}`" in section
    assert "average distance 0.5800" in section
    assert "- `rare`: `ohwx`." in section
    assert "not measured" not in section  # faces were found: the pick was measured
    # Placed after the verdict, before the per-checkpoint table.
    assert text.index("## Verdict") < text.index("## Tokens") < text.index("## Per checkpoint")


def test_a_pick_without_faces_is_called_list_order(tmp_path, score_files):
    paths = outputs(tmp_path)
    ranking = ranking_csv(tmp_path / "ranking.csv", [None, None])
    aggregate_scores(
        score_files, (0.6,), 5.0, demo=True, tokens={"celebrity": "auto"}, ranking=ranking, **paths
    )
    text = paths["out_markdown"].read_text()
    assert "chose **Denzel Washington**" in text and "average distance n/a" in text
    assert "only the order of the candidate list: the pick was not measured" in text


def test_tokens_section_without_auto_or_without_tokens(tmp_path, score_files):
    from dreamgrid.verdict import tokens_markdown

    ranking = pd.read_csv(ranking_csv(tmp_path / "ranking.csv", [0.5]))
    text = tokens_markdown({"rare": "ohwx"}, ranking)
    assert "no token is `auto`, so no arm trains on its pick" in text
    assert "no token-finder ranking was given" in tokens_markdown({"c": "auto"}, None)
    paths = outputs(tmp_path)
    aggregate_scores(score_files, (0.6,), 5.0, demo=False, **paths)
    assert "## Tokens" not in paths["out_markdown"].read_text()


def test_summary_counts_checkpoints_not_rows_per_prompt_set(tmp_path):
    frames = []
    for prompt_set in ("main", "bleed"):
        rows = table(renders("a-noreg-nocap", 1, [0.5, 0.6]), renders("a-noreg-nocap", 2, [0.5]))
        frames.append(rows.assign(prompt_set=prompt_set))
    path = tmp_path / "scores.csv"
    pd.concat(frames).to_csv(path, index=False)
    paths = outputs(tmp_path)
    aggregate_scores([path], (0.6,), 5.0, demo=False, **paths)
    assert "6 renders, 1 arms, 2 checkpoints × 2 prompt sets." in paths["out_markdown"].read_text()
