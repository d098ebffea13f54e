import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, report_pages

with logs.snakemake_job(snakemake):
    report_pages.render_ranking_page(
        Path(snakemake.input[0]), out=Path(snakemake.output[0]), demo=snakemake.params.demo
    )
