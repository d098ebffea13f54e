"""Bad input stops the workflow before any job, with one message naming the file."""

import pytest
from conftest import copy_workflow, snakemake

pytestmark = pytest.mark.slow


def test_broken_image_stops_the_run_before_any_job(tmp_path):
    work = copy_workflow(tmp_path)
    (work / "resources/demo/train/zz_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    result = snakemake(work, "--cores", "2", timeout=300)
    assert result.returncode != 0
    assert "zz_broken.jpg: cannot be read as an image" in result.stdout + result.stderr
    assert not (work / "results" / "models").exists()
    assert not (work / "results" / "arms").exists()
