import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import caption, logs, models

with logs.job(snakemake.log[0]):
    settings = dict(snakemake.params.settings, model=models.resolve(snakemake.input.model))
    caption.run(
        images_dir=Path(snakemake.input.images),
        settings=caption.CaptionSettings(**settings),
        overrides_dir=Path(snakemake.input.overrides) if snakemake.input.get("overrides") else None,
        out_csv=Path(snakemake.output[0]),
    )
