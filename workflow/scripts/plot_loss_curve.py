import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, losscurve

with logs.job(snakemake.log[0]):
    losscurve.plot(
        [Path(p) for p in snakemake.input.losses],
        Path(snakemake.output[0]),
        arm=snakemake.wildcards.arm,
        demo=snakemake.params.demo,
    )
