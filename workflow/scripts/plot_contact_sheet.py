import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, plots, scoretable

where = snakemake.wildcards
with logs.job(snakemake.log[0]):
    scores = scoretable.collect_scores([Path(snakemake.input.scores)])
    plots.contact_sheet(
        scoretable.primary(scores, snakemake.params.model),
        renders=[Path(p) for p in snakemake.input.renders],
        out=Path(snakemake.output[0]),
        title=f"{where.arm}, epoch {where.epoch}, {where.prompt_set}",
        per_group=snakemake.params.per_row,
        demo=snakemake.params.demo,
    )
