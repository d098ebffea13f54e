import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import aggregate, logs

with logs.job(snakemake.log[0]):
    aggregate.run(
        score_files=[Path(p) for p in snakemake.input],
        thresholds=snakemake.params.thresholds,
        best_within=snakemake.params.best_within,
        out_scores=Path(snakemake.output.scores),
        out_summary=Path(snakemake.output.summary),
        out_markdown=Path(snakemake.output.markdown),
        demo=snakemake.params.demo,
    )
