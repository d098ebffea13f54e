"""Calibration of the verdict, measured: simulate whole studies with a known truth.

Usage:
    python benchmarks/bench_calibration.py [--studies 200] [--scenarios null effect ...]
        [--seeds 200] [--epochs 6] [--resamples 1000] [--out results.json]

Each simulated study has the study's shape by default: 12 arms (2 tokens × 3 regularizations ×
2 captions), 6 epochs, 200 render seeds, regularized arms at twice the steps per epoch (so
equal steps exist: 600). A render's mean distance is

    0.62 + arm effect + seed effect (SD 0.04, shared by arms)
    + run shift (per arm, SD ``run_sd``) + render noise (SD 0.05),

and a face is found with probability 0.95 unless the scenario says otherwise. There is no
trend over epochs: with one, "at equal steps" (a regularized arm's epoch 3 against a plain
arm's epoch 6) and "at chosen epochs" (a non-inferior earlier epoch may be truly a little
worse) carry real differences, and the truth of a claim would depend on the view. Every study goes
through :func:`dreamgrid.aggregate.build` (summary, chosen epochs, planned family, claims) as
the workflow runs it, without what makes no claim (the exploratory table, each checkpoint's
average interval, ``best_not_worse``).

Scenarios (truth):

- ``null``: no recipe effect; one run per arm.
- ``effect``: the rare token is 0.03 farther (less alike); nothing else.
- ``run_noise``: no recipe effect, but each arm's single training run is shifted by
  N(0, 0.005): one run per arm cannot tell this from a recipe effect (the issue's case).
- ``run_noise_3``: the same with 3 training runs per arm (a ``replicate`` column): the run
  is the unit of every planned contrast.
- ``face_confound``: no distance effect; one arm (all its runs) finds a face only on the
  easier half of the seeds (a lower average from face rate alone).
- ``face_confound_3``: 3 runs per arm, run-to-run SD 0.005, no recipe effect; one run of one
  arm finds a face only on the easier half of the seeds (its plain run mean would be low).
- ``low_share``: distances around 0.70 (2–8% of renders below 0.6) with a 0.04 token effect.

A claim is **false** when it states a difference the truth does not have, or the wrong way:
an effect claim on an axis other than a true effect (or against its sign), a pair claim between
arms whose true means are equal (or reversed). Reported per scenario: the share of studies with
at least one false claim (with its Monte Carlo standard error), and the power: the share of
studies claiming the true token effect (scenarios with one).

Prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from dreamgrid import aggregate, scoretable

TOKENS = ("celebrity", "rare")
REGS = ("noreg", "genreg", "gtreg")
CAPS = ("blip", "nocap")
SCENARIOS = {
    "null": {},
    "effect": {"token_effect": 0.03},
    "run_noise": {"run_sd": 0.005},
    "run_noise_3": {"run_sd": 0.005, "replicates": 3},
    "face_confound": {"confound": True},
    "face_confound_3": {"confound": True, "replicates": 3, "run_sd": 0.005},
    "low_share": {"token_effect": 0.04, "base": 0.70},
}


def arms() -> list[dict[str, str]]:
    return [
        {"arm": f"{t}-{r}-{c}", "token": t, "regularization": r, "captions": c}
        for t in TOKENS
        for r in REGS
        for c in CAPS
    ]


def score_frame(
    arm: dict[str, str],
    epoch: int,
    per_epoch: int,
    face: np.ndarray,
    distance: np.ndarray,
    replicate: int,
    runs: int,
) -> pd.DataFrame:
    """One checkpoint's simulated score table: a row per seed, as the workflow writes it
    (a ``replicate`` column only with several runs per arm)."""
    frame = pd.DataFrame(
        {
            **{k: arm[k] for k in ("arm", "token", "regularization", "captions")},
            "epoch": epoch,
            "steps": per_epoch * epoch,
            "seed": np.arange(len(face)),
            "face_found": face,
            "mean_distance": np.where(face, distance, np.nan),
        }
    )
    if runs > 1:
        frame["replicate"] = replicate
    return frame


def simulate(
    scenario: dict, rng: np.random.Generator, n_seeds: int, n_epochs: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """One study's score table and each arm's *recipe* truth (run shifts are not recipes)."""
    effect = scenario.get("token_effect", 0.0)
    run_sd = scenario.get("run_sd", 0.0)
    runs = scenario.get("replicates", 1)
    base = scenario.get("base", 0.62)
    seed_effect = rng.normal(0, 0.04, n_seeds)
    easy = seed_effect < np.median(seed_effect)
    confounded = "celebrity-noreg-blip" if scenario.get("confound") else None
    truth = {a["arm"]: (effect if a["token"] == "rare" else 0.0) for a in arms()}
    frames = []
    for a in arms():
        per_epoch = 100 if a["regularization"] == "noreg" else 200
        for replicate in range(1, runs + 1):
            shift = rng.normal(0, run_sd)
            for epoch in range(1, n_epochs + 1):
                d = base + truth[a["arm"]] + shift + seed_effect
                d = d + rng.normal(0, 0.05, n_seeds)
                face = rng.random(n_seeds) < 0.95
                if a["arm"] == confounded and replicate == 1:
                    face &= easy
                frames.append(score_frame(a, epoch, per_epoch, face, d, replicate, runs))
    return pd.concat(frames, ignore_index=True), truth


def false_claims(claims: list[dict], truth: dict[str, float], scenario: dict) -> list[dict]:
    """Claims the truth does not support (see the module docstring)."""
    effect = scenario.get("token_effect", 0.0)
    wrong = []
    for claim in claims:
        if claim["kind"] == "pair":
            gap = truth[claim["worse"]] - truth[claim["better"]]
            if gap <= 0:
                wrong.append(claim)
        elif not (
            effect > 0 and claim["better"] == "token=celebrity" and claim["worse"] == "token=rare"
        ):
            wrong.append(claim)
    return wrong


def found_effect(claims: list[dict]) -> bool:
    return any(
        c["kind"] == "effect" and c["better"] == "token=celebrity" and c["worse"] == "token=rare"
        for c in claims
    )


def run_scenario(
    name: str,
    studies: int,
    n_seeds: int,
    n_epochs: int,
    resamples: int,
    log: Path | None = None,
) -> dict:
    """``studies`` simulated studies of scenario ``name``; with ``log``, one JSON line per
    study is appended as it finishes (so an interrupted run still counts what it did)."""
    scenario = SCENARIOS[name]
    rng = np.random.default_rng([2026, sum(map(ord, name))])
    with_false, found, n_claims, seconds = 0, 0, 0, []
    for index in range(studies):
        scores, truth = simulate(scenario, rng, n_seeds, n_epochs)
        start = time.perf_counter()
        result = aggregate.build(
            scoretable._normalise(scores, name),
            thresholds=[0.6, 0.7],
            best_margin=5.0,
            best_margin_relative=0.25,
            min_faces=20,
            resamples=resamples,
            seed=int(rng.integers(2**31)),
            exploratory=False,
        )
        seconds.append(time.perf_counter() - start)
        claims = result["verdict"]["claims"]
        n_claims += len(claims)
        wrong = false_claims(claims, truth, scenario)
        with_false += bool(wrong)
        found += found_effect(claims)
        if log is not None:
            line = {
                "scenario": name,
                "study": index,
                "claims": len(claims),
                "false": len(wrong),
                "found_effect": found_effect(claims),
                "seconds": seconds[-1],
            }
            with log.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
    rate = with_false / studies
    out = {
        "studies": studies,
        "false_claim_rate": rate,
        "false_claim_rate_se": math.sqrt(rate * (1 - rate) / studies),
        "claims_per_study": n_claims / studies,
        "seconds_per_study": float(np.mean(seconds)),
    }
    if scenario.get("token_effect"):
        out["power_token_effect"] = found / studies
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--log", type=Path, default=None, help="one JSON line per study")
    args = parser.parse_args(argv)
    report = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "shape": {"arms": len(arms()), "epochs": args.epochs, "seeds": args.seeds},
        "resamples": args.resamples,
        "scenarios": {},
    }
    for name in args.scenarios:
        report["scenarios"][name] = run_scenario(
            name, args.studies, args.seeds, args.epochs, args.resamples, args.log
        )
        print(name, json.dumps(report["scenarios"][name]), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
