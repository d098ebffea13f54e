import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, regularization

with logs.snakemake_job(snakemake):
    regularization.prepare_ground_truth(
        src_dir=Path(snakemake.input.photos),
        **snakemake.params.fit,
        out_dir=Path(snakemake.output[0]),
    )
