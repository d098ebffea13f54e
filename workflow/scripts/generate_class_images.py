import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, models, prompts, regularization

with logs.snakemake_job(snakemake):
    settings = snakemake.params.settings
    regularization.generate_class_images(
        model=models.resolve(snakemake.input.base),
        prompt=prompts.fill(settings["prompt"], "", settings["class_word"]),
        negative=prompts.fill(settings["negative"], "", settings["class_word"]),
        count=settings["count"],
        seed=settings["seed"],
        steps=settings["steps"],
        cfg=settings["cfg"],
        size=settings["resolution"],
        batch_size=settings["batch_size"],
        out_dir=Path(snakemake.output[0]),
    )
