import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, losscurve

with logs.snakemake_job(snakemake):
    losscurve.plot_loss_curve(
        [Path(p) for p in snakemake.input.losses],
        Path(snakemake.output[0]),
        arm=snakemake.wildcards.arm,
        demo=snakemake.params.demo,
    )
