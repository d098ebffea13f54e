import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots

where = snakemake.wildcards
with logs.snakemake_job(snakemake):
    plots.plot_arm_histograms(
        [Path(p) for p in snakemake.input.scores],
        baseline=Path(snakemake.input.baseline),
        out=Path(snakemake.output[0]),
        title=f"{where.arm}, {where.prompt_set}",
        thresholds=snakemake.params.thresholds,
        model=snakemake.params.model,
        demo=snakemake.params.demo,
    )
