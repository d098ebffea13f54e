import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, report_pages

tables = report_pages.TABLE_CAPTIONS
with logs.snakemake_job(snakemake):
    report_pages.render_report_pages(
        summary_md=Path(snakemake.input.markdown),
        tables={name: (Path(snakemake.input[name]), text) for name, text in tables.items()},
        out_verdict=Path(snakemake.output.verdict),
        out_tables={name: Path(snakemake.output[name]) for name in tables},
        out_landing=Path(snakemake.output.landing),
        description=Path(snakemake.input.description),
        demo=snakemake.params.demo,
    )
