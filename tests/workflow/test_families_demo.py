"""The base-model axis through Snakemake: what adding a base model plans, the families demo
(`config/demo-families.yaml`: tiny SD 1.5, SDXL and FLUX.1 in one grid) end to end, and the
SDXL and FLUX.1 study configs through `dreamgrid check`, without downloading."""

import importlib.util
import json

import pandas as pd
import pytest
import yaml
from conftest import ROOT, copy_workflow, fake_outputs, planned_jobs, snakemake

pytestmark = pytest.mark.slow

FAMILIES = "config/demo-families.yaml"
#: Jobs every arm feeds (rerun when an arm is added).
AGGREGATION = {
    "aggregate_scores", "memorization", "plot_curves", "plot_tradeoff", "render_report_pages",
    "plot_chosen_histograms", "write_manifest", "all",
}  # fmt: skip


def families_demo(bases: list[str]) -> dict:
    """The families demo with only ``bases`` on its axis."""
    config = yaml.safe_load((ROOT / FAMILIES).read_text())
    config["axes"]["base_model"] = {k: config["axes"]["base_model"][k] for k in bases}
    for section in ("training", "lora", "sample"):
        overrides = (config.get(section) or {}).get("by_base_model")
        if overrides:
            config[section]["by_base_model"] = {k: v for k, v in overrides.items() if k in bases}
    return config


def test_adding_a_base_model_plans_only_its_arms(tmp_path):
    work = copy_workflow(tmp_path)
    config = work / "mine.yaml"
    config.write_text(yaml.safe_dump(families_demo(["sd15", "sdxl"])))
    dry = snakemake(work, "--dry-run", "--cores", "2", "--configfile", "mine.yaml", timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    # (A job of sd15 or sdxl planned below would mean their fake run was incomplete, or
    # that adding flux touched their jobs: either fails the test.)
    assert fake_outputs(work, dry.stdout) > 20
    config.write_text(yaml.safe_dump(families_demo(["sd15", "sdxl", "flux"])))
    jobs = planned_jobs(work, options=("--configfile", "mine.yaml"))
    per_base = {"arm": "-flux", "prepared": "base-flux", "targets": "lora_targets-flux"}
    for rule, wildcards in jobs:
        if rule in AGGREGATION or rule == "check_inputs":
            continue
        named = {k: v for k, v in wildcards.items() if k in per_base}
        assert named, (rule, wildcards)  # no job that is not the new base model's
        assert all(v.endswith(per_base[k]) for k, v in named.items()), (rule, wildcards)
    rules = {rule for rule, _ in jobs}
    assert {"prepare_base_model", "check_lora_targets", "train_dreambooth"} <= rules
    assert {"sample_checkpoint", "score_faces"} <= rules
    trained = {(wc["arm"], wc["epoch"]) for rule, wc in jobs if rule == "train_dreambooth"}
    assert trained == {("rare-noreg-nocap-lora-flux", "1"), ("rare-noreg-nocap-lora-flux", "2")}


TRAINERS = [
    f"dreamgrid.train.{family}"
    for family in ("sdxl", "flux")
    if importlib.util.find_spec(f"dreamgrid.train.{family}") is None
]


@pytest.mark.skipif(bool(TRAINERS), reason=f"needs the trainers {TRAINERS} (#17)")
def test_the_families_demo_trains_renders_and_scores_every_family(tmp_path):
    work = copy_workflow(tmp_path)
    result = snakemake(work, "--cores", "2", "--configfile", FAMILIES, timeout=600)
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}" for p in (work / "results" / "logs").rglob("*.log")
        )
        pytest.fail(f"families demo failed:\n{result.stderr[-4000:]}\n{logs[-8000:]}")
    arms = [f"rare-noreg-nocap-lora-{b}" for b in ("sd15", "sdxl", "flux")]
    summary = pd.read_csv(work / "results" / "summary.csv")
    assert sorted(set(summary["arm"])) == sorted(arms)
    assert set(summary["epoch"]) == {1, 2}
    for arm, family in zip(arms, ("sd15", "sdxl", "flux"), strict=True):
        meta = yaml.safe_load((work / f"results/arms/{arm}/checkpoints/epoch-2.json").read_text())
        assert meta["family"] == family
        renders = list((work / f"results/arms/{arm}/epoch-2/main/renders").rglob("*.png"))
        assert len(renders) == 4  # paired seeds: the same count for every base model
    for name in ("sd15", "sdxl", "flux"):
        assert (work / f"results/models/base-{name}/model_index.json").is_file()
    # The base model is a factor of the effects, the manifest hashes every base model, and the
    # chosen epochs' histograms have a panel per base model.
    effects = pd.read_csv(work / "results" / "effects.csv")
    assert "base_model" in set(effects["axis"])
    manifest = json.loads((work / "results" / "manifest.json").read_text())
    assert {f"base_{n}" for n in ("sd15", "sdxl", "flux")} <= set(manifest["models"])
    assert (work / "results/plots/chosen-epochs/main.png").is_file()
    # Finished: nothing to do. Dropping a base model reruns no other arm's job.
    assert planned_jobs(work, options=("--configfile", FAMILIES)) == []
    (work / "two.yaml").write_text(yaml.safe_dump(families_demo(["sd15", "sdxl"])))
    jobs = planned_jobs(work, options=("--configfile", "two.yaml"))
    assert {rule for rule, _ in jobs} <= AGGREGATION, jobs


@pytest.mark.parametrize(
    ("name", "family", "published"),
    [("experiment-sdxl.yaml", "sdxl", "SDXL"), ("experiment-flux.yaml", "flux", "FLUX.1")],
)
def test_the_sdxl_and_flux_studies_pass_the_checks_without_downloading(
    study_dir, monkeypatch, name, family, published
):
    """`dreamgrid check`'s steps on the study as shipped, but for the disk check (about 70 GB
    of renders alone) and the reference photos' face check (VGG-Face weights download)."""
    from dreamgrid import config as cfg
    from dreamgrid import dag, memory, offline, preflight

    for switch in offline.SWITCHES:
        monkeypatch.delenv(switch, raising=False)
    monkeypatch.chdir(study_dir)
    config = cfg.load(ROOT / "config" / name)
    grid = dag.Grid(config)
    assert grid.families == {"": family} and len(grid.arm_ids) == 36
    assert all("lora" in arm for arm in grid.arm_ids)
    lines = memory.check_config(config, gpu_gib=80)
    # Memory from the family's published sizes (a check downloads no base model).
    assert (
        lines[0]
        == f"GPU memory per arm (estimates; parameters from {published}'s published sizes):"
    )
    assert lines[-1] == "GPU memory: every arm fits the 80.0 GiB of --gpu-memory"
    fetched = preflight.check_models(config)
    assert any(item.startswith(f"base_model {config['base_model']['source']}") for item in fetched)
    # Every job's spec as the jobs build them: 36 arms x 6 epochs, and the sample shards.
    assert preflight.check_specs(config, study_dir / "results") == 36 * 6 + 1
    assert preflight.estimate_disk(config, study_dir / "results")["total"] > 0
    assert not (study_dir / "results" / "models" / "base").exists()


def test_the_families_command_is_documented():
    readme = (ROOT / "README.md").read_text()
    assert "snakemake --cores all --configfile config/demo-families.yaml" in readme
