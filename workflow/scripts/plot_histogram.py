import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import baseline, logs, plots, scoretable

where = snakemake.wildcards
with logs.job(snakemake.log[0]):
    scores = scoretable.collect_scores([Path(snakemake.input.scores)])
    plots.histogram(
        scoretable.primary(scores, snakemake.params.model),
        thresholds=snakemake.params.thresholds,
        out=Path(snakemake.output[0]),
        title=f"{where.arm}, epoch {where.epoch}, {where.prompt_set}",
        baseline=baseline.baseline_mean(snakemake.input.baseline),
        demo=snakemake.params.demo,
    )
