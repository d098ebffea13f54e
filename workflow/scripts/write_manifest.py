import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, manifest

# The prepared models: base, or base_<name> per model on the base-model axis, and captioner.
models = {
    k: Path(v) for k, v in snakemake.input.items() if k == "captioner" or k.startswith("base")
}
with logs.snakemake_job(snakemake):
    manifest.write_manifest(
        config_sha256=snakemake.params.config_sha256,
        seed_values=snakemake.params.seeds,
        models=models,
        outputs={k: Path(snakemake.input[k]) for k in ("summary", "scores")},
        workflow_dir=Path(snakemake.scriptdir),
        out=Path(snakemake.output[0]),
    )
