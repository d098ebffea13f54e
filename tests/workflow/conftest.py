"""Run the embedded demo once, in a copy of the workflow in a temp dir, for the workflow tests."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "envs", "profiles", "resources/demo"]


def snakemake(
    workdir: Path, *args: str, timeout: int = 2400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir`` with this interpreter (so the shims use the same venv);
    ``env`` adds to (or, with None values, removes from) its environment."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if k != "DEEPFACE_HOME"}
    env.update({k: v for k, v in extra.items() if v is not None})
    for name in [k for k, v in extra.items() if v is None]:
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@contextlib.contextmanager
def edited_config(workdir: Path, config: dict | None) -> Iterator[None]:
    """``config`` written over ``config/config.yaml`` (as a user edits it), then restored."""
    config_file = workdir / "config" / "config.yaml"
    original = config_file.read_text()
    if config is not None:
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        yield
    finally:
        config_file.write_text(original)


def planned_jobs(
    workdir: Path,
    config: dict | None = None,
    targets: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
) -> list[tuple[str, dict[str, str]]]:
    """Jobs a dry run plans (for ``targets``, default all), as (rule, wildcards).

    ``config`` is written over ``config/config.yaml`` for the dry run, as a user edits it, and
    the original is restored afterwards; ``options`` go to snakemake as they are (e.g.
    ``--configfile``).
    """
    with edited_config(workdir, config):
        result = snakemake(workdir, "--dry-run", "--cores", "2", *options, *targets, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return parse_jobs(result.stdout)


def parse_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """The (rule, wildcards) of every job a dry run's output lists."""
    jobs = []
    # Jobs print as "rule x:", "localrule x:" or, for checkpoints, "checkpoint x:".
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", dry_run_output):
        header = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if not header:
            continue
        found = re.search(r"^\s+wildcards: (.*)$", block, flags=re.MULTILINE)
        wildcards = dict(item.split("=", 1) for item in found.group(1).split(", ")) if found else {}
        jobs.append((header.group(1), wildcards))
    return jobs


#: The demo's subject (repo-relative, for a copied workflow): the reduced-grid tests' data.
DEMO_SUBJECT = {
    "class_word": "man",
    "train_images": "resources/demo/train",
    "references": "resources/demo/references",
}


def demo_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def copy_workflow(work: Path) -> Path:
    """Copy the workflow and the demo inputs into ``work`` (as a fresh clone would have them)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "deepface")
    for name in WORKFLOW_FILES:
        source, target = ROOT / name, work / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return work


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The demo config run end to end (`snakemake --cores 2`) in a fresh copy of the workflow."""
    work = copy_workflow(tmp_path_factory.mktemp("demo"))
    result = snakemake(work, "--cores", "2")
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in (work / "results" / "logs").rglob("*.log")
        )
        pytest.fail(f"demo run failed:\n{result.stderr[-5000:]}\n{logs[-10000:]}")
    return work


@pytest.fixture(scope="session")
def demo_report(demo_run) -> Path:
    """The demo's HTML report (`snakemake --report results/report.html`)."""
    result = snakemake(demo_run, "--report", "results/report.html", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return demo_run / "results" / "report.html"


#: The study's photos folders, filled with the demo's photos (a dry run only lists them).
STUDY_DATA = {
    "data/subject/train": "resources/demo/train",
    "data/subject/references": "resources/demo/references",
    "data/ground_truth": "resources/demo/ground_truth",
    "data/subject/captions": "resources/demo/captions",
}


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory) -> Path:
    """A copy of the workflow with the study's data folders filled with the demo's photos."""
    work = copy_workflow(tmp_path_factory.mktemp("study"))
    for target, source in STUDY_DATA.items():
        shutil.copytree(ROOT / source, work / target)
    return work


def fake_outputs(workdir: Path, jobs_output: str) -> int:
    """Create every output a dry run lists (folders for paths without a suffix), all with
    one modification time, as if the run had finished."""
    paths = set()
    for line in jobs_output.splitlines():
        if line.startswith("    output: "):
            paths.update(p.strip() for p in line.removeprefix("    output: ").split(","))
    for path in sorted(paths):
        target = workdir / path
        if "." in target.name:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        else:
            target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        os.utime(workdir / path, (1_900_000_000, 1_900_000_000))
    return len(paths)
