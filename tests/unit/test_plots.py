"""Figures: PNGs of the documented size, and what each figure shows, read through
matplotlib's objects (labels, limits, legend entries, lines)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamgrid.errors import SpecError
from dreamgrid.plots import DPI, FIGSIZE, histogram

EXPECTED_SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def checkpoint(arm: str, epoch: int, n: int, faces: bool, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    distance = rng.normal(0.62, 0.05, n) if faces else np.full(n, np.nan)
    return pd.DataFrame(
        {
            "arm": arm,
            "epoch": epoch,
            "steps": 625 * epoch,
            "seed": range(n),
            "face_found": faces,
            "mean_distance": distance,
        }
    )


def test_histogram_with_faces(tmp_path):
    scores = checkpoint("a", 1, 200, faces=True)
    scores.loc[:9, "face_found"] = False
    scores.loc[:9, "mean_distance"] = np.nan
    out = tmp_path / "plots" / "a.png"
    assert histogram(scores, [0.7, 0.6], out, "a, epoch 1") == out
    assert out.stat().st_size > 5_000
    assert png_size(out) == EXPECTED_SIZE
    assert [p.name for p in out.parent.iterdir()] == ["a.png"], "temp files left"


def test_histogram_without_faces(tmp_path):
    out = tmp_path / "none.png"
    histogram(checkpoint("a", 1, 8, faces=False), [0.6, 0.7], out, "demo")
    assert out.stat().st_size > 5_000
    assert png_size(out) == EXPECTED_SIZE


def test_histogram_no_face_text(tmp_path, monkeypatch):
    """The faceless figure says how many renders had no face, inside the axes."""
    from matplotlib.axes import Axes

    texts = []
    original = Axes.text

    def spy(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "text", spy)
    histogram(checkpoint("a", 1, 8, faces=False), [0.6], tmp_path / "x.png", "demo")
    assert "no render in this checkpoint contained a face (8 renders)" in texts


def test_histogram_single_face_and_string_flags(tmp_path):
    scores = checkpoint("a", 1, 3, faces=False)
    scores["face_found"] = ["false", "true", "false"]
    scores.loc[1, "mean_distance"] = 0.55
    out = tmp_path / "one.png"
    histogram(scores, [0.6, 0.7], out, "one face")
    assert png_size(out) == EXPECTED_SIZE


def test_histogram_rejects_several_checkpoints(tmp_path):
    scores = pd.concat([checkpoint("a", 1, 5, True), checkpoint("a", 2, 5, True)])
    with pytest.raises(SpecError, match="epoch"):
        histogram(scores, [0.6], tmp_path / "x.png", "x")


def test_curves_arm_histograms_and_contact_sheet(tmp_path):
    from PIL import Image

    from dreamgrid.plots import arm_histograms, contact_sheet, curves
    from dreamgrid.summary import summarize

    scores = pd.concat(
        [checkpoint(arm, e, 40, faces=True, seed=e) for arm in ("a", "b") for e in (1, 2, 3)],
        ignore_index=True,
    )
    summary = summarize(scores)
    baseline = pd.DataFrame({"reference": ["x", "y"], "mean_distance": [0.4, 0.5]})
    for x in ("epoch", "steps"):
        out = curves(summary, tmp_path / f"{x}.png", x=x, baseline=baseline)
        assert png_size(out)[0] > 600
    out = arm_histograms(scores[scores["arm"] == "a"], [0.6, 0.7], tmp_path / "a.png", "a", 0.45)
    width, height = png_size(out)
    assert width > 2 * EXPECTED_SIZE[0] * 0.6  # three panels side by side
    renders = tmp_path / "renders" / "shard-0"
    renders.mkdir(parents=True)
    one = scores[(scores["arm"] == "a") & (scores["epoch"] == 1)].copy()
    one["image"] = [f"render-{s}.png" for s in one["seed"]]
    one.loc[one.index[:3], ["face_found", "mean_distance"]] = [False, np.nan]
    for name in one["image"]:
        Image.new("RGB", (32, 32), "gray").save(renders / name)
    out = contact_sheet(one, [renders.parent], tmp_path / "sheet.png", "a, epoch 1", per_group=4)
    # The score stage names renders relative to renders/ ("shard-0/render-0.png") and the
    # rule passes the shard folders.
    one["image"] = "shard-0/" + one["image"]
    contact_sheet(one, [renders], tmp_path / "sheet2.png", "a, epoch 1", per_group=4)
    width, height = png_size(out)
    assert height > 4 * 150  # best, median, worst and no-face rows
    faceless = checkpoint("a", 1, 8, faces=False)
    empty = summarize(faceless)
    assert png_size(curves(empty, tmp_path / "empty.png", x="steps"))[0] > 600


def vertical_lines(ax) -> list[float]:
    """x of every axvline (a Line2D whose two x values are equal)."""
    return [
        float(line.get_xdata()[0])
        for line in ax.get_lines()
        if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
    ]


def figure_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]


def test_histogram_shows_every_line_it_lists(tmp_path):
    from dreamgrid.plots import DISTANCE_LABEL, REAL_PHOTOS, histogram_figure

    scores = checkpoint("a", 1, 200, faces=True)  # distances around 0.62
    # A real-photos line far left of the renders: the axis is extended to show it.
    fig = histogram_figure(scores, [0.6, 0.7], "a, epoch 1", baseline=0.2)
    ax = fig.axes[0]
    assert DISTANCE_LABEL in ax.get_xlabel() and ax.get_ylabel() == "renders"
    low, high = ax.get_xlim()
    xs = vertical_lines(ax)
    assert 0.2 in xs and 0.6 in xs and 0.7 in xs
    assert all(low < x < high for x in xs)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-1] == REAL_PHOTOS and len(labels) == len(xs)
    mean = scores["mean_distance"].mean()
    assert f"mean {mean:.4f}" in labels
    share = 100 * (scores["mean_distance"] < 0.6).mean()
    assert f"0.6: {share:.1f}% below" in labels


def test_histogram_without_faces_says_so_and_keeps_its_lines_inside(tmp_path):
    from dreamgrid.plots import histogram_figure

    fig = histogram_figure(checkpoint("a", 1, 8, faces=False), [0.06, 0.07], "demo", 0.048)
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert all(low < x < high for x in vertical_lines(ax))
    assert "no render in this checkpoint contained a face (8 renders)" in figure_texts(fig)


def test_curves_label_every_panel_and_scale_rates_and_shares(tmp_path):
    from dreamgrid.aggregate import summarize
    from dreamgrid.plots import REAL_PHOTOS, curves_figure

    scores = pd.concat(
        [checkpoint(arm, e, 40, faces=True, seed=e) for arm in ("a", "b") for e in (1, 2, 3)],
        ignore_index=True,
    )
    summary = summarize(scores, thresholds=[0.6, 0.7])
    baseline = pd.DataFrame({"reference": ["x", "y"], "mean_distance": [0.4, 0.5]})
    fig = curves_figure(summary, x="epoch", baseline=baseline, title="main")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in shown]
    assert titles == [
        "average distance of the faces",
        "median distance of the faces",
        "share of faces below 0.6",
        "share of faces below 0.7",
        "face rate",
    ]
    for ax in shown:
        assert ax.get_ylabel() and ax.get_xlabel() == "epoch", ax.get_title()
    assert "lower = more alike" in shown[0].get_ylabel()
    assert "higher = more alike" in shown[2].get_ylabel()
    assert shown[-1].get_ylim() == (-0.02, 1.02)
    assert shown[2].get_ylim() == (-2, 102)
    # One legend entry per arm and one for the real-photos lines of every panel.
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["a", "b", REAL_PHOTOS]
    # Two arms, each with its CI band on the average panel; the title names the bands.
    assert len(shown[0].collections) == 2
    assert "bands: 95% intervals" in fig.get_suptitle()


def test_curves_promise_no_bands_they_cannot_draw():
    from dreamgrid.aggregate import summarize
    from dreamgrid.plots import curves_figure

    summary = summarize(checkpoint("a", 1, 8, faces=False))
    fig = curves_figure(summary, x="steps")
    assert "no render in any checkpoint\ncontained a face" in figure_texts(fig)
    # The face rate's interval is the only band there is to draw.
    drawn = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.collections]
    assert drawn == ["face rate"] and "bands" in fig.get_suptitle()
    # A summary without intervals: no band drawn, none promised.
    bare = summary[[c for c in summary.columns if "_ci_" not in c]]
    fig = curves_figure(bare, x="steps")
    assert not any(ax.collections for ax in fig.axes)
    assert "bands" not in fig.get_suptitle()


def test_tradeoff_without_faces_says_why():
    from dreamgrid.plots import tradeoff_figure

    flex = pd.DataFrame(
        {
            "arm": ["a", "a"],
            "epoch": [1, 2],
            "likeness_average": [np.nan, np.nan],
            "bleed_average": [np.nan, np.nan],
            "prompts_face_rate": [0.0, 0.0],
        }
    )
    fig = tradeoff_figure(flex)
    texts = figure_texts(fig)
    assert texts.count("nothing to plot:\nno render of prompt set main contained a face") == 2
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel()


def test_candidate_sheet_title_fits(tmp_path, monkeypatch):
    from PIL import Image

    from dreamgrid import plots

    folders = {}
    for name in ("Anna", "Bea"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i in range(2):
            Image.new("RGB", (32, 32), "gray").save(folders[name] / f"render-{i}.png")
    ranking = pd.DataFrame(
        {"candidate": ["Anna", "Bea"], "rank": [1, 2], "average": [0.5, np.nan],
         "face_rate": [1.0, 0.0]}
    )  # fmt: skip
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out, demo=False, dpi=0: figures.append(fig))
    plots.candidate_sheet(ranking, folders, tmp_path / "top.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = fig._suptitle.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_demo_figures_say_so(tmp_path, monkeypatch):
    from dreamgrid import plots
    from dreamgrid.aggregate import summarize

    figures = []
    original = plots.save

    def spy(fig, out, demo=False, dpi=plots.DPI):
        figures.append(fig)
        return original(fig, out, demo, dpi)

    monkeypatch.setattr(plots, "save", spy)
    scores = checkpoint("a", 1, 20, faces=True)
    plots.histogram(scores, [0.6], tmp_path / "h.png", "a", demo=True)
    plots.arm_histograms(scores, [0.6], tmp_path / "arm.png", "a", demo=True)
    plots.curves(summarize(scores), tmp_path / "c.png", demo=True)
    plots.histogram(scores, [0.6], tmp_path / "real.png", "a", demo=False)
    marked = [plots.DEMO_MARK in figure_texts(fig) for fig in figures]
    assert marked == [True, True, True, False]


def test_both_histogram_rules_read_score_files_through_one_function(tmp_path, monkeypatch):
    from dreamgrid import plots

    files = []
    for epoch in (1, 2):
        files.append(tmp_path / f"epoch-{epoch}.csv")
        table = checkpoint("a", epoch, 6, faces=True, seed=epoch)
        table.assign(image=[f"render-{s}.png" for s in table.seed]).to_csv(files[-1], index=False)
    baseline = tmp_path / "baseline.csv"
    pd.DataFrame({"reference": ["x", "y"], "mean_distance": [0.4, 0.5]}).to_csv(baseline)
    drawn = {}
    for name in ("histogram", "arm_histograms"):
        monkeypatch.setattr(
            plots, name, lambda scores, name=name, **kw: drawn.update({name: (scores, kw)})
        )
    common = {"baseline": baseline, "title": "a", "thresholds": [0.6], "model": "Dlib"}
    plots.plot_histogram(files[:1], out=tmp_path / "h.png", **common)
    plots.plot_arm_histograms(files, out=tmp_path / "all.png", **common)
    one, kw = drawn["histogram"]
    assert list(one["epoch"].unique()) == [1] and kw["baseline"] == pytest.approx(0.45)
    every, kw = drawn["arm_histograms"]
    assert sorted(every["epoch"].unique()) == [1, 2] and kw["out"] == tmp_path / "all.png"


# ---- base models as facets ----------------------------------------------------------------
def base_model_summary(bases=("sdxl", "sd15", "flux"), faceless=()):
    """Two arms per base model, epochs 1-2; the arms of ``faceless`` base models find no face."""
    from dreamgrid.summary import summarize

    scores = pd.concat(
        [
            checkpoint(f"{base}-{arm}", e, 40, faces=base not in faceless, seed=e)
            for base in bases
            for arm in ("a", "b")
            for e in (1, 2)
        ],
        ignore_index=True,
    )
    summary = summarize(scores, thresholds=[0.6, 0.7], min_faces=5)
    summary.insert(1, "base_model", summary["arm"].str.split("-").str[0])
    return scores, summary


def legend_labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_curves_facet_by_base_model():
    from dreamgrid.plots import REAL_PHOTOS, curves_figure

    _, summary = base_model_summary()
    baseline = pd.DataFrame({"reference": ["x", "y"], "mean_distance": [0.4, 0.5]})
    fig = curves_figure(summary, x="steps", baseline=baseline)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    metrics = [
        "average distance of the faces",
        "median distance of the faces",
        "share of faces below 0.6",
        "share of faces below 0.7",
        "face rate",
    ]
    # a row per base model, sd15 (the contrasts' reference level) first; a column per metric
    assert [ax.get_title() for ax in shown] == [
        f"base model {base}: {metric}" for base in ("sd15", "sdxl", "flux") for metric in metrics
    ]
    for row, base in enumerate(("sd15", "sdxl", "flux")):
        for ax in shown[5 * row : 5 * row + 5]:
            arms = [t for t in legend_labels(ax) if t != REAL_PHOTOS]
            assert arms == [f"{base}-a", f"{base}-b"], ax.get_title()
            assert ax.get_xlabel() == "training steps"
    # an arm keeps its colour in every panel; the legend names each arm once
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == sorted([*summary["arm"].unique(), REAL_PHOTOS])
    assert "a row per base model" in fig.get_suptitle()
    # the y axis of a metric is shared down its column
    assert shown[0].get_shared_y_axes().joined(shown[0], shown[5])


def test_curves_of_one_base_model_are_not_faceted():
    from dreamgrid.plots import curves_figure

    _, summary = base_model_summary(bases=("sd15",))
    plain = curves_figure(summary.drop(columns="base_model"), x="epoch")
    fig = curves_figure(summary, x="epoch")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [ax.get_title() for ax in plain.axes if ax.get_visible()]
    assert len(titles) == 5 and not any("base model" in t for t in titles)
    assert fig.get_suptitle() == plain.get_suptitle()


def test_chosen_epoch_histograms_facet_by_base_model(tmp_path):
    from dreamgrid.plots import chosen_histograms_figure, plot_chosen_histograms

    scores, summary = base_model_summary(faceless=("flux",))
    fig = chosen_histograms_figure(scores, summary, [0.6, 0.7], "Prompt set main", 0.45)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in shown] == [
        "base model sd15",
        "base model sdxl",
        "base model flux",
    ]
    best = summary.loc[summary["best"]].set_index("arm")["epoch"]
    for ax, base in zip(shown, ("sd15", "sdxl"), strict=False):
        arms = [t for t in legend_labels(ax) if t.startswith(base)]
        assert arms == [f"{base}-{a} (epoch {best[f'{base}-{a}']})" for a in ("a", "b")]
        assert ax.get_title().endswith("80 of 80 renders with a face")
        assert 0.6 in vertical_lines(ax) and 0.45 in vertical_lines(ax)
    # flux has no chosen epoch (no face): its panel is there and says so
    assert "no face at any chosen epoch" in [t.get_text() for t in shown[2].texts]
    assert shown[2].get_title().endswith("nothing to score")
    assert "a panel per base model" in fig.get_suptitle()
    # one base model: one panel
    one = chosen_histograms_figure(scores, summary.drop(columns="base_model"), [0.6], "main")
    assert [ax.get_title().split("\n")[0] for ax in one.axes if ax.get_visible()] == ["every arm"]
    # from the aggregate's files
    scores.to_csv(tmp_path / "scores.tsv", sep="\t", index=False)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame({"source": ["reference"], "photo": ["x"], "mean_distance": [0.45]}).to_csv(
        tmp_path / "baseline.csv", index=False
    )
    out = plot_chosen_histograms(
        tmp_path / "scores.tsv",
        tmp_path / "summary.csv",
        tmp_path / "baseline.csv",
        prompt_set="main",
        model="Dlib",
        thresholds=[0.6, 0.7],
        out=tmp_path / "chosen.png",
    )
    assert png_size(out)[0] > 1000  # three panels side by side
