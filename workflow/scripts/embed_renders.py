import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs
from dreamgrid.scoring import deepface_adapter, steps
from dreamgrid.scoring.settings import embed_settings_from

with logs.snakemake_job(snakemake):
    deepface_adapter.setup_deepface(snakemake.params.faces["deepface_home"])
    steps.embed_renders(
        renders_table=Path(snakemake.input.table),
        renders_dir=Path(snakemake.input.renders).parent,
        settings=embed_settings_from(snakemake.params.faces),
        out=Path(snakemake.output[0]),
        cache_dir=Path(snakemake.params.cache),
        workers=snakemake.threads,
    )
