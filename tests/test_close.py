"""Month-end close: freeze, restate, see the difference line by line; close again; the Dagster asset and schedule.

The month is tests/test_report.py's hand-built 2026-10. The restatement: AWS raises c1 (chat, Bedrock) by
$50.00, withdraws c4 (the untagged CloudWatch charge, $45.123456789012), and OpenAI adds c8 ($12.345,
search). Net: +$17.221543210988 amortized and billed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import yaml
from typer.testing import CliRunner

from models.config import CogsConfig
from pipelines.cli import app
from pipelines.close import AlreadyClosed, CloseError, all_closes, changes, close_month, closed_lines, latest_close
from pipelines.partitions import monthly_partitions
from pipelines.report import excel_number, month_figures, render_html, write_pack
from pipelines.report_assets import (
    CLOSE_SCHEDULE,
    build_report_assets,
    month_to_close,
    report_jobs,
    report_schedules,
)
from pipelines.warehouse import Warehouse
from tests.test_report import (
    GENERATED,
    MONTH,
    allocate_month,
    build_month,
    day,
    focus_row,
    html_tables,
    load_charges,
    load_usage,
    money_cell,
    pack_config,
    read_xlsx,
    record_loads,
    row_of,
    sheet_rows,
    usage_row,
)

CLOSED_AT = GENERATED  # 2026-11-05 07:00 UTC
EXCEL_CLOSED_AT = Decimal("46331.29166666666")  # the same instant as Excel's serial day
NET_RESTATEMENT = Decimal("17.221543210988")  # +50.00 - 45.123456789012 + 12.345


def restate(wh: Warehouse, config: CogsConfig) -> None:
    """The providers' restatement of the closed month, reloaded, then allocation and mart re-run."""
    wh.execute(
        'UPDATE focus_costs SET "EffectiveCost" = 1250.50, "BilledCost" = 1250.50, "ListCost" = 1250.50, '
        "\"ContractedCost\" = 1250.50 WHERE x_charge_id = 'c1'"
    )
    wh.execute("DELETE FROM focus_costs WHERE x_charge_id = 'c4'")
    load_charges(
        wh,
        [
            focus_row(
                "c8",
                day(20),
                "12.345",
                source="openai",
                provider="OpenAI",
                service="OpenAI API",
                tags={"feature": "search"},
            )
        ],
    )
    record_loads(wh, {"aws_cur": "1680.75", "openai": "112.345"}, at=datetime(2026, 11, 9, tzinfo=UTC))
    allocate_month(wh, config)


def close_built_month(wh: Warehouse, tmp_path: Path) -> tuple[Warehouse, CogsConfig]:
    config = pack_config(tmp_path, pdf=False)
    build_month(wh, config)
    close_month(wh, MONTH, "alice", now=CLOSED_AT)
    return wh, config


@pytest.fixture
def closed(duckdb_warehouse: Warehouse, tmp_path: Path) -> tuple[Warehouse, CogsConfig]:
    return close_built_month(duckdb_warehouse, tmp_path)


@pytest.fixture
def closed_on_both(warehouse: Warehouse, tmp_path: Path) -> tuple[Warehouse, CogsConfig]:
    """The closed month on DuckDB and on PostgreSQL (the close SQL and views run on both)."""
    return close_built_month(warehouse, tmp_path)


def test_close_freezes_the_month_at_line_grain(closed_on_both: tuple[Warehouse, CogsConfig]) -> None:
    wh, _ = closed_on_both
    close = latest_close(wh, MONTH)
    assert close is not None
    assert (close.closed_at, close.closed_by, close.lines) == (CLOSED_AT, "alice", 7)
    assert close.effective_cost == Decimal("2025.623456789012")
    assert close.billed_cost == Decimal("1985.873456789012")
    assert close.label == "2026-11-05 07:00 UTC by alice"
    assert changes(wh, MONTH).is_empty()


def test_restatement_is_listed_line_by_line_and_history_is_kept(closed_on_both: tuple[Warehouse, CogsConfig]) -> None:
    wh, config = closed_on_both
    restate(wh, config)
    moved = changes(wh, MONTH)
    keys = ["x_source", "provider_name", "service_name", "feature", "cost_class", "allocation_kind", "change"]
    amounts = ["closed_effective_cost", "current_effective_cost", "effective_cost_change", "billed_cost_change"]
    assert moved.select(*keys, *amounts).rows() == [
        (
            "aws_cur",
            "AWS",
            "Amazon Bedrock",
            "chat",
            "cogs",
            "direct",
            "restated",
            Decimal("1200.5"),
            Decimal("1250.5"),
            Decimal("50"),
            Decimal("50"),
        ),
        (
            "aws_cur",
            "AWS",
            "AmazonCloudWatch",
            "unallocated",
            "cogs",
            "unallocated",
            "removed",
            Decimal("45.123456789012"),
            Decimal(0),
            Decimal("-45.123456789012"),
            Decimal("-45.123456789012"),
        ),
        (
            "openai",
            "OpenAI",
            "OpenAI API",
            "search",
            "cogs",
            "direct",
            "new",
            Decimal(0),
            Decimal("12.345"),
            Decimal("12.345"),
            Decimal("12.345"),
        ),
    ]
    assert sum(moved["effective_cost_change"].to_list(), Decimal(0)) == NET_RESTATEMENT
    # The close itself is untouched: it still holds the withdrawn CloudWatch line.
    close = latest_close(wh, MONTH)
    assert close is not None and close.effective_cost == Decimal("2025.623456789012")
    frozen = closed_lines(wh, close)
    assert frozen.filter(frozen["service_name"] == "AmazonCloudWatch")["effective_cost"].to_list() == [
        Decimal("45.123456789012")
    ]


def test_the_pack_shows_the_restatement(closed: tuple[Warehouse, CogsConfig]) -> None:
    wh, config = closed
    restate(wh, config)
    pack = write_pack(wh, config, MONTH, generated=GENERATED)
    assert pack.changed_lines == 3
    book = read_xlsx(pack.xlsx)
    sheet = book["Changes since last close"]
    rows = sheet_rows(sheet)
    assert rows[2][:10] == [
        "Month",
        "Closed",
        "Change",
        "Source",
        "Provider",
        "Service",
        "Charge category",
        "Feature",
        "Class",
        "Kind",
    ]
    assert rows[3] == [
        "2026-10",
        EXCEL_CLOSED_AT,
        "restated",
        "aws_cur",
        "AWS",
        "Amazon Bedrock",
        "Usage",
        "chat",
        "cogs",
        "direct",
        Decimal("1200.5"),
        Decimal("1250.5"),
        Decimal("50"),
        Decimal("1200.5"),
        Decimal("1250.5"),
        Decimal("50"),
    ]
    assert rows[4][2:] == [
        "removed",
        "aws_cur",
        "AWS",
        "AmazonCloudWatch",
        "Usage",
        "unallocated",
        "cogs",
        "unallocated",
        Decimal("45.123456789012"),
        Decimal(0),
        Decimal("-45.123456789012"),
        Decimal("45.123456789012"),
        Decimal(0),
        Decimal("-45.123456789012"),
    ]
    assert rows[5][2:] == [
        "new",
        "openai",
        "OpenAI",
        "OpenAI API",
        "Usage",
        "search",
        "cogs",
        "direct",
        Decimal(0),
        Decimal("12.345"),
        Decimal("12.345"),
        Decimal(0),
        Decimal("12.345"),
        Decimal("12.345"),
    ]
    total = sheet[(row_of(sheet, "Total"), 12)]
    assert (total.formula, money_cell(total)) == ("SUM(M4:M6)", NET_RESTATEMENT)
    assert sheet[(3, 1)].number_format == 'yyyy-mm-dd hh:mm "UTC"'
    summary = book["Summary"]
    assert summary[(row_of(summary, "Status"), 1)].value == (
        "Closed 2026-11-05 07:00 UTC by alice; restated since by +17.221543210988 (amortized), "
        "see 'Changes since last close'"
    )
    r = row_of(summary, "Amortized cost (EffectiveCost)")
    assert [money_cell(summary[(r, c)]) for c in (1, 2, 3)] == [
        excel_number(Decimal("2042.845")),
        excel_number(Decimal("2025.623456789012")),
        NET_RESTATEMENT,
    ]
    r = row_of(summary, "Unallocated")
    assert [summary[(r, c)].value for c in (1, 2, 3)] == [
        Decimal(0),
        Decimal("45.123456789012"),
        Decimal("-45.123456789012"),
    ]
    html = render_html(month_figures(wh, MONTH), config, GENERATED)
    table = html_tables(html)["changes"]
    assert table[1] == [
        "2026-10",
        "restated",
        "AWS · Amazon Bedrock (aws_cur, Usage)",
        "chat",
        "cogs · direct",
        "$1,200.50",
        "$1,250.50",
        "+50.000000000000",
        "+50.000000000000",
    ]
    assert table[2][7] == "-45.123456789012" and table[3][7] == "+12.345000000000"
    assert "Closed 2026-11-05 07:00 UTC by alice · restated since" in html


def test_a_second_close_needs_reclose_and_keeps_the_first(closed_on_both: tuple[Warehouse, CogsConfig]) -> None:
    wh, config = closed_on_both
    restate(wh, config)
    with pytest.raises(AlreadyClosed) as refused:
        close_month(wh, MONTH, "bob")
    assert str(refused.value) == (
        "2026-10 is already closed (2026-11-05 07:00 UTC by alice); 3 cost line(s) changed since. "
        "Use --reclose to record a new close (the earlier one is kept)."
    )
    again = close_month(wh, MONTH, "bob", reclose=True, now=datetime(2026, 11, 20, 9, tzinfo=UTC))
    assert (again.closed_by, again.lines, again.effective_cost) == ("bob", 7, Decimal("2042.845"))
    assert changes(wh, MONTH).is_empty()
    history = all_closes(wh)
    assert history.select("closed_by", "lines", "effective_cost").rows() == [
        ("alice", 7, Decimal("2025.623456789012")),
        ("bob", 7, Decimal("2042.845")),
    ]
    sheet = read_xlsx(write_pack(wh, config, MONTH).xlsx)["Changes since last close"]
    assert sheet[(2, 0)].value == "No changes since the close of 2026-10 (2026-11-20 09:00 UTC by bob)."


def test_a_close_never_sorts_before_the_one_it_replaces(closed: tuple[Warehouse, CogsConfig]) -> None:
    wh, _ = closed
    again = close_month(wh, MONTH, "bob", reclose=True, now=datetime(2026, 11, 1, tzinfo=UTC))  # clock behind
    assert again.closed_at > CLOSED_AT and again.closed_by == "bob"


def test_nothing_to_close(duckdb_warehouse: Warehouse) -> None:
    with pytest.raises(
        CloseError,
        match=r"^nothing to close: 2026-03 has no allocated cost; run `cogs run --month "
        r"2026-03` first$",
    ):
        close_month(duckdb_warehouse, "2026-03", "alice")


def test_late_telemetry_shows_as_a_usage_change(duckdb_warehouse: Warehouse, tmp_path: Path) -> None:
    config = pack_config(tmp_path, pdf=False)
    build_month(duckdb_warehouse, config)
    close_month(duckdb_warehouse, MONTH, "alice", now=CLOSED_AT)
    load_usage(duckdb_warehouse, [usage_row(day(20), "chat", 250, 200)])
    allocate_month(duckdb_warehouse, config)
    figures = month_figures(duckdb_warehouse, MONTH)
    assert figures.changes.is_empty()  # cost did not move
    assert figures.usage_changes.select(
        "feature",
        "closed_useful_outputs",
        "current_useful_outputs",
        "closed_cost_per_useful_output",
        "current_cost_per_useful_output",
    ).rows() == [("chat", 800, 1000, Decimal("1.625625"), Decimal("1.3005"))]
    summary = read_xlsx(write_pack(duckdb_warehouse, config, MONTH).xlsx)["Summary"]
    r = row_of(summary, "Useful outputs (COGS traffic)")
    assert [summary[(r, c)].value for c in (1, 2, 3)] == [Decimal(1500), Decimal(1300), Decimal(200)]


def test_the_next_months_pack_shows_the_earlier_months_restatement(
    closed: tuple[Warehouse, CogsConfig],
) -> None:
    wh, config = closed
    load_charges(wh, [focus_row("n1", day(3, month=11), "10.00", tags={"feature": "chat"}, month="2026-11")])
    # (usage too: read back from PostgreSQL, an empty inference_usage has untyped columns the engine rejects)
    load_usage(wh, [usage_row(day(3, month=11), "chat", 5, 5, month="2026-11")])
    allocate_month(wh, config, "2026-11")
    restate(wh, config)
    rows = sheet_rows(read_xlsx(write_pack(wh, config, "2026-11").xlsx)["Changes since last close"])
    assert [(r[0], r[2], r[5], r[12]) for r in rows[3:6]] == [
        ("2026-10", "restated", "Amazon Bedrock", Decimal("50")),
        ("2026-10", "removed", "AmazonCloudWatch", Decimal("-45.123456789012")),
        ("2026-10", "new", "OpenAI API", Decimal("12.345")),
    ]


# --- CLI --------------------------------------------------------------------------------------------------


def test_cogs_close_then_refuses_to_close_again(duckdb_warehouse: Warehouse, tmp_path: Path) -> None:
    config = pack_config(tmp_path, pdf=False)
    build_month(duckdb_warehouse, config)
    path = tmp_path / "cogs.yaml"
    path.write_text(
        yaml.safe_dump(
            {"warehouse": duckdb_warehouse.url, "reports": {"output_dir": str(tmp_path / "out"), "pdf": False}}
        )
    )
    runner = CliRunner()
    first = runner.invoke(app, ["close", "--config", str(path), "--month", MONTH, "--by", "carol"])
    assert first.exit_code == 0, first.output
    assert "2026-10 closed" in first.output and "by carol: 7 cost lines frozen, amortized $2,025.62" in first.output
    assert (tmp_path / "out" / "cogs-2026-10.xlsx").exists() and (tmp_path / "out" / "cogs-2026-10.html").exists()
    second = runner.invoke(app, ["close", "--config", str(path), "--month", MONTH])
    assert second.exit_code == 1
    assert "is already closed" in second.output and "Use --reclose" in second.output
    report = runner.invoke(app, ["report", "--config", str(path), "--month", MONTH, "--no-pdf"])
    assert report.exit_code == 0, report.output
    assert "close pack for 2026-10 (closed " in report.output and "by carol; 0 line(s) changed" in report.output


# --- Dagster ----------------------------------------------------------------------------------------------


def test_month_close_asset_closes_once_then_keeps_the_close(duckdb_warehouse: Warehouse, tmp_path: Path) -> None:
    config = pack_config(tmp_path, pdf=False).model_copy(update={"start_month": "2026-01"})
    build_month(duckdb_warehouse, config)
    close_asset = build_report_assets(config, monthly_partitions(config.start_month))[0]

    def materialize(run_config: dict[str, object] | None = None) -> dict[str, object]:
        result = dg.materialize(
            [close_asset], partition_key=MONTH, resources={"warehouse": duckdb_warehouse}, run_config=run_config
        )
        assert result.success
        event = result.asset_materializations_for_node("month_close")[0]
        return {k: v.value for k, v in event.metadata.items()}

    first = materialize()
    assert (first["new_close"], first["lines_frozen"], first["effective_cost_at_close"]) == (True, 7, "2,025.62")
    assert first["xlsx"] == str(tmp_path / "reports" / "cogs-2026-10.xlsx")
    assert materialize()["new_close"] is False  # scheduled twice or re-run: the first close stands
    again = materialize({"ops": {"month_close": {"config": {"reclose": True, "closed_by": "finance"}}}})
    assert (again["new_close"], again["closed_by"]) == (True, "finance")
    assert all_closes(duckdb_warehouse).height == 2


def test_close_schedule_closes_last_month_on_the_configured_day(tmp_path: Path) -> None:
    config = pack_config(tmp_path, close_day=3, close_hour=6).model_copy(update={"start_month": "2026-01"})
    partitions = monthly_partitions(config.start_month)
    close_job, flash_job = report_jobs()
    schedules = report_schedules(config, close_job, flash_job)
    defs = dg.Definitions(
        assets=build_report_assets(config, partitions),
        jobs=[close_job, flash_job],
        schedules=schedules,
        resources={"warehouse": Warehouse(url="duckdb:///:memory:")},
    )
    schedule = defs.resolve_schedule_def(CLOSE_SCHEDULE)
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 3 * *", "UTC")

    def tick(when: datetime) -> dg.ScheduleExecutionData:
        context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
        return schedule.evaluate_tick(context)

    requests = tick(datetime(2026, 11, 3, 6, tzinfo=UTC)).run_requests
    assert [(r.partition_key, r.run_key) for r in requests or []] == [("2026-10", "close-2026-10")]
    january = tick(datetime(2026, 1, 3, 6, tzinfo=UTC))
    assert not january.run_requests and january.skip_message == "2025-12 is before start_month 2026-01"
    assert month_to_close(datetime(2027, 1, 3, tzinfo=UTC)) == "2026-12"
