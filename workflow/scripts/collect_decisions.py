import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, search

with logs.snakemake_job(snakemake):
    search.collect_decisions([Path(p) for p in snakemake.input.looks], Path(snakemake.output[0]))
