"""Two arms training at once on a cold latent cache (the profile's --resources gpu=2, or SLURM).

Arms share their training photos, so both epoch-1 jobs encode the same cache entries at the
same moment; each writer must keep its own temp file and both must finish.
"""

import re
import shutil

import pytest
import yaml
from conftest import DEMO_SUBJECT, copy_workflow, snakemake

pytestmark = pytest.mark.slow

#: Two arms on the same photos (full fine-tune and LoRA), one epoch: only training runs.
CONFIG = {
    "subject": DEMO_SUBJECT,
    "base_model": "tiny",
    "axes": {"token": {"rare": "ohwx"}, "method": ["full", "lora"]},
    "training": {"resolution": 64, "repeats": 2, "epochs": 1, "batch_size": 1},
    "sample": {"count": 1, "steps": 2, "width": 64, "height": 64},
}
ARMS = ("rare-noreg-nocap", "rare-noreg-nocap-lora")


def overlapped(log: str) -> bool:
    """Whether the second training job started before the first finished (Snakemake's log)."""
    events = re.findall(
        r"^(?:local)?rule (train_dreambooth):$|^Finished jobid: \d+ \(Rule: (train_dreambooth)\)",
        log,
        flags=re.MULTILINE,
    )
    order = ["start" if start else "end" for start, _ in events]
    return order[:2] == ["start", "start"]


def test_two_arms_train_in_parallel_on_a_cold_cache(tmp_path):
    work = copy_workflow(tmp_path / "work")
    (work / "config/config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    targets = [f"results/arms/{arm}/checkpoints/epoch-1.safetensors" for arm in ARMS]
    cache = work / "results/cache/latents"
    # Three times from a cold cache: the collision crashed 2 runs of 3 before writers kept
    # their own temp names. The base model is built once; the arms and the cache are not kept.
    for attempt in range(3):
        result = snakemake(work, *targets, "--cores", "2", "--resources", "gpu=2")
        logs = "".join(p.read_text() for p in (work / "results/logs").rglob("*.log"))
        assert result.returncode == 0, f"attempt {attempt}:\n{result.stderr[-3000:]}\n{logs}"
        assert overlapped(result.stderr), f"attempt {attempt}: the jobs did not overlap"
        assert all((work / target).is_file() for target in targets)
        entries = [p for p in cache.rglob("*") if p.is_file()]
        assert entries and not [p for p in cache.rglob(".*")], "temp files left in the cache"
        shutil.rmtree(cache)
        for arm in ARMS:
            shutil.rmtree(work / "results/arms" / arm)
