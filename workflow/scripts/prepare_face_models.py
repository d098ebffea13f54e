import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import faces, logs

# A local rule on the submitting node: the one job that may download face weights.
with logs.job(snakemake.log[0], network=True):
    record = faces.prepare_face_weights(
        snakemake.wildcards.model, snakemake.wildcards.detector, snakemake.params.home
    )
    assert Path(snakemake.output[0]).resolve() == record, (record, snakemake.output[0])
