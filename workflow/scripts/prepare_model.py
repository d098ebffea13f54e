import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models

with logs.job(snakemake.log[0]):
    kind = "sd" if snakemake.rule == "prepare_base_model" else "blip"
    models.prepare(
        snakemake.params.source,
        kind,
        Path(snakemake.output[0]),
        allow_pickle=snakemake.params.allow_pickle,
    )
