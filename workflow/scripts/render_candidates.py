import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models, sample

with logs.snakemake_job(snakemake):
    sample.render_candidates(
        base_model=models.resolve(snakemake.input.base),
        settings=sample.SampleSettings(**snakemake.params.settings),
        names=snakemake.params.names,
        class_word=snakemake.params.class_word,
        out_dir=Path(snakemake.output.renders),
        out_table=Path(snakemake.output.table),
    )
