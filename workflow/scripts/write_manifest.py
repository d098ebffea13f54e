import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, manifest

models = {k: Path(snakemake.input.get(k)) for k in ("base", "captioner") if snakemake.input.get(k)}
with logs.snakemake_job(snakemake):
    manifest.write_manifest(
        config_sha256=snakemake.params.config_sha256,
        seed_values=snakemake.params.seeds,
        models=models,
        outputs={k: Path(snakemake.input[k]) for k in ("summary", "scores")},
        workflow_dir=Path(snakemake.scriptdir),
        out=Path(snakemake.output[0]),
    )
