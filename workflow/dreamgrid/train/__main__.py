"""``python -m dreamgrid.train --spec spec.json [--log job.log]``: train one epoch of one arm
in its own process, from a spec written by :meth:`TrainSpec.to_json`.

The workflow does not use it (the ``train_dreambooth`` shim builds the spec from the config
and calls :func:`dreamgrid.train.run`); the fault tests do, to kill a training process
mid-epoch, and so can a person rerunning one epoch by hand.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dreamgrid.errors import DreamgridError
from dreamgrid.logs import setup
from dreamgrid.train import run
from dreamgrid.train.spec import TrainSpec

logger = logging.getLogger("dreamgrid.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dreamgrid.train", description=__doc__)
    parser.add_argument("--spec", required=True, help="TrainSpec JSON file written by the workflow")
    parser.add_argument("--log", default=None, help="log file (default: stderr)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.log)
    try:
        run(TrainSpec.read(args.spec))
    except DreamgridError as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
