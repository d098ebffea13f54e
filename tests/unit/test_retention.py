"""keep_checkpoints: best removes every checkpoint but the arm's best epoch's, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dreamgrid.errors import SpecError
from dreamgrid.retention import keep_best_checkpoint


def arm_files(root, arm, epochs):
    folder = root / "arms" / arm / "checkpoints"
    folder.mkdir(parents=True)
    paths = {}
    for e in epochs:
        paths[e] = folder / f"epoch-{e}.safetensors"
        paths[e].write_bytes(b"weights")
        (folder / f"epoch-{e}.json").write_text("{}")
    return paths


def test_keeps_only_the_best_epoch_of_the_primary_model(tmp_path):
    summary = tmp_path / "summary.csv"
    summary.write_text(
        "arm,epoch,model,steps,best\n"
        "a,1,Dlib,2,False\na,2,Dlib,4,True\na,3,Dlib,6,False\n"
        "a,3,Facenet,6,True\nb,1,Dlib,2,True\n"
    )
    paths = arm_files(tmp_path, "a", [1, 2, 3])
    other = arm_files(tmp_path, "b", [1])
    user_file = paths[1].parent / "my-notes.txt"
    user_file.write_text("mine")
    record = keep_best_checkpoint(summary, "a", paths, tmp_path / "kept.json", model="Dlib")
    assert record == {"arm": "a", "kept": [2], "removed": [1, 3], "missing": []}
    assert json.loads((tmp_path / "kept.json").read_text()) == record
    assert [e for e, p in paths.items() if p.exists()] == [2]
    # Metadata, other arms and files the workflow did not write stay.
    assert all(p.with_suffix(".json").exists() for p in paths.values())
    assert other[1].exists() and user_file.exists()
    # Run again (e.g. after thresholds changed): nothing left to remove.
    again = keep_best_checkpoint(summary, "a", paths, tmp_path / "kept.json", model="Dlib")
    assert again["removed"] == [] and again["kept"] == [2]


def test_no_best_flag_keeps_everything(tmp_path):
    summary = tmp_path / "summary.csv"
    summary.write_text("arm,epoch,best\na,1,False\na,2,False\n")
    paths = arm_files(tmp_path, "a", [1, 2])
    assert keep_best_checkpoint(summary, "a", paths, tmp_path / "kept.json")["kept"] == [1, 2]
    assert all(p.exists() for p in paths.values())


def test_summary_without_best_column_names_the_file(tmp_path):
    summary = tmp_path / "summary.csv"
    summary.write_text("arm,epoch\na,1\n")
    with pytest.raises(SpecError, match="summary.csv: no column"):
        keep_best_checkpoint(summary, "a", {}, tmp_path / "kept.json")


def test_release_state_deletes_the_state_and_a_killed_writes_leftover(tmp_path):
    from dreamgrid.retention import release_resume_state

    state = tmp_path / "state" / "resume.safetensors"
    state.parent.mkdir()
    state.write_bytes(b"x" * 1000)
    leftover = state.parent / ".resume.safetensors.abc123"  # atomic_path's temp of a killed job
    leftover.mkdir()
    (leftover / "resume.safetensors").write_bytes(b"y" * 500)
    metas = []
    for epoch in (1, 2):
        metas.append(tmp_path / f"epoch-{epoch}.json")
        metas[-1].write_text(json.dumps({"epoch": epoch}))
    out = state.parent / "released.json"
    record = release_resume_state(state, metas, out)
    assert record == {"state": str(state), "epoch": 2, "bytes_freed": 1500}
    assert json.loads(out.read_text()) == record
    assert sorted(p.name for p in state.parent.iterdir()) == ["released.json"]
    # Again (e.g. after epochs were added and replayed without a state): nothing to free.
    assert release_resume_state(state, metas, out)["bytes_freed"] == 0


def test_the_plan_releases_each_arms_state_after_its_last_epoch_unless_kept():
    from dreamgrid import config as cfg
    from dreamgrid import dag

    config = cfg.load(Path(__file__).resolve().parents[2] / "config" / "experiment.yaml")
    grid = dag.Grid(config)
    released = grid.state_release_outputs
    # One per training run: 12 recipes x 3 replicates.
    assert len(released) == 12 * 3 and set(released) <= set(grid.final_outputs)
    arm = SimpleNamespace(arm="rare-noreg-nocap")
    assert grid.get_arm_checkpoint_metas(arm)[-1].endswith(
        "rare-noreg-nocap/checkpoints/epoch-6.json"
    )
    kept = {**config, "training": {**config["training"], "keep_resume_state": True}}
    assert dag.Grid(kept).state_release_outputs == []
    # Not a training setting: keeping or releasing states retrains nothing.
    assert grid.training_params == dag.Grid(kept).training_params
