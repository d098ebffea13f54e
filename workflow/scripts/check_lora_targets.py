import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models
from dreamgrid.train import targets

with logs.job(snakemake.log[0]):
    targets.run(
        models.resolve(snakemake.input.base),
        list(snakemake.params.targets),
        Path(snakemake.output[0]),
    )
