import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import faces, logs

with logs.snakemake_job(snakemake):
    faces.setup_deepface(snakemake.params.faces["deepface_home"])
    faces.run_embed_references(
        references=Path(snakemake.input.references),
        settings=faces.embed_settings_from(snakemake.params.faces),
        out=Path(snakemake.output[0]),
    )
