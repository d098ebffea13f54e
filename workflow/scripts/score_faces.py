import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs
from dreamgrid.scoring import deepface_adapter, steps
from dreamgrid.scoring.settings import settings_from

params = snakemake.params.faces
models = params["models"]
with logs.snakemake_job(snakemake):
    deepface_adapter.setup_deepface(params["deepface_home"])
    steps.score_faces(
        renders_tables=[Path(p) for p in snakemake.input.tables],
        faces_files={m: getattr(snakemake.input, f"faces_{i}") for i, m in enumerate(models)},
        references={m: getattr(snakemake.input, f"references_{i}") for i, m in enumerate(models)},
        checkpoint_meta=Path(snakemake.input.checkpoint_meta),
        settings=settings_from({**params, "model": models[0]}),
        multiple_faces=params["multiple_faces"],
        arm=snakemake.wildcards.arm,
        epoch=int(snakemake.wildcards.epoch),
        prompt_set=snakemake.wildcards.prompt_set,
        out=Path(snakemake.output.scores),
    )
