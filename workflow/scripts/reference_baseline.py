import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import baseline, logs
from dreamgrid.scoring import deepface_adapter

with logs.snakemake_job(snakemake):
    deepface_adapter.setup_deepface(snakemake.params.deepface_home)
    baseline.reference_baseline(
        references=Path(snakemake.input.embeddings),
        metric=snakemake.params.metric,
        out=Path(snakemake.output[0]),
        training_photos=Path(snakemake.input.training),
        reference_photos=Path(snakemake.input.references),
        multiple_faces=snakemake.params.multiple_faces,
    )
