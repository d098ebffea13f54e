import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import aggregate, logs, plots

where = snakemake.wildcards
with logs.job(snakemake.log[0]):
    scores = aggregate.collect_scores([Path(snakemake.input.scores)])
    plots.histogram(
        aggregate.primary(scores, snakemake.params.model),
        thresholds=snakemake.params.thresholds,
        out=Path(snakemake.output[0]),
        title=f"{where.arm}, epoch {where.epoch}, {where.prompt_set}",
        baseline=aggregate.baseline_mean(snakemake.input.baseline),
        demo=snakemake.params.demo,
    )
