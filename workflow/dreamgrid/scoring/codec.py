"""Stored faces: one JSON encoding of faces and embeddings for every file that holds them.

Three kinds of file hold faces, each written atomically:

- reference embeddings (:func:`save_references`): reference file name -> embedding, one per
  (model, detector), with :func:`~dreamgrid.scoring.deepface_adapter.embedding_metadata`;
- a shard's faces (:func:`save_faces`): per render its name, content hash and faces;
- an entry of the embedding cache (:class:`dreamgrid.scoring.embedding.EmbeddingCache`): the
  faces of one image.

A face is ``{"embedding": [...], "area": n}``. Floats are written by ``json`` (shortest repr),
so reading gives back exactly the same float64 values.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamgrid.errors import SpecError
from dreamgrid.io import atomic_path
from dreamgrid.scoring import deepface_adapter
from dreamgrid.scoring.deepface_adapter import Face
from dreamgrid.scoring.settings import EmbedSettings, FaceSettings


def encode_embedding(embedding: np.ndarray) -> list[float]:
    """An embedding as a JSON list of float64 values."""
    return np.asarray(embedding, dtype=np.float64).tolist()


def decode_embedding(values: Sequence[float]) -> np.ndarray:
    """An embedding back from :func:`encode_embedding`."""
    return np.asarray(values, dtype=np.float64)


def encode_faces(found: Sequence[Face]) -> list[dict[str, Any]]:
    """The faces of one image as JSON: ``[{"embedding": [...], "area": n}, ...]``."""
    return [{"embedding": encode_embedding(f.embedding), "area": f.area} for f in found]


def decode_faces(items: Sequence[dict[str, Any]]) -> list[Face]:
    """The faces of one image back from :func:`encode_faces`."""
    return [Face(decode_embedding(f["embedding"]), int(f["area"])) for f in items]


def write_json(payload: Any, out: Path, *, indent: int | None = None, newline: bool = True) -> None:
    """Write ``payload`` as JSON, atomically."""
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=indent) + ("\n" if newline else ""))


@contextlib.contextmanager
def _reading(path: Path, what: str, fix: str) -> Iterator[None]:
    """Turn a missing or malformed file into a SpecError naming it, ``what`` it should be and
    the ``fix``."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SpecError(f"{path}: not a {what} ({err}). {fix}") from err


def save_references(
    embeddings: dict[str, np.ndarray], settings: FaceSettings | EmbedSettings, out: Path
) -> None:
    """Write reference embeddings and their metadata (deepface version, settings, backend:
    :func:`dreamgrid.scoring.deepface_adapter.embedding_metadata`) as JSON, atomically."""
    payload = {
        "metadata": deepface_adapter.embedding_metadata(settings),
        "embeddings": {name: encode_embedding(e) for name, e in embeddings.items()},
    }
    write_json(payload, out, indent=1)


def load_references(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_references`.

    Returns:
        (file name -> embedding, metadata).

    Raises:
        SpecError: the file is missing or not a references file.
    """
    with _reading(path, "reference-embeddings file", "Recreate it from the references."):
        payload = json.loads(Path(path).read_text())
        embeddings = {
            name: decode_embedding(values) for name, values in payload["embeddings"].items()
        }
        meta = payload["metadata"]
    return embeddings, meta


def save_faces(
    names: Sequence[str],
    digests: Sequence[str],
    found: Sequence[Sequence[Face]],
    settings: EmbedSettings,
    out: Path,
) -> None:
    """Write the faces of a shard's renders (embeddings, box areas, content hashes) as JSON."""
    payload = {
        "metadata": deepface_adapter.embedding_metadata(settings),
        "images": [
            {"image": name, "sha256": digest, "faces": encode_faces(faces_)}
            for name, digest, faces_ in zip(names, digests, found, strict=True)
        ],
    }
    write_json(payload, out)


def load_faces(path: Path) -> tuple[dict[str, list[Face]], dict[str, Any]]:
    """Read :func:`save_faces` output: (image name -> faces, metadata)."""
    with _reading(path, "faces file", "Embed the renders again."):
        payload = json.loads(Path(path).read_text())
        found = {item["image"]: decode_faces(item["faces"]) for item in payload["images"]}
        meta = payload["metadata"]
    return found, meta


def check_references_match(meta: dict[str, Any], settings: FaceSettings | EmbedSettings) -> None:
    """Raise SpecError if saved embeddings were made with other embedding settings or another
    deepface version."""
    expected = deepface_adapter.embedding_metadata(settings)
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in wrong.items())
        raise SpecError(
            f"embeddings were made with other settings ({details}). Embed the images again."
        )
