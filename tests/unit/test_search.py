"""The adaptive grid in the plan (dag.Grid reading each look's decisions), the look and
decisions files (dreamgrid.search), summary.md's section, and the config checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dreamgrid import adaptive, aggregate, dag, paths, search
from dreamgrid import config as cfg
from dreamgrid.errors import SpecError

sys.path.insert(0, str(Path(__file__).parent))
from test_aggregate import renders, table

ARMS = ["celebrity-noreg-nocap", "celebrity-genreg-nocap", "rare-noreg-nocap", "rare-genreg-nocap"]


def config(method="successive_halving", epochs=4, looks=(1, 2), **overrides):
    raw = {
        "subject": {"class_word": "woman", "train_images": "photos", "references": "refs"},
        "base_model": "tiny",
        "axes": {
            "token": {"celebrity": "alexa davalos", "rare": "ohwx"},
            "regularization": ["none", "generated"],
            "captions": ["none"],
        },
        "training": {"epochs": epochs},
        "search": {"method": method, "looks": list(looks)},
    }
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return cfg.validate(raw)


class NotYet(Exception):
    """Stands for Snakemake's IncompleteCheckpointException."""


def look_file(tmp_path: Path, epoch: int, decisions: dict[str, str]) -> Path:
    """A look's table with the given decision per arm (the columns adaptive.decide writes)."""
    rows = [
        {
            **dict.fromkeys(adaptive.DECISION_COLUMNS, np.nan),
            "epoch": epoch,
            "arm": a,
            "decision": d,
        }
        for a, d in decisions.items()
    ]
    path = tmp_path / f"look-{epoch}.tsv"
    pd.DataFrame(rows, columns=list(adaptive.DECISION_COLUMNS)).to_csv(path, sep="\t", index=False)
    return path


def resolver(tmp_path: Path, done: set[int], asked: list[int]):
    def decisions(epoch: int) -> str:
        asked.append(epoch)
        if epoch not in done:
            raise NotYet(epoch)
        return str(tmp_path / f"look-{epoch}.tsv")

    return decisions


def test_full_search_never_reads_a_decision():
    grid = dag.Grid(config(method="full"), decisions=lambda epoch: pytest.fail("read a look"))
    assert not grid.adaptive and grid.looks == [] and grid.look_files == []
    assert all(grid.arm_epochs(a) == [1, 2, 3, 4] for a in ARMS)
    assert paths.SEARCH_DECISIONS not in grid.get_final_outputs()
    assert len(grid.checkpoints(paths.SCORES)) == 4 * 4 * len(grid.prompt_set_names)


def test_arms_reach_only_the_epochs_their_looks_let_them(tmp_path):
    asked: list[int] = []
    done: set[int] = set()
    grid = dag.Grid(config(), decisions=resolver(tmp_path, done, asked))
    assert grid.looks == [1, 2]
    assert grid.look_files == ["results/search/look-1.tsv", "results/search/look-2.tsv"]
    # Before the first look every arm is active there, and nothing later is planned.
    assert grid.active_at(1) == ARMS
    with pytest.raises(NotYet):
        grid.arm_epochs(ARMS[0])
    with pytest.raises(NotYet):
        grid.get_final_outputs()
    look = SimpleNamespace(epoch="1")
    assert grid.get_look_scores(look) == [
        paths.SCORES.format(arm=a, epoch=1, prompt_set="main") for a in ARMS
    ]
    assert grid.get_previous_look(look) == []

    # Look 1 stops rare-genreg; the others wait for look 2.
    look_file(tmp_path, 1, {**dict.fromkeys(ARMS[:3], "continue"), ARMS[3]: "stop"})
    done.add(1)
    asked.clear()
    assert grid.arm_epochs(ARMS[3]) == [1]
    assert asked == [1]  # a stopped arm never waits for a later look
    with pytest.raises(NotYet):
        grid.arm_epochs(ARMS[0])
    look2 = SimpleNamespace(epoch="2")
    assert grid.get_look_active(look2) == ARMS[:3]
    assert grid.get_previous_look(look2) == ["results/search/look-1.tsv"]
    assert len(grid.get_look_scores(look2)) == 3 * 2  # epochs 1 and 2 of each active arm

    # Look 2 stops rare-noreg; two arms train to the end.
    look_file(tmp_path, 2, {ARMS[0]: "best", ARMS[1]: "continue", ARMS[2]: "stop"})
    done.add(2)
    assert {a: grid.arm_epochs(a) for a in ARMS} == {
        ARMS[0]: [1, 2, 3, 4],
        ARMS[1]: [1, 2, 3, 4],
        ARMS[2]: [1, 2],
        ARMS[3]: [1],
    }
    job = SimpleNamespace(arm=ARMS[3], prompt_set="main")
    assert grid.get_arm_checkpoint_metas(job) == [
        paths.CHECKPOINT_META.format(arm=ARMS[3], epoch=1)
    ]
    assert list(grid.get_arm_checkpoints(job)) == [1]
    assert len(grid.get_arm_loss_logs(job)) == 1 and len(grid.get_arm_scores(job)) == 1
    assert len(grid.get_memorization_checkpoints(job)) == 4 + 4 + 2 + 1
    # Aggregation and the final targets ask each arm for the epochs it reached, and the
    # decisions table; no epoch-2 file of the arm stopped at look 1.
    scores = grid.get_checkpoints(paths.SCORES)(None)
    assert len(scores) == (4 + 4 + 2 + 1) * len(grid.prompt_set_names)
    final = grid.get_final_outputs()
    assert paths.SEARCH_DECISIONS in final
    assert not [f for f in final if f"/{ARMS[3]}/epoch-2" in f]
    assert paths.HISTOGRAM.format(arm=ARMS[2], epoch=2, prompt_set="main") in final


def test_a_training_runs_on_while_any_sampling_level_of_it_does(tmp_path):
    # cfg5 and cfg8 render one training (the cfg5 arm's); a look stops cfg5 only: the
    # training, its resume state and its loss log still go on for cfg8's renders.
    done: set[int] = {1}
    raw = config(looks=(1,), axes={"settings": {"sample.cfg": {"cfg5": 5, "cfg8": 8}}})
    grid = dag.Grid(raw, decisions=resolver(tmp_path, done, []))
    trainer, renderer = "rare-noreg-nocap-cfg5", "rare-noreg-nocap-cfg8"
    assert grid.trainer_of(renderer) == trainer
    decisions = dict.fromkeys(grid.arms, "continue")
    decisions[trainer] = "stop"
    look_file(tmp_path, 1, decisions)
    assert grid.arm_epochs(trainer) == [1]
    assert grid.trained_epochs(trainer) == [1, 2, 3, 4]
    job = SimpleNamespace(arm=trainer, prompt_set="main")
    assert list(grid.get_arm_checkpoints(job)) == [1, 2, 3, 4]
    assert len(grid.get_arm_checkpoint_metas(job)) == 4 == len(grid.get_arm_loss_logs(job))
    assert len(grid.get_arm_scores(job)) == 1  # its own renders stopped at the look
    renders = SimpleNamespace(arm=renderer, epoch="4")
    assert grid.get_checkpoint(renders) == paths.CHECKPOINT.format(arm=trainer, epoch=4)
    # The GPU budget counts the shared training once, to its last epoch, and each arm's
    # renders as far as it got.
    plan = {row["arm"]: row for row in grid.get_budget_plan()}
    assert (plan[trainer]["train_epochs"], plan[trainer]["epochs"]) == (4, 1)
    assert (plan[renderer]["train_epochs"], plan[renderer]["epochs"]) == (0, 4)


def test_without_decisions_every_arm_may_reach_the_end():
    # The preflight and `dreamgrid check` plan for the most the search can train.
    grid = dag.Grid(config())
    assert grid.adaptive and all(grid.arm_epochs(a) == [1, 2, 3, 4] for a in ARMS)


def test_search_params_hold_what_a_look_depends_on():
    params = dag.Grid(config(search={"margin": 0.02})).search_params
    assert params["method"] == "successive_halving" and params["margin"] == 0.02
    assert params["epochs"] == 4 and params["model"] == "Dlib"
    assert {"seed", "resamples", "alpha", "spending", "looks"} <= set(params)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"search": {"looks": [2, 4]}}, r"search.looks \[4\] are not below training.epochs"),
        ({"training": {"epochs": 1}, "search": {"looks": []}}, "training.epochs 1"),
        ({"axes": {"token": {"rare": "ohwx"}, "regularization": ["none"]}}, "1 arm"),
        ({"training": {"replicates": 2}}, "training.replicates 2"),
    ],
)
def test_bad_search_settings_are_refused_naming_the_key(overrides, message):
    with pytest.raises(SpecError, match=message):
        config(**overrides)


def test_full_search_ignores_the_search_checks():
    assert config(method="full", epochs=1, looks=())["search"]["method"] == "full"


def write_scores(folder: Path, arm: str, epoch: int, distances) -> Path:
    path = folder / f"{arm}-{epoch}.csv"
    frame = table(renders(arm, epoch, list(distances)))
    frame.assign(model="Dlib", prompt_set="main").to_csv(path, index=False)
    return path


def test_decide_look_stops_an_arm_far_worse_than_the_best(tmp_path):
    rng = np.random.default_rng(1)
    files = [
        write_scores(tmp_path, a, 1, (0.8 if a == ARMS[3] else 0.45) + rng.normal(0, 0.02, 24))
        for a in ARMS
    ]
    # Pocock spending at alpha 0.2 keeps the look's interval (and its resamples) small.
    grid = dag.Grid(config(search={"alpha": 0.2, "spending": "pocock"}))
    params = grid.search_params | {"resamples": 199}
    out = tmp_path / "look-1.tsv"
    decisions = search.decide_look(files, epoch=1, active=ARMS, search=params, out=out)
    written = pd.read_csv(out, sep="\t")
    assert list(written.columns) == list(adaptive.DECISION_COLUMNS)
    assert written["decision"].tolist() == decisions["decision"].tolist()
    assert adaptive.still_running(written) == ARMS[:3]
    # Same scores, same decisions (a rerun decides the same).
    again = search.decide_look(files, epoch=1, active=ARMS, search=params, out=tmp_path / "b.tsv")
    assert (tmp_path / "b.tsv").read_text() == out.read_text()
    assert again["decision"].tolist() == decisions["decision"].tolist()


def test_summary_section_says_where_why_and_the_epochs_saved(tmp_path):
    one = look_file(tmp_path, 1, {**dict.fromkeys(ARMS[:3], "continue"), ARMS[3]: "stop"})
    frame = pd.read_csv(one, sep="\t").astype({"best_arm": object})
    frame.loc[3, ["best_arm", "estimate", "ci_low", "ci_high", "confidence"]] = [
        ARMS[0],
        0.35,
        0.3,
        0.4,
        0.99,
    ]
    frame.to_csv(one, sep="\t", index=False)
    look_file(tmp_path, 2, {ARMS[0]: "best", ARMS[1]: "continue", ARMS[2]: "continue"})
    decisions = search.collect_decisions(
        [tmp_path / "look-1.tsv", tmp_path / "look-2.tsv"], tmp_path / "decisions.tsv"
    )
    assert len(pd.read_csv(tmp_path / "decisions.tsv", sep="\t")) == len(decisions) == 7
    text = search.markdown(decisions, ARMS, epochs=4)
    assert text.startswith("## Adaptive search")
    assert (
        f"| {ARMS[3]} | look at epoch 1 | worse than {ARMS[0]} by 0.3500 "
        "(99% interval 0.3000 to 0.4000) | 1 of 4 |" in text
    )
    assert f"| {ARMS[0]} | ran to the end |  | 4 of 4 |" in text
    assert "Training epochs used: 13 of 16 in the full grid (19% saved)" in text


def test_aggregation_compares_a_stopped_arm_at_the_epochs_it_reached(tmp_path):
    rng = np.random.default_rng(0)
    levels = {
        a: {"token": a.split("-")[0], "regularization": a.split("-")[1], "captions": "nocap"}
        for a in ARMS
    }
    groups = [
        renders(
            a, e, list((0.8 if a == ARMS[3] else 0.5 - 0.02 * e) + rng.normal(0, 0.03, 30)), 10 * e
        )
        for a in ARMS
        for e in ([1] if a == ARMS[3] else [1, 2, 3])
    ]
    out = aggregate.build(
        table(*groups),
        thresholds=[0.6, 0.7],
        best_margin=0.01,
        best_margin_relative=0.0,
        min_faces=5,
        arms=levels,
        resamples=199,
    )
    summary = out["summary"]
    assert summary.loc[summary["arm"] == ARMS[3], "epoch"].tolist() == [1]
    assert summary.loc[summary["arm"] == ARMS[0], "epoch"].tolist() == [1, 2, 3]
    # The stopped arm is in every planned contrast, at the one epoch it has.
    vs_top = out["effects"].loc[out["effects"]["term"] == "vs_top"]
    stopped = vs_top.loc[vs_top["contrast"].str.startswith(ARMS[3])]
    assert len(stopped) == 2 and stopped["checkpoints"].str.contains(f"{ARMS[3]}@1").all()
    assert (stopped["ci_low"] > 0).all()  # far worse, and said so
    # The figures draw it with the points it has: one epoch of line, one histogram panel.
    import matplotlib.pyplot as plt

    from dreamgrid import plots

    scores = table(*groups)
    for figure in (
        plots.curves_figure(summary, x="epoch"),
        plots.curves_figure(summary, x="steps"),
        plots.arm_histograms_figure(scores.loc[scores["arm"] == ARMS[3]], [0.6, 0.7], ARMS[3]),
        plots.chosen_histograms_figure(scores, summary, [0.6, 0.7], "chosen"),
    ):
        assert figure.axes
        plt.close(figure)


def test_check_cli_refuses_bad_search_settings_before_any_job(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text(
        "subject: {class_word: man, train_images: x, references: y}\nbase_model: tiny\n"
        "axes: {token: {rare: ohwx, sks: sks}}\ntraining: {epochs: 3}\n"
        "search: {method: successive_halving, looks: [1, 3]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "check", str(bad)],
        capture_output=True, text=True, check=False, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "study.yaml: search.looks [3] are not below training.epochs (3)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()


def test_summary_md_gains_the_section_only_with_decisions(tmp_path):
    rng = np.random.default_rng(2)
    files = [write_scores(tmp_path, a, 1, 0.5 + rng.normal(0, 0.02, 8)) for a in ARMS[:2]]
    look_file(tmp_path, 1, {ARMS[0]: "best", ARMS[1]: "continue"})
    texts = {}
    for name, decisions in (("full", None), ("search", tmp_path / "look-1.tsv")):
        out = tmp_path / name
        out.mkdir()
        aggregate.aggregate_scores(
            files, [0.6, 0.7], 0.01, out / "scores.tsv", out / "summary.csv", out / "summary.md",
            demo=False, resamples=99, decisions=decisions,
        )  # fmt: skip
        texts[name] = (out / "summary.md").read_text()
    assert "Adaptive search" not in texts["full"]  # search.method full: summary.md as before
    head, section = texts["search"].split("\n## Adaptive search", 1)
    assert head == texts["full"] and "| 1 of 1 |" in section
