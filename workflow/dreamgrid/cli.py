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
from pathlib import Path

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
    from dreamgrid import aggregate

    summary = aggregate.run_summarize_cli(
        scores=args.scores, out=args.out, thresholds=args.thresholds, best_within=args.best_within
    )
    logger.info("%d checkpoints summarised -> %s", len(summary), args.out)


def _compare(args: argparse.Namespace) -> None:
    from dreamgrid import aggregate

    table = aggregate.run_compare_cli(
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
    if args.threshold is None:
        args.threshold = faces.fitted_thresholds(args.model, args.metric)[0]
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
    from dreamgrid.dag import Grid

    config = cfg.load(args.config)
    preflight.run(config)
    grid = Grid(config)
    arms = cfg.expand_arms(config)
    epochs = config["training"]["epochs"]
    sample = config["sample"]
    print(f"{args.config}: valid; {len(arms)} arm{'s' * (len(arms) != 1)} x {epochs} epochs")
    for arm in arms:
        print(
            f"  {arm.arm}: token={arm.token!r} regularization={arm.regularization} "
            f"captions={arm.captions}"
        )
    print(
        f"{sample['count']} renders per checkpoint in shards of {sample['shard_size']}; "
        f"prompt sets: {', '.join(grid.prompt_sets())}"
    )
    score = config["score"]
    thresholds = ", ".join(f"{t:g}" for t in score["thresholds"])
    print(f"scored with {score['model']}/{score['detector']} ({score['metric']}); "
          f"thresholds {thresholds}")  # fmt: skip
    for warning in cfg.threshold_warnings(config):
        print(f"warning: {warning}")


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
    summarize.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.6, 0.7],
        help="distances to report the share below (on your face model's scale: VGG-Face's "
        "own threshold is 0.68, Dlib's 0.07)",
    )
    summarize.add_argument(
        "--best-within",
        type=float,
        default=5.0,
        help="best epoch: earliest within this many points of the arm's best share",
    )
    summarize.add_argument("--out", type=Path, required=True, help="output CSV")
    summarize.set_defaults(func=_summarize)

    compare = command(
        "compare",
        "paired differences between arms at each epoch",
        "For every pair of arms at each epoch both have: the paired mean difference over "
        "seeds where both found a face, its interval, the test's p-value and the adjusted one.",
    )
    compare.add_argument(
        "--scores", type=Path, required=True, help="CSV/TSV: arm, epoch, seed, face_found, ..."
    )
    compare.add_argument("--out", type=Path, required=True, help="output CSV")
    compare.add_argument("--confidence", type=float, default=0.95, help="interval coverage")
    compare.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    compare.set_defaults(func=_compare)

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
        "not merged in), open every input image, and print the grid it plans.",
    )
    check.add_argument("config", type=Path, help="YAML config file")
    check.set_defaults(func=_check)

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
