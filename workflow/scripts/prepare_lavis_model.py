import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import lavis_caption, logs

# A local rule on the submitting node: the one job that may download LAVIS's model.
with logs.snakemake_job(snakemake, network=True):
    lavis_caption.prepare_lavis_model(
        snakemake.params.python, snakemake.params.model, Path(snakemake.output[0])
    )
