import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, retention

with logs.snakemake_job(snakemake):
    retention.keep_best_checkpoint(
        summary=Path(snakemake.input.summary),
        arm=snakemake.params.recipe,
        checkpoints={int(e): Path(p) for e, p in snakemake.params.checkpoints.items()},
        out=Path(snakemake.output[0]),
        model=snakemake.params.model,
    )
