"""Likeness against class bleed and prompt following: is a checkpoint over-trained?

Prompt sets play three parts: ``main`` measures likeness; an extra set whose template has no
``{token}`` (e.g. ``headshot photo of a {class}``) measures class bleed — its renders should
stay *far* from the subject, and a rising share below the threshold means the subject leaks
into the class; an extra set with the token (``oil painting of {token} {class}``) measures
prompt following — the subject should still appear (face rate) and still look alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from dreamgrid.prompts import MAIN_PROMPT_SET
from dreamgrid.scoretable import share_columns

KINDS = ("main", "bleed", "prompt")


def kinds(prompt_sets: Mapping[str, str]) -> dict[str, str]:
    """Prompt set name -> ``main``, ``bleed`` (no token) or ``prompt`` (token, other prompt)."""
    return {
        name: "main"
        if name == MAIN_PROMPT_SET
        else ("prompt" if "{token}" in template else "bleed")
        for name, template in prompt_sets.items()
    }


def table(
    summary: pd.DataFrame, prompt_sets: Mapping[str, str], best_within: float
) -> pd.DataFrame:
    """One row per checkpoint (and face model): likeness, class bleed, prompt following.

    Args:
        summary: from :func:`dreamgrid.summary.summarize`, with a ``prompt_set`` column.
        prompt_sets: the config's prompt sets (name -> template), ``main`` included.
        best_within: margin in percentage points (``score.best_within``).

    Returns:
        ``arm, epoch, [model], [steps], likeness_average, likeness_pct`` (main set: average
        distance and % below the lowest threshold), ``bleed_average, bleed_pct`` (class-bleed
        sets, averaged over them: lower distance / higher share = more leak),
        ``prompts_face_rate, prompts_average`` (other prompts with the token, averaged; and
        ``prompts_clip``, their mean CLIPScore, when the summary has ``clip_score``), and
        ``tradeoff_best``: per arm the earliest epoch whose likeness share is within
        ``best_within`` points of the best among epochs that are themselves within
        ``best_within`` points of the arm's least bleed and best prompt face rate.
        Columns of a part without prompt sets are NaN.
    """
    pct = share_columns(summary.columns)[0]
    part = summary["prompt_set"].map(kinds(prompt_sets))
    keys = ["arm", "epoch", *(["model"] if "model" in summary.columns else [])]
    rows = []
    for key, group in summary.groupby(keys, sort=True):
        kind = part.loc[group.index]
        main, bleed, prompt = (group.loc[kind == k] for k in KINDS)
        row = dict(zip(keys, key, strict=True))
        if "steps" in group.columns:
            row["steps"] = int(group["steps"].iloc[0])
        row["likeness_average"] = _mean(main["average"])
        row["likeness_pct"] = _mean(main[pct])
        row["bleed_average"] = _mean(bleed["average"])
        row["bleed_pct"] = _mean(bleed[pct])
        row["prompts_face_rate"] = _mean(prompt["face_rate"])
        row["prompts_average"] = _mean(prompt["average"])
        if "clip_score" in group.columns:
            row["prompts_clip"] = _mean(prompt["clip_score"])
        rows.append(row)
    columns = keys + (["steps"] if "steps" in summary.columns else [])
    columns += ["likeness_average", "likeness_pct", "bleed_average", "bleed_pct"]
    columns += ["prompts_face_rate", "prompts_average"]
    columns += ["prompts_clip"] if "clip_score" in summary.columns else []
    flex = pd.DataFrame(rows, columns=columns)
    flex["tradeoff_best"] = False
    for _, group in flex.groupby([k for k in keys if k != "epoch"], sort=False):
        ok = pd.Series(True, index=group.index)
        if group["bleed_pct"].notna().any():
            ok &= group["bleed_pct"] <= group["bleed_pct"].min() + best_within + 1e-9
        if group["prompts_face_rate"].notna().any():
            rate = 100 * group["prompts_face_rate"]
            ok &= rate >= rate.max() - best_within - 1e-9
        likeness = group.loc[ok, "likeness_pct"]
        if likeness.notna().any():
            near = likeness.loc[likeness >= likeness.max() - best_within - 1e-9]
            flex.loc[group.loc[near.index, "epoch"].idxmin(), "tradeoff_best"] = True
    return flex


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def markdown(flex: pd.DataFrame, prompt_sets: Mapping[str, str], best_within: float) -> str:
    """The report's trade-off section: what each part means, the table, the chosen epochs."""
    parts = kinds(prompt_sets)
    bleed = [n for n, k in parts.items() if k == "bleed"]
    prompt = [n for n, k in parts.items() if k == "prompt"]
    lines = ["## Likeness, class bleed and prompt following", ""]
    lines.append(
        "Likeness is prompt set `main`. "
        + (
            f"Class bleed is {', '.join(f'`{n}`' for n in bleed)} (no token: those renders "
            "should stay far from the subject; `bleed_pct` rising means the subject leaks "
            "into the class). "
            if bleed
            else "No class-bleed set (a prompt set without {token}) is configured. "
        )
        + (
            f"Prompt following is {', '.join(f'`{n}`' for n in prompt)} (the subject should "
            "still appear and look alike)."
            if prompt
            else "No prompt-following set (another prompt with {token}) is configured."
        )
    )
    lines += [
        "",
        (
            f"`tradeoff_best` marks per arm the earliest epoch within {best_within:g} points "
            "of the best likeness share among epochs that are also within that margin of the "
            "arm's least bleed and best prompt face rate: the over-training-aware choice."
        ),
        "",
    ]
    header = "| " + " | ".join(flex.columns) + " |"
    lines += [header, "|" + "|".join("---" for _ in flex.columns) + "|"]
    for row in flex.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, (float, np.floating)):
                cells.append("n/a" if math.isnan(value) else f"{value:.3f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
