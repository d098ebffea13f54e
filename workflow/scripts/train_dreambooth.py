import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import gpus, logs, models, train
from dreamgrid.train.spec import TrainSpec

with logs.job(snakemake.log[0]), gpus.slot(snakemake.resources.get("gpu", 0)):
    arm = snakemake.params.arm
    training = dict(snakemake.params.training)
    training["seed"] += int(arm.get("replicate", 1)) - 1  # each training run its own seed
    train.run(
        TrainSpec(
            arm=arm["arm"],
            token=arm["token"],
            class_word=snakemake.params.class_word,
            base_model=models.resolve(snakemake.input.base),
            instance_dir=snakemake.input.images,
            captions=snakemake.input.get("captions"),
            reg_dir=snakemake.input.get("reg"),
            epoch=int(snakemake.wildcards.epoch),
            previous_meta=snakemake.input.get("previous_meta"),
            state=snakemake.params.state,
            passes=snakemake.params.passes,
            cache_dir=snakemake.params.cache_dir,
            out_checkpoint=snakemake.output.checkpoint,
            **{**training, **snakemake.params.method},
        )
    )
