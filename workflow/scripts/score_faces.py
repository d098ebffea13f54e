import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import faces, logs

with logs.job(snakemake.log[0]):
    faces.setup_deepface(snakemake.params.faces["deepface_home"])
    faces.run_score_checkpoint(
        renders_table=Path(snakemake.input.table),
        renders_dir=Path(snakemake.input.renders),
        references=Path(snakemake.input.references),
        checkpoint_meta=Path(snakemake.input.checkpoint_meta),
        settings=faces.settings_from(snakemake.params.faces),
        arm=snakemake.wildcards.arm,
        epoch=int(snakemake.wildcards.epoch),
        out=Path(snakemake.output.scores),
    )
