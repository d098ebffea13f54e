"""Embedding: the subject's reference photos, and many images at once (renders, photos).

Every image is detected and embedded once: :class:`EmbeddingCache` keeps the faces of each
file by its content hash, so the same bytes are never embedded twice by any job, and the
images not in the cache are embedded in worker processes (dlib holds the GIL, so threads do
not help; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from dreamgrid.errors import NoFaceError, SpecError
from dreamgrid.io import file_hash
from dreamgrid.scoring import codec, deepface_adapter
from dreamgrid.scoring.deepface_adapter import Face
from dreamgrid.scoring.settings import EmbedSettings, FaceSettings

logger = logging.getLogger(__name__)


def embed_reference_photos(
    paths: Sequence[Path], settings: FaceSettings | EmbedSettings
) -> dict[str, np.ndarray]:
    """Embed the reference photos of the subject, one face each.

    Args:
        paths: reference images; their file names must be distinct.
        settings: face settings.

    Returns:
        file name -> embedding, in the order given.

    Raises:
        NoFaceError: a reference shows no face (the message names the file).
        SpecError: a reference shows several faces, or two references share a file name.
    """
    embeddings: dict[str, np.ndarray] = {}
    for path in map(Path, paths):
        if path.name in embeddings:
            raise SpecError(
                f"{path}: another reference has the file name {path.name!r}. "
                "Rename one; scores are keyed by reference file name."
            )
        faces = deepface_adapter.embed_faces(path, settings)
        if not faces:
            raise NoFaceError(
                f"{path}: no face found by the {settings.detector!r} detector. References must "
                "each show the subject's face clearly; replace or remove this photo."
            )
        if len(faces) > 1:
            raise SpecError(
                f"{path}: {len(faces)} faces found; references must each show the subject "
                "alone. Crop the photo to the subject or remove it."
            )
        embeddings[path.name] = faces[0]
    logger.info(
        "embedded %d reference(s) with %s/%s", len(embeddings), settings.model, settings.detector
    )
    return embeddings


# ---- many images: content-hash cache, worker processes -------------------------------------


class EmbeddingCache:
    """Embeddings of image files keyed by content hash, one small JSON file per image.

    Files live under ``<folder>/<model>-<detector>-align<0|1>-deepface<version>/<hash[:2]>/``,
    so other settings or another deepface version never reuse them. Each file is written
    atomically (temp name, then rename), so concurrent jobs can share one cache folder.
    """

    def __init__(self, folder: str | Path, settings: FaceSettings | EmbedSettings):
        meta = deepface_adapter.embedding_metadata(settings)
        name = (
            f"{meta['model']}-{meta['detector']}-align{int(meta['align'])}"
            f"-deepface{meta['deepface_version']}"
        )
        self.folder = Path(folder) / name

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.json"

    def get(self, digest: str) -> list[Face] | None:
        """The cached faces of the image with this hash, or None."""
        try:
            payload = json.loads(self._path(digest).read_text())
        except (OSError, ValueError):
            return None
        return codec.decode_faces(payload)

    def put(self, digest: str, found: Sequence[Face]) -> None:
        codec.write_json(codec.encode_faces(found), self._path(digest), newline=False)


_WORKER_SETTINGS: EmbedSettings | None = None
#: Fewer images than this per worker process are embedded in this process instead.
MIN_IMAGES_PER_WORKER = 4


def die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this (worker) process when ``parent`` dies, even by SIGKILL.

    A killed job cannot shut its pool down, and its workers would wait forever on the pool's
    pipe (~100 MB each). Linux delivers SIGKILL to the worker when its parent dies
    (``PR_SET_PDEATHSIG``); elsewhere, or if prctl fails, a thread watches the parent pid.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(poll_s)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()
    # The parent may have died before prctl took effect: then no signal comes.
    if os.getppid() != parent:
        os._exit(1)


def _init_worker(home: str, settings: EmbedSettings, parent: int) -> None:
    global _WORKER_SETTINGS
    die_with_parent(parent)
    deepface_adapter.setup_deepface(home)
    _WORKER_SETTINGS = settings


def _embed_in_worker(path: Path) -> list[Face]:
    assert _WORKER_SETTINGS is not None
    return deepface_adapter.detect_and_embed(path, _WORKER_SETTINGS)


def default_workers() -> int:
    """CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def embed_images(
    images: Sequence[Path],
    settings: FaceSettings | EmbedSettings,
    *,
    cache: EmbeddingCache | None = None,
    workers: int = 1,
    progress: bool = True,
) -> list[list[Face]]:
    """Detect and embed every image once: the faces of each image, in order.

    Images already in ``cache`` (same bytes, same settings, same deepface version) are not
    embedded again; the others are embedded in ``workers`` processes (dlib holds the GIL, so
    threads do not help; see benchmarks/RESULTS.md) and added to the cache.
    """
    from tqdm.auto import tqdm

    images = [Path(p) for p in images]
    deepface_adapter.check_settings(settings)
    embed = settings if isinstance(settings, EmbedSettings) else settings.embedding
    digests = [file_hash(p) for p in images] if cache is not None else [None] * len(images)
    results: list[list[Face] | None] = [
        cache.get(d) if cache is not None else None for d in digests
    ]
    todo = [i for i, r in enumerate(results) if r is None]
    if len(todo) < len(images):
        logger.info("%d of %d image(s) found in the cache", len(images) - len(todo), len(images))
    # A worker process costs a deepface import and model load (seconds): only worth it for
    # a few images each.
    workers = max(1, min(workers, len(todo) // MIN_IMAGES_PER_WORKER))
    bar = tqdm(total=len(todo), desc=f"embed {embed.model}", unit="img", disable=not progress)

    def store(i: int, found: list[Face]) -> None:
        results[i] = found
        if cache is not None:
            cache.put(digests[i], found)
        bar.update(1)

    def embed_here(i: int) -> list[Face]:
        return deepface_adapter.detect_and_embed(images[i], embed)

    with bar:
        if workers == 1:
            for i in todo:
                store(i, embed_here(i))
        else:
            # fork, not spawn: spawn re-runs __main__, which in a Snakemake job is the script
            # shim (it fails without its `snakemake` object).
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            home = os.environ["DEEPFACE_HOME"]
            try:
                with ProcessPoolExecutor(
                    workers,
                    mp_context=context,
                    initializer=_init_worker,
                    initargs=(home, embed, os.getpid()),
                ) as pool:
                    for i, found in zip(
                        todo, pool.map(_embed_in_worker, [images[i] for i in todo])
                    ):
                        store(i, found)
            except BrokenProcessPool:
                # A worker died (killed, out of memory): finish in this process instead.
                logger.warning("embedding worker died; embedding the rest in one process")
                for i in todo:
                    if results[i] is None:
                        store(i, embed_here(i))
    return [r if r is not None else [] for r in results]
