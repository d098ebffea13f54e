import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from dreamgrid import config as dreamgrid_config
from dreamgrid import dag, preflight, versions

validate(config, schema="../schemas/config.schema.yaml")
dreamgrid_config.check(config)
GRID = dag.Grid(config)


wildcard_constraints:
    arm="|".join(GRID.arm_ids),
    epoch="[1-9][0-9]*",
    captioner="blip",
