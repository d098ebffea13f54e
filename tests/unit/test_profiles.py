"""Static checks of profiles/: the keys name real rules and options, GPU rules get GPU sizes."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "workflow" / "rules"


def rules_with_resources() -> dict[str, str]:
    """Each rule's source text, by rule name."""
    found = {}
    for smk in RULES.glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            name = re.match(r"rule (\w+):", block.strip())
            if name:
                found[name.group(1)] = block
    return found


def slurm_profile() -> dict:
    return yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())


def test_slurm_profile_sets_resources_only_for_existing_rules():
    rules = rules_with_resources()
    unknown = set(slurm_profile()["set-resources"]) - set(rules)
    assert not unknown, f"profiles/slurm names rules that do not exist: {unknown}"


def test_every_gpu_rule_goes_to_the_gpu_partition_with_sizes():
    rules = rules_with_resources()
    gpu_rules = {name for name, text in rules.items() if re.search(r"\bgpu=1\b", text)}
    assert {"train_dreambooth", "sample_checkpoint"} <= gpu_rules
    resources = slurm_profile()["set-resources"]
    for rule in gpu_rules:
        assert resources[rule]["slurm_partition"] == "CHANGE-ME-gpu-partition", rule
        assert {"mem_mb", "runtime", "cpus_per_task"} <= set(resources[rule]), rule


def test_placeholders_are_obvious_and_the_status_check_needs_accounting():
    profile = slurm_profile()
    assert profile["executor"] == "slurm"
    assert profile["default-resources"]["slurm_account"] == "CHANGE-ME-account"
    assert profile["default-resources"]["slurm_partition"].startswith("CHANGE-ME")
    assert profile["retries"] >= 1
    assert profile["slurm-status-command"] == "sacct"


def test_every_profile_key_is_a_snakemake_option():
    """Snakemake refuses a profile with a misspelt key; say which one here, not at run time.
    The slurm plugin's options are among them when it is installed (the test extra)."""
    from snakemake.cli import get_argument_parser

    options = {
        opt.lstrip("-")
        for action in get_argument_parser()._actions
        for opt in action.option_strings
    }
    for name in ("default", "slurm"):
        profile = yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())
        assert not (set(profile) - options), name
