import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, memorization
from dreamgrid.scoring import deepface_adapter

with logs.snakemake_job(snakemake):
    deepface_adapter.setup_deepface(snakemake.params.deepface_home)
    checkpoints = snakemake.params.checkpoints
    memorization.run_memorization(
        training_photos=Path(snakemake.input.training),
        references=Path(snakemake.input.references),
        faces_files=[[Path(f) for f in c["faces"]] for c in checkpoints],
        checkpoints=[{k: c[k] for k in ("arm", "epoch", "prompt_set")} for c in checkpoints],
        metric=snakemake.params.metric,
        multiple_faces=snakemake.params.multiple_faces,
        out_renders=Path(snakemake.output.renders),
        out_summary=Path(snakemake.output.summary),
        out_pairs=Path(snakemake.output.pairs),
    )
