"""The CLI contracts others script against: `dreamgrid score`, `summarize`, `check`."""

import argparse
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from dreamgrid import cli
from dreamgrid.scoring import deepface_adapter

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture(scope="module")
def deepface_home(tmp_path_factory):
    return deepface_adapter.setup_deepface(tmp_path_factory.mktemp("deepface"))


def test_score_cli_matches_deepface_verify(deepface_home, tmp_path):
    out = tmp_path / "scores.csv"
    argv = [
        "score",
        "--references",
        str(DEMO / "references"),
        "--images",
        str(DEMO / "ground_truth"),
    ]
    assert cli.main([*argv, "--model", "Dlib", "--detector", "dlib", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    references = sorted(p.name for p in (DEMO / "references").iterdir())
    assert list(table.columns) == [
        "image", "face_found", "n_faces", "mean_distance", *[f"d:{r}" for r in references]
    ]  # fmt: skip
    assert table["face_found"].tolist() == [True, True]

    from deepface import DeepFace

    row = table.iloc[0]
    for reference in references[:2]:
        expected = DeepFace.verify(
            str(DEMO / "ground_truth" / row["image"]),
            str(DEMO / "references" / reference),
            model_name="Dlib",
            detector_backend="dlib",
        )["distance"]
        assert abs(row[f"d:{reference}"] - expected) <= 1e-6
    distances = [row[f"d:{r}"] for r in references]
    assert row["mean_distance"] == pytest.approx(sum(distances) / len(distances), abs=1e-12)
    assert (out.parent / "scores.meta.json").is_file()


def test_summarize_cli_hand_computed(tmp_path):
    scores = tmp_path / "scores.csv"
    pd.DataFrame(
        {
            "arm": ["a"] * 6 + ["b"] * 2,
            "epoch": [1, 1, 1, 2, 2, 2, 1, 1],
            "face_found": ["true", "true", "false", "true", "true", "true", "false", "false"],
            "mean_distance": [0.5, 0.65, None, 0.55, 0.58, 0.75, None, None],
        }
    ).to_csv(scores, index=False)
    out = tmp_path / "summary.csv"
    argv = ["summarize", "--scores", str(scores), "--thresholds", "0.6", "0.7", "--min-faces", "1"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    summary = pd.read_csv(out).set_index(["arm", "epoch"])
    a1, a2, b1 = summary.loc[("a", 1)], summary.loc[("a", 2)], summary.loc[("b", 1)]
    assert a1["renders"] == 3 and a1["face_rate"] == pytest.approx(2 / 3)
    assert a1["average"] == pytest.approx(0.575)
    assert a1["pct_below_0.6"] == pytest.approx(50.0) and a1["pct_below_0.7"] == pytest.approx(
        100.0
    )
    assert a2["average"] == pytest.approx((0.55 + 0.58 + 0.75) / 3)
    assert a2["pct_below_0.6"] == pytest.approx(200 / 3)
    # epoch 2 has the higher share below 0.6 on all renders (66.7 vs 33.3, by more than the
    # margin): chosen on every seed.
    assert not a1["best_not_worse"] and a2["best_not_worse"]
    assert b1["face_rate"] == 0 and math.isnan(b1["average"]) and not b1["best"]


def test_check_cli_reports_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("subject: {class_word: man, train_images: x, references: y}\nbase_model: tiny\n")
    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "'axes' is a required property" in result.stderr
    assert "Traceback" not in result.stderr


def help_text(*argv: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", *argv, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_help_says_what_dreamgrid_is_and_how_the_workflow_runs():
    text = help_text()
    assert "which DreamBooth training recipe gives the best likeness" in text
    assert "snakemake --cores all --configfile config/experiment.yaml" in text
    assert "``" not in text and ":func:" not in text  # no raw reST


def test_every_subcommand_describes_itself_and_every_option_has_help():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(commands.choices) >= 8
    for name, sub in commands.choices.items():
        assert sub.description and len(sub.description) > 40, name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"
        text = help_text(name)
        assert "``" not in text, name
        for action in sub._actions:
            if (
                action.option_strings
                and not action.required
                and action.default
                not in (
                    None,
                    False,
                    argparse.SUPPRESS,
                )
            ):
                # The help shows each option's default.
                assert f"(default: {action.default}" in " ".join(text.split()), (name, action.dest)


def test_version():
    from dreamgrid import __version__

    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"dreamgrid {__version__}"


def exact_sign_flip_p(diff: np.ndarray) -> float:
    """All 2^n sign patterns: the share whose |mean| reaches the observed |mean|."""
    observed = abs(diff.mean())
    means = [abs((diff * signs).mean()) for signs in itertools.product((1, -1), repeat=len(diff))]
    return float(np.mean(np.array(means) >= observed - 1e-12))


def holm(p: list[float]) -> list[float]:
    order = np.argsort(p)
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


@pytest.fixture
def compare_scores(tmp_path):
    """Three arms on seeds 0..9 at epoch 1 (a and b also at epoch 2); NaN where no face."""
    gen = np.random.default_rng(7)
    distances = {
        ("a", 1): 0.55 + gen.normal(0, 0.03, 10),
        ("b", 1): 0.62 + gen.normal(0, 0.03, 10),
        ("c", 1): 0.56 + gen.normal(0, 0.05, 10),
        ("a", 2): 0.60 + gen.normal(0, 0.03, 10),
        ("b", 2): 0.58 + gen.normal(0, 0.03, 10),
    }
    distances[("a", 1)][[2, 5]] = np.nan  # no face on two seeds of a
    distances[("c", 1)][[5, 9]] = np.nan
    rows = [
        {"arm": arm, "epoch": epoch, "seed": seed, "face_found": bool(np.isfinite(d)),
         "mean_distance": d}
        for (arm, epoch), values in distances.items()
        for seed, d in enumerate(values)
    ]  # fmt: skip
    path = tmp_path / "scores.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path, distances


def run_compare(scores: Path, out: Path, *options: str) -> pd.DataFrame:
    argv = ["compare", "--scores", str(scores), "--out", str(out), *options]
    assert cli.main(argv) == 0
    return pd.read_csv(out).set_index(["arm_a", "arm_b", "epoch"])


def test_compare_cli_values_match_an_independent_computation(compare_scores, tmp_path):
    scores, distances = compare_scores
    table = run_compare(scores, tmp_path / "comparisons.csv")
    pairs = [("a", "b", 1), ("a", "c", 1), ("b", "c", 1), ("a", "b", 2)]
    assert sorted(table.index) == sorted(pairs)
    p_values = []
    for arm_a, arm_b, epoch in pairs:
        a, b = distances[(arm_a, epoch)], distances[(arm_b, epoch)]
        both = np.isfinite(a) & np.isfinite(b)
        diff = a[both] - b[both]
        row = table.loc[(arm_a, arm_b, epoch)]
        assert row["n_pairs"] == both.sum()
        assert row["mean_diff"] == pytest.approx(diff.mean(), abs=1e-12)
        assert row["median_diff"] == pytest.approx(np.median(diff), abs=1e-12)
        assert row["share_a_better"] == pytest.approx(np.mean(diff < 0))
        assert row["face_diff"] == pytest.approx(np.isfinite(a).mean() - np.isfinite(b).mean())
        only_a = int(np.sum(np.isfinite(a) & ~np.isfinite(b)))
        only_b = int(np.sum(~np.isfinite(a) & np.isfinite(b)))
        expected_face_p = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b).pvalue
        assert row["face_p"] == pytest.approx(expected_face_p)
        # <= 16 pairs: the exact test, so the p-value is known without resampling.
        assert row["p_value"] == pytest.approx(exact_sign_flip_p(diff), abs=1e-9)
        assert "exact" in row["method"] and "BCa 95% interval" in row["method"]
        assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
        p_values.append(row["p_value"])
    adjusted = [table.loc[pair]["p_adjusted"] for pair in pairs]
    assert adjusted == pytest.approx(holm(p_values))
    # a is clearly more alike than b at epoch 1 (0.07 apart, sd 0.03): all 8 pairs.
    ab = table.loc[("a", "b", 1)]
    assert ab["share_a_better"] == 1.0 and ab["ci_high"] < 0 and ab["p_value"] == 2 / 2**8


def test_compare_cli_options_change_what_they_say(compare_scores, tmp_path):
    scores, _ = compare_scores
    wide = run_compare(scores, tmp_path / "wide.csv", "--confidence", "0.99")
    narrow = run_compare(scores, tmp_path / "narrow.csv", "--confidence", "0.5")
    assert (narrow["ci_low"] >= wide["ci_low"]).all() and (
        narrow["ci_high"] <= wide["ci_high"]
    ).all()
    assert ((narrow["ci_high"] - narrow["ci_low"]) < (wide["ci_high"] - wide["ci_low"])).all()
    assert narrow["method"].str.contains("BCa 50% interval").all()
    # The seed and resamples drive the bootstrap only: exact p-values stay, intervals move.
    again = run_compare(scores, tmp_path / "again.csv", "--confidence", "0.5")
    pd.testing.assert_frame_equal(narrow, again)
    other = run_compare(
        scores, tmp_path / "other.csv", "--confidence", "0.5", "--seed", "1", "--resamples", "500"
    )
    assert other["p_value"].tolist() == narrow["p_value"].tolist()
    assert not np.allclose(other["ci_low"], narrow["ci_low"])


def test_compare_cli_names_the_file_when_a_column_is_missing(tmp_path):
    scores = tmp_path / "scores.csv"
    pd.DataFrame({"arm": ["a"], "epoch": [1], "face_found": [True], "mean_distance": [0.5]}).to_csv(
        scores, index=False
    )
    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "compare", "--scores", str(scores), "--out",
         str(tmp_path / "out.csv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "scores.csv" in result.stderr and "seed" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_check_cli_success_prints_the_grid(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        f"subject: {{class_word: man, train_images: {DEMO / 'train'}, "
        f"references: {DEMO / 'references'}}}\n"
        "base_model: tiny\ncaption: {model: tiny}\n"
        "axes: {token: {rare: ohwx, celebrity: barack obama}, regularization: [none, generated]}\n"
        "training: {epochs: 3, resolution: 64}\n"
        "sample: {count: 12, shard_size: 4, batch_size: 2, width: 64, height: 64}\n"
    )
    env = {**os.environ, "DEEPFACE_HOME": str(tmp_path / "deepface")}
    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "check", str(config)],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: valid; 4 arms x 3 epochs"
    arms = sorted(line.split(":")[0].strip() for line in lines[1:5])
    assert arms == [
        "celebrity-genreg-nocap", "celebrity-noreg-nocap", "rare-genreg-nocap", "rare-noreg-nocap"
    ]  # fmt: skip
    assert "  rare-genreg-nocap: token='ohwx' regularization=generated captions=none" in lines
    assert "12 renders per checkpoint in shards of 4; prompt sets: main" in lines
    assert any(line.startswith("scored with Dlib/dlib (cosine); thresholds ") for line in lines)
    # GPU memory per arm, counted from the tiny model's configs (no GPU is checked here).
    assert (
        "GPU memory per arm (estimates; parameters counted from the tiny model's configs):" in lines
    )
    assert any(line.startswith("  arm rare-genreg-nocap: train ~") for line in lines)
    assert any(line.startswith("GPU memory: ") for line in lines)
    # the budget: 4 arms x 3 epochs, 12 renders each; hours estimated for the default card
    at = next(i for i, line in enumerate(lines) if line.startswith("budget: "))
    assert lines[at].startswith(
        "budget: 4 arms; 12 training epochs (training arms x epochs); 144 renders"
    )
    assert lines[at + 1].startswith("GPU-hours on one RTX 3090: ~")
    assert "estimate, not measured here" in lines[at + 2]
    # nothing written but the face weights the reference check needs, prepared where
    # prepare_face_models keeps them (score.deepface_home), as the workflow would
    written = {
        p.relative_to(tmp_path).as_posix() for p in (tmp_path / "results").rglob("*") if p.is_file()
    }
    assert written == {
        "results/models/deepface/.deepface/prepared/Dlib-dlib.json",
        "results/models/deepface/.deepface/weights/shape_predictor_5_face_landmarks.dat",
        "results/models/deepface/.deepface/weights/dlib_face_recognition_resnet_model_v1.dat",
    }


def test_check_cli_refuses_an_arm_that_cannot_fit_the_gpu(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        f"subject: {{class_word: man, train_images: {DEMO / 'train'}, "
        f"references: {DEMO / 'references'}}}\n"
        "base_model: tiny\ncaption: {model: tiny}\n"
        "axes: {token: {rare: ohwx}, method: [full, lora]}\n"
        "training: {epochs: 1, resolution: 64}\n"
        "sample: {count: 4, shard_size: 4, batch_size: 4, width: 64, height: 64}\n"
    )
    env = {**os.environ, "DEEPFACE_HOME": str(tmp_path / "deepface")}
    result = subprocess.run(
        [sys.executable, "-m", "dreamgrid", "check", str(config), "--gpu-memory", "0.5"],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    # One error line (peft's import may log a bitsandbytes warning before it).
    errors = [line for line in result.stderr.splitlines() if line.startswith("dreamgrid: error")]
    assert len(errors) == 1
    message = errors[0]
    assert message.startswith("dreamgrid: error: arm rare-noreg-nocap: training needs about ")
    assert "more than the 0.5 GiB of --gpu-memory" in message
    assert "overhead 1.2 GiB" in message and "gradient_checkpointing: true" in message
    assert "1 more arm(s) do not fit either" in message
    assert not (tmp_path / "results").exists()
    # A GPU that fits: the check passes the memory step (and lists the estimates).
    from dreamgrid import config as cfg
    from dreamgrid import memory

    lines = memory.check_config(cfg.load(config), gpu_gib=80, prepared=tmp_path / "none")
    assert lines[-1] == "GPU memory: every arm fits the 80.0 GiB of --gpu-memory"
    assert any(line.startswith("  arm rare-noreg-nocap-lora: train ~") for line in lines)


def test_the_commands_default_to_the_workflows_report_settings():
    # One set of constants (dreamgrid.stats) for the commands, the functions behind them and
    # the config schema's report.* defaults; the literals they repeated could drift apart.
    from dreamgrid import config, stats

    report = {k: v["default"] for k, v in config._schema()["properties"]["report"]["properties"].items()}  # fmt: skip
    assert (report["confidence"], report["bootstrap_resamples"], report["seed"]) == (
        stats.CONFIDENCE,
        stats.RESAMPLES,
        stats.SEED,
    )
    assert (report["best_margin"], report["best_margin_relative"], report["min_faces"]) == (
        stats.BEST_MARGIN,
        stats.BEST_MARGIN_RELATIVE,
        stats.MIN_FACES,
    )
    parser = cli.build_parser()
    args = parser.parse_args(["report", "--scores", "s.csv", "--out", "o"])
    assert vars(args) | {"func": None} == {
        "command": "report",
        "verbose": False,
        "scores": Path("s.csv"),
        "out": Path("o"),
        "baseline": None,
        "thresholds": [0.6, 0.7],
        "best_margin": 5.0,
        "best_margin_relative": 0.25,
        "min_faces": 20,
        "confidence": 0.95,
        "resamples": 2000,
        "seed": 0,
        "func": None,
    }
    compare = parser.parse_args(["compare", "--scores", "s.csv", "--out", "o"])
    assert (compare.confidence, compare.resamples, compare.seed) == (0.95, 2000, 0)
    power = parser.parse_args(["power", "--scores", "s.csv", "--effect", "0.01"])
    assert (power.threshold, power.confidence) == (0.6, 0.95)


@pytest.mark.parametrize(
    "argv",
    [["compare", "--out", "c.csv"], ["report", "--out", "report"], ["power", "--effect", "0.01"]],
)
def test_paired_commands_name_the_file_once_for_a_face_without_distance(tmp_path, argv, capsys):
    scores = tmp_path / "scores.csv"
    pd.DataFrame(
        {"arm": ["a", "b"], "epoch": [1, 1], "seed": [0, 0], "face_found": [True, True],
         "mean_distance": [0.5, None]}
    ).to_csv(scores, index=False)  # fmt: skip
    command, option, value = argv
    if option == "--out":
        value = str(tmp_path / value)
    assert cli.main([command, "--scores", str(scores), option, value]) != 0
    message = capsys.readouterr().err
    assert f"{scores}: 1 row(s) have face_found true but no numeric mean_distance" in message
    assert f"{scores}: {scores}" not in message  # report wrapped it twice before
