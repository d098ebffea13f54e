"""The adaptive grid in the workflow: each look's decision file, all looks' table, and the
"Adaptive search" section of summary.md.

The decision rule itself is :mod:`dreamgrid.adaptive`; this module only reads the score
tables it needs, writes its tables, and says in words what they mean.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dreamgrid import adaptive, scoretable
from dreamgrid.io import atomic_path
from dreamgrid.prompts import MAIN_PROMPT_SET

log = logging.getLogger(__name__)


def decide_look(
    score_files: Sequence[Path],
    *,
    epoch: int,
    active: Sequence[str],
    search: Mapping[str, Any],
    out: Path,
) -> pd.DataFrame:
    """One look (the workflow's ``decide_look`` checkpoint): the active arms' main-prompt
    scores of every epoch up to ``epoch``, of the primary face model (``search["model"]``), through
    :func:`dreamgrid.adaptive.decide`, written as TSV.

    Args:
        score_files: the active arms' score tables of every epoch up to ``epoch``.
        active: arms still training before this look.
        search: the config's ``search`` section plus ``epochs`` (training.epochs), ``model``
            (score.model), ``seed``, ``resamples`` and ``min_faces`` (report section).
    """
    scores = scoretable.collect_scores(score_files)
    scores = scoretable.primary(scores, search["model"], MAIN_PROMPT_SET)
    table = adaptive.decide(
        scores,
        epoch=epoch,
        active=list(active),
        search=search,
        epochs=int(search["epochs"]),
        seed=int(search["seed"]),
        resamples=int(search["resamples"]),
        min_faces=int(search["min_faces"]),
    )
    with atomic_path(Path(out)) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    stopped = [a for a in active if a not in adaptive.still_running(table)]
    log.info("look at epoch %d: %d arms, stopped %s", epoch, len(active), stopped or "none")
    return table


def read_decisions(look_files: Sequence[Path]) -> pd.DataFrame:
    """Every look's table, in look order (an empty table with the columns when none)."""
    text = dict.fromkeys(("arm", "decision", "best_arm", "method", "reason"), str)
    frames = [
        pd.read_csv(
            p,
            sep="\t",
            dtype=text,
            keep_default_na=False,
            na_values={c: [""] for c in adaptive.DECISION_COLUMNS if c not in text},
        )
        for p in look_files
    ]
    if not frames:
        return pd.DataFrame(columns=list(adaptive.DECISION_COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["look", "arm"], kind="stable", ignore_index=True)


def collect_decisions(look_files: Sequence[Path], out: Path) -> pd.DataFrame:
    """``results/search/decisions.tsv``: every look's table, one after the other."""
    table = read_decisions(look_files)
    with atomic_path(Path(out)) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


def arm_outcomes(decisions: pd.DataFrame, arms: Sequence[str], epochs: int) -> pd.DataFrame:
    """Per arm: the look epoch it stopped at (NaN: ran to the end), the row it stopped on,
    and the training epochs it used."""
    stops = decisions.loc[decisions["decision"] == adaptive.STOP]
    rows = []
    for arm in arms:
        row = stops.loc[stops["arm"] == arm]
        stop = row.iloc[0] if len(row) else None
        rows.append(
            {
                "arm": arm,
                "stopped_at": math.nan if stop is None else int(stop["epoch"]),
                "best_arm": "" if stop is None else str(stop["best_arm"]),
                "estimate": math.nan if stop is None else float(stop["estimate"]),
                "ci_low": math.nan if stop is None else float(stop["ci_low"]),
                "ci_high": math.nan if stop is None else float(stop["ci_high"]),
                "confidence": math.nan if stop is None else float(stop["confidence"]),
                "epochs_used": epochs if stop is None else int(stop["epoch"]),
            }
        )
    return pd.DataFrame(rows)


def markdown(decisions: pd.DataFrame, arms: Sequence[str], epochs: int) -> str:
    """summary.md's "Adaptive search" section: where and why each arm stopped, and the
    training epochs used against the full grid (numbers from ``results/search/decisions.tsv``)."""
    outcome = arm_outcomes(decisions, arms, epochs)
    looks = sorted({int(e) for e in decisions["epoch"]}) if len(decisions) else []
    used, full = int(outcome["epochs_used"].sum()), epochs * len(arms)
    saved = 1.0 - used / full if full else 0.0
    lines = [
        "## Adaptive search",
        "",
        (
            f"successive halving, looks after epoch {', '.join(map(str, looks)) or '(none)'} "
            f"of {epochs}; each look's intervals of (arm - best) mean distance are in "
            "`results/search/decisions.tsv`. Each arm is compared at its best epoch so far, "
            "and stops when the whole interval lies beyond the margin plus its credit for a gap "
            "still closing (columns `arm_epoch`, `best_epoch`, `margin`, `credit`)."
        ),
        "",
        "| arm | stopped | why | training epochs |",
        "|---|---|---|---|",
    ]
    for row in outcome.itertuples(index=False):
        if math.isnan(row.stopped_at):
            where, why = "ran to the end", ""
        else:
            where = f"look at epoch {int(row.stopped_at)}"
            why = (
                f"worse than {row.best_arm} by {row.estimate:.4f} "
                f"({100 * row.confidence:.4g}% interval {row.ci_low:.4f} to {row.ci_high:.4f})"
            )
        lines.append(f"| {row.arm} | {where} | {why} | {row.epochs_used} of {epochs} |")
    lines += [
        "",
        (
            f"Training epochs used: {used} of {full} in the full grid ({100 * saved:.0f}% "
            "saved). Stopped arms keep their checkpoints and scores; the tables above compare "
            "them at the epochs they reached."
        ),
        "",
    ]
    return "\n".join(lines)
