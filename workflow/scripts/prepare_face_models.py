import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, offline
from dreamgrid.scoring import deepface_adapter

# A local rule on the submitting node: the one job that may download face weights.
with logs.snakemake_job(snakemake, network=True):
    deepface_adapter.prepare_face_weights(
        snakemake.wildcards.model,
        snakemake.wildcards.detector,
        home=offline.record_home(snakemake.output[0]),
    )
