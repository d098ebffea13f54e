"""dreamgrid.scoring.steps: ``dreamgrid score`` and the score stage's workflow steps, shards
merged into one checkpoint table per model (real Dlib, offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dreamgrid.errors import SpecError
from dreamgrid.scoring import codec, deepface_adapter, distances, steps
from dreamgrid.scoring.distances import score_images

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
TRAIN = sorted((DEMO / "train").glob("*.jpg"))
REFERENCES = sorted((DEMO / "references").glob("*.jpg"))
OTHER = sorted((DEMO / "ground_truth").glob("*.jpg"))


def test_run_score_cli_writes_csv_and_meta(home, extra, tmp_path):
    refs, images = tmp_path / "refs", tmp_path / "images"
    refs.mkdir()
    images.mkdir()
    for path in REFERENCES[:2]:
        shutil.copy(path, refs)
    shutil.copy(TRAIN[1], images)
    shutil.copy(extra / "gray.png", images)
    out = tmp_path / "scores" / "scores.csv"

    frame = steps.run_score_cli(refs, images, "Dlib", "dlib", "cosine", out)

    lines = out.read_text().splitlines()
    ref_columns = [f"d:{p.name}" for p in REFERENCES[:2]]
    assert lines[0].split(",") == ["image", "face_found", "n_faces", "mean_distance", *ref_columns]
    assert lines[1] == "gray.png,false,0,,,"
    assert lines[2].startswith(f"{TRAIN[1].name},true,1,0.0")
    table = pd.read_csv(out)
    assert table["face_found"].tolist() == [False, True]
    assert np.allclose(table.filter(like="d:"), frame.filter(like="d:"), equal_nan=True)
    meta = json.loads((tmp_path / "scores" / "scores.meta.json").read_text())
    assert meta["model"] == "Dlib" and meta["deepface_version"] == "0.0.103"
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv", "scores.meta.json"]


def test_run_score_cli_missing_folder(home, tmp_path):
    with pytest.raises(SpecError, match="not a directory"):
        steps.run_score_cli(
            tmp_path / "nope", DEMO / "train", "Dlib", "dlib", "cosine", tmp_path / "s.csv"
        )
    assert not (tmp_path / "s.csv").exists()


def test_shard_faces_merge_into_one_table_per_model(settings, references, tmp_path):
    """Two shards, Dlib listed twice under two names (only Dlib has weights offline)."""
    renders = tmp_path / "renders"
    tables = []
    for k, group in enumerate([TRAIN[:2], [*TRAIN[2:3], *OTHER[:1]]]):
        shard = renders / f"shard-{k}"
        shard.mkdir(parents=True)
        rows = []
        for j, src in enumerate(group):
            seed = 2 * k + j
            shutil.copy(src, shard / f"render-{seed}.jpg")
            rows.append({"seed": seed, "image": f"shard-{k}/render-{seed}.jpg"})
        table = tmp_path / f"shard-{k}.csv"
        pd.DataFrame(rows).to_csv(table, index=False)
        tables.append(table)
    refs = tmp_path / "refs.json"
    codec.save_references(references, settings, refs)
    meta = tmp_path / "ckpt.json"
    meta.write_text(json.dumps({"steps": 10}))

    files = []
    for k, table in enumerate(tables):
        out = tmp_path / "faces" / f"shard-{k}.json"
        steps.embed_renders(
            table, renders, settings.embedding, out, cache_dir=tmp_path / "cache", workers=1
        )
        files.append(out)

    # Only Dlib has weights offline: "Dlib2" stands for a second model. Its faces and
    # references files are Dlib's relabelled; deepface's model check and threshold lookup are
    # mocked for that name alone.
    def relabel(path: Path) -> Path:
        payload = json.loads(path.read_text())
        payload["metadata"]["model"] = "Dlib2"
        copy = path.with_name("Dlib2-" + path.name)
        copy.write_text(json.dumps(payload))
        return copy

    real_threshold = deepface_adapter.deepface_threshold
    real_check = deepface_adapter.check_settings

    def threshold(s):
        return 0.5 if s.model == "Dlib2" else real_threshold(s)

    def check(s):
        return None if s.model == "Dlib2" else real_check(s)

    out = tmp_path / "scores.csv"
    kwargs = {
        "renders_tables": tables,
        "checkpoint_meta": meta,
        "settings": settings,
        "multiple_faces": "closest",
        "arm": "a",
        "epoch": 2,
        "out": out,
        "prompt_set": "bleed",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(deepface_adapter, "deepface_threshold", threshold)
        mp.setattr(deepface_adapter, "check_settings", check)
        # Embeddings record their model: a faces file of another model is refused.
        with pytest.raises(SpecError, match="model"):
            steps.score_faces(
                faces_files={"Dlib": files, "Dlib2": files},
                references={"Dlib": refs, "Dlib2": relabel(refs)},
                **kwargs,
            )
        frame = steps.score_faces(
            faces_files={"Dlib": files, "Dlib2": [relabel(f) for f in files]},
            references={"Dlib": refs, "Dlib2": relabel(refs)},
            **kwargs,
        )
    written = pd.read_csv(out)
    assert list(written.columns[:11]) == [
        "arm", "epoch", "steps", "seed", "image", "model", "prompt_set", "face_found", "n_faces",
        "mean_distance", f"d:{REFERENCES[0].name}",
    ]  # fmt: skip
    assert written["image"].tolist()[:4] == [
        "shard-0/render-0.jpg",
        "shard-0/render-1.jpg",
        "shard-1/render-2.jpg",
        "shard-1/render-3.jpg",
    ]
    # One row per render and model, models in the order given, seeds in order within each.
    assert written["model"].tolist() == ["Dlib"] * 4 + ["Dlib2"] * 4
    assert set(written["prompt_set"]) == {"bleed"}
    assert written["seed"].tolist() == [0, 1, 2, 3] * 2
    assert written["image"].tolist()[:4] == written["image"].tolist()[4:]
    direct = score_images(
        [renders / name for name in written["image"][:4]], references, settings, progress=False
    )
    for model in ("Dlib", "Dlib2"):
        got = frame.loc[frame["model"] == model, "mean_distance"].to_numpy()
        assert np.array_equal(got, direct["mean_distance"].to_numpy(), equal_nan=True)
    sidecar = json.loads(distances.meta_path(out).read_text())
    assert sidecar["deepface_version"] == "0.0.103"
    assert sidecar["models"]["Dlib"]["deepface_threshold"] == 0.07
    assert sidecar["multiple_faces"] == "closest"
    assert sidecar["models"]["Dlib2"]["deepface_threshold"] == 0.5
    assert sidecar["models"]["Dlib"]["face_rate"] == 1.0
