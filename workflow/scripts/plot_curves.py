import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import aggregate, logs, plots

with logs.job(snakemake.log[0]):
    summary = aggregate.primary(
        aggregate.read_table(snakemake.input.summary), snakemake.params.model
    )
    baseline = aggregate.read_baseline(snakemake.input.baseline)
    plots.curves(summary, Path(snakemake.output.by_epoch), x="epoch", baseline=baseline)
    plots.curves(summary, Path(snakemake.output.by_steps), x="steps", baseline=baseline)
