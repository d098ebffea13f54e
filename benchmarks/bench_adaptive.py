"""The adaptive grid against the full grid, measured: simulate whole studies with known curves.

Usage:
    python benchmarks/bench_adaptive.py [--studies 100] [--scenarios null clear_winner ...]
        [--seeds 200] [--epochs 6] [--resamples 1000] [--looks 2 3 4 5] [--margin 0.01]
        [--spending obrien_fleming] [--no-extrapolate] [--claims null|all]
        [--compare-on all|estimation]
        [--out results.json] [--log s.jsonl]

Each simulated study has the seed study's shape by default: 12 arms (2 tokens × 3
regularizations × 2 captions), 6 epochs, 200 render seeds, regularized arms at twice the steps
per epoch. A render's mean distance at epoch e is

    curve(arm, e) + seed effect (SD 0.04, shared by arms: paired renders)
    + run shift (per arm, SD ``run_sd``) + render noise (SD 0.05),

with ``curve(arm, e) = plateau + drop · exp(-(e - 1) / speed) + rise · max(0, e - peak)``: the
distance falls toward an arm-specific plateau at an arm-specific speed, and an overtraining
arm rises again after its peak epoch. A face is found with probability ``face`` (0.95, lower
for some arms, and falling by 0.04 an epoch after an overtraining arm's peak). Magnitudes are
bench_calibration's (distances around 0.6, VGG-Face cosine).

Each study is analysed twice on the same renders, as the workflow would:

- **full grid**: every arm to the last epoch, :func:`dreamgrid.aggregate.build` (chosen
  epochs on the selection half, ``top_arm``, planned family, claims);
- **adaptive grid**: at each look :func:`dreamgrid.adaptive.decide` on what was trained so
  far; a stopped arm keeps the epochs it has (its later rows are dropped); then the same
  ``aggregate.build`` on what was trained.

Scenarios (truth):

- ``null``: no recipe effect (every arm the same curve).
- ``clear_winner``: one arm plateaus 0.04 below the next; the others spread 0.59–0.66;
  two of them overtrain, two have a face rate of 0.85.
- ``slow_starter``: as ``clear_winner``, but the winner starts 0.10 higher and falls slowly
  (0.045 behind at the first look, best from epoch 5 on).
- ``close``: four arms within 0.006 at the top (the full grid's own pick among them is a
  coin toss); the rest spread 0.60–0.66.
- ``run_noise``: ``clear_winner`` with each arm's single run shifted by N(0, 0.005).
- ``run_noise_3``: the same with 3 training runs per arm (a ``replicate`` column): the run is
  the unit of the looks' intervals and of the verdict.

Reported per scenario, each share with its Monte Carlo standard error: ``same_best`` (the
adaptive grid's ``top_arm`` is the full grid's), ``equivalent_best`` (the same, or one truly no
worse than the full grid's by more than the margin at the last epoch),
``full_picks_truly_best`` and ``adaptive_picks_truly_best`` (the arm with the lowest curve at
the last epoch), ``epochs_used`` (training epochs of the
adaptive grid over the full grid's), ``false_stop`` (studies where an arm stopped that is not
worse than the truly best arm at the last epoch by more than the margin), and the share of
studies whose verdict states a false claim, full and adaptive: a claimed difference that the
curves do not have at the checkpoints the claim compares (:func:`false_claims`). The verdict's
planned family (most of a study's time) runs in the ``null`` scenario only unless
``--claims all``; elsewhere the top arm comes from the same steps without it.

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

from bench_calibration import arms, score_frame

from dreamgrid import adaptive, aggregate, inference, scoretable
from dreamgrid.summary import summarize

#: A typical arm: plateau, drop, speed (epochs), rise after peak, peak, face rate.
TYPICAL = {"plateau": 0.60, "drop": 0.06, "speed": 1.0, "rise": 0.0, "peak": 99, "face": 0.95}
SCENARIOS = {
    "null": {"layout": "null"},
    "clear_winner": {"layout": "spread"},
    "slow_starter": {"layout": "slow"},
    "close": {"layout": "close"},
    "run_noise": {"layout": "spread", "run_sd": 0.005},
    "run_noise_3": {"layout": "spread", "run_sd": 0.005, "replicates": 3},
}


def curves(layout: str, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Arm -> curve parameters. Which arm gets which role is drawn per study, so no recipe
    name is favoured by the rule's tie-breaks."""
    names = [a["arm"] for a in arms()]
    order = [names[i] for i in rng.permutation(len(names))]
    out = {a: dict(TYPICAL) for a in names}
    if layout == "null":
        return out
    others = order[1:]
    if layout == "close":
        for i, a in enumerate(order[:4]):
            out[a]["plateau"] = 0.56 + 0.002 * i
        others = order[4:]
    else:
        out[order[0]]["plateau"] = 0.55
    for i, a in enumerate(others):
        out[a]["plateau"] = 0.59 + 0.07 * i / max(len(others) - 1, 1)
    # Two overtrainers (peak at epoch 3, then 0.012 worse an epoch) and two low face rates,
    # drawn among the non-top arms.
    for a in others[1:3]:
        out[a].update(rise=0.012, peak=3)
    for a in others[3:5]:
        out[a]["face"] = 0.85
    if layout == "slow":
        out[order[0]].update(drop=0.16, speed=2.5)
    return out


def curve(p: dict[str, float], epoch: int) -> float:
    return (
        p["plateau"]
        + p["drop"] * math.exp(-(epoch - 1) / p["speed"])
        + p["rise"] * max(0, epoch - p["peak"])
    )


def simulate(
    scenario: dict, rng: np.random.Generator, n_seeds: int, n_epochs: int
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """One study's full-grid score table and each arm's curve (the truth)."""
    params = curves(scenario["layout"], rng)
    run_sd = scenario.get("run_sd", 0.0)
    seed_effect = rng.normal(0, 0.04, n_seeds)
    runs = scenario.get("replicates", 1)
    frames = []
    for a in arms():
        p = params[a["arm"]]
        per_epoch = 100 if a["regularization"] == "noreg" else 200
        for replicate in range(1, runs + 1):
            shift = rng.normal(0, run_sd)
            for epoch in range(1, n_epochs + 1):
                d = curve(p, epoch) + shift + seed_effect + rng.normal(0, 0.05, n_seeds)
                rate = p["face"] - 0.04 * max(0, epoch - p["peak"])
                face = rng.random(n_seeds) < rate
                frames.append(score_frame(a, epoch, per_epoch, face, d, replicate, runs))
    return pd.concat(frames, ignore_index=True), params


def run_adaptive(
    scores: pd.DataFrame,
    search: dict,
    n_epochs: int,
    seed: int,
    resamples: int,
    compare_on: str = "all",
) -> tuple[pd.DataFrame, dict[str, int], list[pd.DataFrame]]:
    """The adaptive grid on a full grid's renders: (what was trained, arm -> last epoch
    trained, each look's decision table)."""
    last = {a: n_epochs for a in scores["arm"].unique()}
    active = sorted(last)
    tables = []
    for look in adaptive.look_epochs(search, n_epochs):
        trained = scores.loc[scores["epoch"] <= scores["arm"].map(last).clip(upper=look)]
        table = adaptive.decide(
            trained,
            epoch=look,
            active=active,
            search=search,
            epochs=n_epochs,
            seed=seed,
            resamples=resamples,
            compare_on=compare_on,
        )
        tables.append(table)
        running = set(adaptive.still_running(table))
        for arm in active:
            if arm not in running:
                last[arm] = look
        active = [a for a in active if a in running]
    kept = scores.loc[scores["epoch"] <= scores["arm"].map(last)]
    return kept, last, tables


OPTIONS = {
    "thresholds": [0.6, 0.7],
    "best_margin": 5.0,
    "best_margin_relative": 0.25,
    "min_faces": 20,
}


def analyse(scores: pd.DataFrame, seed: int, resamples: int, claims: bool = True) -> dict:
    """The final analysis: ``aggregate.build``'s verdict (``top_arm``, ``chosen_epochs``,
    ``claims``); without ``claims`` only the steps that pick the top arm (the summary's chosen
    epochs, then :func:`dreamgrid.inference.top_arm` on the selection half, as
    ``inference.analyse`` does), skipping the planned family whose simultaneous intervals
    cost most of a study's time. ``claims`` is then None."""
    typed = scoretable._normalise(scores, "bench_adaptive")
    if claims:
        result = aggregate.build(
            typed, resamples=resamples, seed=seed, exploratory=False, **OPTIONS
        )
        return result["verdict"]
    summary = summarize(typed, resamples=resamples, seed=seed, describe=False, **OPTIONS)
    best = summary.loc[summary["best"].astype(bool)]
    chosen = {str(a): int(e) for a, e in best[["arm", "epoch"]].itertuples(index=False)}
    selection, _ = inference.split_seeds(typed["seed"].unique(), seed)
    top = inference.top_arm(scoretable.seed_matrix(typed), chosen, selection)
    return {"top_arm": top, "chosen_epochs": chosen, "claims": None}


def claim_epochs(verdict: dict, view: str, arm: str) -> int | None:
    """The epoch of ``arm``'s checkpoint in a claim's view (chosen, or at equal steps)."""
    if view == "chosen":
        return verdict["chosen_epochs"].get(arm)
    steps = verdict.get("equal_steps")
    if steps is None:
        return None
    return int(steps) // (100 if "-noreg-" in arm else 200)


def false_claims(verdict: dict, params: dict[str, dict[str, float]]) -> int:
    """Claims the truth does not support at the checkpoints they compare: a pair claim whose
    stated worse checkpoint is truly no worse, a main-effect claim whose stated worse level's
    arms are truly no worse on average (interaction claims are counted false only when every
    arm has the same curve, where any claim is false)."""
    same = all(p == next(iter(params.values())) for p in params.values())
    levels = {a["arm"]: a for a in arms()}

    def truth(arm: str, view: str) -> float:
        epoch = claim_epochs(verdict, view, arm)
        return math.nan if epoch is None else curve(params[arm], epoch)

    wrong = 0
    for c in verdict["claims"]:
        if c["kind"] == "pair":
            gap = truth(c["worse"], c["at"]) - truth(c["better"], c["at"])
        else:
            axis_w, _, level_w = c["worse"].partition("=")
            axis_b, _, level_b = c["better"].partition("=")
            if (
                axis_w != axis_b
                or c.get("within")
                or axis_w not in ("token", "regularization", "captions")
            ):
                wrong += same
                continue
            worse = [truth(a, c["at"]) for a in params if levels[a][axis_w] == level_w]
            better = [truth(a, c["at"]) for a in params if levels[a][axis_b] == level_b]
            gap = float(np.mean(worse) - np.mean(better))
        wrong += not gap > 1e-12
    return wrong


def share(count: int, total: int) -> dict[str, float]:
    rate = count / total if total else math.nan
    return {"rate": rate, "se": math.sqrt(rate * (1 - rate) / total) if total else math.nan}


def run_scenario(
    name: str,
    studies: int,
    n_seeds: int,
    n_epochs: int,
    resamples: int,
    search: dict,
    log: Path | None = None,
    claims: str = "null",
    compare_on: str = "all",
) -> dict:
    """``studies`` simulated studies of scenario ``name``; with ``log``, one JSON line per
    study is appended as it finishes."""
    scenario = SCENARIOS[name]
    rng = np.random.default_rng([2026, 18, sum(map(ord, name))])
    margin = float(search.get("margin", adaptive.MARGIN))
    with_claims = claims == "all" or scenario["layout"] == "null"
    counts = dict.fromkeys(("same", "equivalent", "full_right", "adaptive_right", "false_stop"), 0)
    counts.update(false_full=0, false_adaptive=0)
    used, seconds = [], []
    for index in range(studies):
        scores, params = simulate(scenario, rng, n_seeds, n_epochs)
        final = {a: curve(p, n_epochs) for a, p in params.items()}
        seed = int(rng.integers(2**31))
        start = time.perf_counter()
        full = analyse(scores, seed, resamples, with_claims)
        kept, last, _ = run_adaptive(scores, search, n_epochs, seed, resamples, compare_on)
        short = analyse(kept, seed, resamples, with_claims)
        seconds.append(time.perf_counter() - start)
        truly_best = min(final.values())
        wrongly_stopped = [
            a for a, e in last.items() if e < n_epochs and final[a] - truly_best <= margin
        ]
        fraction = sum(last.values()) / (len(last) * n_epochs)
        used.append(fraction)
        same = full["top_arm"] == short["top_arm"]
        # A different pick no worse than the full grid's (truly, at the last epoch, within
        # the margin): among arms that close, which one is top is a coin toss in both grids.
        equivalent = same or (
            short["top_arm"] is not None
            and full["top_arm"] is not None
            and final[short["top_arm"]] - final[full["top_arm"]] <= margin
        )
        bad_full = false_claims(full, params) if with_claims else 0
        bad_short = false_claims(short, params) if with_claims else 0
        counts["same"] += same
        counts["equivalent"] += equivalent
        counts["full_right"] += full["top_arm"] == min(final, key=final.get)
        counts["adaptive_right"] += short["top_arm"] == min(final, key=final.get)
        counts["false_stop"] += bool(wrongly_stopped)
        counts["false_full"] += bool(bad_full)
        counts["false_adaptive"] += bool(bad_short)
        if log is not None:
            line = {
                "scenario": name,
                "study": index,
                "full_top": full["top_arm"],
                "adaptive_top": short["top_arm"],
                "truly_best": min(final, key=final.get),
                "last_epochs": last,
                "epochs_used": fraction,
                "wrongly_stopped": wrongly_stopped,
                "false_claims_full": bad_full if with_claims else None,
                "false_claims_adaptive": bad_short if with_claims else None,
                "seconds": seconds[-1],
            }
            with log.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
    return {
        "studies": studies,
        "same_best": share(counts["same"], studies),
        "equivalent_best": share(counts["equivalent"], studies),
        "full_picks_truly_best": share(counts["full_right"], studies),
        "adaptive_picks_truly_best": share(counts["adaptive_right"], studies),
        "epochs_used": {
            "mean": float(np.mean(used)),
            "se": float(np.std(used, ddof=1) / math.sqrt(studies)) if studies > 1 else math.nan,
        },
        "false_stop": share(counts["false_stop"], studies),
        **(
            {
                "false_claim_full": share(counts["false_full"], studies),
                "false_claim_adaptive": share(counts["false_adaptive"], studies),
            }
            if with_claims
            else {}
        ),
        "seconds_per_study": float(np.mean(seconds)),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--looks", type=int, nargs="*", default=[], help="default: schema's")
    parser.add_argument("--margin", type=float, default=adaptive.MARGIN)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--spending", default="obrien_fleming")
    parser.add_argument("--no-extrapolate", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--log", type=Path, default=None, help="one JSON line per study")
    parser.add_argument(
        "--claims",
        choices=("null", "all"),
        default="null",
        help="run the verdict's planned family (claims) in the null scenario only, or in all",
    )
    parser.add_argument(
        "--compare-on",
        choices=("all", "estimation"),
        default="all",
        help="seeds of the looks' intervals (adaptive.decide's compare_on)",
    )
    args = parser.parse_args(argv)
    search = {
        "method": "successive_halving",
        "looks": args.looks,
        "margin": args.margin,
        "alpha": args.alpha,
        "spending": args.spending,
        "extrapolate": not args.no_extrapolate,
    }
    report = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "shape": {"arms": len(arms()), "epochs": args.epochs, "seeds": args.seeds},
        "search": {**search, "looks": adaptive.look_epochs(search, args.epochs)},
        "compare_on": args.compare_on,
        "resamples": args.resamples,
        "scenarios": {},
    }
    for name in args.scenarios:
        report["scenarios"][name] = run_scenario(
            name,
            args.studies,
            args.seeds,
            args.epochs,
            args.resamples,
            search,
            args.log,
            args.claims,
            args.compare_on,
        )
        print(name, json.dumps(report["scenarios"][name]), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
