import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models

# A local rule on the submitting node: the one job that may download this model.
with logs.snakemake_job(snakemake, network=True):
    models.prepare_model(
        snakemake.params.source,
        snakemake.params.kind,
        Path(snakemake.output[0]),
        allow_pickle=snakemake.params.allow_pickle,
    )
