import itertools
import sys
from pathlib import Path

import pytest

from dreamgrid import config as cfg
from dreamgrid import design
from dreamgrid.errors import SpecError

sys.path.insert(0, str(Path(__file__).parent))
from test_config import minimal


def test_full_is_the_product_in_order():
    levels = [["a", "b"], [1, 2, 3], ["x"]]
    assert design.points(levels, "full") == list(itertools.product(*levels))


def test_one_at_a_time_is_the_baseline_then_each_axis_in_order():
    levels = [["a", "b", "c"], [1, 2], ["x"], [True, False]]
    assert design.points(levels, "one_at_a_time") == [
        ("a", 1, "x", True),  # baseline: the first level of every axis
        ("b", 1, "x", True),
        ("c", 1, "x", True),
        ("a", 2, "x", True),
        ("a", 1, "x", False),  # the one-level axis added nothing
    ]


@pytest.mark.parametrize("sizes", [(1,), (3,), (2, 2), (4, 1, 3), (1, 1, 1), (2, 3, 4, 5)])
def test_one_at_a_time_counts_one_plus_the_changed_values(sizes):
    levels = [list(range(n)) for n in sizes]
    got = design.points(levels, "one_at_a_time")
    assert len(got) == 1 + sum(n - 1 for n in sizes)
    assert design.count(sizes, "one_at_a_time") == len(got)
    assert design.count(sizes, "full") == len(design.points(levels, "full"))
    assert len(set(got)) == len(got)
    # every point differs from the baseline on at most one axis
    assert all(sum(p != b for p, b in zip(point, got[0], strict=True)) <= 1 for point in got)


def test_an_unknown_design_is_refused():
    with pytest.raises(ValueError, match="one_at_a_time"):
        design.points([[1]], "latin_square")


def grid(**overrides):
    return minimal(
        axes__token={"celebrity": "alexa davalos", "rare": "ohwx"},
        axes__regularization=["none", "generated", "ground_truth"],
        axes__captions=["blip", "none"],
        subject__ground_truth="gt",
        **overrides,
    )


def test_expand_arms_follows_the_design():
    full = cfg.expand_arms(cfg.validate(grid()))
    assert len(full) == 2 * 3 * 2
    arms = cfg.expand_arms(cfg.validate(grid(axes__design="one_at_a_time")))
    assert [a.arm for a in arms] == [
        "celebrity-noreg-blip",
        "rare-noreg-blip",
        "celebrity-genreg-blip",
        "celebrity-gtreg-blip",
        "celebrity-noreg-nocap",
    ]
    # the same recipes as the full grid's, ids unchanged
    assert {a.arm for a in arms} <= {a.arm for a in full}


def test_the_design_defaults_to_full():
    assert cfg.validate(grid())["axes"]["design"] == "full"


def test_too_many_arms_are_refused_with_the_count_the_key_and_the_fixes():
    with pytest.raises(SpecError) as err:
        cfg.validate(grid(training__replicates=3, limits__max_arms=20), source="mine.yaml")
    text = str(err.value)
    assert "mine.yaml: this grid has 36 arms" in text
    assert "limits.max_arms (20)" in text
    assert "axes.design: one_at_a_time" in text
    assert "raise limits.max_arms" in text
    # one at a time: 5 recipes x 3 runs fit
    config = cfg.validate(
        grid(training__replicates=3, limits__max_arms=20, axes__design="one_at_a_time")
    )
    assert len(cfg.expand_arms(config)) == 15
    with pytest.raises(SpecError, match="has 15 arms") as err:
        cfg.validate(
            grid(training__replicates=3, limits__max_arms=10, axes__design="one_at_a_time")
        )
    assert "use `axes.design" not in str(err.value)  # already one at a time


def test_the_shipped_study_fits_the_default_cap():
    config = cfg.load(cfg.Path(__file__).resolve().parents[2] / "config" / "experiment.yaml")
    assert len(cfg.expand_arms(config)) <= config["limits"]["max_arms"]
