"""dreamgrid.scoring.codec: stored faces read back exactly (real Dlib, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamgrid.errors import SpecError
from dreamgrid.scoring import codec, deepface_adapter
from dreamgrid.scoring.deepface_adapter import Face
from dreamgrid.scoring.embedding import EmbeddingCache
from dreamgrid.scoring.settings import FaceSettings


def test_save_load_references_round_trip(settings, references, tmp_path):
    out = tmp_path / "refs" / "references.json"
    codec.save_references(references, settings, out)
    loaded, meta = codec.load_references(out)
    assert list(loaded) == list(references)
    for name, embedding in references.items():
        assert loaded[name].dtype == np.float64
        assert np.array_equal(loaded[name], embedding)
    # Embeddings do not depend on the metric: the file records what they do depend on.
    assert meta == deepface_adapter.embedding_metadata(settings)
    assert set(meta) == {
        "deepface_version",
        "model",
        "detector",
        "align",
        "deepface_backend",
        "device",
    }
    codec.check_references_match(meta, settings)
    codec.check_references_match(meta, FaceSettings("Dlib", "dlib", "euclidean", True))
    with pytest.raises(SpecError, match="model"):
        codec.check_references_match(meta, FaceSettings("ArcFace", "dlib", "cosine", True))
    assert [p.name for p in out.parent.iterdir()] == ["references.json"]  # no temp left


def test_load_references_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(SpecError, match="x.json"):
        codec.load_references(tmp_path / "x.json")


def test_faces_files_and_cache_entries_keep_their_format(settings, tmp_path):
    """A shard's faces file and a cache entry hold faces in one encoding, byte for byte as
    before the codec was shared, and read back exactly."""
    found = [
        [Face(np.array([0.1, -2.5e-7, 1 / 3]), 120), Face(np.array([0.0, 1.0, 2.0]), 7)],
        [],
    ]
    encoded = [
        [{"embedding": f.embedding.tolist(), "area": f.area} for f in faces_] for faces_ in found
    ]
    out = tmp_path / "faces.json"
    codec.save_faces(["a.png", "b.png"], ["h1", "h2"], found, settings.embedding, out)
    expected = {
        "metadata": deepface_adapter.embedding_metadata(settings.embedding),
        "images": [
            {"image": "a.png", "sha256": "h1", "faces": encoded[0]},
            {"image": "b.png", "sha256": "h2", "faces": encoded[1]},
        ],
    }
    assert out.read_text() == json.dumps(expected) + "\n"
    loaded, meta = codec.load_faces(out)
    assert meta == expected["metadata"]
    assert list(loaded) == ["a.png", "b.png"]
    for got, want in zip(loaded.values(), found, strict=True):
        assert [f.area for f in got] == [f.area for f in want]
        assert all(np.array_equal(a.embedding, b.embedding) for a, b in zip(got, want))
        assert all(f.embedding.dtype == np.float64 for f in got)

    cache = EmbeddingCache(tmp_path / "cache", settings)
    cache.put("ab" * 32, found[0])
    [entry] = cache.folder.rglob("*.json")
    assert entry == cache.folder / "ab" / f"{'ab' * 32}.json"
    assert entry.read_text() == json.dumps(encoded[0])
    cached = cache.get("ab" * 32)
    assert [f.area for f in cached] == [120, 7]
    assert np.array_equal(cached[0].embedding, found[0][0].embedding)
    assert cache.get("cd" * 32) is None

    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SpecError, match="bad.json: not a faces file"):
        codec.load_faces(tmp_path / "bad.json")
