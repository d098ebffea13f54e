import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import faces, logs

params = snakemake.params.faces
models = params["models"]
with logs.snakemake_job(snakemake):
    faces.setup_deepface(params["deepface_home"])
    faces.run_score_checkpoint(
        renders_tables=[Path(p) for p in snakemake.input.tables],
        faces_files={m: getattr(snakemake.input, f"faces_{i}") for i, m in enumerate(models)},
        references={m: getattr(snakemake.input, f"references_{i}") for i, m in enumerate(models)},
        checkpoint_meta=Path(snakemake.input.checkpoint_meta),
        settings=faces.settings_from({**params, "model": models[0]}),
        multiple_faces=params["multiple_faces"],
        arm=snakemake.wildcards.arm,
        epoch=int(snakemake.wildcards.epoch),
        prompt_set=snakemake.wildcards.prompt_set,
        out=Path(snakemake.output.scores),
    )
