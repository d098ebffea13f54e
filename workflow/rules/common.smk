import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from dreamgrid import config as dreamgrid_config
from dreamgrid import dag, manifest, paths, preflight, versions

# snakemake.utils.validate against workflow/schemas/config.schema.yaml (defaults filled in),
# plus cross-key checks, with one SpecError naming the file, the key and the fix.
dreamgrid_config.check_files(workflow.configfiles)
config.update(
    dreamgrid_config.validate(config, source=", ".join(map(str, workflow.configfiles)))
)
# Every job's training and sampling spec, as the jobs build them, before the DAG (so `-n`
# refuses what a job would); jobs on a cluster re-read this file and skip it.
if workflow.is_main_process:
    preflight.check_specs(config)
# An `auto` token is read from the token finder's ranking once that checkpoint has run.
# Each base model's own ranking (results/token_finder, or token_finder/<name> on the axis).
GRID = dag.Grid(
    config,
    ranking=lambda finder: checkpoints.rank_candidates.get(finder=finder).output[0],
    # With search.method successive_halving, each look's decisions, once that checkpoint ran.
    decisions=lambda epoch: checkpoints.decide_look.get(epoch=str(epoch)).output[0],
)


wildcard_constraints:
    arm=dag.one_of(GRID.arm_ids),
    epoch="[1-9][0-9]*",
    prompt_set=dag.one_of(GRID.prompt_set_names),
    model=dag.one_of(GRID.face_models),
    detector=dag.one_of([config["score"]["detector"]]),
    shard="[0-9]+",
