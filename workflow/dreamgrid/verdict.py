"""The verdict and summary.md: plain-language conclusions from the tables beside them."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from dreamgrid import baseline as baseline_mod
from dreamgrid import candidates, stats
from dreamgrid.prompts import AUTO_TOKEN, MAIN_PROMPT_SET
from dreamgrid.scoretable import GROUP_COLUMNS, group_columns, headline


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _markdown_table(frame: pd.DataFrame, digits: dict[str, int]) -> str:
    """A markdown table, numbers right-aligned; ``digits`` per column (default 2)."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if c == "arm" else "---:" for c in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [_fmt(v, digits.get(c, 2)) for c, v in zip(frame.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DEMO_WARNING = (
    "> **Warning: demo run.** The demo trains tiny models with random weights, so the "
    "renders are noise and these numbers mean nothing about any training recipe. "
    "Run the real study with `--configfile config/experiment.yaml`."
)


def _contract_pct_columns(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c.startswith("pct_below_") and "_ci_" not in c]


def _with_ci(value: float, low: float, high: float, digits: int) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _summary_markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a compact table: intervals in brackets beside their estimate."""
    pct_columns = _contract_pct_columns(summary)
    keys = [c for c in ("arm", "epoch", *GROUP_COLUMNS, "steps") if c in summary.columns]
    view = summary[keys + ["renders", "face_rate"]].copy()
    if "average_ci_low" in summary.columns:
        view["average [CI]"] = [
            _with_ci(v, lo, hi, 4)
            for v, lo, hi in summary[["average", "average_ci_low", "average_ci_high"]].to_numpy()
        ]
        view["median"] = summary["median"]
        for c in pct_columns:
            view[f"{c} [CI]"] = [
                _with_ci(v, lo, hi, 1)
                for v, lo, hi in summary[[c, f"{c}_ci_low", f"{c}_ci_high"]].to_numpy()
            ]
    else:
        view["average"] = summary["average"]
        for c in pct_columns:
            view[c] = summary[c]
    view["best"] = summary["best"].astype(bool)
    if "best_not_worse" in summary.columns:
        view["best_not_worse"] = summary["best_not_worse"].astype(bool)
    return _markdown_table(view, {"face_rate": 2, "average": 4, "median": 4})


def _baseline_markdown(baseline: pd.DataFrame, pooled: float) -> str:
    """The real-photos baseline in words: each source's photos, then the pooled line."""
    if not np.isfinite(pooled):
        return (
            "**As alike as real photos.** Needs at least two reference photos (or training "
            "photos with a face); not shown."
        )
    if "source" not in baseline.columns:  # a table written before training photos counted
        baseline = baseline.assign(source="reference", photo=baseline["reference"])
    sentences = []
    for source, group in baseline.groupby("source", sort=False):
        scored = group.loc[pd.to_numeric(group["mean_distance"], errors="coerce").notna()]
        listed = ", ".join(f"{p} {d:.4f}" for p, d in scored[["photo", "mean_distance"]].to_numpy())
        if source == "reference":
            how = "Each reference photo scored like a render against the other references"
        else:
            how = (
                "Each training photo scored like a render against the references, leaving "
                "out any reference cut from that photo (a near self-match)"
            )
        sentence = f"{how}: {listed or 'none'} (mean {baseline_mod.baseline_value(group):.4f})"
        if "excluded" in group.columns:
            pairs = [
                f"{p} ↔ {e}" for p, e in group[["photo", "excluded"]].fillna("").to_numpy() if e
            ]
            if pairs:
                sentence += "; left out as cut from the same photo: " + ", ".join(pairs)
        faceless = group.loc[~group.get("face_found", pd.Series(True, index=group.index))]
        if len(faceless):
            sentence += f"; no face found in {', '.join(map(str, faceless['photo']))}"
        sentences.append(sentence + ".")
    return (
        "**As alike as real photos.** "
        + " ".join(sentences)
        + f" Pooled: {pooled:.4f}. Plots draw this as the real-photos line."
    )


def _frame_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            if isinstance(value, (float, np.floating)) and str(column).startswith("p_"):
                cells.append("n/a" if math.isnan(value) else f"{value:.3g}")
            else:
                cells.append(_fmt(value, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


VIEW_NAMES = {"equal_steps": "at equal training steps", "best": "at each arm's best epoch"}


def _effect_sentence(row: pd.Series, alpha: float, confidence: float) -> str:
    level, ref = str(row["contrast"]).split(" vs ", 1)
    pct = f"{100 * confidence:g}%"
    est, low, high = row["estimate"], row["ci_low"], row["ci_high"]
    if not np.isfinite(est):
        return f"{row['axis']} ({row['contrast']}): no paired faces, nothing to conclude"
    if stats.significant(row["p_adjusted"], alpha):
        better, worse = (level, ref) if est < 0 else (ref, level)
        half = (high - low) / 2
        return (
            f"{row['axis']}: {better} beats {worse} by {abs(est):.3f} ± {half:.3f} "
            f"({pct} CI of {level} minus {ref}: {low:.3f} to {high:.3f}; "
            f"Holm p = {row['p_adjusted']:.3g})"
        )
    return (
        f"{row['axis']} ({level} vs {ref}): no significant effect "
        f"(difference {est:+.3f}, {pct} CI {low:.3f} to {high:.3f}; Holm p = "
        f"{row['p_adjusted']:.3g})"
    )


def tokens_markdown(
    tokens: Mapping[str, str], ranking: pd.DataFrame | None, source: str = "ranking.csv"
) -> str:
    """The tokens section: each token's string, and for ``auto`` the name the finder chose.

    Args:
        tokens: token name (as in arm ids) -> configured string (``auto`` asks the finder).
        ranking: the token finder's ranking (:func:`dreamgrid.candidates.rank`), or None.
        source: what to call the ranking file in the text.
    """
    lines = ["## Tokens", ""]
    pick = candidates.top(ranking, source) if ranking is not None else None
    for name, token in tokens.items():
        if token != AUTO_TOKEN:
            lines.append(f"- `{name}`: `{token}`.")
        elif pick is None:
            lines.append(f"- `{name}`: `auto`, but no token-finder ranking was given.")
        else:
            lines.append(
                f"- `{name}`: `auto`; the token finder chose **{pick['candidate']}**, rank "
                f"{int(pick['rank'])} of {len(ranking)} candidates in `{source}` (average "
                f"distance {_fmt(pick['average'], 4)}, face rate {_fmt(pick['face_rate'], 2)})."
            )
    if pick is not None:
        if AUTO_TOKEN not in tokens.values():
            lines.append(
                f"- The token finder ranked {len(ranking)} candidates (first: "
                f"**{pick['candidate']}**); no token is `auto`, so no arm trains on its pick."
            )
        if pd.to_numeric(ranking["average"], errors="coerce").isna().all():
            lines += [
                "",
                (
                    "No candidate's renders showed a face, so the ranking is only the order of "
                    "the candidate list: the pick was not measured."
                ),
            ]
    return "\n".join(lines)


def verdict(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame | None = None,
    effects: pd.DataFrame | None = None,
    baseline: float = math.nan,
    *,
    confidence: float = stats.CONFIDENCE,
    alpha: float = 0.05,
) -> str:
    """A plain-language paragraph from the numbers; it claims only what the intervals allow.

    Args:
        summary: from :func:`summarize` (with intervals).
        comparisons: from :func:`dreamgrid.stats.compare_arms`.
        effects: from :func:`dreamgrid.stats.factorial_effects` (views concatenated).
        baseline: mean leave-one-out distance among the reference photos (NaN if unknown).
        confidence: coverage of the intervals, for the wording.
        alpha: significance level applied to Holm-adjusted p-values.

    Returns:
        Markdown text (a few sentences and bullets).
    """
    pct = f"{100 * confidence:g}%"
    scored = summary.loc[summary["average"].notna()]
    if scored.empty:
        return (
            "**Nothing to conclude.** No render contained a face, so there is no distance to "
            "compare: no arm, epoch or axis can be said to be better or worse than another."
        )
    parts = []
    top = scored.loc[scored["average"].idxmin()]
    steps = f", {int(top['steps'])} steps" if "steps" in top.index else ""
    lowest = _contract_pct_columns(summary)[0]
    sentence = (
        f"The lowest average distance is **{top['arm']}** at epoch {int(top['epoch'])}{steps}: "
        f"{top['average']:.4f}"
    )
    if "average_ci_low" in top.index:
        sentence += f" ({pct} CI {top['average_ci_low']:.4f} to {top['average_ci_high']:.4f})"
    sentence += f", with {top[lowest]:.1f}% of faces {lowest.replace('pct_below_', 'below ')}."
    if np.isfinite(baseline):
        low = top.get("average_ci_low", top["average"])
        high = top.get("average_ci_high", top["average"])
        if low > baseline:
            sentence += (
                f" Real photos of the person score {baseline:.4f} against each other, so even "
                "this checkpoint is measurably less alike than the person's own photos."
            )
        elif high < baseline:
            sentence += (
                f" That is below the {baseline:.4f} that real photos of the person score "
                "against each other (the renders may resemble the references more than the "
                "photos resemble one another: check the contact sheets for copies)."
            )
        else:
            sentence += (
                f" That is as alike as real photos of the person are to each other "
                f"({baseline:.4f})."
            )
    parts.append(sentence)
    if comparisons is not None and len(comparisons):
        rows = comparisons.loc[
            (comparisons["epoch"] == top["epoch"])
            & ((comparisons["arm_a"] == top["arm"]) | (comparisons["arm_b"] == top["arm"]))
            & comparisons["p_value"].notna()
        ]
        if len(rows):
            ties = rows.loc[~rows["p_adjusted"].map(lambda p: stats.significant(p, alpha))]
            others = sorted(
                {b if a == top["arm"] else a for a, b in ties[["arm_a", "arm_b"]].to_numpy()}
            )
            if others:
                parts.append(
                    f"At epoch {int(top['epoch'])} it is not significantly different from "
                    f"{len(others)} of {len(rows)} other arm(s) after Holm correction: "
                    f"{', '.join(others)}."
                )
            else:
                parts.append(
                    f"At epoch {int(top['epoch'])} it is significantly more alike than each of "
                    f"the {len(rows)} other arm(s) (paired Wilcoxon, Holm-corrected)."
                )
    bullets = []
    if effects is not None and len(effects):
        for view, group in effects.groupby("view", sort=False):
            mains = group.loc[group["term"] == "main"]
            if mains.empty:
                continue
            label = VIEW_NAMES.get(str(view), str(view))
            text = "; ".join(_effect_sentence(r, alpha, confidence) for _, r in mains.iterrows())
            inter = group.loc[group["term"] == "interaction"]
            hits = inter.loc[inter["p_adjusted"].map(lambda p: stats.significant(p, alpha))]
            if len(inter):
                if len(hits):
                    text += "; significant interaction(s): " + ", ".join(
                        f"{r['axis']} {r['contrast']} ({r['estimate']:+.3f})"
                        for _, r in hits.iterrows()
                    )
                else:
                    text += "; no significant interaction"
            few = int(mains["n_seeds"].max()) if len(mains) else 0
            if few < 6:
                text += f" (only {few} paired seeds: too few for any test to reach significance)"
            bullets.append(f"- **{label[0].upper() + label[1:]}**: {text}.")
    parts = [" ".join(parts)]
    if bullets:
        parts.append("\n".join(bullets))
    parts.append(
        f"Significant means a Holm-adjusted p below {alpha:g} (Wilcoxon signed-rank on "
        f"per-seed differences); intervals are {pct} seeded bootstrap intervals. Lower "
        "distance = more alike."
    )
    return "\n\n".join(parts)


def markdown(
    summary: pd.DataFrame,
    scores: pd.DataFrame,
    demo: bool,
    best_within: float | None = None,
    *,
    comparisons: pd.DataFrame | None = None,
    effects: pd.DataFrame | None = None,
    baseline: pd.DataFrame | None = None,
    confidence: float = stats.CONFIDENCE,
    alpha: float = 0.05,
    primary_model: str | None = None,
    tokens: Mapping[str, str] | None = None,
    ranking: pd.DataFrame | None = None,
    ranking_source: str = "ranking.csv",
) -> str:
    """Human summary: warning (demo), verdict, tokens, table, face rate, best epochs, statistics.

    The verdict reads prompt set ``main`` and ``primary_model`` (default: the first model in
    the summary) only: other prompt sets ask other questions (class bleed, styles), and
    distances of different recognition models are not comparable. ``tokens`` (token name ->
    configured string) and the token finder's ``ranking`` add a section naming the token
    each arm trained on (:func:`tokens_markdown`; ``ranking_source`` names the file).
    """
    pct_columns = _contract_pct_columns(summary)
    lowest = pct_columns[0] if pct_columns else None
    baseline_mean = baseline_mod.baseline_value(baseline)
    pct = f"{100 * confidence:g}%"
    parts = []
    if demo:
        parts.append(DEMO_WARNING)
    parts.append("# dreamgrid summary")
    checkpoints = len(summary[["arm", "epoch"]].drop_duplicates())
    sets = summary["prompt_set"].nunique() if "prompt_set" in summary.columns else 1
    parts.append(
        f"{len(scores)} renders, {summary['arm'].nunique()} arms, {checkpoints} checkpoints"
        + (f" × {sets} prompt sets" if sets > 1 else "")
        + ". Distances are DeepFace distances to the reference photos, averaged per render: "
        "lower means more alike."
    )
    parts.append("## Verdict")
    if "model" in summary.columns and primary_model is None and len(summary):
        primary_model = str(summary["model"].iloc[0])
    if group_columns(summary):
        scope = [f"prompt set `{MAIN_PROMPT_SET}`"] if "prompt_set" in summary.columns else []
        scope += [f"face model `{primary_model}`"] if "model" in summary.columns else []
        parts.append(
            f"Read from {' and '.join(scope)}; the tables below list every prompt set and model."
        )
    parts.append(
        verdict(
            headline(summary, primary_model),
            headline(comparisons, primary_model),
            headline(effects, primary_model),
            baseline_mean,
            confidence=confidence,
            alpha=alpha,
        )
    )
    if tokens:
        parts.append(tokens_markdown(tokens, ranking, ranking_source))
    parts.append("## Per checkpoint")
    if "average_ci_low" in summary.columns:
        parts.append(
            f"Brackets hold {pct} bootstrap intervals (seeded, resampling the renders with a "
            "face); `pct_below_*` are percent of those renders."
        )
    parts.append(_summary_markdown_table(summary))

    faces = int(scores["face_found"].sum())
    note = (
        f"**Face rate.** A face was found in {faces} of {len(scores)} renders "
        f"({100.0 * faces / max(len(scores), 1):.1f}%). `face_rate` is that fraction per "
        "checkpoint; `average` and the `pct_below_*` columns count only renders with a face "
        "(renders without one are not scored as distance 0)."
    )
    faceless = summary.loc[summary["face_rate"] == 0]
    if len(faceless):
        names = ", ".join(
            f"{a} epoch {e}" for a, e in faceless[["arm", "epoch"]].itertuples(index=False)
        )
        note += f" No face at all in {len(faceless)} checkpoint(s), shown as n/a: {names}."
    parts.append(note)

    if baseline is not None:
        parts.append(_baseline_markdown(baseline, baseline_mean))

    lines = ["## Best epoch per arm", ""]
    if lowest is not None:
        margin = "the configured margin" if best_within is None else f"{best_within:g} points"
        lines += [
            (
                f"The earliest epoch whose `{lowest}` is within {margin} of the arm's best "
                "(`best`), and the earliest whose share is not significantly below the arm's "
                f"highest ({pct} bootstrap over paired seeds; `best_not_worse`)."
            ),
            "",
        ]
    arm_keys = ["arm", *group_columns(summary)]
    for key, group in summary.groupby(arm_keys, sort=True):
        name = " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        best = group[group["best"].astype(bool)]
        if best.empty:
            lines.append(f"- **{name}**: no face found in any render, so no best epoch.")
            continue
        row = best.iloc[0]
        steps = f", {int(row['steps'])} steps" if "steps" in row.index else ""
        detail = f"{lowest} = {row[lowest]:.2f}%, " if lowest else ""
        text = (
            f"- **{name}**: epoch {int(row['epoch'])}{steps} "
            f"({detail}average {row['average']:.4f}, face rate {row['face_rate']:.2f})"
        )
        if "best_not_worse" in group.columns and group["best_not_worse"].any():
            early = group.loc[group["best_not_worse"].astype(bool)].iloc[0]
            text += f"; not significantly worse from epoch {int(early['epoch'])}"
        lines.append(text)
    parts.append("\n".join(lines))

    if effects is not None and len(effects):
        parts.append("## Factorial effects")
        parts.append(
            "Per seed, the distance difference a level makes against the reference level "
            "(first level of the axis), averaged over arms equal on the other axes; "
            "interactions are differences of differences. Negative = the level is more alike."
        )
        shown = effects.drop(columns=["p_value"])
        parts.append(_frame_markdown(shown))
    if comparisons is not None and len(comparisons):
        parts.append("## Paired comparisons between arms")
        parts.append(
            "`mean_diff` = arm_a minus arm_b over seeds where both found a face; "
            "Wilcoxon signed-rank p, Holm-adjusted over the whole table. Full table: "
            "`results/comparisons.csv`."
        )
        parts.append(_frame_markdown(comparisons.head(60)))
    return "\n\n".join(parts) + "\n"
