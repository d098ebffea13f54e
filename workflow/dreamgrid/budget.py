"""What a grid costs: arms, training epochs, renders and GPU-hours, before and during the run.

Before the run (:func:`estimate`): the plan's counts are exact (steps per epoch by Kohya's
arithmetic, :func:`dreamgrid.train.data.steps_per_epoch`; renders from ``sample``), the
rates are ESTIMATES from published numbers for common cards (:data:`CARDS`, each cited),
not measured by dreamgrid: no GPU has run it yet (benchmarks/RESULTS.md).

During the run (:func:`measured`): Snakemake's benchmark files of the epochs and checkpoints
already finished (``results/benchmarks/train_dreambooth/<arm>/epoch-<e>.tsv``,
``sample_checkpoint/<arm>/epoch-<e>/<set>/shard-<k>.tsv``, column ``s``) give seconds per
training step and per render on this machine, per base-model family; the rest of the grid is
extrapolated from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pandas as pd

# The run-time half lives in gpu_time (the aggregation's env imports no grid); re-exported.
from dreamgrid.gpu_time import MEASURED_COLUMNS, PLAN_COLUMNS, measured, write_measured  # noqa: F401

#: Rates are per family at its base resolution (SD 1.5 512 px; SDXL and FLUX.1 1024 px) and
#: scale with the pixels of the resolution actually set.
BASE_SIDE = {"sd15": 512, "sdxl": 1024, "flux": 1024}


@dataclass(frozen=True)
class Card:
    """Published SD 1.5 speeds of one GPU (iterations per second of the denoising loop)."""

    name: str
    #: txt2img at batch 1 and batch 4 (fp16, 512 px, CFG, torch 2.0 SDPA, no compile).
    sd15_batch1: float
    sd15_batch4: float


#: diffusers' docs, docs/source/en/optimization/torch2.0.md, "Benchmark" tables (SD 1.5
#: txt2img, fp16, 512 px, torch 2.0, no compile; iterations per second of the whole batch).
SAMPLE_SOURCE = "diffusers docs optimization/torch2.0 (SD 1.5 txt2img, fp16, 512 px)"
CARDS = {
    "a100": Card("A100", 21.66, 11.6),
    "rtx4090": Card("RTX 4090", 40.5, 12.62),
    "rtx3090": Card("RTX 3090", 22.56, 6.46),
    "t4": Card("T4", 6.9, 1.79),
}
#: The card ``dreamgrid check`` assumes unless told (the README's 24 GB workstation card).
DEFAULT_CARD = "rtx3090"

#: Full SD 1.x DreamBooth step on a T4: fp16, batch 1, gradient checkpointing, 8-bit Adam,
#: 0.93 it/s (ShivamShrirao/diffusers examples/dreambooth/README.md, the T4 table).
T4_TRAIN_STEPS_PER_S = 0.93
TRAIN_SOURCE = (
    "ShivamShrirao/diffusers dreambooth README (T4, full SD 1.x, fp16, batch 1: 0.93 it/s), "
    "scaled to the card by the diffusers txt2img batch-1 speed ratio"
)

#: A family's denoiser step over SD 1.5's, each at its base resolution. sdxl: diffusers'
#: docs tutorials/fast_diffusion.md, SDXL on an A100, bf16 + SDPA, 30 steps at 1024 px:
#: 3.31 s, i.e. 0.110 s/step against SD 1.5's 1/21.66 = 0.046 s/step on the same card (2.39x).
#: flux: no published number used; DERIVED as SDXL x 2.3 (FLUX.1's 11.9B parameters over
#: SDXL UNet's 2.6B, halved: FLUX.1-dev is guidance-distilled, one forward per step, SDXL two).
FAMILY_FACTOR = {"sd15": 1.0, "sdxl": 2.39, "flux": 2.39 * 2.3}

#: Seconds a job spends outside its loop (README "What the study costs": ~3 h over 216
#: training jobs; ~15 s to load a checkpoint per sampling job). Assumptions, not measured.
TRAIN_JOB_OVERHEAD_S = 50.0
SAMPLE_JOB_OVERHEAD_S = 15.0

#: Detect and embed one render, one CPU process, Dlib (benchmarks/RESULTS.md, 2026-11-26,
#: measured on the development machine): scoring runs on CPUs beside the GPU jobs.
SCORE_S_PER_RENDER = 0.389
SCORE_SOURCE = "benchmarks/RESULTS.md 2026-11-26 (Dlib, one CPU process)"


def plan(config: dict[str, Any], grid: Any = None) -> pd.DataFrame:
    """One row per arm (:data:`PLAN_COLUMNS`): what it trains and renders per epoch.

    ``epochs`` are the epochs the arm renders (with an adaptive search, as far as its looks
    let it); ``train_epochs`` those it trains itself: 0 for an arm that renders another arm's
    training (a ``sample.*`` settings level), and as far as the farthest arm rendering it for
    one that trains.

    ``steps_per_epoch`` is Kohya's count (images x repeats / batch, doubled with
    regularization in ``kohya`` reg_mode, twice the passes under ``match_steps``) on the
    center-cropped data; 0 when the training photos are not there to count.
    """
    from dreamgrid.dag import Grid, count_images
    from dreamgrid.train.data import steps_per_epoch

    grid = grid or Grid(config)
    images = count_images(config["subject"]["train_images"])
    sets = list(grid.prompt_sets)
    rows = []
    for arm_id, arm in grid.arms.items():
        view = grid.view(arm_id)
        training, sample = view["training"], view["sample"]
        steps = 0
        if images:
            steps = steps_per_epoch(
                images,
                training["repeats"],
                training["batch_size"],
                arm.regularization != "none",
                training["reg_mode"],
                grid.get_train_passes(SimpleNamespace(arm=arm_id)),
            )
        rows.append(
            {
                "arm": arm_id,
                "family": grid.family(arm.base_model),
                "method": arm.method,
                "epochs": len(grid.arm_epochs(arm_id)),
                "train_epochs": (
                    len(grid.trained_epochs(arm_id)) if grid.trainer_of(arm_id) == arm_id else 0
                ),
                "steps_per_epoch": steps,
                "train_side": training["resolution"],
                "renders_per_checkpoint": sum(grid.prompt_set_count(s) for s in sets),
                "shards_per_checkpoint": sum(len(grid.shard_ranges(s)) for s in sets),
                "sample_steps": sample["steps"],
                "sample_pixels": sample["width"] * sample["height"],
            }
        )
    return pd.DataFrame(rows, columns=list(PLAN_COLUMNS))


def _scale(family: str, pixels: float) -> float:
    return FAMILY_FACTOR[family] * pixels / BASE_SIDE[family] ** 2


def seconds_per_step(card: Card, family: str, side: int) -> float:
    """A training step (batch 1 as in the source) of ``family`` at ``side`` px on ``card``."""
    t4 = CARDS["t4"].sd15_batch1
    return (1 / T4_TRAIN_STEPS_PER_S) * (t4 / card.sd15_batch1) * _scale(family, side * side)


def seconds_per_render(card: Card, family: str, steps: int, pixels: int) -> float:
    """One render of ``steps`` denoising steps (batched as in the source: 4 a call)."""
    return steps / (4 * card.sd15_batch4) * _scale(family, pixels)


def estimate(
    config: dict[str, Any], table: pd.DataFrame, card: str = DEFAULT_CARD
) -> dict[str, Any]:
    """The grid's counts and estimated hours on ``card`` (a key of :data:`CARDS`).

    Returns:
        ``arms``, ``epochs`` (training epochs: the arms that train x epochs), ``steps``
        (optimizer steps),
        ``renders``, ``train_hours``, ``sample_hours`` (GPU), ``score_cpu_hours`` (CPU core
        hours), ``adaptive`` (successive halving: the counts are the most it trains) and
        ``card``.
    """
    spec = CARDS[card]
    epochs, trained = table["epochs"], table["train_epochs"]
    steps = table["steps_per_epoch"] * trained
    renders = table["renders_per_checkpoint"] * epochs
    train = sum(
        n * seconds_per_step(spec, f, side) + e * TRAIN_JOB_OVERHEAD_S
        for n, e, f, side in zip(steps, trained, table["family"], table["train_side"], strict=True)
    )
    sample = sum(
        r * seconds_per_render(spec, f, s, px) + e * k * SAMPLE_JOB_OVERHEAD_S
        for r, e, k, f, s, px in zip(
            renders,
            epochs,
            table["shards_per_checkpoint"],
            table["family"],
            table["sample_steps"],
            table["sample_pixels"],
            strict=True,
        )
    )
    models = 1 + len(config["score"].get("models") or [])
    return {
        "arms": len(table),
        "epochs": int(trained.sum()),
        "steps": int(steps.sum()),
        "steps_known": bool(len(table)) and bool((table["steps_per_epoch"] > 0).all()),
        "renders": int(renders.sum()),
        "train_hours": train / 3600,
        "sample_hours": sample / 3600,
        "score_cpu_hours": int(renders.sum()) * models * SCORE_S_PER_RENDER / 3600,
        "adaptive": config.get("search", {}).get("method", "full") != "full",
        "card": spec.name,
        "tiny": _all_tiny(config),
    }


def _all_tiny(config: dict[str, Any]) -> bool:
    from dreamgrid.config import is_demo

    return is_demo(config)


def lines(est: Mapping[str, Any], config: dict[str, Any]) -> list[str]:
    """What ``dreamgrid check`` prints about the budget."""
    sample = config["sample"]
    sets = 1 + len(sample.get("prompt_sets") or {})
    per_checkpoint = f"{sample['count']}"
    if sets > 1:
        extra = sample.get("prompt_sets_count") or sample["count"]
        per_checkpoint += f" + {sets - 1} prompt sets x {extra}"
    out = [
        f"budget: {est['arms']} arms; {est['epochs']} training epochs (training arms x epochs"
        + (
            "; search.method successive_halving: the most the adaptive grid trains, it stops "
            "losing arms at the looks)"
            if est["adaptive"]
            else ")"
        )
        + f"; {est['renders']} renders (arms x epochs x ({per_checkpoint}))",
    ]
    total = est["train_hours"] + est["sample_hours"]
    steps = f"{est['steps']} optimizer steps" if est["steps_known"] else "steps unknown"
    if not est["steps_known"]:
        steps += " (subject.train_images not found: training hours count job overhead only)"
    out.append(
        f"GPU-hours on one {est['card']}: ~{total:.1f} (training ~{est['train_hours']:.1f}, "
        f"{steps}; sampling ~{est['sample_hours']:.1f}); scoring ~{est['score_cpu_hours']:.1f} "
        "CPU core-hours beside them"
        + ("; the tiny models run far faster than these full-size rates" if est["tiny"] else "")
    )
    out.append(
        f"  estimate, not measured here (no GPU has run dreamgrid yet): rates from {SAMPLE_SOURCE}; "
        f"{TRAIN_SOURCE}; SDXL from diffusers docs tutorials/fast_diffusion, FLUX.1 derived "
        f"(dreamgrid/budget.py); scoring {SCORE_SOURCE}. Other cards: --gpu " + ", ".join(CARDS)
    )
    return out


# ---- measured by the run -------------------------------------------------------------------
def measured_lines(frame: pd.DataFrame | None) -> list[str]:
    """What ``dreamgrid check`` prints about the measured GPU time (nothing before any job)."""
    if frame is None:
        return []
    out = ["measured by this run (results/benchmarks; finished jobs, the rest extrapolated):"]
    for row in frame.itertuples(index=False):
        if not row.jobs_done:
            out.append(f"  {row.stage} ({row.family}): nothing finished yet")
            continue
        out.append(
            f"  {row.stage} ({row.family}): {row.jobs_done}/{row.jobs_total} jobs, "
            f"{row.hours_done:.2f} h done, ~{row.hours_left:.2f} h left "
            f"({row.seconds_per_unit:.3g} s per {row.unit})"
        )
    done = frame["hours_done"].sum()
    left = frame["hours_left"].sum(min_count=1)
    out.append(f"  GPU-hours: {done:.2f} done, ~{left:.2f} left")
    return out
