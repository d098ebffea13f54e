import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import gpus, logs, models, sample

with logs.job(snakemake.log[0]), gpus.slot(snakemake.resources.get("gpu", 0)):
    sample.run(
        base_model=models.resolve(snakemake.input.base),
        checkpoint=None,
        settings=sample.SampleSettings(**snakemake.params.settings),
        token=snakemake.params.name,
        class_word=snakemake.params.class_word,
        out_dir=Path(snakemake.output.renders),
        out_table=Path(snakemake.output.table),
    )
