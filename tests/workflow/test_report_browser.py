"""The demo's HTML report as a reader meets it: headless Chromium (Debian's package) opens
results/report.html, reads the landing page, navigates to the verdict, and loads every image.

Skipped with the reason where Chromium or Playwright is missing; under .ci/run (which installs
Debian's chromium) DREAMGRID_REQUIRE_BROWSER=1 makes that a failure. Screenshots are kept in
the test's temp dir (printed with -s).
"""

from __future__ import annotations

import os
import shutil

import pytest

from dreamgrid.report_pages import DEMO_BANNER, VERDICT_CATEGORY

pytestmark = pytest.mark.slow


def skip_or_fail(reason: str) -> None:
    if os.environ.get("DREAMGRID_REQUIRE_BROWSER") == "1":
        pytest.fail(f"DREAMGRID_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        skip_or_fail("no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, demo_report):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(demo_report.as_uri())
    page.wait_for_selector("text=Verdict", timeout=60_000)
    yield page
    page.close()
    assert errors == [], f"JavaScript errors in the report: {errors}"


def test_landing_page_says_demo_and_verdict_first(page, tmp_path_factory):
    shots = tmp_path_factory.mktemp("report-screenshots")
    page.screenshot(path=str(shots / "landing.png"))
    description = page.locator(".prose").first
    text = " ".join(description.inner_text().split())
    assert text.startswith(DEMO_BANNER)
    verdict = text.index("Verdict")
    # The verdict's own words come right after its heading: the demo has nothing to conclude.
    assert "Nothing to conclude" in text[verdict : verdict + 600]
    assert page.get_by_text(DEMO_BANNER).first.is_visible()
    print(f"screenshots: {shots}")


def test_verdict_and_summary_table_are_readable_in_the_report(page, tmp_path_factory):
    shots = tmp_path_factory.mktemp("report-screenshots")
    page.get_by_text(VERDICT_CATEGORY, exact=True).first.click()
    row = page.locator("tr", has_text="1. verdict and summary")
    row.locator("a").first.click()  # the row's view button
    frame = page.frame_locator("iframe").first
    frame.locator("h2", has_text="Verdict").wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "verdict.png"))
    assert frame.locator("h2", has_text="Verdict").is_visible()
    assert frame.get_by_text("Nothing to conclude").first.is_visible()
    assert frame.get_by_text(DEMO_BANNER).is_visible()
    # summary.md's per-checkpoint table, as a table.
    header = frame.locator("table th", has_text="face_rate").first
    assert header.is_visible()
    assert frame.locator("table").first.locator("tbody tr").count() >= 16

    # The summary table's own page: every checkpoint a row, sortable by clicking a header.
    page.get_by_text(VERDICT_CATEGORY, exact=True).first.click()
    page.locator("tr", has_text="2. per checkpoint").locator("a").first.click()
    frame = page.frame_locator("iframe").first
    table = frame.locator("table")
    table.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "summary-table.png"))
    rows = table.locator("tbody tr")
    assert rows.count() == 48  # 8 arms x 2 epochs x 3 prompt sets
    headers = table.locator("thead th").all_inner_texts()
    column = headers.index("epoch")

    def epochs() -> list[int]:
        cells = table.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
        return [int(c) for c in cells]

    before = epochs()
    assert before != sorted(before)  # rows come arm by arm: epochs 1, 2, 1, 2, ...
    table.locator("thead th").nth(column).click()
    assert epochs() == sorted(before)
    print(f"screenshots: {shots}")


def test_every_image_in_the_report_loads(page):
    # Each image result decoded by the browser itself, from the data the report embeds.
    sizes = page.evaluate(
        """async () => {
            const out = {};
            for (const [path, entry] of Object.entries(results)) {
                if (!entry.mime_type.startsWith("image/")) continue;
                const img = new Image();
                img.src = entry.data_uri;
                try { await img.decode(); } catch (e) {}
                out[path] = [img.naturalWidth, img.naturalHeight];
            }
            return out;
        }"""
    )
    assert len(sizes) > 100  # histograms, curves, contact sheets, loss curves, ...
    broken = {path: size for path, size in sizes.items() if min(size) == 0}
    assert broken == {}
