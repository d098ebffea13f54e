import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models, train
from dreamgrid.train.spec import job_spec

with logs.snakemake_job(snakemake):
    train.train_dreambooth(
        job_spec(
            dict(snakemake.params.items()),
            snakemake.input,
            base_model=models.resolve(snakemake.input.base),
            epoch=int(snakemake.wildcards.epoch),
            out_checkpoint=snakemake.output.checkpoint,
        )
    )
