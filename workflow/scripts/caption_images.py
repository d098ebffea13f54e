import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import caption, logs, models  # noqa: E402

with logs.job(snakemake.log[0]):
    caption.run(
        images_dir=Path(snakemake.input.images),
        settings=caption.settings_from(snakemake.params.settings, models.resolve(snakemake.input.model)),
        overrides_dir=Path(snakemake.input.overrides) if "overrides" in snakemake.input.keys() else None,
        out_csv=Path(snakemake.output[0]),
    )
