"""Aggregate stage: the workflow step that chains score tables, summary, inference and verdict.

It reads every checkpoint's score table (:mod:`dreamgrid.scoretable`), summarizes each
checkpoint (:mod:`dreamgrid.summary`), runs the paired comparisons and factorial effects
(:mod:`dreamgrid.stats`), and writes the tables and summary.md (:mod:`dreamgrid.verdict`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dreamgrid import baseline as baseline_mod
from dreamgrid import flexibility, inference, scoretable, stats, verdict
from dreamgrid.io import atomic_path
from dreamgrid.scoretable import _write_csv, check_score_metadata, collect_scores
from dreamgrid.summary import summarize

log = logging.getLogger(__name__)


def build(
    scores: pd.DataFrame,
    *,
    thresholds: Sequence[float],
    best_margin: float,
    best_margin_relative: float,
    min_faces: int,
    demo: bool = False,
    arms: Mapping[str, Mapping[str, str]] | None = None,
    baseline: pd.DataFrame | None = None,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
    primary_model: str | None = None,
    tokens: Mapping[str, str] | None = None,
    ranking: pd.DataFrame | None = None,
    ranking_source: str = "ranking.csv",
    clip: pd.DataFrame | None = None,
    exploratory: bool = True,
    memorization: pd.DataFrame | None = None,
) -> dict[str, object]:
    """Summary, inference and verdict of typed scores, in memory.

    ``exploratory=False`` leaves out what makes no claim (the all-pairs table, each
    checkpoint's average interval, ``best_not_worse``); the calibration benchmark uses it.

    With arms on several base models (``arms``' or the score table's ``base_model``), the
    summary gains a ``base_model`` column after ``arm``, and the planned family the effects
    within each base model (:mod:`dreamgrid.inference`).

    Returns:
        ``summary``, ``comparisons``, ``effects``, ``power`` (DataFrames), ``verdict`` (the
        ``verdict.json`` object or list) and ``markdown`` (summary.md text).
    """
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    summary = summarize(
        scores,
        thresholds=thresholds,
        best_margin=best_margin,
        best_margin_relative=best_margin_relative,
        min_faces=min_faces,
        describe=exploratory,
        **options,
    )
    bases = inference.base_models(arms if arms is not None else inference.axes_from_scores(scores))
    if bases:  # beside the arm, for the tables, summary.md and the figures' facets
        summary.insert(1, scoretable.BASE_MODEL, summary["arm"].map(bases))
    if clip is not None:
        summary = summary.merge(clip, on=["arm", "epoch", "prompt_set"], how="left")
    replicates = scoretable.replicates(scores)
    comparisons, effects, decisions = inference.analyse(
        scores, summary, arms, exploratory=exploratory, **options
    )
    axes = inference.arm_axes(
        sorted(scores["arm"].unique()),
        arms if arms is not None else inference.axes_from_scores(scores),
    )
    text = verdict.markdown(
        summary,
        scores,
        demo,
        baseline_arm=inference.baseline_arm(axes),
        comparisons=comparisons,
        effects=effects,
        decisions=decisions,
        baseline=baseline,
        confidence=confidence,
        best_margin=best_margin,
        best_margin_relative=best_margin_relative,
        min_faces=min_faces,
        replicates=replicates,
        primary_model=primary_model,
        tokens=tokens,
        ranking=ranking,
        ranking_source=ranking_source,
        memorization=memorization,
    )
    obj = verdict.verdict_objects(
        summary,
        effects,
        decisions,
        replicates=replicates,
        best_margin=best_margin,
        confidence=confidence,
    )
    power = verdict.headline_power(summary, scores, effects, decisions, primary_model, confidence)
    return {
        "summary": summary,
        "comparisons": comparisons,
        "effects": effects,
        "power": verdict.power_table(power),
        "verdict": obj,
        "markdown": text,
    }


def by_recipe(
    scores: pd.DataFrame,
    clip: pd.DataFrame | None,
    arms: Mapping[str, Mapping[str, object]] | None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict | None]:
    """With training replicates (``arms`` naming each arm's ``recipe`` and ``replicate``):
    scores with ``arm`` = the recipe and a ``replicate`` column, CLIP means per recipe, and
    the recipes' axes. Without: everything as given."""
    if not arms or not any("recipe" in v for v in arms.values()):
        return scores, clip, None if arms is None else dict(arms)
    recipe = {a: str(v["recipe"]) for a, v in arms.items()}
    replicate = {a: int(v["replicate"]) for a, v in arms.items()}
    scores = scores.assign(
        replicate=scores["arm"].map(replicate).fillna(1).astype(int),
        arm=scores["arm"].map(lambda a: recipe.get(a, a)),
    )
    if clip is not None:
        clip = clip.assign(arm=clip["arm"].map(lambda a: recipe.get(a, a)))
        keys = [c for c in ("arm", "epoch", "prompt_set") if c in clip.columns]
        clip = clip.groupby(keys, as_index=False).mean(numeric_only=True)
    axes = {
        recipe[a]: {k: v for k, v in levels.items() if k not in ("recipe", "replicate")}
        for a, levels in arms.items()
    }
    return scores, clip, axes


def write_json(obj: object, path: Path) -> None:
    """``obj`` as indented JSON (NaN written as null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_plain(obj), indent=2) + "\n", encoding="utf-8")


def _plain(obj: object) -> object:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def aggregate_scores(
    score_files: Sequence[Path],
    thresholds: Sequence[float],
    best_margin: float,
    out_scores: Path,
    out_summary: Path,
    out_markdown: Path,
    demo: bool,
    *,
    best_margin_relative: float = stats.BEST_MARGIN_RELATIVE,
    min_faces: int = stats.MIN_FACES,
    baseline: Path | None = None,
    arms: dict[str, dict[str, str]] | None = None,
    out_comparisons: Path | None = None,
    out_effects: Path | None = None,
    out_verdict: Path | None = None,
    out_power: Path | None = None,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
    primary_model: str | None = None,
    prompt_sets: dict[str, str] | None = None,
    out_flexibility: Path | None = None,
    clip_files: Sequence[Path] = (),
    tokens: Mapping[str, str] | None = None,
    ranking: Path | None = None,
    warnings: Sequence[str] = (),
    memorization: Path | None = None,
    decisions: Path | None = None,
) -> pd.DataFrame:
    """Aggregate all checkpoints' scores (the workflow's ``aggregate_scores`` step).

    Args:
        score_files: per-checkpoint score tables from the score stage.
        thresholds: distance thresholds for the ``pct_below_*`` columns.
        best_margin, best_margin_relative, min_faces: the chosen-epoch rule
            (:func:`dreamgrid.summary.summarize`).
        out_scores: tidy table of all renders (TSV).
        out_summary: per-checkpoint summary (CSV).
        out_markdown: human summary (markdown) with the verdict.
        demo: start the markdown with a warning that demo numbers mean nothing.
        baseline: the real-photos baseline CSV (:func:`dreamgrid.baseline.reference_baseline`).
        arms: arm -> {axis: level} for the factorial contrasts (else the score tables'
            axis columns).
        out_comparisons: the exploratory paired comparisons (CSV), if wanted.
        out_effects: the planned contrasts (CSV), if wanted.
        out_verdict: ``verdict.json``, if wanted.
        out_power: the summary's power sentence as a table (``power.csv``), if wanted.
        confidence, resamples, seed: interval and resampling settings.
        primary_model: the face model the verdict reads (``score.model``).
        prompt_sets: the config's prompt sets (name -> template), for the likeness /
            class bleed / prompt following view (:mod:`dreamgrid.flexibility`).
        out_flexibility: that view as CSV, if wanted (needs ``prompt_sets``).
        clip_files: CLIPScore tables (:func:`dreamgrid.clip_score.run`); their mean per
            checkpoint and prompt set is appended to the summary as ``clip_score``.
        tokens: token name -> configured string (``axes.token``), for the tokens section.
        ranking: the token finder's ranking CSV, which names the pick of an ``auto`` token.
        warnings: sentences about the config for the summary's Warnings section (e.g.
            thresholds far above the face model's own).
        memorization: the memorization table (:mod:`dreamgrid.memorization`), for its
            section of summary.md.
        decisions: the adaptive search's decisions (``results/search/decisions.tsv``), for
            the "Adaptive search" section (the full grid's epochs: the last scored, which
            the best arm always reaches).

    Returns:
        The summary table.
    """
    scores = collect_scores(score_files)
    arm_ids = list(arms) if arms else list(dict.fromkeys(scores["arm"].astype(str)))
    clip = None
    if clip_files:
        from dreamgrid import clip_score

        clip = clip_score.summarize(clip_files)
    scores, clip, arms = by_recipe(scores, clip, arms)
    result = build(
        scores,
        thresholds=thresholds,
        best_margin=best_margin,
        best_margin_relative=best_margin_relative,
        min_faces=min_faces,
        demo=demo,
        arms=arms,
        baseline=baseline_mod.read_baseline(baseline),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        primary_model=primary_model,
        tokens=tokens,
        ranking=None if ranking is None else pd.read_csv(ranking),
        ranking_source=str(ranking),
        clip=clip,
        memorization=None if memorization is None else pd.read_csv(memorization),
    )
    summary = result["summary"]
    text = result["markdown"]
    _write_csv(scores, Path(out_scores), sep="\t")
    _write_csv(summary, Path(out_summary))
    if out_comparisons is not None:
        _write_csv(result["comparisons"], Path(out_comparisons))
    if out_effects is not None:
        _write_csv(result["effects"], Path(out_effects))
    if out_verdict is not None:
        write_json(result["verdict"], Path(out_verdict))
    if out_power is not None:
        _write_csv(result["power"], Path(out_power))
    if prompt_sets and "prompt_set" in summary.columns:
        flex = flexibility.table(summary, prompt_sets, best_margin)
        if out_flexibility is not None:
            _write_csv(flex, Path(out_flexibility))
        if len(prompt_sets) > 1:
            text += "\n" + flexibility.markdown(flex, prompt_sets, best_margin) + "\n"
    if decisions is not None:
        from dreamgrid import search

        text += "\n" + search.markdown(
            search.read_decisions([decisions]), arm_ids, int(scores["epoch"].max())
        )
    notes = [*warnings, *check_score_metadata(score_files)]
    if notes:
        text += "\n## Warnings\n\n" + "\n".join(f"- {m}" for m in notes) + "\n"
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if not scores["face_found"].any():
        log.warning("no face found in any of %d renders; the summary has no scores", len(scores))
    log.info("summarized %d checkpoints into %s", len(summary), out_summary)
    return summary
