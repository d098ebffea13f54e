import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots

where = snakemake.wildcards
with logs.snakemake_job(snakemake):
    plots.plot_contact_sheet(
        Path(snakemake.input.scores),
        renders=[Path(p) for p in snakemake.input.renders],
        out=Path(snakemake.output[0]),
        title=f"{where.arm}, epoch {where.epoch}, {where.prompt_set}",
        per_group=snakemake.params.per_row,
        model=snakemake.params.model,
        demo=snakemake.params.demo,
    )
