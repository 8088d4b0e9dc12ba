"""The weekly flash: week over week per feature, top movers, the HTML, the terminal, the Dagster schedule.

Week 2026-W41 (Oct 5-11): chat $100 on Bedrock (100 useful outputs), search $40 (400).
Week 2026-W42 (Oct 12-18): chat $150 on Bedrock + $30 on OpenAI (100 useful outputs), search $40 (800),
an untagged $5 CloudWatch charge (unallocated). Oct 20 ($999) is outside both weeks.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from models.config import CogsConfig
from pipelines.cli import app
from pipelines.flash import last_complete_week, terminal_tables, week_figures, week_start, write_flash
from pipelines.partitions import monthly_partitions
from pipelines.report_assets import FLASH_SCHEDULE, build_report_assets, report_jobs, report_schedules
from pipelines.warehouse import Warehouse
from tests.test_report import (
    allocate_month,
    day,
    focus_row,
    html_row,
    html_tables,
    load_charges,
    load_usage,
    pack_config,
    usage_row,
)

W42 = date(2026, 10, 12)
CHAT, SEARCH = {"feature": "chat"}, {"feature": "search"}


def build_weeks(warehouse: Warehouse, tmp_path: Path) -> tuple[Warehouse, CogsConfig]:
    config = pack_config(tmp_path, pdf=False, top_movers=5)
    load_charges(
        warehouse,
        [
            focus_row("f1", day(5), "100.00", tags=CHAT),
            focus_row("f2", day(6), "40.00", tags=SEARCH),
            focus_row("f3", day(13), "150.00", tags=CHAT),
            focus_row("f4", day(14), "40.00", tags=SEARCH),
            focus_row("f5", day(15), "30.00", source="openai", provider="OpenAI", service="OpenAI API", tags=CHAT),
            focus_row("f6", day(16), "5.00", service="AmazonCloudWatch"),
            focus_row("f7", day(20), "999.00", tags=CHAT),
        ],
    )
    load_usage(
        warehouse,
        [
            usage_row(day(5), "chat", 120, 100),
            usage_row(day(6), "search", 400, 400),
            usage_row(day(13), "chat", 120, 100),
            usage_row(day(14), "search", 800, 800),
        ],
    )
    allocate_month(warehouse, config)
    return warehouse, config


@pytest.fixture
def weeks(duckdb_warehouse: Warehouse, tmp_path: Path) -> tuple[Warehouse, CogsConfig]:
    return build_weeks(duckdb_warehouse, tmp_path)


def test_week_over_week_per_feature_and_top_movers(warehouse: Warehouse, tmp_path: Path) -> None:
    wh, _ = build_weeks(warehouse, tmp_path)  # on DuckDB and on PostgreSQL
    flash = week_figures(wh, W42, top=5)
    assert (flash.label, flash.period) == ("2026-W42", "2026-10-12 to 2026-10-18")
    assert flash.features.select(
        "feature",
        "previous_spend",
        "spend",
        "spend_change",
        "spend_change_pct",
        "previous_useful_outputs",
        "useful_outputs",
        "previous_cost_per_useful_output",
        "cost_per_useful_output",
        "unit_change_pct",
    ).rows() == [
        ("chat", Decimal(100), Decimal(180), Decimal(80), 0.8, 100, 100, Decimal("1"), Decimal("1.8"), 0.8),
        ("search", Decimal(40), Decimal(40), Decimal(0), 0.0, 400, 800, Decimal("0.1"), Decimal("0.05"), -0.5),
        ("unallocated", Decimal(0), Decimal(5), Decimal(5), None, 0, 0, None, None, None),
    ]
    movers = flash.movers.select("feature", "provider_name", "service_name", "previous_spend", "spend", "change")
    assert movers.rows() == [
        ("chat", "AWS", "Amazon Bedrock", Decimal(100), Decimal(150), Decimal(50)),
        ("chat", "OpenAI", "OpenAI API", Decimal(0), Decimal(30), Decimal(30)),
        ("unallocated", "AWS", "AmazonCloudWatch", Decimal(0), Decimal(5), Decimal(5)),
    ]
    assert (flash.total("spend"), flash.total("previous_spend"), flash.total("spend_change")) == (
        Decimal(225),
        Decimal(140),
        Decimal(85),
    )
    assert (flash.days, flash.previous_days, flash.complete) == (4, 2, False)
    assert week_figures(wh, W42, top=1).movers["change"].to_list() == [Decimal(50)]


def test_flash_html_and_terminal(weeks: tuple[Warehouse, CogsConfig]) -> None:
    wh, config = weeks
    flash, path = write_flash(wh, config, W42, generated=datetime(2026, 10, 19, 7, tzinfo=UTC))
    assert path == Path(config.reports.output_dir) / "flash-2026-W42.html"
    html = path.read_text()
    tables = html_tables(html)
    assert html_row(tables["flash-features"], "chat") == [
        "chat",
        "$100.00",
        "$180.00",
        "$80.00",
        "+80.0%",
        "100",
        "$1.0000",
        "$1.8000",
        "+80.0%",
    ]
    assert html_row(tables["flash-features"], "search")[3:] == ["$0.00", "+0.0%", "800", "$0.1000", "$0.0500", "-50.0%"]
    assert html_row(tables["flash-movers"], "chat")[1:] == [
        "AWS",
        "Amazon Bedrock",
        "$100.00",
        "$150.00",
        "$50.00",
        "+50.0%",
    ]
    assert "Incomplete data: 4/7 days this week and 2/7 the week before" in html
    assert '<div class="chart" id="chart-flash"><svg' in html
    console = Console(record=True, width=160)
    for table in terminal_tables(flash):
        console.print(table)
    text = console.export_text()
    assert "Weekly flash 2026-W42 (2026-10-12 to 2026-10-18) vs the week before — incomplete" in text
    assert "│ total       │      $140.00 │ $225.00 │ $85.00 │   +60.7% │            900 │" in text
    assert "│ chat        │ OpenAI   │ OpenAI API       │   $0.00 │    $30.00 │ $30.00 │      — │" in text


def test_weeks_start_on_monday() -> None:
    assert week_start(date(2026, 10, 18)) == W42
    assert last_complete_week(date(2026, 10, 19)) == W42  # Monday: last week just ended
    assert last_complete_week(date(2026, 10, 18)) == date(2026, 10, 5)  # Sunday: this week is not over
    with pytest.raises(ValueError, match="a flash week starts on a Monday; 2026-10-14 is a Wednesday"):
        week_figures(Warehouse(url="duckdb:///:memory:"), date(2026, 10, 14))


def test_cogs_report_flash(weeks: tuple[Warehouse, CogsConfig], tmp_path: Path) -> None:
    wh, _ = weeks
    path = tmp_path / "cogs.yaml"
    path.write_text(yaml.safe_dump({"warehouse": wh.url, "reports": {"output_dir": str(tmp_path / "out")}}))
    result = CliRunner().invoke(app, ["report", "--config", str(path), "--flash", "--week", "2026-10-14"])
    assert result.exit_code == 0, result.output
    assert "Weekly flash 2026-W42" in result.output and "Top movers" in result.output
    assert (tmp_path / "out" / "flash-2026-W42.html").exists()
    bad = CliRunner().invoke(app, ["report", "--config", str(path), "--flash", "--week", "last week"])
    assert bad.exit_code == 2 and "--week must be a date like 2026-10-12" in bad.output


def test_weekly_flash_asset_and_schedule(weeks: tuple[Warehouse, CogsConfig]) -> None:
    wh, config = weeks
    config = config.model_copy(
        update={
            "start_month": "2026-01",
            "reports": config.reports.model_copy(update={"flash_weekday": "tuesday", "flash_hour": 8}),
        }
    )
    assets = build_report_assets(config, monthly_partitions(config.start_month))
    close_job, flash_job = report_jobs()
    defs = dg.Definitions(
        assets=assets,
        jobs=[close_job, flash_job],
        schedules=report_schedules(config, close_job, flash_job),
        resources={"warehouse": wh},
    )
    schedule = defs.resolve_schedule_def(FLASH_SCHEDULE)
    assert schedule.cron_schedule == "0 8 * * 2"

    def tick(when: datetime) -> dg.ScheduleExecutionData:
        context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
        return schedule.evaluate_tick(context)

    requests = tick(datetime(2026, 10, 20, 8, tzinfo=UTC)).run_requests or []
    assert [(r.partition_key, r.run_key) for r in requests] == [("2026-10-12", "flash-2026-10-12")]
    early = tick(datetime(2026, 1, 6, 8, tzinfo=UTC))
    assert early.skip_message == "the week of 2025-12-29 is before start_month 2026-01"
    weekly = defs.resolve_job_def("cogs_weekly_flash").partitions_def
    assert weekly is not None
    assert weekly.get_partition_keys(current_time=datetime(2026, 1, 20, tzinfo=UTC)) == ["2026-01-05", "2026-01-12"]
    result = dg.materialize([assets[1]], partition_key="2026-10-12", resources={"warehouse": wh})
    metadata = result.asset_materializations_for_node("weekly_flash")[0].metadata
    assert (metadata["spend"].value, metadata["change"].value) == ("225.00", "85.00")
    assert metadata["path"].value == str(Path(config.reports.output_dir) / "flash-2026-W42.html")
