"""Report stage: the verdict and the tables as pages a browser shows inside the HTML report.

Snakemake's report previews images, HTML and PDF; a CSV or Markdown result is only a download.
So ``summary.md`` is rendered to HTML (markdown-it-py), each table to a page of its own (pandas,
with click-to-sort headers), and the report's landing page (``landing.rst``) opens with what a
reader needs first: whether this is a demo, and the verdict.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from dreamgrid.io import atomic_path

log = logging.getLogger(__name__)

#: The report category that holds the verdict and the tables (the landing page links to it).
VERDICT_CATEGORY = "1. Verdict and statistics"
#: The heading of summary.md's verdict section, which the landing page repeats.
VERDICT_HEADING = "## Verdict"
DEMO_BANNER = (
    "Demo run: tiny random-weight models. Every number and figure in this report is "
    "meaningless; it only shows the workflow working. The real study: "
    "snakemake --cores all --configfile config/experiment.yaml"
)

_LANDING_DEMO_STYLE = "background:#fff3cd;border:2px solid #d39e00;padding:.5em;color:#5c3c00"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; line-height: 1.45; color: #1f2933; }
.demo { background: #fff3cd; border: 2px solid #d39e00; padding: .6em 1em; font-weight: 600; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #cbd2d9; padding: .25em .6em; text-align: right; }
th { background: #e4e7eb; position: sticky; top: 0; }
th[data-sort] { cursor: pointer; }
th[data-sort]::after { content: " \\2195"; color: #7b8794; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f5f7fa; }
code { background: #f0f4f8; padding: 0 .2em; }
"""

# Click a header to sort by that column (numbers as numbers, empty cells last).
_SORT_SCRIPT = """
document.querySelectorAll("table").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, column) {
    th.dataset.sort = "none";
    th.addEventListener("click", function () {
      var up = th.dataset.sort !== "asc";
      table.querySelectorAll("thead th").forEach(function (o) { o.dataset.sort = "none"; });
      th.dataset.sort = up ? "asc" : "desc";
      var body = table.tBodies[0];
      var rows = Array.from(body.rows);
      function key(row) {
        var text = row.cells[column] ? row.cells[column].textContent.trim() : "";
        var number = parseFloat(text);
        return text === "" ? null : (isNaN(number) ? text : number);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return 1;
        if (y === null) return -1;
        var order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : String(x).localeCompare(String(y));
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def page(title: str, body: str, demo: bool) -> str:
    """A standalone HTML page (styles and the sort script inline: the report embeds it)."""
    banner = f'<p class="demo" role="alert">{html.escape(DEMO_BANNER)}</p>\n' if demo else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{banner}{body}\n<script>{_SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def markdown_html(text: str) -> str:
    """Markdown (with pipe tables) as HTML; raw HTML in the text is escaped, not passed on."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def table_html(table: pd.DataFrame) -> str:
    """A table as HTML; numbers with 4 significant digits, NaN as empty."""
    shown = table.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    return shown.to_html(index=False, na_rep="", border=0, escape=True)


def verdict_markdown(summary_md: str) -> str:
    """The verdict section of summary.md (its heading excluded; empty if there is none)."""
    lines = summary_md.splitlines()
    if VERDICT_HEADING not in lines:
        return ""
    start = lines.index(VERDICT_HEADING) + 1
    stop = next(
        (i for i in range(start, len(lines)) if lines[i].startswith(("# ", "## "))), len(lines)
    )
    return "\n".join(lines[start:stop]).strip()


def landing_rst(summary_md: str, description: str, demo: bool) -> str:
    """The report's landing page: demo banner, the verdict, then the workflow description.

    Snakemake renders this reST through Jinja, so the generated part sits in a raw block.
    """
    verdict = verdict_markdown(summary_md) or "No verdict was written (see summary.md)."
    parts = []
    if demo:
        # Inline style: the report's own stylesheet knows no class of ours.
        parts.append(
            f'<p class="demo" style="{_LANDING_DEMO_STYLE}"><strong>'
            f"{html.escape(DEMO_BANNER)}</strong></p>"
        )
    parts.append("<h2>Verdict</h2>")
    parts.append(markdown_html(verdict))
    block = "\n".join(parts)
    indented = "\n".join(f"    {line}" if line else "" for line in block.splitlines())
    return (
        "{% raw %}\n.. raw:: html\n\n"
        + indented
        + "\n\n{% endraw %}\n"
        + f"The whole summary, the tables and the statistics: `{VERDICT_CATEGORY}`_.\n\n"
        + description
    )


#: What each table page of ``render_report_pages`` shows (its heading).
TABLE_CAPTIONS = {
    "summary": "Per checkpoint: face rate, average distance, shares below the thresholds",
    "comparisons": "Paired comparisons between arms (same seeds)",
    "effects": "Factorial effects of the axes",
    "flexibility": "Likeness against class bleed and prompt following",
}
RANKING_CAPTION = "Token finder: candidate names ranked by their renders' likeness"


def table_page(source: Path, caption: str, out: Path, demo: bool) -> Path:
    """One CSV table as an HTML page with sortable columns.

    Args:
        source: the CSV file.
        caption: what the table is (the page's heading).
        out: HTML page to write.
        demo: mark the page as a demo.

    Returns:
        ``out``.
    """
    table = pd.read_csv(source)
    body = (
        f"<h1>{html.escape(caption)}</h1>\n<p>{len(table)} rows from "
        f"<code>{html.escape(Path(source).name)}</code>; click a column header to sort.</p>\n"
        + table_html(table)
    )
    with atomic_path(out) as tmp:
        tmp.write_text(page(f"dreamgrid: {caption}", body, demo), encoding="utf-8")
    return Path(out)


def render_report_pages(
    summary_md: Path,
    tables: Mapping[str, tuple[Path, str]],
    out_verdict: Path,
    out_tables: Mapping[str, Path],
    out_landing: Path,
    description: Path,
    demo: bool,
) -> dict[str, Path]:
    """Write the verdict page, one page per table, and the report's landing page.

    Args:
        summary_md: the aggregate stage's summary.md.
        tables: name -> (CSV file, what the table is).
        out_verdict: HTML page of summary.md.
        out_tables: name -> HTML page of that table (same names as ``tables``).
        out_landing: the landing page's reST (the Snakefile's ``report:`` once it exists).
        description: the static workflow description (reST) appended to the landing page.
        demo: mark every page as a demo.

    Returns:
        What was written, by name (``verdict``, ``landing`` and the table names).
    """
    text = Path(summary_md).read_text(encoding="utf-8")
    written = {"verdict": Path(out_verdict), "landing": Path(out_landing)}
    with atomic_path(out_verdict) as tmp:
        tmp.write_text(
            page("dreamgrid: verdict and summary", markdown_html(text), demo), encoding="utf-8"
        )
    for name, (source, caption) in tables.items():
        written[name] = table_page(source, caption, out_tables[name], demo)
    with atomic_path(out_landing) as tmp:
        landing = landing_rst(text, Path(description).read_text(encoding="utf-8"), demo)
        tmp.write_text(landing, encoding="utf-8")
    log.info("wrote the verdict page, %d table pages and the landing page", len(tables))
    return written


def render_ranking_page(ranking: Path, out: Path, demo: bool) -> Path:
    """The token finder's ranking as a page of the report (:func:`table_page`)."""
    return table_page(ranking, RANKING_CAPTION, out, demo)
