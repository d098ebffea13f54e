import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import gpus, logs, models, sample

with logs.job(snakemake.log[0]), gpus.slot(snakemake.resources.get("gpu", 0)):
    sample.run_candidates(
        base_model=models.resolve(snakemake.input.base),
        settings=sample.SampleSettings(**snakemake.params.settings),
        names=snakemake.params.names,
        class_word=snakemake.params.class_word,
        out_dir=Path(snakemake.output.renders),
        out_table=Path(snakemake.output.table),
    )
