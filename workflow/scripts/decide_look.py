import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, search

with logs.snakemake_job(snakemake):
    search.decide_look(
        [Path(p) for p in snakemake.input.scores],
        epoch=int(snakemake.wildcards.epoch),
        active=snakemake.params.active,
        search=snakemake.params.search,
        out=Path(snakemake.output[0]),
    )
