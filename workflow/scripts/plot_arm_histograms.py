import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import aggregate, logs, plots

with logs.job(snakemake.log[0]):
    scores = aggregate.collect_scores([Path(p) for p in snakemake.input.scores])
    plots.arm_histograms(
        aggregate.primary(scores, snakemake.params.model),
        thresholds=snakemake.params.thresholds,
        out=Path(snakemake.output[0]),
        title=f"{snakemake.wildcards.arm}, {snakemake.wildcards.prompt_set}",
        baseline=aggregate.baseline_mean(snakemake.input.baseline),
        demo=snakemake.params.demo,
    )
