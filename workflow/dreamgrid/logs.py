"""Logging set-up for jobs. Modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dreamgrid import gpus

_NOISY = ("PIL", "matplotlib", "urllib3", "filelock", "h5py", "numexpr", "fsspec", "httpx")


def setup(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Route the job's records, warnings and progress bars to ``log_file`` (the job log).

    stdout and stderr are redirected to the file too, so tqdm bars and library warnings
    land in the log Snakemake shows for the job rather than on the scheduler's console.

    Args:
        log_file: the job's log file (parent created); None keeps stderr.
        level: level for the root logger.
    """
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_file, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stdout = sys.stderr = stream
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


OUT_OF_MEMORY_HELP = (
    "The GPU ran out of memory. Lower the memory this job needs, in config: "
    "training.batch_size 1, training.gradient_checkpointing true, training.mixed_precision "
    "fp16 (or bf16), training.train_text_encoder false; for sampling, sample.batch_size. "
    "Or close other programs using the GPU (nvidia-smi) and rerun: finished epochs are kept."
)


@contextlib.contextmanager
def job(log_file: str | Path | None, network: bool = False) -> Iterator[None]:
    """Set up logging for a Snakemake job and log any exception before re-raising it.

    Unless ``network`` (the prepare rules, which run on the submitting node), the hub
    libraries' offline switches are set first: compute nodes often have no network, so a
    job loads only what a prepare rule put on disk (:mod:`dreamgrid.offline`).

    A CUDA out-of-memory error is re-raised as a DreamgridError that says which settings
    to change.
    """
    from dreamgrid import offline
    from dreamgrid.errors import DreamgridError

    saved = sys.stdout, sys.stderr, logging.getLogger().handlers[:]
    saved_switches = {name: os.environ.get(name) for name in offline.SWITCHES}
    setup(log_file)
    log = logging.getLogger("dreamgrid")
    if not network:
        offline.switch_on()
        log.info("offline: %s", " ".join(f"{k}={v}" for k, v in offline.SWITCHES.items()))
    try:
        yield
    except Exception as err:
        if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            log.error("%s\n%s", err, OUT_OF_MEMORY_HELP)
            raise DreamgridError(OUT_OF_MEMORY_HELP) from err
        log.exception("job failed")
        raise
    finally:
        stream = sys.stderr
        sys.stdout, sys.stderr, logging.getLogger().handlers[:] = saved
        for name, value in saved_switches.items():  # a job run in-process (tests) ends here
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if log_file:
            stream.close()


@contextlib.contextmanager
def snakemake_job(snakemake: Any, network: bool = False) -> Iterator[None]:
    """The one context of every ``script:`` shim: :func:`job` on the rule's log, then the GPU
    slot its ``resources`` ask for (:func:`dreamgrid.gpus.slot`; none for a CPU rule), so no
    GPU rule's job can forget to pin itself to its own device.

    Args:
        snakemake: the ``snakemake`` object Snakemake gives a script (``log``, ``resources``).
        network: the prepare rules' jobs, which may download (see :func:`job`).
    """
    with job(snakemake.log[0], network=network), gpus.slot(snakemake.resources.get("gpu", 0)):
        yield
