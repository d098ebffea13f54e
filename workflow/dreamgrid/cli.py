"""The ``dreamgrid`` command: the stages' stable entry points for scripts and users.

dreamgrid score --references DIR --images DIR --model M --detector D [--metric cosine] --out F.csv
dreamgrid summarize --scores F.csv [--thresholds 0.6 0.7] [--best-margin 5] --out summary.csv
dreamgrid compare --scores F.csv --out comparisons.csv   paired tests between arms
dreamgrid report --scores F.csv --out DIR [--baseline B.csv]   tables, summary.md, verdict.json
dreamgrid power --scores F.csv --effect 0.01 [--share-effect 5]   renders and runs for 80% power
dreamgrid rank-candidates --references DIR --candidates DIR --out ranking.csv   look-alike names
dreamgrid check CONFIG        validate a config and list its arms
dreamgrid build-tiny OUT      build the demo's tiny random-weight SD pipeline (and --blip)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamgrid.errors import DreamgridError

logger = logging.getLogger("dreamgrid")


def run_summarize_cli(
    scores: Path,
    out: Path,
    thresholds: Sequence[float],
    best_margin: float,
    *,
    best_margin_relative: float = 0.25,
    min_faces: int = 20,
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

    table = scoretable.read_table(scores)
    scoretable._require(table, scoretable.SUMMARY_INPUT_COLUMNS, str(scores))
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
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
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

    table = scoretable.read_table(scores)
    scoretable._require(table, (*scoretable.SUMMARY_INPUT_COLUMNS, "seed"), str(scores))
    table = scoretable._normalise(table, str(scores))
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
    thresholds: Sequence[float] = (0.6, 0.7),
    best_margin: float = 5.0,
    best_margin_relative: float = 0.25,
    min_faces: int = 20,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
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

    table = scoretable.read_table(scores)
    scoretable._require(table, (*scoretable.SUMMARY_INPUT_COLUMNS, "seed"), str(scores))
    try:
        table = scoretable._normalise(table, str(scores))
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
    for name in ("summary", "comparisons", "effects"):
        scoretable._write_csv(result[name], out / f"{name}.csv")
    aggregate.write_json(result["verdict"], out / "verdict.json")
    (out / "summary.md").write_text(result["markdown"], encoding="utf-8")
    logger.info("wrote summary, comparisons, effects, summary.md and verdict.json to %s", out)
    return result


def _score(args: argparse.Namespace) -> None:
    from dreamgrid import faces

    faces.setup_deepface()
    table = faces.run_score_cli(
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
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.7])
    parser.add_argument(
        "--best-margin",
        "--best-within",
        dest="best_margin",
        type=float,
        default=5.0,
        help="chosen epoch: not worse than the arm's best share by more than this many points",
    )
    parser.add_argument(
        "--best-margin-relative",
        type=float,
        default=0.25,
        help="... or this fraction of the arm's best share, when smaller (0.25)",
    )
    parser.add_argument(
        "--min-faces", type=int, default=20, help="fewer faces: no share, never best (20)"
    )


def run_power_cli(
    scores: Path,
    effect: float,
    share_effect: float | None = None,
    *,
    threshold: float = 0.6,
    confidence: float = 0.95,
    run_sd: float | None = None,
) -> dict[str, Any]:
    """``dreamgrid power --scores FILE --effect 0.01``: renders and runs for 80% power.

    Returns:
        :func:`dreamgrid.inference.power_plan`'s dict (also printed as text).
    """
    from dreamgrid import inference, scoretable
    from dreamgrid.errors import SpecError

    table = scoretable.read_table(scores)
    scoretable._require(table, (*scoretable.SUMMARY_INPUT_COLUMNS, "seed"), str(scores))
    table = scoretable._normalise(table, str(scores))
    table = scoretable.headline(table, None)
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
    from dreamgrid import candidates, faces

    faces.setup_deepface()
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
    from dreamgrid import config as cfg
    from dreamgrid import preflight

    config = cfg.load(args.config)
    preflight.run(config)
    arms = cfg.expand_arms(config)
    epochs = config["training"]["epochs"]
    print(f"{args.config}: valid; {len(arms)} arms x {epochs} epochs")
    for arm in arms:
        print(
            f"  {arm.arm}: token={arm.token!r} regularization={arm.regularization} "
            f"captions={arm.captions}"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamgrid", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score every image in a folder against references")
    score.add_argument("--references", type=Path, required=True, help="folder of close-ups")
    score.add_argument("--images", type=Path, required=True, help="folder of images to score")
    score.add_argument("--model", required=True, help="DeepFace model, e.g. Dlib")
    score.add_argument("--detector", required=True, help="DeepFace detector, e.g. dlib")
    score.add_argument("--metric", default="cosine", help="distance metric (default cosine)")
    score.add_argument("--out", type=Path, required=True, help="output CSV")
    score.set_defaults(func=_score)

    summarize = sub.add_parser("summarize", help="one row per (arm, epoch) from a scores table")
    summarize.add_argument("--scores", type=Path, required=True, help="CSV/TSV of scores")
    _best_options(summarize)
    summarize.add_argument("--out", type=Path, required=True, help="output CSV")
    summarize.set_defaults(func=_summarize)

    compare = sub.add_parser(
        "compare", help="paired differences between arms at each epoch (permutation, Holm)"
    )
    compare.add_argument(
        "--scores", type=Path, required=True, help="CSV/TSV: arm, epoch, seed, face_found, ..."
    )
    compare.add_argument("--out", type=Path, required=True, help="output CSV")
    compare.add_argument("--confidence", type=float, default=0.95, help="CI level (0.95)")
    compare.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    compare.set_defaults(func=_compare)

    report = sub.add_parser(
        "report", help="summary, comparisons, effects, summary.md and verdict.json of a table"
    )
    report.add_argument(
        "--scores", type=Path, required=True, help="CSV/TSV: arm, epoch, seed, face_found, ..."
    )
    report.add_argument("--out", type=Path, required=True, help="output folder")
    report.add_argument("--baseline", type=Path, default=None, help="real-photos baseline CSV")
    _best_options(report)
    report.add_argument("--confidence", type=float, default=0.95, help="CI level (0.95)")
    report.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    report.set_defaults(func=_report)

    power = sub.add_parser(
        "power", help="renders per checkpoint and runs per arm for 80%% power, from a pilot"
    )
    power.add_argument("--scores", type=Path, required=True, help="a pilot's scores table")
    power.add_argument("--effect", type=float, required=True, help="mean-distance difference")
    power.add_argument("--share-effect", type=float, default=None, help="share difference, points")
    power.add_argument("--threshold", type=float, default=0.6, help="share threshold (0.6)")
    power.add_argument("--confidence", type=float, default=0.95, help="family coverage (0.95)")
    power.add_argument("--run-sd", type=float, default=None, help="assumed run-to-run SD")
    power.set_defaults(func=_power)

    ranking = sub.add_parser(
        "rank-candidates", help="rank look-alike names by their renders' likeness"
    )
    ranking.add_argument("--references", type=Path, required=True, help="folder of close-ups")
    ranking.add_argument(
        "--candidates",
        type=Path,
        required=True,
        help="folder with one sub-folder of renders per candidate name",
    )
    ranking.add_argument("--out", type=Path, required=True, help="output CSV")
    ranking.add_argument("--model", default="Dlib", help="DeepFace model (default Dlib)")
    ranking.add_argument("--detector", default="dlib", help="DeepFace detector (default dlib)")
    ranking.add_argument("--metric", default="cosine", help="distance metric (default cosine)")
    ranking.add_argument(
        "--threshold", type=float, default=0.6, help="share below this distance (0.6)"
    )
    ranking.set_defaults(func=_rank_candidates)

    check = sub.add_parser("check", help="validate a config, check its inputs, list its arms")
    check.add_argument("config", type=Path)
    check.set_defaults(func=_check)

    docs = sub.add_parser("config-docs", help="write config/README.md from the schema")
    docs.add_argument("--out", type=Path, default=Path("config/README.md"))
    docs.set_defaults(func=_config_docs)

    kohya = sub.add_parser(
        "import-kohya", help="copy a Kohya 'N_token class' image folder into dreamgrid's layout"
    )
    kohya.add_argument("source", type=Path, help="Kohya train_data_dir or one N_token class folder")
    kohya.add_argument("--train", type=Path, required=True, help="new folder for the photos")
    kohya.add_argument("--captions", type=Path, required=True, help="new folder for captions")
    kohya.set_defaults(func=_import_kohya)

    build = sub.add_parser("build-tiny", help="build tiny random-weight models (tests, demo)")
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
