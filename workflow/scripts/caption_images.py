import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import caption, logs, models

with logs.snakemake_job(snakemake):
    settings = dict(snakemake.params.settings)
    if snakemake.input.get("model"):  # transformers backend: the prepared BLIP folder
        settings["model"] = models.resolve(snakemake.input.model)
    if snakemake.input.get("lavis"):  # lavis backend: the prepared caches
        settings["lavis_home"] = snakemake.input.lavis
    caption.caption_images(
        images_dir=Path(snakemake.input.images),
        settings=caption.CaptionSettings(**settings),
        overrides_dir=Path(snakemake.input.overrides) if snakemake.input.get("overrides") else None,
        out_csv=Path(snakemake.output[0]),
    )
