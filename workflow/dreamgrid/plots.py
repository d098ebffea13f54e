"""Figures for the aggregate stage: a histogram of render scores per checkpoint.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so
nothing leaks between plots and no display is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from dreamgrid.aggregate import as_bool
from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path

# No display on cluster nodes; figures below do not use pyplot, but seaborn imports it.
matplotlib.use("Agg")

log = logging.getLogger(__name__)

#: Figure size in inches and resolution: PNGs are FIGSIZE x DPI pixels (800 x 500).
FIGSIZE = (8.0, 5.0)
DPI = 100

_THRESHOLD_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink")


def _distances(scores: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Distances of renders with a face, and the number of renders."""
    missing = [c for c in ("face_found", "mean_distance") if c not in scores.columns]
    if missing:
        raise SpecError(f"scores: missing column(s) {', '.join(missing)} for the histogram.")
    found = as_bool(scores["face_found"], "scores")
    distance = pd.to_numeric(scores["mean_distance"], errors="coerce")
    values = distance[found & distance.notna()].to_numpy(dtype=float)
    return values, len(scores)


def histogram(scores: pd.DataFrame, thresholds: Sequence[float], out: Path, title: str) -> Path:
    """Histogram of ``mean_distance`` for one checkpoint, with thresholds and mean marked.

    Args:
        scores: rows of one checkpoint (face_found, mean_distance); renders without a
            face are left out of the histogram and counted in the subtitle.
        thresholds: distances to mark, each labelled with the % of faces below it.
        out: PNG to write (FIGSIZE x DPI pixels).
        title: figure title, e.g. the arm and epoch.

    Returns:
        ``out``.
    """
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
    if len(values):
        sns.histplot(x=values, ax=ax, bins=min(30, max(5, len(values) // 4)), color="tab:blue")
        for level, color in zip(levels, _THRESHOLD_COLORS * len(levels), strict=False):
            share = 100.0 * float((values < level).sum()) / len(values)
            ax.axvline(level, color=color, linestyle="--", label=f"{level:g}: {share:.1f}% below")
        mean = float(values.mean())
        ax.axvline(mean, color="black", linewidth=2, label=f"mean {mean:.4f}")
        ax.legend(loc="upper right", fontsize="small")
        subtitle = f"{len(values)} of {renders} renders with a face"
    else:
        for level, color in zip(levels, _THRESHOLD_COLORS * len(levels), strict=False):
            ax.axvline(level, color=color, linestyle="--", label=f"{level:g}")
        if levels:
            ax.set_xlim(min(levels) - 0.2, max(levels) + 0.2)
            ax.legend(loc="upper right", fontsize="small")
        ax.text(
            0.5,
            0.5,
            f"no face found in {renders} renders",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize="large",
            bbox={"facecolor": "white", "edgecolor": "none"},
        )
        ax.set_ylabel("Count")
        subtitle = "nothing to score"
    ax.set_xlabel("mean face distance to the references (lower = more alike)")
    ax.set_title(f"{title}\n{subtitle}", fontsize="medium")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    log.info("wrote %s (%d faces in %d renders)", out, len(values), renders)
    return Path(out)


def histograms(scores: pd.DataFrame, thresholds: Sequence[float], out_dir: Path) -> list[Path]:
    """One histogram per checkpoint, at ``out_dir/<arm>/epoch-<epoch>.png``.

    Args:
        scores: tidy scores of many checkpoints (arm, epoch, face_found, mean_distance,
            optionally steps).
        thresholds: distances to mark.
        out_dir: folder that receives one subfolder per arm.

    Returns:
        The PNGs written, sorted by arm then epoch.
    """
    missing = [c for c in ("arm", "epoch") if c not in scores.columns]
    if missing:
        raise SpecError(f"scores: missing column(s) {', '.join(missing)} for the histograms.")
    paths = []
    for (arm, epoch), group in scores.groupby(["arm", "epoch"], sort=True):
        epoch = int(epoch)
        title = f"{arm}, epoch {epoch}"
        if "steps" in group.columns and group["steps"].nunique() == 1:
            title += f" ({int(group['steps'].iloc[0])} steps)"
        out = Path(out_dir) / str(arm) / f"epoch-{epoch}.png"
        paths.append(histogram(group, thresholds, out, title))
    return paths


__all__ = ["DPI", "FIGSIZE", "histogram", "histograms"]
