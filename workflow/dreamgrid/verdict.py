"""The verdict and summary.md: plain-language conclusions from the tables beside them."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from dreamgrid import baseline as baseline_mod
from dreamgrid import candidates, stats
from dreamgrid.prompts import AUTO_TOKEN, MAIN_PROMPT_SET
from dreamgrid.scoretable import (
    BASE_MODEL,
    GROUP_COLUMNS,
    group_columns,
    headline,
    share_columns,
)


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


def _with_ci(value: float, low: float, high: float, digits: int) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _summary_markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a compact table: intervals in brackets beside their estimate; a
    checkpoint with few faces shows no faces-only share."""
    pct_columns = share_columns(summary.columns)
    keys = [
        c for c in ("arm", BASE_MODEL, "epoch", *GROUP_COLUMNS, "steps") if c in summary.columns
    ]
    view = summary[keys + ["renders", "face_rate"]].copy()
    few = summary.get("few_faces", pd.Series(False, index=summary.index)).astype(bool)
    view["average [CI]"] = [
        _with_ci(v, lo, hi, 4)
        for v, lo, hi in summary[["average", "average_ci_low", "average_ci_high"]].to_numpy()
    ]
    view["median"] = summary["median"]
    for c in pct_columns:
        view[f"{c} [CI]"] = [
            "few faces" if f else _with_ci(v, lo, hi, 1)
            for f, (v, lo, hi) in zip(
                few, summary[[c, f"{c}_ci_low", f"{c}_ci_high"]].to_numpy(), strict=True
            )
        ]
        if f"{c}_all" in summary.columns:
            view[f"{c}_all [CI]"] = [
                _with_ci(v, lo, hi, 1)
                for v, lo, hi in summary[
                    [f"{c}_all", f"{c}_all_ci_low", f"{c}_all_ci_high"]
                ].to_numpy()
            ]
    view["best"] = summary["best"].astype(bool)
    view["best_not_worse"] = summary["best_not_worse"].astype(bool)
    return _markdown_table(view, {"face_rate": 2, "average": 4, "median": 4})


def _baseline_markdown(baseline: pd.DataFrame, pooled: float) -> str:
    """The real-photos baseline in words: each source's photos, then the pooled line."""
    if not np.isfinite(pooled):
        return (
            "**As alike as real photos.** Needs at least two reference photos (or training "
            "photos with a face); not shown."
        )
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
    low, high = baseline_mod.baseline_interval(baseline)
    spread = (
        f" (95% CI {low:.4f} to {high:.4f}, bootstrap over the photos)" if np.isfinite(low) else ""
    )
    return (
        "**As alike as real photos.** "
        + " ".join(sentences)
        + f" Pooled: {pooled:.4f}{spread}. Plots draw this as the real-photos line. A render "
        "scoring below it is closer to the references than the person's photos are to each "
        "other: more often a collapse toward an average, prototypical face than a copy."
    )


#: A closest training pair under this fraction of the typical nearest-photo distance is
#: reported as near-duplicates (crops of one photo).
NEAR_DUPLICATE = 0.5


def memorization_markdown(table: pd.DataFrame | None, confidence: float, shown: int = 5) -> str:
    """The memorization signal in words, from ``results/memorization.csv``
    (:mod:`dreamgrid.memorization`): the yardstick and the checkpoints most often closer to
    one training photo than the closest pair of training photos."""
    head = "## Memorization\n\n"
    if table is None or table.empty or not np.isfinite(table["closest_pair"].iloc[0]):
        return head + (
            "Needs at least two training photos with a face; not measured. "
            "Table: `results/memorization.csv`."
        )
    closest = float(table["closest_pair"].iloc[0])
    typical = float(table["median_photo_nearest"].iloc[0])
    faces_total, flagged = int(table["faces"].sum()), int(table["n_closer"].sum())
    names = table["closest_pair_photos"].iloc[0] if "closest_pair_photos" in table else ""
    names = f" ({names})" if isinstance(names, str) and names else ""
    text = (
        f"The closest two training photos{names} are {closest:.4f} apart; a training photo's "
        f"nearest other photo is typically {typical:.4f} away (median). A render closer than "
        f"{closest:.4f} to one training photo is nearer to it than any two real photos of the "
        f"person are to each other: a sign of a reproduced photo. {flagged} of {faces_total} "
        "renders with a face are (prompt set `main`). Table: `results/memorization.csv`, per "
        "render `results/memorization/renders.tsv`."
    )
    if closest < NEAR_DUPLICATE * typical:
        text += (
            f" The closest pair is far closer than typical (under {NEAR_DUPLICATE:g}× the "
            "median): near-duplicates or crops of one photo, which make this yardstick strict "
            "(few renders can be closer). Remove duplicates from the training photos, or read "
            "`median_nearest` against the typical distance instead."
        )
    scored = table.loc[table["faces"] > 0].sort_values(
        ["pct_closer_than_pairs", "arm", "epoch"], ascending=[False, True, True]
    )
    if scored.empty:
        return head + text
    rows = [
        f"- {r.arm} epoch {int(r.epoch)}: {r.pct_closer_than_pairs:.1f}% of {int(r.faces)} "
        f"[{r.pct_closer_ci_low:.1f}, {r.pct_closer_ci_high:.1f}] (median distance to the "
        f"nearest training photo {r.median_nearest:.4f})"
        for r in scored.head(shown).itertuples()
    ]
    pct = f"{100 * confidence:g}%"
    return head + text + f"\n\nMost often closer ({pct} Wilson intervals):\n\n" + "\n".join(rows)


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


VIEW_NAMES = {"equal_steps": "at equal training steps", "chosen": "at each arm's chosen epoch"}
#: Replicates that the single-run warning suggests.
SUGGESTED_REPLICATES = 3


def _signed(row: pd.Series) -> tuple[str, str, float, float, float]:
    """(better, worse, estimate, ci_low, ci_high) of a planned row whose interval excludes 0,
    with the estimate as distance of worse minus better (> 0)."""
    est, low, high = float(row["estimate"]), float(row["ci_low"]), float(row["ci_high"])
    first, second = (
        str(row["contrast"]).split(" vs ", 1)
        if row["term"] != "interaction"
        else (
            f"{row['axis']} {row['contrast']}",
            "additive",
        )
    )
    if row["term"] in ("main", "within"):
        axis = str(row["axis"]).split(" | ", 1)[0]  # within: "<axis> | base_model=<name>"
        first, second = f"{axis}={first}", f"{axis}={second}"
    if est < 0:  # the first-named is more alike: worse - better = -(first - second)
        return first, second, -est, -high, -low
    return second, first, est, low, high


def claims(effects: pd.DataFrame | None, confidence: float = stats.CONFIDENCE) -> list[dict]:
    """The findings the verdict states as established: planned contrasts whose simultaneous
    interval excludes 0 *and* whose Bonferroni-adjusted permutation p is below
    ``1 - confidence``. The verdict never claims against its interval; where the two disagree
    (a BCa interval at a 99.9% level from 20 seeds is too narrow, the exact permutation test
    is not), it claims nothing.

    Each claim: ``kind`` (``pair`` for an arm against the top arm, ``effect`` for a factorial
    term), ``better``, ``worse``, ``at`` (the view), ``estimate`` (mean distance of worse minus
    better, > 0), ``ci_low``, ``ci_high`` (same orientation), ``p_adjusted``, ``family``;
    pairs add ``face_diff`` (face rate of better minus worse) and ``face_p``; an effect within
    one base model adds ``within`` (``base_model=<name>``).
    """
    out = []
    if effects is None or effects.empty:
        return out
    for _, row in effects.iterrows():
        if stats.excludes_zero(row["ci_low"], row["ci_high"]) == 0:
            continue
        if not float(row["p_adjusted"]) < 1.0 - confidence:
            continue
        better, worse, est, low, high = _signed(row)
        claim = {
            "kind": "pair" if row["term"] == "vs_top" else "effect",
            "better": better,
            "worse": worse,
            "at": str(row["view"]),
            "estimate": est,
            "ci_low": low,
            "ci_high": high,
            "p_adjusted": float(row["p_adjusted"]),
            "family": str(row["family"]),
        }
        if row["term"] == "within":
            claim["within"] = str(row["axis"]).split(" | ", 1)[1]
        if claim["kind"] == "pair":
            sign = -1.0 if float(row["estimate"]) < 0 else 1.0  # face_diff is arm minus top
            claim["face_diff"] = -sign * float(row["face_diff"]) + 0.0
            claim["face_p"] = float(row["face_p"])
        out.append(claim)
    return out


def warnings(
    summary: pd.DataFrame, decision: dict, replicates: int, best_margin: float
) -> list[str]:
    """Short warning codes with their subject (the ``verdict.json`` contract)."""
    out = []
    if replicates <= 1:
        out.append("single_run")
    if "few_faces" in summary.columns:
        few = summary.loc[summary["few_faces"].astype(bool)]
        out += [f"few_faces:{a}:{int(e)}" for a, e in few[["arm", "epoch"]].to_numpy()]
    shares = [c for c in summary.columns if c.startswith("pct_below_") and c.endswith("_all")]
    if shares and "few_faces" in summary.columns:
        eligible = summary.loc[~summary["few_faces"].astype(bool)]
        for arm, best in eligible.groupby("arm")[shares[0]].max().items():
            if np.isfinite(best) and best < best_margin:
                out.append(f"low_share:{arm}")
    if decision.get("steps") is None:
        out.append("no_equal_steps")
    return out


def verdict_object(
    summary: pd.DataFrame,
    effects: pd.DataFrame | None,
    decision: dict,
    *,
    replicates: int = 1,
    best_margin: float = 5.0,
    confidence: float = stats.CONFIDENCE,
) -> dict:
    """One ``verdict.json`` object (for one face model and prompt set)."""
    return {
        **{k: str(v) for k, v in decision.get("key", {}).items()},
        "replicates": int(replicates),
        "chosen_epochs": {a: int(e) for a, e in sorted(decision.get("chosen", {}).items())},
        "top_arm": decision.get("top"),
        "equal_steps": decision.get("steps"),
        "run_sd": _run_sd(effects),
        "claims": claims(effects, confidence),
        "warnings": warnings(summary, decision, replicates, best_margin),
    }


def _run_sd(effects: pd.DataFrame | None) -> float | None:
    """The run-to-run SD (median over the planned contrasts), or None."""
    if effects is None or "run_sd" not in effects.columns:
        return None
    values = pd.to_numeric(effects["run_sd"], errors="coerce").dropna()
    return float(values.median()) if len(values) else None


def _row_of(summary: pd.DataFrame, arm: str, epoch: int) -> pd.Series | None:
    rows = summary.loc[(summary["arm"] == arm) & (summary["epoch"] == epoch)]
    return rows.iloc[0] if len(rows) else None


def _checkpoint_words(row: pd.Series, pct: str) -> str:
    steps = f", {int(row['steps'])} steps" if "steps" in row.index else ""
    text = f"epoch {int(row['epoch'])}{steps}: "
    if np.isfinite(row["average"]):
        text += f"average {row['average']:.4f}"
        if "average_ci_low" in row.index and np.isfinite(row["average_ci_low"]):
            text += f" ({pct} CI {row['average_ci_low']:.4f} to {row['average_ci_high']:.4f})"
    else:
        text += "no face"
    return text + f", face rate {row['face_rate']:.2f}"


def _base_model_words(within: str) -> str:
    """``base_model=sdxl`` -> ``base model **sdxl**``."""
    return f"base model **{within.split('=', 1)[1]}**"


def _base_model_of(summary: pd.DataFrame, arm: str) -> str:
    """`` (base model sdxl)`` when the summary has several base models, else ``""``."""
    if BASE_MODEL not in summary.columns:
        return ""
    rows = summary.loc[summary["arm"] == arm, BASE_MODEL]
    return f" (base model {rows.iloc[0]})" if len(rows) else ""


def _claim_sentence(claim: dict, summary: pd.DataFrame, chosen: Mapping[str, int]) -> str:
    where = VIEW_NAMES.get(claim["at"], claim["at"])
    ci = f"{claim['ci_low']:.4f} to {claim['ci_high']:.4f}"
    if "within" in claim:
        where = f"with {_base_model_words(claim['within'])} {where}"
    text = (
        f"**{claim['better']}** is more alike than **{claim['worse']}** {where}: by "
        f"{claim['estimate']:.4f} in mean distance over paired seeds (simultaneous CI {ci}; "
        f"Bonferroni p = {claim['p_adjusted']:.3g})"
    )
    if claim["kind"] == "pair":
        diff, p = claim.get("face_diff", math.nan), claim.get("face_p", math.nan)
        if np.isfinite(diff) and abs(diff) < 5e-3:
            text += f"; their face rates are equal (exact McNemar p = {p:.3g})"
        elif np.isfinite(diff):
            how = "higher" if diff > 0 else "lower"
            text += (
                f"; its face rate is {abs(diff):.2f} {how} than {claim['worse']}'s "
                f"(exact McNemar p = {p:.3g})"
            )
    return text + "."


def verdict(
    summary: pd.DataFrame,
    effects: pd.DataFrame | None,
    decision: dict,
    baseline: float = math.nan,
    *,
    baseline_ci: tuple[float, float] = (math.nan, math.nan),
    confidence: float = stats.CONFIDENCE,
    replicates: int = 1,
    best_margin: float = 5.0,
) -> str:
    """A plain-language verdict for one face model and prompt set, from the planned family.

    It names the top arm (on paired evidence, chosen on the selection seeds), states a
    finding only where :func:`claims` has it, and ends with the warnings. Every number comes
    from ``summary`` or ``effects``.
    """
    pct = f"{100 * confidence:g}%"
    if summary["average"].notna().sum() == 0:
        return (
            "**Nothing to conclude.** No render contained a face, so there is no distance to "
            "compare: no arm, epoch or axis can be said to be better or worse than another."
        )
    chosen = decision.get("chosen", {})
    top = decision.get("top")
    parts = []
    if top is None:
        parts.append(
            "**No top arm.** No arm has a checkpoint with enough faces to be chosen "
            "(`report.min_faces`)."
        )
    else:
        row = _row_of(summary, top, chosen[top])
        sentence = (
            f"On paired evidence the most alike arm is **{top}**{_base_model_of(summary, top)} "
            "at its chosen "
            f"{_checkpoint_words(row, pct)}."
        )
        if np.isfinite(baseline):
            low, high = row.get("average_ci_low", math.nan), row.get("average_ci_high", math.nan)
            base_low, base_high = (
                baseline_ci if np.isfinite(baseline_ci[0]) else (baseline, baseline)
            )
            if np.isfinite(low) and low > base_high:
                sentence += (
                    f" Real photos of the person score {baseline:.4f} against each other, so "
                    "this checkpoint is measurably less alike than the person's own photos."
                )
            elif np.isfinite(high) and high < base_low:
                sentence += (
                    f" That is below the {baseline:.4f} that real photos of the person score "
                    "against each other. Scoring below real photos usually means the renders "
                    "collapsed toward an average, prototypical face (which scores far below "
                    "it), rarely copies (an exact copy of a reference scores only a little "
                    "below it): check the contact sheets."
                )
            else:
                sentence += (
                    f" That is as alike as real photos of the person are to each other "
                    f"({baseline:.4f})."
                )
        parts.append(sentence)
    found = claims(effects, confidence)
    pairs = [c for c in found if c["kind"] == "pair"]
    effect_claims = [c for c in found if c["kind"] == "effect"]
    lines = [_claim_sentence(c, summary, chosen) for c in pairs]
    if top is not None and effects is not None and len(effects):
        tested = effects.loc[effects["term"] == "vs_top"]
        open_pairs = len(tested) - len(pairs)
        if len(tested):
            lines.append(
                f"{open_pairs} of {len(tested)} comparisons of an arm against {top} "
                "are not established (their simultaneous interval includes 0)."
            )
    lines += [_claim_sentence(c, summary, chosen) for c in effect_claims]
    if effects is not None and len(effects):
        mains = effects.loc[effects["term"] != "vs_top"]
        if len(mains) and not effect_claims:
            lines.append("No factorial effect or interaction is established.")
    if lines:
        parts.append("\n".join(f"- {line}" for line in lines))
    notes = []
    codes = warnings(summary, decision, replicates, best_margin)
    run_sd = _run_sd(effects)
    if replicates > 1 and run_sd is not None:
        notes.append(
            f"**{replicates} training runs per arm.** Every planned contrast uses the run as "
            "the unit (t test of seed-adjusted run effects, so run-to-run noise is in every "
            f"interval); the run-to-run SD is {run_sd:.4f}."
        )
    if "single_run" in codes:
        notes.append(
            "**One training run per arm.** These differences are between single trained "
            "checkpoints, not recipes: training noise (run to run) is not measured. "
            f"`training.replicates: {SUGGESTED_REPLICATES}` would measure it."
        )
    few = [c.split(":", 1)[1] for c in codes if c.startswith("few_faces:")]
    if few:
        shown = ", ".join(f"{c.rsplit(':', 1)[0]} epoch {c.rsplit(':', 1)[1]}" for c in few[:8])
        more = f" and {len(few) - 8} more" if len(few) > 8 else ""
        notes.append(
            f"**Few faces** in {len(few)} checkpoint(s) ({shown}{more}): no headline share, and "
            "they cannot be chosen."
        )
    low = [c.split(":", 1)[1] for c in codes if c.startswith("low_share:")]
    if low:
        notes.append(
            f"**Low shares**: {', '.join(low)} never put more than {best_margin:g}% of renders "
            "below the lowest threshold; their chosen epoch uses a relative margin."
        )
    if "no_equal_steps" in codes:
        notes.append(
            "**No equal steps**: no step count is shared by every arm (or the scores have no "
            "`steps` column), so nothing is compared at equal training steps."
        )
    parts += notes
    return "\n\n".join(parts)


#: Columns of ``power.csv``: what the summary's power sentence says, and what it is made of.
POWER_COLUMNS = (
    "model",
    "prompt_set",
    "family",
    "alpha_per_contrast",
    "paired_sd",
    "both_faces",
    "pairs",
    "power",
    "detectable",
)


def headline_power(
    summary: pd.DataFrame,
    scores: pd.DataFrame,
    effects: pd.DataFrame | None,
    decisions: list[dict] | None,
    primary_model: str | None,
    confidence: float,
) -> dict | None:
    """The smallest difference the headline (prompt set ``main``, ``primary_model``) detects
    with 80% power at its planned family, with what it is computed from (``power.csv``)."""
    from dreamgrid import inference

    if "model" in summary.columns and primary_model is None and len(summary):
        primary_model = str(summary["model"].iloc[0])
    decision = _decision_for(decisions or [], headline(summary, primary_model))
    effects = _select(effects, decision.get("key", {}))
    scores = headline(scores, primary_model)
    if effects is None or effects.empty or "seed" not in scores.columns:
        return None
    family = int(np.isfinite(effects["p_value"].astype(float)).sum())
    sd, both = inference.paired_sd(scores)
    half = len(scores["seed"].unique()) // 2
    pairs = int(half * both) if np.isfinite(both) else 0
    alpha = (1 - confidence) / max(family, 1)
    return {
        "model": primary_model or "",
        "prompt_set": MAIN_PROMPT_SET if "prompt_set" in scores.columns else "",
        "family": family,
        "alpha_per_contrast": alpha,
        "paired_sd": sd,
        "both_faces": both,
        "pairs": pairs,
        "power": inference.POWER,
        "detectable": inference.detectable(pairs, sd, alpha),
    }


def power_table(row: dict | None) -> pd.DataFrame:
    """``power.csv``: one row (none when the run has no planned contrast)."""
    return pd.DataFrame([row] if row else [], columns=list(POWER_COLUMNS))


def power_markdown(row: dict | None) -> str | None:
    """The power sentence of summary.md, from :func:`headline_power`'s row."""
    if not row or not np.isfinite(row["detectable"]):
        return None
    return (
        f"**Power.** With about {row['pairs']} paired seeds per contrast (half of the seeds, "
        f"where both found a face) and a family of {row['family']}, the smallest difference in "
        f"mean distance this run detects with {100 * row['power']:g}% power is "
        f"{row['detectable']:.4f} (per-seed SD of paired differences {row['paired_sd']:.4f}; "
        "`results/power.csv`). `dreamgrid power --scores results/scores.tsv --effect 0.01` "
        "plans renders and training runs for a smaller one."
    )


def method_markdown(confidence: float, best_margin: float, relative: float, min_faces: int) -> str:
    """How every number of the verdict was computed (the families, the split, the rules)."""
    pct = f"{100 * confidence:g}%"
    return (
        "**How this was computed.** Every comparison is paired on seeds (all arms render the "
        "same seeds) over the seeds where both checkpoints found a face; face rate is compared "
        "on every seed with the exact McNemar test. The seeds are split in two halves: each "
        "arm's epoch (`best`) and the top arm are chosen on the *selection* half; everything "
        "estimated at chosen epochs, and each arm against the top arm, uses the other "
        "(*estimation*) half. Chosen epoch: the earliest epoch with at least "
        f"{min_faces} faces whose share of renders below the lowest threshold (all renders; no "
        "face = not below) is not worse than the arm's best by more than "
        f"{best_margin:g} points (or {100 * relative:g}% of the best share when that is less), "
        f"judged on the lower end of the {pct} BCa interval of the paired difference. "
        "**Planned family** (`effects.csv`, the only source of claims): factorial main "
        "effects and two-way interactions, and each arm against the top arm, at chosen "
        "epochs and at equal steps; sign-flip permutation test of the mean difference, "
        "Bonferroni-adjusted, with BCa intervals at the matching simultaneous coverage "
        f"(column `confidence`, so all hold together at {pct}). A finding is stated only "
        f"where that interval excludes 0 and the adjusted p is below {1 - confidence:.3g} "
        "(where they disagree, nothing is claimed). **Exploratory family** (`comparisons.csv`): every "
        "pair of arms at every epoch, Holm-adjusted within each face model and prompt set, "
        f"unadjusted {pct} BCa intervals; nothing in it is stated as established. Lower "
        "distance = more alike."
    )


def _decision_for(decisions: list[dict], summary: pd.DataFrame) -> dict:
    """The decision whose key matches the headline rows of ``summary``."""
    for decision in decisions:
        key = decision.get("key", {})
        if all(
            column in summary.columns and (summary[column].astype(str) == str(value)).all()
            for column, value in key.items()
        ):
            return decision
    return decisions[0] if decisions else {}


def _select(frame: pd.DataFrame | None, key: Mapping[str, object]) -> pd.DataFrame | None:
    if frame is None:
        return None
    for column, value in key.items():
        if column in frame.columns:
            frame = frame.loc[frame[column].astype(str) == str(value)]
    return frame


def verdict_objects(
    summary: pd.DataFrame,
    effects: pd.DataFrame,
    decisions: list[dict],
    *,
    replicates: int = 1,
    best_margin: float = 5.0,
    confidence: float = stats.CONFIDENCE,
) -> dict | list[dict]:
    """``verdict.json``: one object, or a list of one per (model, prompt set)."""
    objects = [
        verdict_object(
            _select(summary, d["key"]),
            _select(effects, d["key"]),
            d,
            replicates=replicates,
            best_margin=best_margin,
            confidence=confidence,
        )
        for d in decisions
    ]
    return objects[0] if len(objects) == 1 else objects


def markdown(
    summary: pd.DataFrame,
    scores: pd.DataFrame,
    demo: bool,
    *,
    comparisons: pd.DataFrame | None = None,
    effects: pd.DataFrame | None = None,
    decisions: list[dict] | None = None,
    baseline: pd.DataFrame | None = None,
    confidence: float = stats.CONFIDENCE,
    best_margin: float = 5.0,
    best_margin_relative: float = 0.25,
    min_faces: int = 20,
    replicates: int = 1,
    primary_model: str | None = None,
    tokens: Mapping[str, str] | None = None,
    ranking: pd.DataFrame | None = None,
    ranking_source: str = "ranking.csv",
    memorization: pd.DataFrame | None = None,
    baseline_arm: str | None = None,
) -> str:
    """Human summary: warning (demo), verdict, tokens, table, face rate, chosen epochs, tables.

    ``baseline_arm`` (a one at a time design, :func:`dreamgrid.inference.baseline_arm`) adds
    a sentence saying so: its effects are single arms against the baseline, no interactions.

    The verdict reads prompt set ``main`` and ``primary_model`` (default: the first model in
    the summary) only: other prompt sets ask other questions (class bleed, styles), and
    distances of different recognition models are not comparable. ``tokens`` (token name ->
    configured string) and the token finder's ``ranking`` add a section naming the token
    each arm trained on (:func:`tokens_markdown`; ``ranking_source`` names the file).
    """
    pct_columns = share_columns(summary.columns)
    lowest = pct_columns[0] if pct_columns else None
    baseline_mean = baseline_mod.baseline_value(baseline)
    pct = f"{100 * confidence:g}%"
    parts = []
    if demo:
        parts.append(DEMO_WARNING)
    parts.append("# dreamgrid summary")
    checkpoints = len(summary[["arm", "epoch"]].drop_duplicates())
    sets = summary["prompt_set"].nunique() if "prompt_set" in summary.columns else 1
    bases = ""
    if BASE_MODEL in summary.columns:
        from dreamgrid.inference import axis_levels

        names = axis_levels(BASE_MODEL, summary[BASE_MODEL].astype(str).tolist())
        bases = f" on {len(names)} base models ({', '.join(names)})"
    parts.append(
        f"{len(scores)} renders, {summary['arm'].nunique()} arms{bases}, {checkpoints} checkpoints"
        + (f" × {sets} prompt sets" if sets > 1 else "")
        + ". Distances are DeepFace distances to the reference photos, averaged per render: "
        "lower means more alike."
    )
    if baseline_arm is not None:
        parts.append(
            f"**Design: one at a time** (`axes.design: one_at_a_time`). The arms are a baseline "
            f"recipe, `{baseline_arm}`, and arms that each change one axis from it, so each "
            "axis's effect (term `main`) is that arm against the baseline with every other axis "
            "at its baseline value. No interactions are estimated: the arms that would show "
            "them were not trained."
        )
    parts.append("## Verdict")
    if "model" in summary.columns and primary_model is None and len(summary):
        primary_model = str(summary["model"].iloc[0])
    if group_columns(summary):
        scope = [f"prompt set `{MAIN_PROMPT_SET}`"] if "prompt_set" in summary.columns else []
        scope += [f"face model `{primary_model}`"] if "model" in summary.columns else []
        parts.append(
            f"Read from {' and '.join(scope)}; the tables below list every prompt set and "
            "model, and `verdict.json` holds the claims of each."
        )
    head = headline(summary, primary_model)
    decision = _decision_for(decisions or [], head)
    parts.append(
        verdict(
            head,
            _select(effects, decision.get("key", {})),
            decision,
            baseline_mean,
            baseline_ci=baseline_mod.baseline_interval(baseline, confidence),
            confidence=confidence,
            replicates=replicates,
            best_margin=best_margin,
        )
    )
    parts.append(method_markdown(confidence, best_margin, best_margin_relative, min_faces))
    power_text = power_markdown(
        headline_power(summary, scores, effects, decisions, primary_model, confidence)
    )
    if power_text:
        parts.append(power_text)
    if tokens:
        parts.append(tokens_markdown(tokens, ranking, ranking_source))
    if memorization is not None:
        parts.append(memorization_markdown(memorization, confidence))
    parts.append("## Per checkpoint")
    parts.append(
        f"Brackets hold {pct} intervals: BCa bootstrap for the average (renders with a face), "
        "Wilson for shares. `pct_below_*` are percent of renders with a face (not shown for "
        f"checkpoints with fewer than {min_faces} faces); `pct_below_*_all` percent of all "
        "renders, a render without a face counting as not below."
    )
    parts.append(_summary_markdown_table(summary))

    faces = int(scores["face_found"].sum())
    note = (
        f"**Face rate.** A face was found in {faces} of {len(scores)} renders "
        f"({100.0 * faces / max(len(scores), 1):.1f}%). `face_rate` is that fraction per "
        "checkpoint; `average` and the faces-only `pct_below_*` columns count only renders "
        "with a face (renders without one are not scored as distance 0)."
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

    lines = ["## Chosen epoch per arm", ""]
    if lowest is not None:
        lines += [
            (
                f"`best`: the epoch chosen on the selection half of the seeds by the rule "
                "above (non-inferiority of the all-renders "
                f"`{lowest}_all`); `best_not_worse`: the same rule on every seed."
            ),
            "",
        ]
    arm_keys = ["arm", *group_columns(summary)]
    for key, group in summary.groupby(arm_keys, sort=True):
        name = " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        best = group[group["best"].astype(bool)]
        if best.empty:
            lines.append(
                f"- **{name}**{_base_model_of(group, group['arm'].iloc[0])}: no checkpoint with "
                f"at least {min_faces} faces, so no chosen epoch."
            )
            continue
        row = best.iloc[0]
        detail = f"{lowest}_all = {row[f'{lowest}_all']:.1f}%, " if lowest else ""
        text = f"- **{name}**{_base_model_of(group, row['arm'])}: {_checkpoint_words(row, pct)}"
        text += f" ({detail.rstrip(', ')})"
        if group["best_not_worse"].any():
            early = group.loc[group["best_not_worse"].astype(bool)].iloc[0]
            text += f"; on every seed: epoch {int(early['epoch'])}"
        lines.append(text)
    parts.append("\n".join(lines))

    if effects is not None and len(effects):
        parts.append("## Planned contrasts (headline family)")
        parts.append(
            "Per seed, the distance difference a level makes against the reference level "
            "(first level of the axis), averaged over arms equal on the other axes; "
            "interactions are differences of differences; `vs_top` rows are an arm minus the "
            "top arm. Negative = the first-named is more alike. Intervals are simultaneous "
            "(Bonferroni, column `confidence`), `p_adjusted` Bonferroni. `checkpoints` lists "
            "the epoch (and steps) used for every arm. Full table: `results/effects.csv`."
        )
        if (effects["term"] == "within").any():
            parts[-1] += (
                " Rows with term `within` (axis `<axis> | base_model=<name>`) are the same main "
                "effect among the arms of one base model only: a recipe may help on one base "
                "model and not on another (the `x base_model` interactions test the difference)."
            )
        shown = effects.drop(columns=["p_value", "method", "family"])
        parts.append(_frame_markdown(shown))
    if comparisons is not None and len(comparisons):
        parts.append("## Paired comparisons between arms (exploratory)")
        parts.append(
            "`mean_diff` = arm_a minus arm_b over seeds where both found a face, with its "
            f"unadjusted {pct} BCa interval; `p_value` the sign-flip permutation test of that "
            "mean, `p_adjusted` Holm over all pairs × all epochs of each face model and prompt "
            "set; `share_a_better` the share of those seeds where arm_a is more alike; "
            "`face_diff` face rate of arm_a minus arm_b (exact McNemar `face_p`). Exploratory: "
            "nothing here is stated as established. Full table: `results/comparisons.csv`."
        )
        parts.append(_frame_markdown(comparisons.drop(columns=["method"]).head(60)))
    return "\n\n".join(parts) + "\n"
