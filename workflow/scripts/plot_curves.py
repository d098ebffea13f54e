import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import baseline, logs, plots, scoretable

prompt_set = snakemake.wildcards.prompt_set
with logs.job(snakemake.log[0]):
    summary = scoretable.primary(
        scoretable.read_table(snakemake.input.summary), snakemake.params.model, prompt_set
    )
    baseline = baseline.read_baseline(snakemake.input.baseline)
    for x, out in (("epoch", snakemake.output.by_epoch), ("steps", snakemake.output.by_steps)):
        plots.curves(
            summary,
            Path(out),
            x=x,
            baseline=baseline,
            title=f"Prompt set {prompt_set}",
            confidence=snakemake.params.confidence,
            demo=snakemake.params.demo,
        )
