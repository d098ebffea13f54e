import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots, scoretable

with logs.job(snakemake.log[0]):
    flex = scoretable.primary(scoretable.read_table(snakemake.input[0]), snakemake.params.model)
    plots.tradeoff(flex, Path(snakemake.output[0]), demo=snakemake.params.demo)
