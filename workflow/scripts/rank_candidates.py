import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import candidates, logs
from dreamgrid.scoring import deepface_adapter
from dreamgrid.scoring.settings import settings_from

params = snakemake.params.ranking
with logs.snakemake_job(snakemake):
    deepface_adapter.setup_deepface(params["deepface_home"])
    candidates.rank_candidates(
        references=Path(snakemake.input.references),
        folders=[Path(p) for p in snakemake.params.folders],
        names=params["names"],
        settings=settings_from(params),
        threshold=params["threshold"],
        multiple_faces=params["multiple_faces"],
        cache=Path(snakemake.params.cache),
        workers=snakemake.threads,
        out=Path(snakemake.output[0]),
    )
