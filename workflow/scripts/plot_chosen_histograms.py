import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots

with logs.snakemake_job(snakemake):
    plots.plot_chosen_histograms(
        Path(snakemake.input.scores),
        summary=Path(snakemake.input.summary),
        baseline=Path(snakemake.input.baseline),
        prompt_set=snakemake.wildcards.prompt_set,
        model=snakemake.params.model,
        thresholds=snakemake.params.thresholds,
        out=Path(snakemake.output[0]),
        demo=snakemake.params.demo,
    )
