import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import gpus, logs, models, sample

with logs.job(snakemake.log[0]), gpus.slot(snakemake.resources.get("gpu", 0)):
    sample.run_shard(
        base_model=models.resolve(snakemake.input.base),
        checkpoint=Path(snakemake.input.checkpoint),
        settings=sample.SampleSettings(**snakemake.params.settings),
        token=snakemake.params.token,
        class_word=snakemake.params.class_word,
        first=snakemake.params.first,
        out_dir=Path(snakemake.output.renders),
        out_table=Path(snakemake.output.table),
    )
