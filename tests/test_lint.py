"""The catalog's static checks, run as tests so the README's one test command enforces them."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_snakefmt_clean():
    result = run(str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_clean():
    result = run(sys.executable, "-m", "snakemake", "--lint", "--cores", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for rule" not in result.stdout + result.stderr


def test_ruff_clean():
    ruff = BIN / "ruff"
    result = run(
        str(ruff if ruff.exists() else shutil.which("ruff")),
        "check",
        "workflow",
        "tests",
        "benchmarks",
    )
    assert result.returncode == 0, result.stdout + result.stderr
