import hashlib
import json
import shutil
import subprocess

import pytest

from dreamgrid import config as cfg
from dreamgrid import dag, manifest, paths


def demo_like_config(**sample):
    return cfg.validate(
        {
            "subject": {"class_word": "woman", "train_images": "photos", "references": "refs"},
            "base_model": "tiny",
            "axes": {"token": {"rare": "ohwx"}, "regularization": ["none"], "captions": ["none"]},
            "sample": sample,
        }
    )


def test_config_hash_ignores_key_order_but_not_values():
    a = {"training": {"epochs": 2, "seed": 1}, "base_model": "tiny"}
    b = {"base_model": "tiny", "training": {"seed": 1, "epochs": 2}}
    assert manifest.config_hash(a) == manifest.config_hash(b)
    assert manifest.config_hash(a) != manifest.config_hash({**a, "base_model": "other"})


def test_seeds_lists_every_seed_of_the_validated_config():
    found = manifest.seeds(demo_like_config(seed=7))
    assert found["sample.seed"] == 7
    assert {"training.seed", "regularization.seed", "caption.seed"} <= set(found)
    assert all(key.endswith(".seed") for key in found)


def test_file_hashes_are_sha256_by_relative_path(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.bin").write_bytes(b"weights")
    (tmp_path / "model_index.json").write_text("{}")
    hashes = manifest.file_hashes(tmp_path)
    assert hashes == {
        "model_index.json": hashlib.sha256(b"{}").hexdigest(),
        "unet/w.bin": hashlib.sha256(b"weights").hexdigest(),
    }


def test_file_hashes_follow_a_linked_model_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert manifest.file_hashes(tmp_path / "link") == manifest.file_hashes(tmp_path / "real")


def test_git_commit_is_none_outside_git(tmp_path):
    assert manifest.git_commit(tmp_path) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_reports_head_and_uncommitted_edits(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert manifest.git_commit(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f").write_text("2")
    assert manifest.git_commit(tmp_path) == {"commit": head, "dirty": True}


def test_package_versions_names_missing_packages_as_none():
    versions = manifest.package_versions(("torch", "no-such-dist-dreamgrid"))
    assert versions["torch"].startswith("2.")
    assert versions["no-such-dist-dreamgrid"] is None


def test_run_writes_every_section(tmp_path):
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    table = tmp_path / "summary.csv"
    table.write_text("arm,epoch\n")
    out = tmp_path / "results" / "manifest.json"
    written = manifest.write_manifest(
        config_sha256="ab" * 32,
        seed_values={"sample.seed": 0},
        models={"base": model},
        outputs={"summary": table},
        workflow_dir=tmp_path,
        out=out,
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == written
    assert on_disk["config_sha256"] == "ab" * 32
    assert on_disk["git"] is None
    assert on_disk["models"]["base"] == {"model_index.json": hashlib.sha256(b"{}").hexdigest()}
    assert on_disk["outputs"]["summary"] == hashlib.sha256(b"arm,epoch\n").hexdigest()
    for key in ("torch", "diffusers", "transformers", "deepface", "snakemake", "cuda"):
        assert key in on_disk["packages"]
    assert on_disk["hardware"]["cpu"] and on_disk["hardware"]["cpu_count"] >= 1
    assert isinstance(on_disk["hardware"]["gpus"], list)
    assert not list(out.parent.glob("*.tmp"))


def test_manifest_is_a_final_output_and_hashes_the_captioner_only_when_used():
    grid = dag.Grid(demo_like_config())
    assert paths.MANIFEST in grid.final_outputs
    assert "captioner" not in grid.get_manifest_inputs()
    with_captions = demo_like_config()
    with_captions["axes"]["captions"] = ["blip"]
    assert dag.Grid(with_captions).get_manifest_inputs()["captioner"] == paths.CAPTION_MODEL_DIR
