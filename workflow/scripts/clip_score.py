import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import clip_score, logs

with logs.snakemake_job(snakemake):
    clip_score.clip_score(
        model_dir=Path(snakemake.input.model[0]),  # a one-item list (none without CLIP)
        tables=[Path(p) for p in snakemake.input.tables],
        render_dirs=[Path(p) for p in snakemake.input.renders],
        out=Path(snakemake.output[0]),
        arm=snakemake.wildcards.arm,
        epoch=int(snakemake.wildcards.epoch),
    )
