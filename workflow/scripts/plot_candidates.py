import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots

with logs.snakemake_job(snakemake):
    plots.plot_candidates(
        Path(snakemake.input.ranking),
        names=snakemake.params.names,
        folders=[Path(p) for p in snakemake.params.folders],
        out=Path(snakemake.output[0]),
        top=snakemake.params.top,
        demo=snakemake.params.demo,
    )
