"""The demo's results/manifest.json describes that run (see dreamgrid.manifest)."""

import json

import pytest
from conftest import ROOT, demo_config

from dreamgrid import config as cfg
from dreamgrid import manifest
from dreamgrid.io import file_hash

pytestmark = pytest.mark.slow


def test_demo_writes_a_manifest_of_its_config_models_and_tables(demo_run):
    written = json.loads((demo_run / "results" / "manifest.json").read_text())
    validated = cfg.validate(demo_config(), source=str(ROOT / "config" / "config.yaml"))
    assert written["config_sha256"] == manifest.config_hash(validated)
    assert written["seeds"] == manifest.seeds(validated)
    # The temp copy is not a git checkout: no commit, rather than a wrong one.
    assert written["git"] is None
    for name in ("base", "captioner"):
        folder = demo_run / "results" / "models" / name
        assert written["models"][name] == manifest.file_hashes(folder)
        assert any(path.endswith(".safetensors") for path in written["models"][name])
    for name, table in (("summary", "summary.csv"), ("scores", "scores.tsv")):
        assert written["outputs"][name] == file_hash(demo_run / "results" / table)
    assert written["packages"]["torch"] and written["packages"]["deepface"] == "0.0.103"
    assert written["hardware"]["cpu_count"] >= 1
