import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
import pandas as pd

from dreamgrid import logs, plots

with logs.job(snakemake.log[0]):
    folders = [Path(p) for p in snakemake.params.folders]
    plots.candidate_sheet(
        pd.read_csv(snakemake.input.ranking),
        folders=dict(zip(snakemake.params.names, folders, strict=True)),
        out=Path(snakemake.output[0]),
        top=snakemake.params.top,
        demo=snakemake.params.demo,
    )
