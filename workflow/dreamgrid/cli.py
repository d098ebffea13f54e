"""The ``dreamgrid`` command: the stages' stable entry points for scripts and users.

dreamgrid score --references DIR --images DIR --model M --detector D [--metric cosine] --out F.csv
dreamgrid summarize --scores F.csv [--thresholds 0.6 0.7] [--best-margin 5] --out summary.csv
dreamgrid compare --scores F.csv --out comparisons.csv   paired tests between arms
dreamgrid report --scores F.csv --out DIR [--baseline B.csv]   tables, summary.md, verdict.json
dreamgrid power --scores F.csv --effect 0.01 [--share-effect 5]   renders and runs for 80% power
dreamgrid rank-candidates --references DIR --candidates DIR --out ranking.csv   look-alike names
dreamgrid check CONFIG [--gpu-memory GiB] [--gpu CARD]   validate, list arms, memory and GPU-hours
dreamgrid fetch CONFIG [--to DIR]   download every model CONFIG needs (for offline machines)
dreamgrid build-tiny OUT      build the demo's tiny random-weight SD pipeline (and --blip)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamgrid import stats
from dreamgrid.errors import DreamgridError

logger = logging.getLogger("dreamgrid")

DESCRIPTION = """\
dreamgrid answers "which DreamBooth training recipe gives the best likeness of a person, in
the fewest steps?" with numbers: it trains every arm of a grid (instance token x
regularization x captions x method), renders every epoch checkpoint on the same seeds, scores
each render with DeepFace against close-ups of the person, and compares the arms with
confidence intervals.

The whole study runs as a Snakemake workflow from a clone of the repository:
  snakemake --cores all                                    the embedded demo (CPU, tiny models)
  snakemake --cores all --configfile config/experiment.yaml   the real study (GPU)
  snakemake --report results/report.html                   the HTML report

The commands below are the workflow's stages as plain commands, for scripts and for checking
a config before a run."""


def _read_scores(scores: Path, paired: bool = True) -> Any:
    """A command's score table, its columns checked: those :func:`summarize` needs, and for
    paired statistics also ``seed``, with typed columns. Errors name the file."""
    from dreamgrid import scoretable

    table = scoretable.read_table(scores)
    columns = scoretable.SUMMARY_INPUT_COLUMNS
    if not paired:
        scoretable._require(table, columns, str(scores))
        return table
    scoretable._require(table, (*columns, "seed"), str(scores))
    return scoretable._normalise(table, str(scores))


def run_summarize_cli(
    scores: Path,
    out: Path,
    thresholds: Sequence[float],
    best_margin: float,
    *,
    best_margin_relative: float = stats.BEST_MARGIN_RELATIVE,
    min_faces: int = stats.MIN_FACES,
) -> Any:
    """``dreamgrid summarize --scores FILE --out summary.csv``: summarize one score table.

    Args:
        scores: a score table (CSV, TSV or parquet) with the columns :func:`summarize` needs.
        out: summary CSV to write.
        thresholds: distance thresholds.
        best_margin, best_margin_relative, min_faces: the chosen-epoch rule
            (:func:`dreamgrid.summary.summarize`).

    Returns:
        The summary that was written.

    Raises:
        SpecError: the file is unreadable or lacks a column (the message names the file).
    """
    from dreamgrid import scoretable
    from dreamgrid.errors import SpecError
    from dreamgrid.summary import summarize

    table = _read_scores(scores, paired=False)
    try:
        result = summarize(
            table,
            thresholds=thresholds,
            best_margin=best_margin,
            best_margin_relative=best_margin_relative,
            min_faces=min_faces,
        )
    except SpecError as err:
        raise SpecError(f"{scores}: {err}") from err
    scoretable._write_csv(result, out)
    logger.info("wrote %s (%d checkpoints)", out, len(result))
    return result


def run_compare_cli(
    scores: Path,
    out: Path,
    *,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> Any:
    """``dreamgrid compare --scores FILE --out comparisons.csv``: paired arm comparisons.

    Args:
        scores: table with ``arm, epoch, seed, face_found, mean_distance`` (CSV/TSV/parquet).
        out: CSV with :data:`dreamgrid.inference.COMPARE_COLUMNS`.

    Returns:
        The table written.

    Raises:
        SpecError: unreadable file, a missing column or a repeated seed (naming the file).
    """
    from dreamgrid import inference, scoretable
    from dreamgrid.errors import SpecError

    table = _read_scores(scores)
    try:
        result = inference.compare_arms(
            table, seed=seed, resamples=resamples, confidence=confidence
        )
    except ValueError as err:
        raise SpecError(f"{scores}: {err}") from err
    scoretable._write_csv(result, out)
    logger.info("wrote %s (%d comparisons)", out, len(result))
    return result


def run_report_cli(
    scores: Path,
    out: Path,
    *,
    baseline: Path | None = None,
    thresholds: Sequence[float] = stats.THRESHOLDS,
    best_margin: float = stats.BEST_MARGIN,
    best_margin_relative: float = stats.BEST_MARGIN_RELATIVE,
    min_faces: int = stats.MIN_FACES,
    confidence: float = stats.CONFIDENCE,
    resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> dict[str, Any]:
    """``dreamgrid report --scores FILE --out DIR``: what the workflow's aggregation writes.

    Writes ``summary.csv``, ``comparisons.csv``, ``effects.csv``, ``summary.md`` and
    ``verdict.json`` into ``out``. Input columns: ``arm, epoch, seed, face_found,
    mean_distance``, optional ``steps``, ``replicate``, ``model``, ``prompt_set`` and axis
    columns (``token``, ``regularization``, ``captions``, ``method``, ``base_model``).

    Returns:
        The tables, the verdict object and the markdown (see
        :func:`dreamgrid.aggregate.build`).
    """
    from dreamgrid import aggregate, scoretable
    from dreamgrid import baseline as baseline_mod
    from dreamgrid.errors import SpecError

    table = _read_scores(scores)
    try:
        result = aggregate.build(
            table,
            thresholds=thresholds,
            best_margin=best_margin,
            best_margin_relative=best_margin_relative,
            min_faces=min_faces,
            baseline=baseline_mod.read_baseline(baseline),
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
    except ValueError as err:
        raise SpecError(f"{scores}: {err}") from err
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("summary", "comparisons", "effects", "power"):
        scoretable._write_csv(result[name], out / f"{name}.csv")
    aggregate.write_json(result["verdict"], out / "verdict.json")
    (out / "summary.md").write_text(result["markdown"], encoding="utf-8")
    logger.info(
        "wrote summary, comparisons, effects, power, summary.md and verdict.json to %s", out
    )
    return result


def _score(args: argparse.Namespace) -> None:
    from dreamgrid.scoring import deepface_adapter, steps

    deepface_adapter.setup_deepface()
    table = steps.run_score_cli(
        references=args.references,
        images=args.images,
        model=args.model,
        detector=args.detector,
        metric=args.metric,
        out=args.out,
    )
    found = int(table["face_found"].sum())
    logger.info("scored %d images (%d with a face) -> %s", len(table), found, args.out)


def _summarize(args: argparse.Namespace) -> None:
    summary = run_summarize_cli(
        scores=args.scores,
        out=args.out,
        thresholds=args.thresholds,
        best_margin=args.best_margin,
        best_margin_relative=args.best_margin_relative,
        min_faces=args.min_faces,
    )
    logger.info("%d checkpoints summarised -> %s", len(summary), args.out)


def _compare(args: argparse.Namespace) -> None:
    table = run_compare_cli(
        scores=args.scores,
        out=args.out,
        confidence=args.confidence,
        resamples=args.resamples,
        seed=args.seed,
    )
    logger.info("%d comparisons -> %s", len(table), args.out)


def _report(args: argparse.Namespace) -> None:
    run_report_cli(
        scores=args.scores,
        out=args.out,
        baseline=args.baseline,
        thresholds=args.thresholds,
        best_margin=args.best_margin,
        best_margin_relative=args.best_margin_relative,
        min_faces=args.min_faces,
        confidence=args.confidence,
        resamples=args.resamples,
        seed=args.seed,
    )


def _best_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=list(stats.THRESHOLDS),
        help="distances to report the share below (on your face model's scale: VGG-Face's "
        "own threshold is 0.68, Dlib's 0.07)",
    )
    parser.add_argument(
        "--best-margin",
        "--best-within",
        dest="best_margin",
        type=float,
        default=stats.BEST_MARGIN,
        help="chosen epoch: not worse than the arm's best share by more than this many points",
    )
    parser.add_argument(
        "--best-margin-relative",
        type=float,
        default=stats.BEST_MARGIN_RELATIVE,
        help="... or this fraction of the arm's best share, when smaller",
    )
    parser.add_argument(
        "--min-faces", type=int, default=stats.MIN_FACES, help="fewer faces: no share, never best"
    )


def _bootstrap_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--confidence", type=float, default=stats.CONFIDENCE, help="interval coverage"
    )
    parser.add_argument(
        "--resamples", type=int, default=stats.RESAMPLES, help="bootstrap resamples"
    )
    parser.add_argument("--seed", type=int, default=stats.SEED, help="bootstrap seed")


def run_power_cli(
    scores: Path,
    effect: float,
    share_effect: float | None = None,
    *,
    threshold: float = stats.THRESHOLDS[0],
    confidence: float = stats.CONFIDENCE,
    run_sd: float | None = None,
) -> dict[str, Any]:
    """``dreamgrid power --scores FILE --effect 0.01``: renders and runs for 80% power.

    Returns:
        :func:`dreamgrid.inference.power_plan`'s dict (also printed as text).
    """
    from dreamgrid import inference, scoretable
    from dreamgrid.errors import SpecError

    table = scoretable.headline(_read_scores(scores), None)
    try:
        plan = inference.power_plan(
            table,
            effect,
            share_effect,
            threshold=threshold,
            confidence=confidence,
            run_sd=run_sd,
        )
    except ValueError as err:
        raise SpecError(f"{scores}: {err}") from err
    lines = [
        f"planned family: {plan['family']} contrasts, {plan['alpha_per_contrast']:.2g} each",
        (
            f"per-seed SD of paired differences: {plan['paired_sd']:.4f}; "
            f"both found a face on {100 * plan['both_faces']:.0f}% of seeds"
        ),
        (
            f"renders per checkpoint for a {effect:g} mean-distance difference at 80% power: "
            f"{plan['renders_per_checkpoint']}"
        ),
    ]
    if share_effect is not None:
        lines.append(
            f"renders per checkpoint for a {share_effect:g}-point share difference: "
            f"{plan['renders_for_share']}"
        )
    if plan["replicates"] is None:
        lines.append(
            "training runs per arm: unknown (the pilot has one run per arm; give --run-sd "
            "or train replicates to measure run-to-run noise)"
        )
    else:
        lines.append(
            f"training runs per arm (run-to-run SD {plan['run_sd']:.4f}): {plan['replicates']}"
        )
    print("\n".join(lines))
    return plan


def _power(args: argparse.Namespace) -> None:
    run_power_cli(
        args.scores,
        args.effect,
        args.share_effect,
        threshold=args.threshold,
        confidence=args.confidence,
        run_sd=args.run_sd,
    )


def _rank_candidates(args: argparse.Namespace) -> None:
    from dreamgrid import candidates
    from dreamgrid.scoring import deepface_adapter

    deepface_adapter.setup_deepface()
    if args.threshold is None:
        args.threshold = deepface_adapter.fitted_thresholds(args.model, args.metric)[0]
    table = candidates.run_rank_cli(
        references=args.references,
        candidates=args.candidates,
        out=args.out,
        model=args.model,
        detector=args.detector,
        metric=args.metric,
        threshold=args.threshold,
    )
    top = table.iloc[0]
    logger.info("%d candidates ranked -> %s; first: %s", len(table), args.out, top["candidate"])


def _check(args: argparse.Namespace) -> None:
    from dreamgrid import budget, memory, preflight
    from dreamgrid import config as cfg
    from dreamgrid.dag import Grid

    config = cfg.load(args.config)
    # Before the preflight, which may fetch face weights: a refusal writes nothing.
    memory_lines = memory.check_config(config, args.gpu_memory)
    preflight.run(config)
    grid = Grid(config)
    arms = cfg.expand_arms(config)
    epochs = config["training"]["epochs"]
    sample = config["sample"]
    print(f"{args.config}: valid; {len(arms)} arm{'s' * (len(arms) != 1)} x {epochs} epochs")
    for arm in arms:
        base = f" base_model={arm.base_model} ({grid.family(arm.base_model)})"
        print(
            f"  {arm.arm}: token={arm.token!r} regularization={arm.regularization} "
            f"captions={arm.captions}"
            + (base if arm.base_model else "")
            + "".join(f" {key}={name}" for key, name in arm.setting_levels.items())
            + (f" (renders {arm.trainer}'s checkpoints)" if arm.trainer != arm.arm else "")
        )
    print(
        f"{sample['count']} renders per checkpoint in shards of {sample['shard_size']}; "
        f"prompt sets: {', '.join(grid.prompt_sets)}"
    )
    score = config["score"]
    thresholds = ", ".join(f"{t:g}" for t in score["thresholds"])
    print(f"scored with {score['model']}/{score['detector']} ({score['metric']}); "
          f"thresholds {thresholds}")  # fmt: skip
    if grid.adaptive:
        looks = ", ".join(map(str, grid.looks))
        print(f"search: successive_halving, looks after epoch {looks}; at most "
              f"{len(arms) * epochs} training epochs, fewer as arms stop")  # fmt: skip
    print("\n".join(memory_lines))
    plan = budget.plan(config, grid)
    print("\n".join(budget.lines(budget.estimate(config, plan, args.gpu), config)))
    print("\n".join(budget.measured_lines(budget.measured(plan))))
    for warning in cfg.threshold_warnings(config):
        print(f"warning: {warning}")


def _fetch(args: argparse.Namespace) -> None:
    import contextlib

    from dreamgrid import config as cfg
    from dreamgrid import fetch

    # deepface logs to stdout; stdout is kept for the config values alone.
    with contextlib.redirect_stdout(sys.stderr):
        values = fetch.fetch(cfg.load(args.config), args.to)
    print(
        f"# Every model {args.config} needs is in {args.to.resolve()}. Copy that folder to the "
        "machine without network\n# (same path, or edit these), and set in the config:\n"
        + fetch.config_lines(values),
        end="",
    )


def _config_docs(args: argparse.Namespace) -> None:
    from dreamgrid import config as cfg

    args.out.write_text(cfg.schema_markdown())


def _build_tiny(args: argparse.Namespace) -> None:
    from dreamgrid import tiny

    tiny.build_tiny_sd(args.out)
    if args.blip:
        tiny.build_tiny_blip(args.blip)


def _import_kohya(args: argparse.Namespace) -> None:
    from dreamgrid.train.kohya import import_dataset

    found = import_dataset(args.source, args.train, args.captions)
    print(
        f"# {found['images']} images, {found['captions']} captions imported. Config values:\n"
        f"subject:\n  train_images: {args.train}\n  caption_overrides: {args.captions}\n"
        + (f"  class_word: {found['class_word']}\n" if found["class_word"] else "")
        + f"axes:\n  token:\n    rare: {found['token']}\n"
        f"training:\n  repeats: {found['repeats']}"
    )


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except where there is none to show (required, None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from dreamgrid import __version__

    formatter = _DefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="dreamgrid",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dreamgrid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=description, formatter_class=formatter
        )

    score = command(
        "score",
        "score every image in a folder against references",
        "Detect and embed every image once with DeepFace and write one row per image: "
        "face_found, n_faces, mean_distance (empty when no face) and the distance to each "
        "reference (d:<reference>), equal to DeepFace.verify's distance.",
    )
    score.add_argument("--references", type=Path, required=True, help="folder of close-ups")
    score.add_argument("--images", type=Path, required=True, help="folder of images to score")
    score.add_argument("--model", required=True, help="DeepFace model, e.g. Dlib or VGG-Face")
    score.add_argument("--detector", required=True, help="DeepFace detector, e.g. dlib")
    score.add_argument("--metric", default="cosine", help="distance metric")
    score.add_argument("--out", type=Path, required=True, help="output CSV")
    score.set_defaults(func=_score)

    summarize = command(
        "summarize",
        "one row per (arm, epoch) from a scores table",
        "Per checkpoint: renders, face rate, average distance of the faces, the share below "
        "each threshold, bootstrap intervals and the best epoch.",
    )
    summarize.add_argument("--scores", type=Path, required=True, help="CSV/TSV of scores")
    _best_options(summarize)
    summarize.add_argument("--out", type=Path, required=True, help="output CSV")
    summarize.set_defaults(func=_summarize)

    compare = command(
        "compare",
        "paired differences between arms at each epoch",
        "For every pair of arms at each epoch both have: the paired mean difference over "
        "seeds where both found a face (sign-flip permutation test and BCa interval of that "
        "mean), the share of seeds where a is more alike, the face-rate difference and its "
        "exact McNemar test, Holm-adjusted within each model and prompt set.",
    )
    compare.add_argument(
        "--scores", type=Path, required=True, help="CSV/TSV: arm, epoch, seed, face_found, ..."
    )
    compare.add_argument("--out", type=Path, required=True, help="output CSV")
    _bootstrap_options(compare)
    compare.set_defaults(func=_compare)

    report = command(
        "report",
        "summary, comparisons, effects, summary.md and verdict.json of a table",
        "Write into --out what the workflow's aggregation writes: summary.csv, "
        "comparisons.csv, effects.csv, summary.md and verdict.json.",
    )
    report.add_argument(
        "--scores", type=Path, required=True, help="CSV/TSV: arm, epoch, seed, face_found, ..."
    )
    report.add_argument("--out", type=Path, required=True, help="output folder")
    report.add_argument("--baseline", type=Path, default=None, help="real-photos baseline CSV")
    _best_options(report)
    _bootstrap_options(report)
    report.set_defaults(func=_report)

    power = command(
        "power",
        "renders per checkpoint and runs per arm for 80%% power, from a pilot",
        "From a pilot's scores, the renders per checkpoint and training runs per arm needed "
        "for 80% power to detect --effect (and --share-effect) at the planned family.",
    )
    power.add_argument("--scores", type=Path, required=True, help="a pilot's scores table")
    power.add_argument("--effect", type=float, required=True, help="mean-distance difference")
    power.add_argument("--share-effect", type=float, default=None, help="share difference, points")
    power.add_argument(
        "--threshold", type=float, default=stats.THRESHOLDS[0], help="share threshold"
    )
    power.add_argument("--confidence", type=float, default=stats.CONFIDENCE, help="family coverage")
    power.add_argument("--run-sd", type=float, default=None, help="assumed run-to-run SD")
    power.set_defaults(func=_power)

    ranking = command(
        "rank-candidates",
        "rank look-alike names by their renders' likeness",
        "Score each candidate name's base-model renders against the references and rank the "
        "names (rank 1 = lowest average distance; names whose renders show no face last).",
    )
    ranking.add_argument("--references", type=Path, required=True, help="folder of close-ups")
    ranking.add_argument(
        "--candidates",
        type=Path,
        required=True,
        help="folder with one sub-folder of renders per candidate name",
    )
    ranking.add_argument("--out", type=Path, required=True, help="output CSV")
    ranking.add_argument("--model", default="Dlib", help="DeepFace model")
    ranking.add_argument("--detector", default="dlib", help="DeepFace detector")
    ranking.add_argument("--metric", default="cosine", help="distance metric")
    ranking.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="report the share below this distance (default: the stricter of the thresholds "
        "fitted to --model, e.g. 0.06 for Dlib)",
    )
    ranking.set_defaults(func=_rank_candidates)

    check = command(
        "check",
        "validate a config, check its inputs, list its arms",
        "Validate CONFIG alone (with the schema's defaults; the demo's config/config.yaml is "
        "not merged in), open every input image, and print the grid it plans with an "
        "estimate of each arm's GPU memory for training and sampling, and the budget: arms, "
        "training epochs, renders and estimated GPU-hours (and, once results/benchmarks "
        "holds finished jobs, the GPU-hours they measured and what is left). Refuses an arm "
        "that cannot fit the largest visible GPU (or --gpu-memory).",
    )
    check.add_argument("config", type=Path, help="YAML config file")
    check.add_argument(
        "--gpu-memory",
        type=float,
        default=None,
        metavar="GiB",
        help="check the estimates against a GPU of this many GiB (e.g. a SLURM node's) instead "
        "of the largest one visible here",
    )
    check.add_argument(
        "--gpu",
        choices=["a100", "rtx4090", "rtx3090", "t4"],  # dreamgrid.budget.CARDS
        default="rtx3090",
        help="the card the GPU-hours are estimated for (published reference speeds)",
    )
    check.set_defaults(func=_check)

    fetch = command(
        "fetch",
        "download every model a config needs into one folder (machines without network)",
        "Download the base model, the captioner, CLIPScore's model and DeepFace's weights for "
        "every scored model and the detector into --to, and print the config values that "
        "point at it. Copy the folder to a machine with no network; `dreamgrid check` passes "
        "there without it. (With network on the submitting node, the workflow's prepare rules "
        "do this by themselves.)",
    )
    fetch.add_argument("config", type=Path, help="YAML config file")
    fetch.add_argument(
        "--to", type=Path, default=Path("models"), help="folder to fill (default: models)"
    )
    fetch.set_defaults(func=_fetch)

    docs = command(
        "config-docs",
        "write config/README.md from the schema",
        "Write the table of every config key, its type, default and description.",
    )
    docs.add_argument("--out", type=Path, default=Path("config/README.md"), help="output file")
    docs.set_defaults(func=_config_docs)

    kohya = command(
        "import-kohya",
        "copy a Kohya 'N_token class' image folder into dreamgrid's layout",
        "Copy the photos and caption files of a Kohya dataset folder (e.g. img/25_ohwx woman) "
        "into new folders and print the config values (token, class, repeats).",
    )
    kohya.add_argument("source", type=Path, help="Kohya train_data_dir or one N_token class folder")
    kohya.add_argument("--train", type=Path, required=True, help="new folder for the photos")
    kohya.add_argument("--captions", type=Path, required=True, help="new folder for captions")
    kohya.set_defaults(func=_import_kohya)

    build = command(
        "build-tiny",
        "build tiny random-weight models (tests, demo)",
        "Build the demo's tiny random-weight Stable Diffusion pipeline (and a BLIP captioner) "
        "from configs, offline. Their outputs mean nothing; they exercise the real code path.",
    )
    build.add_argument("out", type=Path, help="folder for the tiny SD pipeline")
    build.add_argument("--blip", type=Path, help="also build a tiny BLIP captioner here")
    build.set_defaults(func=_build_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except DreamgridError as err:
        print(f"dreamgrid: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
