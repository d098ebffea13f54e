import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models, sample

with logs.snakemake_job(snakemake):
    sample.sample_checkpoint(
        base_model=models.resolve(snakemake.input.base),
        checkpoint=Path(snakemake.input.checkpoint),
        settings=sample.SampleSettings(**snakemake.params.settings),
        token=snakemake.params.token,
        class_word=snakemake.params.class_word,
        first=snakemake.params.first,
        out_dir=Path(snakemake.output.renders),
        out_table=Path(snakemake.output.table),
    )
