import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import aggregate, logs

with logs.job(snakemake.log[0]):
    aggregate.run_baseline(
        references=Path(snakemake.input[0]),
        metric=snakemake.params.metric,
        out=Path(snakemake.output[0]),
    )
