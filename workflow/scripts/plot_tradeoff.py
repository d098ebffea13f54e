import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots

with logs.snakemake_job(snakemake):
    plots.plot_tradeoff(
        Path(snakemake.input[0]),
        out=Path(snakemake.output[0]),
        model=snakemake.params.model,
        demo=snakemake.params.demo,
    )
