"""The verdict and tables as pages the HTML report shows, and the report's landing page."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import pandas as pd
import pytest

from dreamgrid import report_pages

SUMMARY_MD = """\
> **DEMO RUN** numbers mean nothing.

# dreamgrid summary

48 renders, 2 arms.

## Verdict

Read from prompt set `main`.

**rare-noreg-blip** epoch 2 is the most alike: average 0.512 [0.50, 0.53].

| arm | average |
|---|---|
| rare-noreg-blip | 0.512 |

## Per checkpoint

| arm | epoch |
|---|---|
| a | 1 |
"""


class Tables(HTMLParser):
    """Cells of every table in a page, as text."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def cells(page: str) -> list[list[str]]:
    parser = Tables()
    parser.feed(page)
    return parser.rows


def test_verdict_section_is_cut_from_summary_md():
    verdict = report_pages.verdict_markdown(SUMMARY_MD)
    assert verdict.startswith("Read from prompt set `main`.")
    assert "| rare-noreg-blip | 0.512 |" in verdict
    assert "Per checkpoint" not in verdict
    assert report_pages.verdict_markdown("# no verdict here\n") == ""


def test_markdown_tables_become_html_tables_and_html_is_escaped():
    page = report_pages.markdown_html(SUMMARY_MD + "\n<script>alert(1)</script>\n")
    assert cells(page)[:2] == [["arm", "average"], ["rare-noreg-blip", "0.512"]]
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_table_page_is_sortable_and_marks_the_demo(tmp_path):
    source = tmp_path / "summary.csv"
    pd.DataFrame({"arm": ["b", "a"], "average": [0.61234567, math.nan]}).to_csv(source, index=False)
    out = report_pages.table_page(source, "Per checkpoint", tmp_path / "t.html", demo=True)
    page = out.read_text()
    rows = cells(page)
    assert rows == [["arm", "average"], ["b", "0.6123"], ["a", ""]]
    assert report_pages.DEMO_BANNER in page.replace("\n", " ")
    assert 'th.addEventListener("click"' in page
    real = report_pages.table_page(source, "x", tmp_path / "r.html", demo=False).read_text()
    assert report_pages.DEMO_BANNER not in real


def render_like_snakemake(rst: str) -> str:
    """The landing page as Snakemake's report renders its description: Jinja, then docutils."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    class Snakemake:
        config = None

    links = f"\n\n.. _{report_pages.VERDICT_CATEGORY}: javascript:app.showCategory('x')\n"
    text = Environment().from_string(rst + links).render(snakemake=Snakemake)
    return publish_parts(text, writer_name="html")["html_body"]


@pytest.mark.parametrize("demo", [True, False])
def test_landing_page_opens_with_demo_and_verdict(demo):
    # Jinja syntax in a verdict (e.g. a prompt with braces) must not break the report.
    text = SUMMARY_MD.replace("Read from", "{{ odd }} {% raw %} Read from")
    rst = report_pages.landing_rst(text, "The workflow **description**.", demo)
    page = render_like_snakemake(rst)
    verdict = page.index("<h2>Verdict</h2>")
    assert page.index("rare-noreg-blip") > verdict
    assert "{{ odd }}" in page
    assert (report_pages.DEMO_BANNER in page) is demo
    if demo:
        assert page.index(report_pages.DEMO_BANNER) < verdict
    assert page.index("<strong>description</strong>") > verdict
    assert "javascript:app.showCategory" in page  # the link to the verdict's category


def test_run_writes_every_page(tmp_path):
    markdown = tmp_path / "summary.md"
    markdown.write_text(SUMMARY_MD)
    description = tmp_path / "workflow.rst"
    description.write_text("About.\n")
    table = tmp_path / "comparisons.csv"
    pd.DataFrame({"arm_a": ["x"], "p_value": [0.01]}).to_csv(table, index=False)
    written = report_pages.render_report_pages(
        summary_md=markdown,
        tables={"comparisons": (table, "Paired comparisons")},
        out_verdict=tmp_path / "out" / "verdict.html",
        out_tables={"comparisons": tmp_path / "out" / "comparisons.html"},
        out_landing=tmp_path / "out" / "landing.rst",
        description=description,
        demo=False,
    )
    assert sorted(written) == ["comparisons", "landing", "verdict"]
    assert cells(written["comparisons"].read_text()) == [["arm_a", "p_value"], ["x", "0.01"]]
    assert "<h2>Verdict</h2>" in written["verdict"].read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "comparisons.html",
        "landing.rst",
        "verdict.html",
    ]
