"""One arm's training loss against optimizer steps, from its per-epoch ``.loss.csv`` files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def read_losses(loss_logs: Sequence[Path]) -> list[tuple[int, int, float]]:
    """(step, epoch, loss) rows of every epoch, in step order."""
    import csv

    rows = []
    for path in loss_logs:
        with open(path, newline="") as handle:
            rows += [
                (int(r["step"]), int(r["epoch"]), float(r["loss"])) for r in csv.DictReader(handle)
            ]
    return sorted(rows)


def plot_loss_curve(
    loss_logs: Sequence[Path], out: Path, arm: str, window: int = 25, demo: bool = False
) -> Path:
    """PNG of the per-step loss (faint), its running mean over ``window`` steps and the
    epoch boundaries (marked as a demo when ``demo``). Diffusion losses are noisy per step
    (random timesteps); the running mean is what shows a trend."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    from dreamgrid.plots import save

    rows = read_losses(loss_logs)
    steps = np.array([r[0] for r in rows])
    losses = np.array([r[2] for r in rows])
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    ax = figure.add_subplot()
    ax.plot(steps, losses, lw=0.6, alpha=0.35, label="loss per step")
    width = max(1, min(window, len(losses) // 5))  # short demo runs still get a trend line
    running = np.convolve(losses, np.ones(width) / width, mode="valid")
    ax.plot(steps[width - 1 :], running, lw=1.6, label=f"running mean ({width} steps)")
    ends = {}
    for step, epoch, _ in rows:
        ends[epoch] = step
    for epoch, step in sorted(ends.items())[:-1]:
        ax.axvline(step + 0.5, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="optimizer step", ylabel="training loss", title=f"{arm}: training loss")
    ax.legend(loc="upper right", fontsize="small")
    return save(figure, out, demo, dpi=110)
