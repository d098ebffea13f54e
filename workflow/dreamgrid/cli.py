"""The ``dreamgrid`` command: the stages' stable entry points for scripts and users.

dreamgrid score --references DIR --images DIR --model M --detector D [--metric cosine] --out F.csv
dreamgrid summarize --scores F.csv [--thresholds 0.6 0.7] [--best-within 5] --out summary.csv
dreamgrid compare --scores F.csv --out comparisons.csv   paired tests between arms
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
    scores: Path, out: Path, thresholds: Sequence[float], best_within: float
) -> Any:
    """``dreamgrid summarize --scores FILE --out summary.csv``: summarize one score table.

    Args:
        scores: a score table (CSV, TSV or parquet) with the columns :func:`summarize` needs.
        out: summary CSV to write.
        thresholds: distance thresholds.
        best_within: see :func:`summarize`.

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
        result = summarize(table, thresholds=thresholds, best_within=best_within)
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
        out: CSV with :data:`dreamgrid.stats.COMPARE_COLUMNS`.

    Returns:
        The table written.

    Raises:
        SpecError: unreadable file, a missing column or a repeated seed (naming the file).
    """
    from dreamgrid import scoretable, stats
    from dreamgrid.errors import SpecError

    table = scoretable.read_table(scores)
    scoretable._require(table, (*scoretable.SUMMARY_INPUT_COLUMNS, "seed"), str(scores))
    table = scoretable._normalise(table, str(scores))
    try:
        result = stats.compare_arms(table, seed=seed, resamples=resamples, confidence=confidence)
    except ValueError as err:
        raise SpecError(f"{scores}: {err}") from err
    scoretable._write_csv(result, out)
    logger.info("wrote %s (%d comparisons)", out, len(result))
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
        scores=args.scores, out=args.out, thresholds=args.thresholds, best_within=args.best_within
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
    summarize.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.7])
    summarize.add_argument(
        "--best-within",
        type=float,
        default=5.0,
        help="best epoch: earliest within this many points of the arm's best share (default 5)",
    )
    summarize.add_argument("--out", type=Path, required=True, help="output CSV")
    summarize.set_defaults(func=_summarize)

    compare = sub.add_parser(
        "compare", help="paired differences between arms at each epoch (Wilcoxon, Holm)"
    )
    compare.add_argument(
        "--scores", type=Path, required=True, help="CSV/TSV: arm, epoch, seed, face_found, ..."
    )
    compare.add_argument("--out", type=Path, required=True, help="output CSV")
    compare.add_argument("--confidence", type=float, default=0.95, help="CI level (0.95)")
    compare.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    compare.set_defaults(func=_compare)

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
