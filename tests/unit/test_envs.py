"""envs/*.yaml: no conda channel is reachable here, so check them instead of building them.

Each rule's env must provide what its script imports (module-level imports of the shim and of
every dreamgrid module it reaches, plus the stage's lazily imported stack), pinned exactly, with
the same pin in every env and within pyproject.toml's ranges.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / "envs"
PKG = ROOT / "workflow"
# LAVIS has its own stack by necessity (transformers <4.27): not held to the shared pins.
OWN_STACK = {"lavis.yaml"}
# Import names that importlib.metadata cannot map (binary wheels without a top_level record).
IMPORT_TO_DIST = {"dlib": "dlib-bin"}
# Imports done inside functions, that the stage runs: its heavy stack, by env.
LAZY = {
    "train.yaml": {"torch", "diffusers", "transformers", "accelerate", "peft", "safetensors"},
    "caption.yaml": {"torch", "transformers"},
    "score.yaml": {"deepface", "dlib-bin", "face-recognition-models", "werkzeug"},
    "report.yaml": {"scipy", "matplotlib", "seaborn", "markdown-it-py"},
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def env_requirements(path: Path) -> dict[str, Requirement]:
    """The pip requirements of an env file, by normalized name (conda deps: python, pip only)."""
    spec = yaml.safe_load(path.read_text())
    found = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                req = Requirement(line)
                found[norm(req.name)] = req
        else:
            assert dep.split()[0] in {"python", "pip"}, f"{path.name}: conda dep {dep!r}"
    return found


def rule_envs() -> dict[str, tuple[str, str]]:
    """rule -> (env file name, script name) from workflow/rules/*.smk."""
    found = {}
    for smk in (PKG / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            name = re.match(r"rule (\w+):", block.strip())
            env = re.search(r'conda:\s*\n\s*"\.\./\.\./envs/([\w.]+)"', block)
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w.]+)"', block)
            if name:
                assert env and script, f"{smk.name}: rule {name.group(1)} lacks conda: or script:"
                found[name.group(1)] = (env.group(1), script.group(1))
    return found


def module_file(name: str) -> Path | None:
    path = PKG / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def third_party_imports(script: Path) -> set[str]:
    """Top-level names of third-party modules imported at module level by ``script`` and the
    dreamgrid modules it reaches (dreamgrid imports are followed even inside functions)."""
    seen: set[Path] = set()
    todo, found = [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [(a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [(node.module, [a.name for a in node.names])]
            else:
                continue
            for module, members in names:
                parts = module.split(".")
                if parts[0] == "dreamgrid":
                    candidates = [".".join(parts[: i + 1]) for i in range(len(parts))]
                    candidates += [f"{module}.{m}" for m in members]
                    todo += [f for f in map(module_file, candidates) if f]
                elif parts[0] not in sys.stdlib_module_names and id(node) in top_level:
                    found.add(parts[0])
    return found


@cache
def distribution_of(import_name: str) -> str:
    if import_name in IMPORT_TO_DIST:
        return IMPORT_TO_DIST[import_name]
    dists = metadata.packages_distributions().get(import_name)
    assert dists, f"cannot tell which distribution provides '{import_name}'"
    return norm(dists[0])


@cache
def with_dependencies(dist: str) -> frozenset[str]:
    """``dist`` and everything pip installs with it (as in this venv, extras ignored)."""
    found = {norm(dist)}
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return frozenset(found)
    for line in requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            found |= with_dependencies(norm(req.name))
    return frozenset(found)


ENV_FILES = sorted(p.name for p in ENVS.glob("*.yaml"))


def test_every_design_env_exists_and_rules_use_only_them():
    assert {"train.yaml", "caption.yaml", "score.yaml", "report.yaml", "lavis.yaml"} <= set(
        ENV_FILES
    )
    assert {env for env, _ in rule_envs().values()} <= set(ENV_FILES)


@pytest.mark.parametrize("env", ENV_FILES)
def test_env_parses_and_every_pip_package_is_pinned(env):
    requirements = env_requirements(ENVS / env)
    assert requirements, env
    loose = [str(r) for r in requirements.values() if not str(r.specifier).startswith("==")]
    if env not in OWN_STACK:
        assert not loose, f"envs/{env}: pin these with ==: {loose}"


@pytest.mark.parametrize("rule", sorted(rule_envs()))
def test_rule_env_provides_what_its_script_imports(rule):
    env, script = rule_envs()[rule]
    installed: set[str] = set()
    for name in env_requirements(ENVS / env):
        installed |= with_dependencies(name)
    needed = {distribution_of(m) for m in third_party_imports(PKG / "scripts" / script)}
    needed |= LAZY.get(env, set())
    assert not needed - installed, f"envs/{env} (rule {rule}) lacks {sorted(needed - installed)}"


def test_pins_agree_across_envs_and_with_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ranges = {norm(r.name): r for r in map(Requirement, pyproject["project"]["dependencies"])}
    pins: dict[str, tuple[str, str]] = {}
    for env in ENV_FILES:
        if env in OWN_STACK:
            continue
        for name, req in env_requirements(ENVS / env).items():
            version = str(req.specifier).removeprefix("==")
            if name in pins:
                assert pins[name][1] == version, f"{name}: {pins[name][0]} vs envs/{env}"
            pins[name] = (f"envs/{env}", version)
            if name in ranges:
                assert ranges[name].specifier.contains(version), f"envs/{env}: {name} {version}"
