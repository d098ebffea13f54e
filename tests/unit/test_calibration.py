"""A small run of benchmarks/bench_calibration.py: bounds that a broken method would break.

The full benchmark (200 studies per scenario at the study's shape) is in benchmarks/RESULTS.md.
Here 8 studies of 12 arms x 2 epochs x 40 seeds per scenario: a method without its family
correction (about 40 contrasts at 95% each) would make a false claim in most null studies, and
one that tests another quantity than its estimate would miss or invert the effect.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_calibration


def test_null_studies_make_almost_no_false_claim():
    result = bench_calibration.run_scenario(
        "null", studies=8, n_seeds=40, n_epochs=2, resamples=300
    )
    assert result["false_claim_rate"] <= 2 / 8


def test_a_face_rate_confound_is_no_distance_claim():
    result = bench_calibration.run_scenario(
        "face_confound", studies=4, n_seeds=40, n_epochs=2, resamples=300
    )
    assert result["false_claim_rate"] <= 1 / 4


def test_a_real_token_effect_is_found_and_only_it():
    bench_calibration.SCENARIOS["big_effect"] = {"token_effect": 0.08}
    try:
        result = bench_calibration.run_scenario(
            "big_effect", studies=4, n_seeds=40, n_epochs=2, resamples=300
        )
    finally:
        del bench_calibration.SCENARIOS["big_effect"]
    assert result["power_token_effect"] == 1.0
    assert result["false_claim_rate"] <= 1 / 4
