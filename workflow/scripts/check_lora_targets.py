import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models
from dreamgrid.train import targets

with logs.snakemake_job(snakemake):
    targets.check_lora_targets(
        models.resolve(snakemake.input.base),
        list(snakemake.params.targets),
        Path(snakemake.output[0]),
    )
