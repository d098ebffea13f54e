"""GPU time measured by the run: Snakemake's benchmark files of the finished jobs, per stage
and family, with the rest extrapolated (:mod:`dreamgrid.budget` plans and estimates; this
part runs in the aggregation's env, so it imports neither the grid nor the trainer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from dreamgrid.paths import RESULTS

PLAN_COLUMNS = (
    "arm",
    "family",
    "method",
    "epochs",
    "train_epochs",
    "steps_per_epoch",
    "train_side",
    "renders_per_checkpoint",
    "shards_per_checkpoint",
    "sample_steps",
    "sample_pixels",
)

MEASURED_COLUMNS = (
    "stage",
    "family",
    "jobs_done",
    "jobs_total",
    "hours_done",
    "hours_left",
    "hours_total",
    "seconds_per_unit",
    "unit",
)


def _seconds(path: Path) -> float:
    """Wall-clock seconds of one job from Snakemake's benchmark TSV (mean over repeats)."""
    return float(pd.read_csv(path, sep="\t")["s"].mean())


def measured(table: pd.DataFrame, root: str | Path = RESULTS) -> pd.DataFrame | None:
    """GPU-hours done and left per stage and family, from the benchmark files of the jobs that
    finished (:data:`MEASURED_COLUMNS`; None when none has).

    Training: seconds per optimizer step over the finished epochs (job overhead included),
    times the steps of the epochs left. Sampling: seconds per render over the checkpoints
    whose every shard finished, times the renders left. A family with nothing finished yet
    has NaN hours left.
    """
    bench = Path(root) / "benchmarks"
    rows = []
    for family, arms in table.groupby("family", sort=True):
        done = {"training": [0, 0.0, 0], "sampling": [0, 0.0, 0]}  # jobs, seconds, units
        total = {"training": [0, 0], "sampling": [0, 0]}  # jobs, units
        for arm in arms.itertuples(index=False):
            for epoch in range(1, arm.train_epochs + 1):
                total["training"][0] += 1
                total["training"][1] += arm.steps_per_epoch
                path = bench / "train_dreambooth" / arm.arm / f"epoch-{epoch}.tsv"
                if path.is_file():
                    done["training"][0] += 1
                    done["training"][1] += _seconds(path)
                    done["training"][2] += arm.steps_per_epoch
            for epoch in range(1, arm.epochs + 1):
                total["sampling"][0] += 1
                total["sampling"][1] += arm.renders_per_checkpoint
                shards = sorted(
                    (bench / "sample_checkpoint" / arm.arm / f"epoch-{epoch}").glob("*/shard-*.tsv")
                )
                if len(shards) >= arm.shards_per_checkpoint:
                    done["sampling"][0] += 1
                    done["sampling"][1] += sum(_seconds(p) for p in shards)
                    done["sampling"][2] += arm.renders_per_checkpoint
        for stage, unit in (("training", "step"), ("sampling", "render")):
            jobs, seconds, units = done[stage]
            rate = seconds / units if units else math.nan
            left = (total[stage][1] - units) * rate if units else math.nan
            rows.append(
                {
                    "stage": stage,
                    "family": family,
                    "jobs_done": jobs,
                    "jobs_total": total[stage][0],
                    "hours_done": seconds / 3600,
                    "hours_left": left / 3600,
                    "hours_total": (seconds + left) / 3600,
                    "seconds_per_unit": rate,
                    "unit": unit,
                }
            )
    out = pd.DataFrame(rows, columns=list(MEASURED_COLUMNS))
    return out if out["jobs_done"].sum() else None


def write_measured(
    table: pd.DataFrame | list[dict[str, Any]], out: str | Path, root: str | Path = RESULTS
) -> pd.DataFrame:
    """The measured table as CSV (the report's GPU time table; ``table`` as :func:`plan`
    returns it, or its records; ``root`` holds ``benchmarks/``); before any finished job,
    the header alone."""
    frame = measured(pd.DataFrame(table, columns=list(PLAN_COLUMNS)), root)
    if frame is None:
        frame = pd.DataFrame(columns=list(MEASURED_COLUMNS))
    frame.to_csv(out, index=False)
    return frame
