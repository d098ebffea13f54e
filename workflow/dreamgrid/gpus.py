"""One GPU per GPU job on a multi-GPU workstation, through a lock directory of slots.

Snakemake's ``--resources gpu=N`` runs at most N jobs declaring ``gpu=1`` at once, but does
not tell a job which device to use, so all N would land on GPU 0. Each GPU job takes the first
free slot (an ``flock`` on ``<lock dir>/gpu-<id>.lock``, released when the job ends, even
when it is killed) and sets ``CUDA_VISIBLE_DEVICES`` to that id before CUDA starts.

Device ids: ``DREAMGRID_GPUS`` (e.g. ``0,1,2,3``), else the entries of ``CUDA_VISIBLE_DEVICES``,
else ``nvidia-smi``'s indices; none found (a CPU machine) = nothing to pin. Under SLURM the
scheduler has already assigned the job its GPU, so nothing is changed there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

IDS_VAR = "DREAMGRID_GPUS"
LOCKS_VAR = "DREAMGRID_GPU_LOCKS"
POLL_SECONDS = 2.0


def lock_dir() -> Path:
    """Machine-wide by default, so two workflows on one box share the slots."""
    default = Path(tempfile.gettempdir()) / f"dreamgrid-gpu-slots-{os.getuid()}"
    return Path(os.environ.get(LOCKS_VAR, default))


def device_ids(environ: dict[str, str] | None = None) -> list[str]:
    """The GPU ids jobs may be pinned to (see the module doc); [] on a machine with none."""
    environ = os.environ if environ is None else environ
    for var in (IDS_VAR, "CUDA_VISIBLE_DEVICES"):
        value = environ.get(var, "").strip()
        if value:
            return [i.strip() for i in value.split(",") if i.strip()]
    if shutil.which("nvidia-smi"):
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode == 0:
            return [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return []


def try_acquire(ids: Sequence[str], directory: Path) -> tuple[str, int] | None:
    """The first free slot as (id, open locked fd), or None when every slot is taken."""
    directory.mkdir(parents=True, exist_ok=True)
    for device in ids:
        fd = os.open(directory / f"gpu-{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return device, fd
    return None


@contextlib.contextmanager
def slot(
    gpus: int,
    ids: Sequence[str] | None = None,
    directory: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Iterator[str | None]:
    """Pin this process to a free GPU for the block; yields its id (None: nothing pinned).

    Args:
        gpus: the job's ``gpu`` resource; 0 = a CPU job, left alone.
        ids: device ids (default :func:`device_ids`).
        directory: lock directory (default :func:`lock_dir`).
        environ: environment to set ``CUDA_VISIBLE_DEVICES`` in (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    if gpus < 1 or environ.get("SLURM_JOB_ID"):
        yield None
        return
    if gpus > 1:
        raise ValueError("one GPU per job: a slot is one device")
    ids = device_ids(environ) if ids is None else list(ids)
    if not ids:
        yield None
        return
    directory = lock_dir() if directory is None else directory
    taken = try_acquire(ids, directory)
    if taken is None:
        log.info("all GPU slots %s in %s are taken; waiting for one", ",".join(ids), directory)
    while taken is None:  # more gpu jobs than devices (--resources gpu=N > devices)
        time.sleep(POLL_SECONDS)
        taken = try_acquire(ids, directory)
    device, fd = taken
    environ["CUDA_VISIBLE_DEVICES"] = device
    log.info("pinned to GPU %s (CUDA_VISIBLE_DEVICES=%s)", device, device)
    try:
        yield device
    finally:
        os.close(fd)  # releases the flock
