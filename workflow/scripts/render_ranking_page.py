import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, report_pages

with logs.job(snakemake.log[0]):
    report_pages.table_page(
        source=Path(snakemake.input[0]),
        caption="Token finder: candidate names ranked by their renders' likeness",
        out=Path(snakemake.output[0]),
        demo=snakemake.params.demo,
    )
