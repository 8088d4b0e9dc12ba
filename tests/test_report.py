"""The close pack on a small hand-built month: exact figures in the workbook (read back as XML) and the HTML.

The month (2026-10) is seven charges through the real allocation engine and mart:

=====  =========  ==============================  ==================  ================  ==========
id     source     service                         EffectiveCost       BilledCost        becomes
=====  =========  ==============================  ==================  ================  ==========
c1     aws_cur    Amazon Bedrock                  1200.50             1200.50           chat, COGS
c2     aws_cur    Amazon Bedrock                  300.25              300.25            search
c3     openai     OpenAI API                      100.00              100.00            chat
c4     aws_cur    AmazonCloudWatch (untagged)     45.123456789012     45.123456789012   unallocated
c5     aws_cur    Savings Plans (unused)          80.00               80.00             idle
c6     gpu_cloud  Compute (Nebius, amortized)     249.75              210.00            search
c7     aws_cur    Amazon Bedrock, staging         50.00               50.00             chat, R&D
=====  =========  ==============================  ==================  ================  ==========

Usage: chat 1,000 requests / 800 useful outputs, search 500 / 500 (production); chat staging 10 / 10.
gpu_cloud's export says 210.01: a one-cent reconciliation difference the pack must show.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import polars as pl
import pytest

from models.allocation import CHARGE_COLUMNS, allocate, usage_classes
from models.config import CogsConfig, parse_config
from models.focus import conform
from models.usage import INFERENCE_USAGE_SCHEMA, USAGE_MEASURES
from pipelines.report import (
    SIGNIFICANT,
    Pack,
    excel_number,
    find_chromium,
    write_pack,
    write_report,
)
from pipelines.warehouse import Warehouse

MONTH = "2026-10"
GENERATED = datetime(2026, 11, 5, 7, 0, tzinfo=UTC)
TOTAL_EFFECTIVE = Decimal("2025.623456789012")
TOTAL_BILLED = Decimal("1985.873456789012")
COGS = Decimal("1975.623456789012")


# --- the hand-built month ---------------------------------------------------------------------------------


def focus_row(
    cid: str,
    day: datetime,
    cost: str,
    *,
    source: str = "aws_cur",
    provider: str = "AWS",
    service: str = "Amazon Bedrock",
    tags: dict[str, str] | None = None,
    billed: str | None = None,
    status: str | None = None,
    category: str = "Usage",
    month: str = MONTH,
) -> dict[str, object]:
    """One focus_costs row with every mandatory column, for an hour starting ``day``."""
    start = BILLING_START[month]
    return {
        "BilledCost": Decimal(billed or cost),
        "EffectiveCost": Decimal(cost),
        "ListCost": Decimal(cost),
        "ContractedCost": Decimal(cost),
        "BillingAccountId": "acct-1",
        "BillingCurrency": "USD",
        "BillingPeriodStart": start,
        "BillingPeriodEnd": BILLING_END[month],
        "ChargeCategory": category,
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodStart": day,
        "ChargePeriodEnd": day + timedelta(hours=1),
        "CommitmentDiscountStatus": status,
        "InvoiceIssuerName": provider,
        "ProviderName": provider,
        "PublisherName": provider,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": service,
        "Tags": json.dumps(tags) if tags else None,
        "x_source": source,
        "x_source_type": "focus_file",
        "x_billing_period": month,
        "x_batch_id": f"{source}-{month}",
        "x_charge_id": cid,
    }


BILLING_START = {
    "2026-09": datetime(2026, 9, 1, tzinfo=UTC),
    "2026-10": datetime(2026, 10, 1, tzinfo=UTC),
    "2026-11": datetime(2026, 11, 1, tzinfo=UTC),
}
BILLING_END = {
    "2026-09": BILLING_START["2026-10"],
    "2026-10": BILLING_START["2026-11"],
    "2026-11": datetime(2026, 12, 1, tzinfo=UTC),
}


def day(d: int, hour: int = 10, month: int = 10) -> datetime:
    return datetime(2026, month, d, hour, tzinfo=UTC)


CHAT, SEARCH = {"feature": "chat"}, {"feature": "search"}
CHARGES = [
    focus_row("c1", day(5), "1200.50", tags=CHAT),
    focus_row("c2", day(6), "300.25", tags=SEARCH),
    focus_row("c3", day(5, 11), "100.00", source="openai", provider="OpenAI", service="OpenAI API", tags=CHAT),
    focus_row("c4", day(7), "45.123456789012", service="AmazonCloudWatch"),
    focus_row("c5", day(8), "80.00", service="Savings Plans for AWS Compute usage", status="Unused"),
    focus_row(
        "c6",
        day(6, 12),
        "249.75",
        billed="210.00",
        source="gpu_cloud",
        provider="Nebius",
        service="Compute",
        tags=SEARCH,
    ),
    focus_row("c7", day(9), "50.00", tags={"feature": "chat", "environment": "staging"}),
]
PROVIDER_TOTALS = {"aws_cur": "1675.873456789012", "openai": "100.00", "gpu_cloud": "210.01"}


def usage_row(
    hour: datetime, feature: str, requests: int, useful: int, env: str = "production", month: str = MONTH
) -> dict[str, object]:
    return {
        "hour": hour,
        "source": "otel",
        "deployment": "api",
        "provider": "aws",
        "model": "m",
        "feature": feature,
        "environment": env,
        "requests": requests,
        "succeeded": requests,
        "failed": 0,
        "retried": 0,
        "accepted": useful,
        "useful_outputs": useful,
        "billing_period": month,
        "batch_id": "otel-1",
    }


USAGE = [
    usage_row(day(5), "chat", 1000, 800),
    usage_row(day(6), "search", 500, 500),
    usage_row(day(9), "chat", 10, 10, env="staging"),
]


def pack_config(tmp_path: Path, **reports: object) -> CogsConfig:
    config = parse_config("company: Example Co\nfeatures: {chat: {}, search: {}}\n")
    return config.model_copy(
        update={"reports": config.reports.model_copy(update={"output_dir": str(tmp_path / "reports"), **reports})}
    )


def load_charges(wh: Warehouse, rows: list[dict[str, object]]) -> None:
    with wh.transaction() as conn:
        wh.insert("focus_costs", conform(pl.DataFrame(rows, infer_schema_length=None)), conn)


def load_usage(wh: Warehouse, rows: list[dict[str, object]]) -> None:
    frame = pl.DataFrame(rows, schema=INFERENCE_USAGE_SCHEMA).with_columns(
        pl.col(m).fill_null(0) for m in USAGE_MEASURES
    )
    with wh.transaction() as conn:
        wh.insert("inference_usage", frame, conn)


def record_loads(wh: Warehouse, totals: dict[str, str], month: str = MONTH, at: datetime = GENERATED) -> None:
    """ingest_batches rows as the ingest writes them: the provider's own total per source."""
    rows = [
        {
            "batch_id": f"{s}-{month}",
            "source": s,
            "source_type": "focus_file",
            "billing_period": month,
            "loaded_at": at,
            "rows_loaded": 1,
            "rows_quarantined": 0,
            "files": 1,
            "source_total": Decimal(t),
            "loaded_billed_cost": Decimal(t),
            "repairs": None,
        }
        for s, t in totals.items()
    ]
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("source_total", "loaded_billed_cost").cast(pl.Decimal(38, 12)), pl.col("repairs").cast(pl.String)
    )
    with wh.transaction() as conn:
        wh.insert("ingest_batches", frame, conn)


def allocate_month(wh: Warehouse, config: CogsConfig, month: str = MONTH) -> None:
    """What the cost_allocations and feature_costs_daily assets do for a month (re-run after a restatement)."""
    columns = ", ".join(f'"{c}"' for c in CHARGE_COLUMNS)
    charges = wh.read(f"SELECT {columns} FROM focus_costs WHERE x_billing_period = :p", p=month)
    usage = wh.read("SELECT * FROM inference_usage WHERE billing_period = :p", p=month)
    rows = allocate(charges, usage, config.allocation, config.features)
    classes = usage_classes(usage, config.allocation, config.features).with_columns(billing_period=pl.lit(month))
    with wh.transaction() as conn:
        wh.replace("cost_allocations", {"x_billing_period": month}, rows, conn)
        wh.replace("cost_classes", {"billing_period": month}, classes, conn)
    wh.run_sql_file("transform/feature_costs_daily.sql", period=month)


def build_month(wh: Warehouse, config: CogsConfig) -> None:
    load_charges(wh, CHARGES)
    load_usage(wh, USAGE)
    record_loads(wh, PROVIDER_TOTALS)
    allocate_month(wh, config)


# --- reading the workbook back: its XML, no spreadsheet library ---------------------------------------------

NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
BUILTIN_FORMATS = {0: "General", 1: "0", 2: "0.00", 3: "#,##0", 4: "#,##0.00", 9: "0%", 10: "0.00%", 22: "m/d/yy h:mm"}


@dataclass(frozen=True)
class Cell:
    value: object  # Decimal for numbers, str for text
    number_format: str
    formula: str | None = None


def _cell_ref(ref: str) -> tuple[int, int]:
    letters, digits = re.match(r"([A-Z]+)(\d+)", ref).groups()  # type: ignore[union-attr]
    col = 0
    for ch in letters:
        col = col * 26 + ord(ch) - 64
    return int(digits) - 1, col - 1


def read_xlsx(path: Path) -> dict[str, dict[tuple[int, int], Cell]]:
    """Sheet name → {(row, col): Cell}, zero-based, from the workbook's XML parts."""
    with zipfile.ZipFile(path) as z:
        part = lambda name: ElementTree.fromstring(z.read(name))  # noqa: E731
        strings = [si.findtext("m:t", "", NS) for si in part("xl/sharedStrings.xml").findall("m:si", NS)]
        styles = part("xl/styles.xml")
        custom = {int(f.get("numFmtId")): f.get("formatCode") for f in styles.iterfind("m:numFmts/m:numFmt", NS)}
        xfs = [int(xf.get("numFmtId", 0)) for xf in styles.iterfind("m:cellXfs/m:xf", NS)]
        targets = {r.get("Id"): r.get("Target") for r in part("xl/_rels/workbook.xml.rels")}
        sheets = {}
        for sheet in part("xl/workbook.xml").iterfind("m:sheets/m:sheet", NS):
            cells = {}
            for c in part(f"xl/{targets[sheet.get(REL)]}").iterfind(".//m:c", NS):
                fmt_id = xfs[int(c.get("s", 0))]
                fmt = custom.get(fmt_id) or BUILTIN_FORMATS.get(fmt_id, str(fmt_id))
                raw = c.findtext("m:v", None, NS)
                if c.get("t") == "s":
                    value: object = strings[int(raw)]  # type: ignore[arg-type]
                elif c.get("t") == "str":
                    value = raw
                else:
                    value = None if raw is None else Decimal(raw)
                cells[_cell_ref(c.get("r"))] = Cell(value, fmt, c.findtext("m:f", None, NS))
            sheets[sheet.get("name")] = cells
    return sheets


def sheet_rows(cells: dict[tuple[int, int], Cell]) -> list[list[object]]:
    """Values row by row (None where a cell is empty)."""
    if not cells:
        return []
    height, width = max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1
    return [[cells[(r, c)].value if (r, c) in cells else None for c in range(width)] for r in range(height)]


def row_of(cells: dict[tuple[int, int], Cell], *first: object, start: int = 0) -> int:
    """The first row at or after ``start`` whose leading cells are ``first``."""
    for r, row in enumerate(sheet_rows(cells)):
        if r >= start and row[: len(first)] == list(first):
            return r
    raise AssertionError(f"no row starting {first}")


def money_cell(cell: Cell) -> Decimal:
    """A money cell's exact number, after checking it is a number with a dollar format (not text)."""
    assert isinstance(cell.value, Decimal), cell
    assert '"$"#,##0.00' in cell.number_format or '"$"#,##0.000000' in cell.number_format, cell
    return cell.value


# --- reading the HTML back --------------------------------------------------------------------------------


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(html: str) -> dict[str, list[list[str]]]:
    """Table id → rows of cell texts (header row first)."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def html_row(table: list[list[str]], first: str) -> list[str]:
    return next(r for r in table if r and r[0] == first)


# --- tests ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, CogsConfig]:
    """The month built once for this module's tests (they only read it, or write packs elsewhere)."""
    root = tmp_path_factory.mktemp("report")
    wh = Warehouse(url=f"duckdb:///{root / 'warehouse.duckdb'}")
    wh.ensure_schema()
    config = pack_config(root, pdf=False)
    build_month(wh, config)
    return wh, config


@pytest.fixture(scope="module")
def pack(month: tuple[Warehouse, CogsConfig]) -> Pack:
    wh, config = month
    return write_pack(wh, config, MONTH, generated=GENERATED)


@pytest.fixture(scope="module")
def book(pack: Pack) -> dict[str, dict[tuple[int, int], Cell]]:
    return read_xlsx(pack.xlsx)


def test_the_hand_built_month_allocates_as_designed(month: tuple[Warehouse, CogsConfig]) -> None:
    wh, _ = month
    lines = wh.read(
        "SELECT feature, cost_class, allocation_kind, SUM(effective_cost) AS cost FROM cost_allocations "
        "GROUP BY ALL ORDER BY feature, cost_class"
    )
    assert lines.rows() == [
        ("chat", "cogs", "direct", Decimal("1300.500000000000")),
        ("chat", "rnd", "direct", Decimal("50.000000000000")),
        ("idle", "cogs", "idle", Decimal("80.000000000000")),
        ("search", "cogs", "direct", Decimal("550.000000000000")),
        ("unallocated", "cogs", "unallocated", Decimal("45.123456789012")),
    ]


def test_workbook_sheets_in_order_and_summary_exact(book: dict[str, dict[tuple[int, int], Cell]]) -> None:
    assert list(book) == [
        "Summary",
        "COGS by feature and provider",
        "Unit costs",
        "Reconciliation",
        "Unallocated and idle",
        "Changes since last close",
    ]
    summary = book["Summary"]
    assert summary[(0, 0)].value == "Example Co — AI inference COGS close pack, 2026-10"
    assert summary[(row_of(summary, "Status"), 1)].value == "Draft: the month is not closed"
    assert summary[(row_of(summary, "Sources reconciled exactly"), 1)].value == "2 of 3"
    generated = summary[(row_of(summary, "Generated"), 1)]
    assert generated.value == Decimal("46331.29166666666")  # Excel's serial day of 2026-11-05 07:00 (no tz)
    assert generated.number_format == 'yyyy-mm-dd hh:mm "UTC"'
    expected = {
        "Billed cost (invoices, BilledCost)": TOTAL_BILLED,
        "Amortized cost (EffectiveCost)": TOTAL_EFFECTIVE,
        "COGS": COGS,
        "R&D (non-production, training, evaluation)": Decimal("50"),
        "OpEx (free tier, internal)": Decimal(0),
        "Idle capacity (kept as the idle line)": Decimal("80"),
        "Unallocated": Decimal("45.123456789012"),
    }
    for label, amount in expected.items():
        r = row_of(summary, label)
        assert money_cell(summary[(r, 1)]) == excel_number(amount), label
        assert (r, 2) not in summary or summary[(r, 2)].value is None  # not closed: no "as closed" figure
    # 16 significant digits don't fit a double: the cell keeps 15, exactly; 14 digits stay whole.
    assert summary[(row_of(summary, "Billed cost (invoices, BilledCost)"), 1)].value == Decimal("1985.87345678901")
    assert summary[(row_of(summary, "Unallocated"), 1)].value == Decimal("45.123456789012")
    outputs = summary[(row_of(summary, "Useful outputs (COGS traffic)"), 1)]
    assert (outputs.value, outputs.number_format) == (Decimal(1300), "#,##0")
    unit = summary[(row_of(summary, "Fully loaded COGS per useful output"), 1)]
    assert unit.value == Decimal("1.519710351376")  # 1975.623456789012 / 1300 to 12 places
    assert unit.number_format == '"$"#,##0.000000'


def test_cogs_by_feature_and_provider_with_sum_formulas(book: dict[str, dict[tuple[int, int], Cell]]) -> None:
    sheet = book["COGS by feature and provider"]
    rows = sheet_rows(sheet)
    header = rows[2]
    assert header[:4] == ["Feature", "COGS", "Direct", "Shared"]
    col = {name: i for i, name in enumerate(header)}
    chat = row_of(sheet, "chat")
    assert money_cell(sheet[(chat, col["COGS"])]) == Decimal("1300.5")
    assert money_cell(sheet[(chat, col["R&D"])]) == Decimal("50")
    assert money_cell(sheet[(chat, col["Total (EffectiveCost)"])]) == Decimal("1350.5")
    assert [r[0] for r in rows[3:8]] == ["chat", "search", "idle", "unallocated", "Total"]
    total = sheet[(row_of(sheet, "Total"), col["Total (EffectiveCost)"])]
    assert total.formula == "SUM(K4:K7)"
    assert money_cell(total) == excel_number(TOTAL_EFFECTIVE)  # the formula's cached result: the exact total
    assert money_cell(sheet[(row_of(sheet, "Total"), col["Billed (BilledCost)"])]) == excel_number(TOTAL_BILLED)
    # Second block: feature × provider.
    second = row_of(sheet, "Feature", "Provider")
    by_pair = {(r[0], r[1]): r for r in rows[second + 1 :] if r and r[0] not in (None, "Total")}
    assert by_pair[("search", "Nebius")][2] == Decimal("249.75")
    assert by_pair[("search", "Nebius")][6] == Decimal("210")  # billed: amortized differs from the invoice
    assert by_pair[("chat", "AWS")][2:4] == [Decimal("1200.5"), Decimal("50")]
    assert by_pair[("chat", "OpenAI")][2] == Decimal("100")
    assert len(by_pair) == 6


def test_unit_costs_sheet(book: dict[str, dict[tuple[int, int], Cell]]) -> None:
    sheet = book["Unit costs"]
    rows = sheet_rows(sheet)
    assert rows[2][:5] == ["Feature", "COGS", "Requests", "Useful outputs", "COGS per useful output"]
    assert [r[:5] for r in rows[3:5]] == [
        ["chat", Decimal("1300.5"), Decimal(1000), Decimal(800), Decimal("1.625625")],
        ["search", Decimal("550"), Decimal(500), Decimal(500), Decimal("1.1")],
    ]
    assert sheet[(3, 4)].number_format == '"$"#,##0.000000'
    assert sheet[(3, 2)].number_format == "#,##0"
    assert len(rows) == 5  # idle and unallocated have no unit cost


def test_reconciliation_sheet_shows_the_cent(book: dict[str, dict[tuple[int, int], Cell]]) -> None:
    sheet = book["Reconciliation"]
    rows = {r[0]: r for r in sheet_rows(sheet)[3:6]}
    aws = excel_number(Decimal("1675.873456789012"))
    assert aws == Decimal("1675.87345678901")
    assert rows["aws_cur"][1:6] == [aws, aws, Decimal(0), "reconciled", "0 (exact)"]
    assert rows["gpu_cloud"][1:6] == [
        Decimal("210.01"),
        Decimal("210"),
        Decimal("-0.01"),
        "DIFFERENCE",
        "-0.010000000000",
    ]
    assert rows["openai"][3:5] == [Decimal(0), "reconciled"]
    assert money_cell(sheet[(3, 3)]) == Decimal(0)


def test_unallocated_and_idle_sheet(book: dict[str, dict[tuple[int, int], Cell]]) -> None:
    rows = sheet_rows(book["Unallocated and idle"])
    assert rows[3] == [
        "idle",
        "unused_commitment",
        "AWS",
        "Savings Plans for AWS Compute usage",
        "kept as idle",
        "cogs",
        Decimal(1),
        Decimal(80),
        Decimal(80),
    ]
    assert rows[4] == [
        "unallocated",
        "unmatched",
        "AWS",
        "AmazonCloudWatch",
        "kept as unallocated",
        "cogs",
        Decimal(1),
        Decimal("45.123456789012"),
        Decimal("45.123456789012"),
    ]
    assert rows[5][0] == "Total" and rows[5][7] == Decimal("125.123456789012")


def test_changes_sheet_says_the_month_is_not_closed(book: dict[str, dict[tuple[int, int], Cell]]) -> None:
    sheet = book["Changes since last close"]
    assert sheet[(2, 0)].value == (
        "2026-10 is not closed and no earlier closed month was restated. Close it with `cogs close --month 2026-10`."
    )


def test_html_is_self_contained_with_four_charts_and_exact_figures(pack: Pack) -> None:
    html = pack.html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "<script" not in html and "<link" not in html
    for chart in ("chart-spend", "chart-daily", "chart-unit", "chart-waterfall"):
        assert re.search(rf'<div class="chart" id="{chart}"><svg', html), chart
    tables = html_tables(html)
    assert html_row(tables["features"], "chat")[:2] == ["chat", "$1,300.50"]
    assert html_row(tables["summary"], "Unallocated")[1:] == ["$45.12", "—", "—"]
    assert html_row(tables["reconciliation"], "gpu_cloud")[3] == "-0.010000000000"
    assert html_row(tables["reconciliation"], "aws_cur")[3] == "0 (exact)"
    assert html_row(tables["units"], "search")[1] == "$1.1000"
    assert "Draft: not closed" in html and "Generated 2026-11-05 07:00 UTC" in html
    assert html_row(tables["unallocated"], "idle")[1:4] == [
        "unused_commitment",
        "AWS",
        "Savings Plans for AWS Compute usage",
    ]


def test_write_report_keeps_its_signature_and_writes_the_pack(
    month: tuple[Warehouse, CogsConfig], tmp_path: Path
) -> None:
    wh, _ = month
    config = pack_config(tmp_path, pdf=False)
    path = write_report(wh, config, MONTH)
    assert path == Path(config.reports.output_dir) / "cogs-2026-10.html"
    assert path.with_suffix(".xlsx").exists() and not path.with_suffix(".pdf").exists()  # pdf: false here


def test_missing_chromium_skips_the_pdf_with_a_clear_note(month: tuple[Warehouse, CogsConfig], tmp_path: Path) -> None:
    wh, _ = month
    config = pack_config(tmp_path, pdf=True, chromium="/nonexistent/chrome")
    pack = write_pack(wh, config, MONTH)
    assert pack.pdf is None
    assert pack.pdf_note is not None and "apt-get install chromium" in pack.pdf_note
    assert pack.files == [pack.xlsx, pack.html]


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (apt-get install chromium)")
def test_pdf_is_printed_by_chromium(month: tuple[Warehouse, CogsConfig], tmp_path: Path) -> None:
    wh, _ = month
    config = pack_config(tmp_path, pdf=True)
    pack = write_pack(wh, config, MONTH)
    assert pack.pdf == pack.html.with_suffix(".pdf") and pack.pdf_note is None
    data = pack.pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 20_000  # four vector charts and the tables


def test_empty_month_still_renders(duckdb_warehouse: Warehouse, tmp_path: Path) -> None:
    config = pack_config(tmp_path, pdf=False)
    pack = write_pack(duckdb_warehouse, config, "2026-03")
    summary = read_xlsx(pack.xlsx)["Summary"]
    assert money_cell(summary[(row_of(summary, "COGS"), 1)]) == Decimal(0)
    assert "No anomalies detected this month." in pack.html.read_text()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (Decimal("100.250000000000"), "100.25"),
        (Decimal("45.123456789012"), "45.123456789012"),
        (Decimal("123456789.123456789012"), "123456789.123457"),  # 15 significant digits: what a double holds
        (Decimal("-0E-12"), "0"),
        (Decimal("1200.000000000000"), "1200"),
        (Decimal("0.000000001234"), "1.234E-9"),
        (0.1, "0.1"),
    ],
)
def test_excel_number_is_the_exact_decimal_a_double_keeps(value: object, stored: str) -> None:
    number = excel_number(value)
    assert format(number, ".16G") == stored  # what xlsxwriter writes into the cell's XML
    assert len(number.as_tuple().digits) <= SIGNIFICANT
    assert Decimal(repr(float(number))) == number  # and the double Excel reads is that decimal
