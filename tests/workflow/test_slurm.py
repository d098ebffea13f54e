"""The demo through profiles/slurm on a real one-node Slurm (scripts/local-slurm.sh), compared
with the local demo run: same config, same machine, so identical tables, renders and weights.

Skipped with the reason where Slurm cannot be started here (not root, no apt, no systemd-free
daemons); set DREAMGRID_REQUIRE_SLURM=1 (as .ci/run does) to make that a failure instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, copy_workflow, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# What scripts/local-slurm.sh creates.
PARTITION, ACCOUNT = "debug", "dreamgrid"
# The local node has 2 CPUs: the profile's per-rule CPU counts and memory would never schedule.
MAX_CPUS, MAX_MEM_MB = 1, 3000
# Two arms, every epoch: between them every job kind (caption, class images, training with
# and without regularization, sampling, embedding, scoring), prompt set main only. The full
# demo is ~300 jobs (three prompt sets), far too many at ~10 s of Slurm start-up each on
# 2 CPUs; this is 19 jobs.
ARMS = ("celebrity-genreg-blip", "rare-noreg-nocap")
EPOCHS = (1, 2)
TARGETS = tuple(f"results/arms/{a}/epoch-{e}/main/scores.csv" for a in ARMS for e in EPOCHS)


def skip_or_fail(reason: str) -> None:
    if os.environ.get("DREAMGRID_REQUIRE_SLURM") == "1":
        pytest.fail(f"DREAMGRID_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """A running local Slurm with accounting (slurmdbd + MariaDB), started if needed."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        skip_or_fail("snakemake-executor-plugin-slurm is not installed (pip install '.[test]')")
    if os.geteuid() != 0:
        skip_or_fail("starting a local Slurm needs root (scripts/local-slurm.sh installs it)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        skip_or_fail("Slurm is not installed and there is no apt-get to install it")
    result = subprocess.run(
        [str(ROOT / "scripts" / "local-slurm.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        skip_or_fail(f"scripts/local-slurm.sh start failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def localize(resources: dict) -> dict:
    """A resource block of the profile with the placeholders and sizes of the local cluster."""
    out = dict(resources)
    if "slurm_partition" in out:
        out["slurm_partition"] = PARTITION
    if "slurm_account" in out:
        out["slurm_account"] = ACCOUNT
    if "cpus_per_task" in out:
        out["cpus_per_task"] = min(out["cpus_per_task"], MAX_CPUS)
    if "mem_mb" in out:
        out["mem_mb"] = min(out["mem_mb"], MAX_MEM_MB)
    return out


def local_profile(work: Path) -> Path:
    """The repo's profiles/slurm with only what a user edits for this cluster changed."""
    path = work / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"] = localize(profile["default-resources"])
    profile["set-resources"] = {k: localize(v) for k, v in profile["set-resources"].items()}
    # Jobs here take seconds: poll sooner than a real cluster warrants.
    profile["slurm-init-seconds-before-status-checks"] = 5
    profile["latency-wait"] = 5
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path.parent


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory) -> tuple[Path, str]:
    work = copy_workflow(tmp_path_factory.mktemp("slurm"))
    profile = local_profile(work)
    result = snakemake(
        work,
        "--workflow-profile",
        str(profile),
        "--seconds-between-status-checks",
        "5",
        *TARGETS,
        timeout=2400,
    )
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}"
            for p in sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))
        )
        pytest.fail(f"slurm run failed:\n{result.stderr[-6000:]}\n{logs[-8000:]}")
    return work, result.stdout + result.stderr


def digest(files: list[Path], root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_every_job_ran_as_a_slurm_job_and_sacct_saw_it_complete(slurm_run):
    _, output = slurm_run
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    local = re.findall(r"localrule (\w+):", output)
    # Every download on the submitting node: the models and DeepFace's weights.
    assert set(local) <= {"prepare_base_model", "prepare_caption_model", "prepare_face_models"}
    assert {"prepare_base_model", "prepare_face_models"} <= set(local)
    # 2 arms x 2 epochs x (train, sample, embed, score) + caption + class images + references
    # + the celebrity token's finder: one render job per 2 demo candidates and the ranking
    candidates = 2
    assert len(submitted) == len(ARMS) * len(EPOCHS) * 4 + 3 + candidates + 1
    states = sacct(submitted.values(), "JobID,State,Account")
    assert sorted(states) == sorted(f"{j}|COMPLETED|{ACCOUNT}" for j in submitted.values())


def sacct(job_ids, fields: str) -> list[str]:
    """Slurm's accounting record of ``job_ids``: one ``|``-separated line per job."""
    command = ["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", fields]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def gpu_rules() -> set[str]:
    """Rules that declare ``gpu=1`` in workflow/rules (what sbatch must turn into a GPU)."""
    rules = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=(?:rule|checkpoint) )", smk.read_text()):
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if name and re.search(r"^\s+gpu=1,$", block, flags=re.MULTILINE):
                rules.add(name.group(1))
    return rules


def test_gpu_rules_got_a_gpu_from_slurm(slurm_run):
    _, output = slurm_run
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    rule_of = {}  # Snakemake job id -> rule, from the job headers it prints
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", output):
        header = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        jobid = re.search(r"^\s+jobid: (\d+)$", block, flags=re.MULTILINE)
        if header and jobid:
            rule_of[jobid.group(1)] = header.group(1)
    # Slurm's own record of what each job was allocated (AccountingStorageTRES=gres/gpu).
    alloc = dict(line.split("|", 1) for line in sacct(submitted.values(), "JobID,AllocTRES"))
    gpu = gpu_rules()
    assert {"train_dreambooth", "sample_checkpoint", "generate_class_images"} <= gpu
    seen = Counter()
    for job, slurm_id in submitted.items():
        rule = rule_of[job]
        has_gpu = "gres/gpu=1" in alloc[slurm_id].split(",")
        assert has_gpu == (rule in gpu), (rule, alloc[slurm_id])
        seen[rule in gpu] += 1
    assert seen[True] and seen[False]  # both kinds ran


def test_score_tables_equal_the_local_run(slurm_run, demo_run):
    work, _ = slurm_run
    for target in TARGETS:
        local, cluster = demo_run / target, work / target
        pd.testing.assert_frame_equal(pd.read_csv(local), pd.read_csv(cluster), obj=target)
        meta = Path(target).with_name("scores.meta.json")
        assert json.loads((demo_run / meta).read_text()) == json.loads((work / meta).read_text())


def checkpoint(path: Path) -> tuple[dict, dict]:
    """Tensors and metadata of a safetensors file. Its bytes are not reproducible: safetensors
    writes the metadata map in a random (Rust HashMap) order."""
    from safetensors import safe_open

    with safe_open(path, framework="np") as handle:
        names = handle.keys()  # safe_open is not iterable
        return {k: handle.get_tensor(k) for k in names}, handle.metadata()


def test_same_config_same_machine_gives_identical_weights_and_renders(slurm_run, demo_run):
    """Bit-reproducible on CPU. The demo's renders show no face, so its distances are all
    empty; identical weights and PNGs show that real distances would match too."""
    import numpy as np

    work, _ = slurm_run
    for arm in ARMS:
        renders = "epoch-*/main/renders/shard-*/*.png"
        local = digest(sorted((demo_run / "results/arms" / arm).glob(renders)), demo_run)
        cluster = digest(sorted((work / "results/arms" / arm).glob(renders)), work)
        assert len(local) >= len(EPOCHS) and local == cluster, arm
        for epoch in EPOCHS:
            name = f"results/arms/{arm}/checkpoints/epoch-{epoch}.safetensors"
            (local_weights, local_meta), (weights, meta) = map(
                checkpoint, (demo_run / name, work / name)
            )
            assert local_meta == meta, name
            assert local_weights.keys() == weights.keys(), name
            for key, tensor in weights.items():
                np.testing.assert_array_equal(local_weights[key], tensor, err_msg=f"{name} {key}")
