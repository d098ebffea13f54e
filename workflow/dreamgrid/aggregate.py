"""Aggregate stage: the workflow step that chains score tables, summary, inference and verdict.

It reads every checkpoint's score table (:mod:`dreamgrid.scoretable`), summarizes each
checkpoint (:mod:`dreamgrid.summary`), runs the paired comparisons and factorial effects
(:mod:`dreamgrid.stats`), and writes the tables and summary.md (:mod:`dreamgrid.verdict`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from dreamgrid import baseline as baseline_mod
from dreamgrid import flexibility, stats, verdict
from dreamgrid.io import atomic_path
from dreamgrid.scoretable import _write_csv, check_score_metadata, collect_scores, group_columns
from dreamgrid.summary import summarize

log = logging.getLogger(__name__)


def comparisons_and_effects(
    scores: pd.DataFrame,
    summary: pd.DataFrame,
    arms: dict[str, dict[str, str]] | None = None,
    *,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paired arm comparisons and the factorial effects at equal steps and at best epochs."""
    options = {"seed": seed, "resamples": resamples, "confidence": confidence}
    comparisons = stats.compare_arms(scores, **options)
    axes = stats.arm_axes(sorted(scores["arm"].unique()), arms)
    frames = []
    extra = group_columns(scores)
    groups = scores.groupby(extra, sort=True) if extra else [((), scores)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        part = summary
        for column, value in zip(extra, key, strict=True):
            part = part.loc[part[column] == value]
        for view in ("equal_steps", "best"):
            chosen = stats.select_checkpoints(part, view)
            table = stats.factorial_effects(group, axes, chosen, view=view, **options)
            for column, value in zip(extra, key, strict=True):
                table[column] = value
            frames.append(table)
    frames = [f for f in frames if len(f)]
    effects = (
        pd.concat(frames, ignore_index=True)
        if frames
        else stats.factorial_effects(scores, axes.iloc[0:0], {})
    )
    return comparisons, effects


def run(
    score_files: Sequence[Path],
    thresholds: Sequence[float],
    best_within: float,
    out_scores: Path,
    out_summary: Path,
    out_markdown: Path,
    demo: bool,
    *,
    baseline: Path | None = None,
    arms: dict[str, dict[str, str]] | None = None,
    out_comparisons: Path | None = None,
    out_effects: Path | None = None,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
    alpha: float = 0.05,
    primary_model: str | None = None,
    prompt_sets: dict[str, str] | None = None,
    out_flexibility: Path | None = None,
    clip_files: Sequence[Path] = (),
    tokens: Mapping[str, str] | None = None,
    ranking: Path | None = None,
) -> pd.DataFrame:
    """Aggregate all checkpoints' scores.

    Args:
        score_files: per-checkpoint score tables from the score stage.
        thresholds: distance thresholds for the ``pct_below_*`` columns.
        best_within: margin in percentage points for the best epoch (see :func:`summarize`).
        out_scores: tidy table of all renders (TSV).
        out_summary: per-checkpoint summary (CSV).
        out_markdown: human summary (markdown) with the verdict.
        demo: start the markdown with a warning that demo numbers mean nothing.
        baseline: reference leave-one-out CSV (:func:`run_baseline`), for the verdict.
        arms: arm → {axis: level} for the factorial view (else parsed from the arm ids).
        out_comparisons: paired comparisons between arms (CSV), if wanted.
        out_effects: factorial main effects and interactions (CSV), if wanted.
        confidence, resamples, seed: bootstrap settings; alpha: significance level.
        primary_model: the face model the verdict reads (``score.model``).
        prompt_sets: the config's prompt sets (name -> template), for the likeness /
            class bleed / prompt following view (:mod:`dreamgrid.flexibility`).
        out_flexibility: that view as CSV, if wanted (needs ``prompt_sets``).
        clip_files: CLIPScore tables (:func:`dreamgrid.clip_score.run`); their mean per
            checkpoint and prompt set is appended to the summary as ``clip_score``.
        tokens: token name -> configured string (``axes.token``), for the tokens section.
        ranking: the token finder's ranking CSV, which names the pick of an ``auto`` token.

    Returns:
        The summary table.
    """
    scores = collect_scores(score_files)
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    summary = summarize(scores, thresholds=thresholds, best_within=best_within, **options)
    if clip_files:
        from dreamgrid import clip_score

        clip = clip_score.summarize(clip_files)
        summary = summary.merge(clip, on=["arm", "epoch", "prompt_set"], how="left")
    comparisons, effects = comparisons_and_effects(scores, summary, arms, **options)
    reference = baseline_mod.read_baseline(baseline)
    _write_csv(scores, Path(out_scores), sep="\t")
    _write_csv(summary, Path(out_summary))
    if out_comparisons is not None:
        _write_csv(comparisons, Path(out_comparisons))
    if out_effects is not None:
        _write_csv(effects, Path(out_effects))
    text = verdict.markdown(
        summary,
        scores,
        demo,
        best_within,
        comparisons=comparisons,
        effects=effects,
        baseline=reference,
        confidence=confidence,
        alpha=alpha,
        primary_model=primary_model,
        tokens=tokens,
        ranking=None if ranking is None else pd.read_csv(ranking),
        ranking_source=str(ranking),
    )
    if prompt_sets and "prompt_set" in summary.columns:
        flex = flexibility.table(summary, prompt_sets, best_within)
        if out_flexibility is not None:
            _write_csv(flex, Path(out_flexibility))
        if len(prompt_sets) > 1:
            text += "\n" + flexibility.markdown(flex, prompt_sets, best_within) + "\n"
    mismatches = check_score_metadata(score_files)
    if mismatches:
        text += "\n## Warnings\n\n" + "\n".join(f"- {m}" for m in mismatches) + "\n"
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if not scores["face_found"].any():
        log.warning("no face found in any of %d renders; the summary has no scores", len(scores))
    log.info("summarized %d checkpoints into %s", len(summary), out_summary)
    return summary
