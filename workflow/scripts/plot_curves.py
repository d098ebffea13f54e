import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots

with logs.snakemake_job(snakemake):
    plots.plot_curves(
        Path(snakemake.input.summary),
        baseline=Path(snakemake.input.baseline),
        prompt_set=snakemake.wildcards.prompt_set,
        model=snakemake.params.model,
        out_by_epoch=Path(snakemake.output.by_epoch),
        out_by_steps=Path(snakemake.output.by_steps),
        confidence=snakemake.params.confidence,
        demo=snakemake.params.demo,
    )
