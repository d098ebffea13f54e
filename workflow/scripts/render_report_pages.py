import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from dreamgrid import logs, report_pages

tables = {
    "summary": "Per checkpoint: face rate, average distance, shares below the thresholds",
    "comparisons": "Paired comparisons between arms (same seeds)",
    "effects": "Factorial effects of the axes",
    "flexibility": "Likeness against class bleed and prompt following",
}
with logs.job(snakemake.log[0]):
    report_pages.run(
        summary_md=Path(snakemake.input.markdown),
        tables={name: (Path(snakemake.input[name]), text) for name, text in tables.items()},
        out_verdict=Path(snakemake.output.verdict),
        out_tables={name: Path(snakemake.output[name]) for name in tables},
        out_landing=Path(snakemake.output.landing),
        description=Path(snakemake.input.description),
        demo=snakemake.params.demo,
    )
