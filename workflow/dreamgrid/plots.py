"""Figures for the aggregate stage: histograms per checkpoint and per arm, curves against
epoch and steps with confidence bands, and contact sheets of renders sorted by distance.

Every distance plot draws the "as alike as real photos" line: the mean leave-one-out distance
among the reference photos (:func:`dreamgrid.baseline.leave_one_out`), when known.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so
nothing leaks between plots and no display is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dreamgrid import scoretable
from dreamgrid.baseline import baseline_mean, read_baseline
from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.scoretable import BASE_MODEL, as_bool, share_columns

# No display on cluster nodes; figures below do not use pyplot, but seaborn imports it.
# seaborn itself (~1 s to import) is imported only where it draws: every plot is its own job,
# and contact sheets, candidate sheets and faceless histograms never need it.
matplotlib.use("Agg")

log = logging.getLogger(__name__)

#: Figure size in inches and resolution: PNGs are FIGSIZE x DPI pixels (800 x 500).
FIGSIZE = (8.0, 5.0)
DPI = 100

_THRESHOLD_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink")

#: Written across every figure of a demo run: its models have random weights.
DEMO_MARK = "demo: random weights"
#: Labels of the distance and share axes (the direction is part of the label).
DISTANCE_LABEL = "mean distance (lower = more alike)"
REAL_PHOTOS = "real photos (references)"


def mark_demo(fig: Figure) -> None:
    """Write ``DEMO_MARK`` across the figure, large and faint, and once plainly in a corner."""
    fig.text(
        0.5,
        0.5,
        DEMO_MARK,
        fontsize=40,
        color="tab:red",
        alpha=0.18,
        rotation=20,
        ha="center",
        va="center",
        weight="bold",
    )
    fig.text(0.005, 0.005, DEMO_MARK, fontsize="small", color="tab:red", weight="bold")


def save(fig: Figure, out: Path, demo: bool = False, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG under a temporary name (marked as a demo when ``demo``)."""
    if demo:
        mark_demo(fig)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(out)


def _shared_legend(fig, axes, used: int, max_columns: int) -> None:
    """Hide the grid's unused panels and give the figure one legend: each label once, from the
    first of the ``used`` panels that draws it."""
    for ax in axes[used:]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes[:used]:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(max_columns, len(labels)))


def _show_lines(ax, xs: Sequence[float]) -> None:
    """Extend the x axis so that every vertical reference line in ``xs`` lies inside it."""
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    if not xs:
        return
    low, high = ax.get_xlim()
    pad = 0.05 * max(high - low, max(xs) - min(xs), 1e-3)
    ax.set_xlim(min(low, min(xs) - pad), max(high, max(xs) + pad))


def _distances(scores: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Distances of renders with a face, and the number of renders."""
    missing = [c for c in ("face_found", "mean_distance") if c not in scores.columns]
    if missing:
        raise SpecError(f"scores: missing column(s) {', '.join(missing)} for the histogram.")
    found = as_bool(scores["face_found"], "scores")
    distance = pd.to_numeric(scores["mean_distance"], errors="coerce")
    values = distance[found & distance.notna()].to_numpy(dtype=float)
    return values, len(scores)


def histogram_figure(
    scores: pd.DataFrame,
    thresholds: Sequence[float],
    title: str,
    baseline: float | None = None,
) -> Figure:
    """The figure :func:`histogram` writes (for tests and callers that save it themselves)."""
    for key in ("arm", "epoch"):
        if key in scores.columns and scores[key].nunique() > 1:
            raise SpecError(
                f"histogram: scores hold several values of {key} ({sorted(scores[key].unique())}); "
                "pass one checkpoint, or use histograms() for many."
            )
    values, renders = _distances(scores)
    levels = sorted({float(t) for t in thresholds})
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    _histogram_panel(ax, values, renders, levels, baseline)
    ax.set_title(f"{title}\n{_subtitle(values, renders)}", fontsize="medium")
    return fig


def histogram(
    scores: pd.DataFrame,
    thresholds: Sequence[float],
    out: Path,
    title: str,
    baseline: float | None = None,
    demo: bool = False,
) -> Path:
    """Histogram of ``mean_distance`` for one checkpoint, with thresholds and mean marked.

    Args:
        scores: rows of one checkpoint (face_found, mean_distance); renders without a
            face are left out of the histogram and counted in the subtitle.
        thresholds: distances to mark, each labelled with the % of faces below it.
        out: PNG to write (FIGSIZE x DPI pixels).
        title: figure title, e.g. the arm and epoch.
        baseline: the real-photos distance to mark (None or NaN: not drawn).
        demo: mark the figure as a demo (random weights).

    Returns:
        ``out``.
    """
    fig = histogram_figure(scores, thresholds, title, baseline)
    save(fig, out, demo)
    values, renders = _distances(scores)
    log.info("wrote %s (%d faces in %d renders)", out, len(values), renders)
    return Path(out)


def _subtitle(values: np.ndarray, renders: int) -> str:
    return f"{len(values)} of {renders} renders with a face" if len(values) else "nothing to score"


def _baseline_line(ax, baseline: float | None, vertical: bool = True) -> None:
    if baseline is None or not np.isfinite(baseline):
        return
    draw = ax.axvline if vertical else ax.axhline
    # One label for every panel, so the figure's legend has one entry for it.
    draw(baseline, color="tab:green", linewidth=2, linestyle=":", label=REAL_PHOTOS)


def _palette(arms: int) -> list:
    """Line colours: tab10 for up to ten arms, else evenly spaced hues."""
    import seaborn as sns

    return sns.color_palette("tab10" if arms <= 10 else "husl")


def _histogram_panel(
    ax, values: np.ndarray, renders: int, levels: list[float], baseline: float | None
) -> None:
    if len(values):
        import seaborn as sns

        sns.histplot(x=values, ax=ax, bins=min(30, max(5, len(values) // 4)), color="tab:blue")
        for level, color in zip(levels, _THRESHOLD_COLORS * len(levels), strict=False):
            share = 100.0 * float((values < level).sum()) / len(values)
            ax.axvline(level, color=color, linestyle="--", label=f"{level:g}: {share:.1f}% below")
        mean = float(values.mean())
        ax.axvline(mean, color="black", linewidth=2, label=f"mean {mean:.4f}")
    else:
        for level, color in zip(levels, _THRESHOLD_COLORS * len(levels), strict=False):
            ax.axvline(level, color=color, linestyle="--", label=f"{level:g}")
        if levels:
            pad = max(0.5 * (max(levels) - min(levels)), 0.2 * max(levels))
            ax.set_xlim(min(levels) - pad, max(levels) + pad)
        ax.text(
            0.5,
            0.5,
            f"no render in this checkpoint contained a face ({renders} renders)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize="large",
            bbox={"facecolor": "white", "edgecolor": "none"},
        )
    _baseline_line(ax, baseline)
    # Every line in the legend is inside the axes.
    _show_lines(ax, [*levels, baseline if baseline is not None else np.nan])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="small")
    ax.set_ylabel("renders")
    ax.set_xlabel(f"{DISTANCE_LABEL} to the references")


def arm_histograms_figure(
    scores: pd.DataFrame,
    thresholds: Sequence[float],
    title: str,
    baseline: float | None = None,
) -> Figure:
    """The figure :func:`arm_histograms` writes."""
    if "epoch" not in scores.columns:
        raise SpecError("scores: missing column epoch for the per-arm histograms.")
    epochs = sorted(int(e) for e in scores["epoch"].unique())
    if not epochs:
        raise SpecError(f"{title}: no renders to plot.")
    levels = sorted({float(t) for t in thresholds})
    ncols = min(3, len(epochs))
    nrows = -(-len(epochs) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for ax, epoch in zip(axes, epochs, strict=False):
        group = scores.loc[scores["epoch"] == epoch]
        values, renders = _distances(group)
        _histogram_panel(ax, values, renders, levels, baseline)
        label = f"epoch {epoch}"
        if "steps" in group.columns and group["steps"].nunique() == 1:
            label += f", {int(group['steps'].iloc[0])} steps"
        ax.set_title(f"{label}\n{_subtitle(values, renders)}", fontsize="small")
        ax.set_xlabel(DISTANCE_LABEL, fontsize="small")
    for ax in axes[len(epochs) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: scores per checkpoint (lower = more alike)")
    return fig


def arm_histograms(
    scores: pd.DataFrame,
    thresholds: Sequence[float],
    out: Path,
    title: str,
    baseline: float | None = None,
    demo: bool = False,
) -> Path:
    """All checkpoints of one arm as one faceted figure: a histogram panel per epoch.

    Args:
        scores: renders of one arm (epoch, face_found, mean_distance, optionally steps).
        thresholds: distances to mark in every panel.
        out: PNG to write.
        title: figure title (the arm).
        baseline: the real-photos distance to mark.
        demo: mark the figure as a demo (random weights).

    Returns:
        ``out``.
    """
    save(arm_histograms_figure(scores, thresholds, title, baseline), out, demo)
    log.info("wrote %s (%d epochs)", out, scores["epoch"].nunique())
    return Path(out)


def chosen_histograms_figure(
    scores: pd.DataFrame,
    summary: pd.DataFrame,
    thresholds: Sequence[float],
    title: str,
    baseline: float | None = None,
) -> Figure:
    """The figure :func:`chosen_histograms` writes."""
    import seaborn as sns

    chosen = summary.loc[summary["best"].astype(bool), ["arm", "epoch"]]
    picked = scores.merge(chosen, on=["arm", "epoch"])
    facets = [(None, picked)]
    if len(_base_model_facets(summary)) > 1:
        # a panel for every base model of the grid, also one without a chosen epoch
        bases = summary.drop_duplicates("arm").set_index("arm")[BASE_MODEL].astype(str)
        of_arm = picked["arm"].map(bases)
        facets = [(b, picked.loc[of_arm == b]) for b, _ in _base_model_facets(summary)]
    levels = sorted({float(t) for t in thresholds})
    every, _ = _distances(picked)
    # the same bins in every panel, so that the panels compare
    edges = (
        np.histogram_bin_edges(every, bins=min(30, max(5, len(every) // 8))) if len(every) else 10
    )
    ncols = min(3, len(facets))
    nrows = -(-len(facets) // ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.8 * nrows + 1.2), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    arms = sorted(summary["arm"].unique())
    palette = _palette(len(arms))
    colors = {arm: palette[i % len(palette)] for i, arm in enumerate(arms)}
    for ax, (base, part) in zip(axes, facets, strict=False):
        shown = 0
        for arm, group in part.groupby("arm", sort=True):
            values, _ = _distances(group)
            if not len(values):
                continue
            epoch = int(group["epoch"].iloc[0])
            sns.histplot(
                x=values,
                ax=ax,
                bins=edges,
                element="step",
                fill=False,
                color=colors[arm],
                label=f"{arm} (epoch {epoch})",
            )
            shown += 1
        if not shown:
            ax.text(
                0.5,
                0.5,
                "no face at any chosen epoch",
                transform=ax.transAxes,
                ha="center",
                va="center",
            )
        # grey thresholds: the arms' outlines take the colours
        for level, style in zip(levels, ["--", "-."] * len(levels), strict=False):
            ax.axvline(level, color="dimgray", linestyle=style, label=f"threshold {level:g}")
        _baseline_line(ax, baseline)
        _show_lines(ax, [*levels, baseline if baseline is not None else np.nan])
        values, renders = _distances(part)
        name = "every arm" if base is None else f"base model {base}"
        ax.set_title(f"{name}\n{_subtitle(values, renders)}", fontsize="medium")
        ax.set_xlabel(DISTANCE_LABEL, fontsize="small")
        ax.set_ylabel("renders")
    _shared_legend(fig, axes, len(facets), max_columns=3)
    per = ", a panel per base model" if len(facets) > 1 else ""
    fig.suptitle(f"{title}: scores at each arm's chosen epoch{per} (lower = more alike)")
    return fig


def chosen_histograms(
    scores: pd.DataFrame,
    summary: pd.DataFrame,
    thresholds: Sequence[float],
    out: Path,
    title: str,
    baseline: float | None = None,
    demo: bool = False,
) -> Path:
    """Every arm's renders at its chosen epoch (``best`` in the summary), an outline per arm;
    with several base models (a ``base_model`` column in the summary) a panel per base
    model, on shared bins and x axis.

    Args:
        scores: renders (arm, epoch, face_found, mean_distance) of one face model and prompt
            set.
        summary: :func:`dreamgrid.summary.summarize`'s table of the same (``best``, and
            ``base_model`` when the grid has several).
        thresholds: distances to mark in every panel.
        out: PNG to write.
        title: figure title (e.g. the prompt set).
        baseline: the real-photos distance to mark.
        demo: mark the figure as a demo (random weights).

    Returns:
        ``out``.
    """
    save(chosen_histograms_figure(scores, summary, thresholds, title, baseline), out, demo)
    log.info("wrote %s", out)
    return Path(out)


def _series_label(row: pd.Series, keys: Sequence[str]) -> str:
    return " / ".join(str(row[k]) for k in keys)


#: Curve panels: summary column -> (panel title, y-axis label).
_CURVE_PANELS = {
    "average": ("average distance of the faces", DISTANCE_LABEL),
    "median": ("median distance of the faces", "median distance (lower = more alike)"),
    "face_rate": ("face rate", "share of renders with a face (0-1)"),
}


def _curve_panels(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(column, title, y label) of each panel the summary has columns for."""
    pct = share_columns(summary.columns)
    panels = [(c, *_CURVE_PANELS[c]) for c in ("average", "median")]
    for column in pct:
        level = column.removeprefix("pct_below_")
        panels.append(
            (column, f"share of faces below {level}", f"% below {level} (higher = more alike)")
        )
    panels.append(("face_rate", *_CURVE_PANELS["face_rate"]))
    return [panel for panel in panels if panel[0] in summary.columns]


def _base_model_facets(table: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """(base model, its rows) per base model when ``table`` has several (in the order of the
    contrasts' levels), else one facet of every row named None."""
    if BASE_MODEL not in table.columns or table[BASE_MODEL].nunique() < 2:
        return [(None, table)]
    from dreamgrid.inference import axis_levels

    names = axis_levels(BASE_MODEL, table[BASE_MODEL].astype(str).tolist())
    return [(name, table.loc[table[BASE_MODEL].astype(str) == name]) for name in names]


def curves_figure(
    summary: pd.DataFrame,
    x: str = "epoch",
    baseline: pd.DataFrame | None = None,
    title: str = "",
    confidence: float = 0.95,
) -> Figure:
    """The figure :func:`curves` writes: a panel per metric, or with several base models
    (a ``base_model`` column) a row of them per base model, each with its arms' lines."""
    if x not in summary.columns:
        raise SpecError(f"summary: no column {x!r} to plot against; has {list(summary.columns)}.")
    panels = _curve_panels(summary)
    ref = None
    if baseline is not None and len(baseline):
        ref = pd.to_numeric(baseline["mean_distance"], errors="coerce").dropna().to_numpy()
    keys = ["arm", *[c for c in ("model", "prompt_set") if c in summary.columns]]
    facets = _base_model_facets(summary)
    if len(facets) > 1:
        # one row per base model, one column per metric; a column shares its y axis
        ncols, nrows = len(panels), len(facets)
        fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 1.2), dpi=DPI, layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False, sharey="col")
        cells = [
            (grid[r, c], panel, facet)
            for r, facet in enumerate(facets)
            for c, panel in enumerate(panels)
        ]
    else:
        ncols = min(3, len(panels))
        nrows = -(-len(panels) // ncols)
        fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows + 1.2), dpi=DPI, layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False)
        cells = [(ax, panel, facets[0]) for ax, panel in zip(grid.ravel(), panels, strict=False)]
    axes = np.atleast_1d(grid).ravel()
    palette = _palette(summary["arm"].nunique())
    # an arm keeps its colour in every facet
    names = [name for name, _ in summary.groupby(keys, sort=True)]
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    bands = False
    for ax, (column, label, ylabel), (base, part) in cells:
        empty = part["average"].isna().all()
        for name, group in part.groupby(keys, sort=True):
            group = group.sort_values(x)
            color = colors[name]
            name = _series_label(group.iloc[0], keys)
            ax.plot(group[x], group[column], marker="o", color=color, label=name)
            low, high = f"{column}_ci_low", f"{column}_ci_high"
            if low in group.columns and group[low].notna().any():
                ax.fill_between(group[x], group[low], group[high], color=color, alpha=0.15)
                bands = True
        if ref is not None and len(ref):
            if column in ("average", "median"):
                _baseline_line(ax, float(ref.mean()), vertical=False)
            elif column.startswith("pct_below_"):
                level = float(column.removeprefix("pct_below_"))
                _baseline_line(ax, 100.0 * float((ref < level).mean()), vertical=False)
        if column == "face_rate":
            ax.set_ylim(-0.02, 1.02)
        elif column.startswith("pct_below_"):
            ax.set_ylim(-2, 102)
        if column != "face_rate" and empty:
            # Nothing plotted: keep the panel's x axis on the grid's epochs/steps anyway.
            xs = pd.to_numeric(part[x], errors="coerce").dropna()
            if len(xs):
                pad = max(0.5, 0.05 * float(xs.max() - xs.min()))
                ax.set_xlim(float(xs.min()) - pad, float(xs.max()) + pad)
            ax.text(
                0.5,
                0.5,
                "no render in any checkpoint\ncontained a face",
                transform=ax.transAxes,
                ha="center",
                va="center",
                bbox={"facecolor": "white", "edgecolor": "none"},
            )
        ax.set_title(label if base is None else f"base model {base}: {label}", fontsize="medium")
        ax.set_ylabel(ylabel, fontsize="small")
        ax.set_xlabel("training steps" if x == "steps" else "epoch")
        if x == "epoch":
            ax.xaxis.get_major_locator().set_params(integer=True)
    _shared_legend(fig, axes, len(cells), max_columns=4)
    against = "training steps (equal-steps comparison)" if x == "steps" else "epoch"
    heading = f"Metrics against {against}"
    if len(facets) > 1:
        heading += ", a row per base model"
    if bands:
        heading += f"; bands: {100 * confidence:g}% intervals"
    fig.suptitle(f"{title}: {heading}" if title else heading)
    return fig


def curves(
    summary: pd.DataFrame,
    out: Path,
    x: str = "epoch",
    baseline: pd.DataFrame | None = None,
    title: str = "",
    confidence: float = 0.95,
    demo: bool = False,
) -> Path:
    """Each metric of the summary against ``x`` (epoch or steps), a line per arm, CI bands.

    Panels: average distance, median, each ``pct_below_<t>`` and the face rate (on 0-1), each
    with its y-axis label and direction. Bands are the summary's intervals, drawn (and named in
    the title) where the summary has them. The real-photos line is the references' mean
    leave-one-out distance on the distance panels and the share of references below ``t`` on
    the share panels; one legend entry serves all of them.

    Args:
        summary: from :func:`dreamgrid.summary.summarize` (with intervals).
        out: PNG to write.
        x: ``epoch`` or ``steps`` (equal-steps comparison across arms).
        baseline: reference leave-one-out table (``mean_distance`` per reference), or None.
        title: what the figure shows (e.g. the prompt set); the axis and band coverage are
            added to it.
        confidence: coverage of the summary's intervals, for the title.
        demo: mark the figure as a demo (random weights).

    Returns:
        ``out``.
    """
    save(curves_figure(summary, x, baseline, title, confidence), out, demo)
    log.info("wrote %s (%d arms)", out, summary["arm"].nunique())
    return Path(out)


def pick_renders(scores: pd.DataFrame, per_group: int) -> list[tuple[str, pd.DataFrame]]:
    """Renders for a contact sheet: best, median and worst ``per_group`` by distance, then
    (up to ``per_group``) renders without a face. Few renders: all of them, sorted."""
    faces = scores.loc[as_bool(scores["face_found"], "scores")]
    faces = faces.sort_values(["mean_distance", "seed"] if "seed" in faces else "mean_distance")
    none = scores.loc[~as_bool(scores["face_found"], "scores")]
    groups: list[tuple[str, pd.DataFrame]] = []
    n = len(faces)
    if n <= 3 * per_group:
        if n:
            groups.append(("all faces, best first", faces))
    else:
        middle = (n - per_group) // 2
        groups += [
            ("best", faces.iloc[:per_group]),
            ("median", faces.iloc[middle : middle + per_group]),
            ("worst", faces.iloc[-per_group:]),
        ]
    if len(none):
        groups.append(("no face found", none.head(per_group)))
    return groups


def _find_render(folders: Sequence[Path], image: str) -> Path:
    """``image`` in one of ``folders`` (or their sample-shard subfolders)."""
    for folder in folders:
        # scores.csv names a sharded render relative to renders/ (shard-<k>/render-<seed>.png)
        candidates = (folder / image, folder.parent / image, *sorted(folder.glob(f"*/{image}")))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    where = ", ".join(map(str, folders))
    raise SpecError(f"{image}: render listed in the scores is not in {where}; rerun sampling.")


def contact_sheet(
    scores: pd.DataFrame,
    renders: Path | Sequence[Path],
    out: Path,
    title: str,
    per_group: int = 4,
    demo: bool = False,
) -> Path:
    """Renders of one checkpoint sorted by distance: best, median and worst rows.

    Args:
        scores: rows of one checkpoint (image, face_found, mean_distance, seed).
        renders: folder(s) holding the ``image`` files (directly or in shard subfolders).
        out: PNG to write.
        title: figure title.
        per_group: renders per row.
        demo: mark the figure as a demo (random weights).

    Returns:
        ``out``.
    """
    from PIL import Image

    missing = [c for c in ("image", "face_found", "mean_distance") if c not in scores.columns]
    if missing:
        raise SpecError(f"scores: missing column(s) {', '.join(missing)} for the contact sheet.")
    folders = [Path(renders)] if isinstance(renders, (str, Path)) else [Path(r) for r in renders]
    groups = pick_renders(scores, per_group)
    ncols = max([per_group] + [len(g) for _, g in groups if len(g) <= 3 * per_group])
    ncols = min(ncols, 3 * per_group)
    rows = []
    for name, group in groups:
        for start in range(0, len(group), ncols):
            rows.append((name, group.iloc[start : start + ncols]))
    fig = Figure(figsize=(2.2 * ncols, 2.5 * len(rows) + 0.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(rows), ncols, squeeze=False))
    for r, (name, group) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(group):
                ax.set_visible(False)
                continue
            item = group.iloc[c]
            path = _find_render(folders, str(item["image"]))
            with Image.open(path) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
            score = item["mean_distance"]
            text = "no face" if pd.isna(score) else f"{float(score):.3f}"
            seed = f"seed {int(item['seed'])}: " if "seed" in item.index else ""
            ax.set_title(f"{seed}{text}", fontsize="small")
            if c == 0:
                ax.set_ylabel(name, fontsize="small")
    fig.suptitle(f"{title}: renders by distance (lower = more alike)")
    save(fig, out, demo)
    log.info("wrote %s (%d rows)", out, len(rows))
    return Path(out)


def candidate_sheet(
    ranking: pd.DataFrame,
    folders: dict[str, Path],
    out: Path,
    top: int = 6,
    per_row: int = 6,
    demo: bool = False,
) -> Path:
    """The top-ranked candidate names, a row of their base-model renders each.

    Args:
        ranking: from :func:`dreamgrid.candidates.rank` (candidate, rank, average, ...).
        folders: candidate name -> folder of its renders.
        out: PNG to write.
        top: candidates shown (best ranks first).
        per_row: renders shown per candidate.
        demo: mark the figure as a demo (random weights).
    """
    from PIL import Image

    from dreamgrid.io import list_images

    shown = ranking.sort_values("rank").head(top)
    if shown.empty:
        raise SpecError("ranking: no candidates to show.")
    images = {name: list_images(folders[name])[:per_row] for name in shown["candidate"]}
    ncols = max(len(v) for v in images.values())
    # At least 6 inches wide, so that the title fits over a few renders.
    width = max(2.0 * ncols, 6.0)
    fig = Figure(figsize=(width, 2.3 * len(shown) + 0.9), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(shown), ncols, squeeze=False))
    for r, row in enumerate(shown.itertuples(index=False)):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images[row.candidate]):
                ax.set_visible(False)
                continue
            with Image.open(images[row.candidate][c]) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
        average = "no face" if pd.isna(row.average) else f"avg {row.average:.3f}"
        axes[r, 0].set_ylabel(
            f"{row.rank}. {row.candidate}\n{average}, faces {row.face_rate:.0%}", fontsize="small"
        )
    fig.suptitle("Look-alike candidates:\nbase-model renders of the top-ranked names")
    save(fig, out, demo)
    log.info("wrote %s (%d candidates)", out, len(shown))
    return Path(out)


def tradeoff_figure(flex: pd.DataFrame) -> Figure:
    """The figure :func:`tradeoff` writes."""
    panels = [
        (
            "bleed_average",
            "class bleed: average distance of class renders",
            "class renders' distance (lower = leak)",
            "no class-bleed prompt set (without {token}), or no face in its renders",
        ),
        (
            "prompts_face_rate",
            "prompt following: face rate of other prompts",
            "face rate of other prompts (0-1)",
            "no other prompt set with {token}, or no face in its renders",
        ),
    ]
    fig = Figure(figsize=(12.0, 5.0), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    palette = _palette(flex["arm"].nunique())
    no_likeness = "likeness_average" not in flex or flex["likeness_average"].isna().all()
    for ax, (column, label, ylabel, missing) in zip(axes, panels, strict=True):
        columns = ["likeness_average", column]
        shown = flex.dropna(subset=columns) if set(columns) <= set(flex) else flex.iloc[:0]
        for index, (arm, group) in enumerate(shown.groupby("arm", sort=True)):
            group = group.sort_values("epoch")
            color = palette[index % len(palette)]
            ax.plot(group["likeness_average"], group[column], marker="o", color=color, label=arm)
            for x, y, epoch in group[["likeness_average", column, "epoch"]].to_numpy():
                ax.annotate(f"{int(epoch)}", (x, y), fontsize="x-small", xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        if shown.empty:
            reason = "no render of prompt set main contained a face" if no_likeness else missing
            ax.text(
                0.5,
                0.5,
                f"nothing to plot:\n{reason}",
                transform=ax.transAxes,
                ha="center",
                va="center",
                wrap=True,
            )
            ax.set_xticks([])
            ax.set_yticks([])
        if column == "prompts_face_rate":
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"likeness: main renders' {DISTANCE_LABEL}")
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize="medium")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    fig.suptitle("Likeness against over-training (numbers are epochs)")
    return fig


def tradeoff(flex: pd.DataFrame, out: Path, demo: bool = False) -> Path:
    """Likeness against class bleed and against prompt following, a line per arm.

    Args:
        flex: from :func:`dreamgrid.flexibility.table` (one face model).
        out: PNG to write.
        demo: mark the figure as a demo (random weights).
    """
    save(tradeoff_figure(flex), out, demo)
    log.info("wrote %s", out)
    return Path(out)


# ---- the report rules' entry functions: files in, one figure out ------------------------------


def _primary_scores(score_files: Sequence[Path], model: str) -> pd.DataFrame:
    """The renders of ``score_files`` scored by the primary face model."""
    return scoretable.primary(scoretable.collect_scores([Path(p) for p in score_files]), model)


def plot_histogram(
    scores: Sequence[Path],
    baseline: Path,
    out: Path,
    title: str,
    thresholds: Sequence[float],
    model: str,
    demo: bool = False,
    per_epoch: bool = False,
) -> Path:
    """Score tables as a histogram of the primary model's distances, with the real-photos line
    of the ``baseline`` file: one checkpoint's (:func:`histogram`), or with ``per_epoch`` a
    panel for each epoch of one arm (:func:`arm_histograms`)."""
    figure = arm_histograms if per_epoch else histogram
    return figure(
        _primary_scores(scores, model),
        thresholds=thresholds,
        out=Path(out),
        title=title,
        baseline=baseline_mean(baseline),
        demo=demo,
    )


def plot_arm_histograms(scores: Sequence[Path], **kwargs: Any) -> Path:
    """Every epoch's score table of one arm as one faceted figure: :func:`plot_histogram`
    with ``per_epoch``."""
    return plot_histogram(scores, per_epoch=True, **kwargs)


def plot_curves(
    summary: Path,
    baseline: Path,
    prompt_set: str,
    model: str,
    out_by_epoch: Path,
    out_by_steps: Path,
    confidence: float = 0.95,
    demo: bool = False,
) -> None:
    """The summary's metrics of one prompt set against epoch and against steps (:func:`curves`)."""
    table = scoretable.primary(scoretable.read_table(summary), model, prompt_set)
    line = read_baseline(baseline)
    for x, out in (("epoch", out_by_epoch), ("steps", out_by_steps)):
        curves(
            table,
            Path(out),
            x=x,
            baseline=line,
            title=f"Prompt set {prompt_set}",
            confidence=confidence,
            demo=demo,
        )


def plot_chosen_histograms(
    scores: Path,
    summary: Path,
    baseline: Path,
    prompt_set: str,
    model: str,
    thresholds: Sequence[float],
    out: Path,
    demo: bool = False,
) -> Path:
    """The aggregate's ``scores.tsv`` and ``summary.csv`` as :func:`chosen_histograms` of one
    prompt set, primary face model's distances."""
    table = scoretable.primary(scoretable.read_table(scores), model, prompt_set)
    chosen = scoretable.primary(scoretable.read_table(summary), model, prompt_set)
    return chosen_histograms(
        table,
        chosen,
        thresholds=thresholds,
        out=Path(out),
        title=f"Prompt set {prompt_set}",
        baseline=baseline_mean(baseline),
        demo=demo,
    )


def plot_contact_sheet(
    scores: Path,
    renders: Sequence[Path],
    out: Path,
    title: str,
    per_group: int,
    model: str,
    demo: bool = False,
) -> Path:
    """One checkpoint's renders sorted by the primary model's distance (:func:`contact_sheet`)."""
    return contact_sheet(
        _primary_scores([scores], model),
        renders=[Path(p) for p in renders],
        out=Path(out),
        title=title,
        per_group=per_group,
        demo=demo,
    )


def plot_tradeoff(flexibility: Path, out: Path, model: str, demo: bool = False) -> Path:
    """The flexibility table of the primary model as :func:`tradeoff`'s figure."""
    table = scoretable.primary(scoretable.read_table(flexibility), model)
    return tradeoff(table, Path(out), demo=demo)


def plot_candidates(
    ranking: Path,
    names: Sequence[str],
    folders: Sequence[Path],
    out: Path,
    top: int,
    demo: bool = False,
) -> Path:
    """The token finder's top names with their renders (:func:`candidate_sheet`); ``folders``
    are the candidates' render folders, in the order of ``names``."""
    return candidate_sheet(
        pd.read_csv(ranking),
        folders=dict(zip(names, [Path(p) for p in folders], strict=True)),
        out=Path(out),
        top=top,
        demo=demo,
    )


__all__ = [
    "DEMO_MARK",
    "DPI",
    "FIGSIZE",
    "arm_histograms",
    "arm_histograms_figure",
    "candidate_sheet",
    "chosen_histograms",
    "chosen_histograms_figure",
    "contact_sheet",
    "curves",
    "curves_figure",
    "histogram",
    "histogram_figure",
    "mark_demo",
    "pick_renders",
    "plot_arm_histograms",
    "plot_candidates",
    "plot_chosen_histograms",
    "plot_contact_sheet",
    "plot_curves",
    "plot_histogram",
    "plot_tradeoff",
    "save",
    "tradeoff",
    "tradeoff_figure",
]
