import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, retention

with logs.snakemake_job(snakemake):
    retention.release_resume_state(
        state=Path(snakemake.params.state),
        epochs=[Path(p) for p in snakemake.input.metas],
        out=Path(snakemake.output[0]),
    )
