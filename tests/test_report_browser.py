"""The close pack's HTML in a real headless Chromium (Debian's ``chromium``): DOM, screenshot and PDF.

A copy of the page with a small script records where the browser laid out each chart (``--dump-dom``);
the original page is then screenshotted at that size and each chart's area must be drawn (many colours,
not a blank box), while the margin beside it is blank. Skipped only when Chromium is not installed;
under CI (``CI`` set) a missing Chromium fails instead, since CI installs it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from models.config import CogsConfig
from pipelines.report import find_chromium, print_pdf, run_chromium, write_pack
from pipelines.warehouse import Warehouse
from tests.test_report import MONTH, build_month, pack_config

CHROMIUM = find_chromium()
WIDTH = 1280
CHARTS = ("chart-spend", "chart-daily", "chart-unit", "chart-waterfall")
FIRST_SERIES = np.array([0x2F, 0x6D, 0xB5])  # PALETTE[0]: AWS in the spend charts, chat in the feature charts
LAYOUT_SCRIPT = """
<script>
  (() => {
    const charts = [...document.querySelectorAll(".chart")].map((div) => {
      const box = div.querySelector("svg").getBoundingClientRect();
      return {id: div.id, x: box.x + scrollX, y: box.y + scrollY, width: box.width, height: box.height};
    });
    const page = {height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth,
                  bodyRight: document.body.getBoundingClientRect().right};
    const out = document.createElement("pre");
    out.id = "cogs-layout";
    out.textContent = JSON.stringify({charts, page});
    document.body.appendChild(out);
  })();
</script>
"""

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("Chromium is required in CI: apt-get install chromium", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed locally (apt-get install chromium)")


def chromium() -> str:
    assert CHROMIUM is not None
    return CHROMIUM


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    wh = Warehouse(url=f"duckdb:///{root / 'warehouse.duckdb'}")
    wh.ensure_schema()
    config: CogsConfig = pack_config(root, pdf=False)
    build_month(wh, config)
    return write_pack(wh, config, MONTH).html


def dump_dom(html: Path, height: int = 2000) -> str:
    args = (
        "--dump-dom",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        f"--window-size={WIDTH},{height}",
        html.as_uri(),
    )
    return run_chromium(chromium(), *args).stdout


@pytest.fixture(scope="module")
def layout(report: Path) -> dict[str, Any]:
    """Where Chromium placed each chart, from a copy of the page that reports its own layout."""
    probe = report.with_name("layout-probe.html")
    probe.write_text(report.read_text().replace("</body>", LAYOUT_SCRIPT + "</body>"))
    found = re.search(r'<pre id="cogs-layout">(.*?)</pre>', dump_dom(probe), re.S)
    assert found, "the layout script did not run"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_the_dom_has_the_four_charts_as_svg_and_the_tables(report: Path) -> None:
    dom = dump_dom(report)
    assert "<title>Example Co — AI COGS 2026-10</title>" in dom
    for chart in CHARTS:
        assert re.search(rf'<div class="chart" id="{chart}"><svg[^>]*>', dom), chart
    assert len(re.findall(r"<svg ", dom)) == 4
    assert re.search(r"<td>chat</td><td>\$1,300\.50</td>", dom)


def test_screenshot_shows_every_chart_drawn(report: Path, layout: dict[str, Any], tmp_path: Path) -> None:
    page = layout["page"]
    charts = {c["id"]: c for c in layout["charts"]}
    assert list(charts) == list(CHARTS)
    height = int(page["height"])
    assert page["width"] == WIDTH  # nothing overflows sideways
    shot = tmp_path / "report.png"
    run_chromium(
        chromium(),
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{height}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--virtual-time-budget=5000",
        report.as_uri(),
    )
    pixels = matplotlib.image.imread(shot)[:, :, :3]
    assert pixels.shape == (height, WIDTH, 3)
    for name, box in charts.items():
        assert box["width"] > 900 and box["height"] > 200, (name, box)
        x, y, w, h = (round(box[k]) for k in ("x", "y", "width", "height"))
        area = pixels[y : y + h, x : x + w]
        drawn = (area < 0.95).any(axis=2).mean()  # share of pixels that are not white
        colours = len(np.unique((area * 255).astype(np.uint8).reshape(-1, 3), axis=0))
        assert area.std() > 0.05 and drawn > 0.01 and colours > 20, (name, area.std(), drawn, colours)
        blue = (np.abs(area * 255 - FIRST_SERIES).max(axis=2) < 8).sum()  # bars and lines of the first series
        assert blue > 100, (name, blue)
        margin = pixels[y : y + h, round(page["bodyRight"]) + 10 :]
        assert margin.size and margin.min() > 0.99, name  # beside the content the page is blank


def test_pdf_of_the_report(report: Path) -> None:
    pdf = print_pdf(report, report.with_suffix(".pdf"), chromium())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", data))
    assert pages >= 3, pages  # A4 landscape: summary, charts and tables over several pages
