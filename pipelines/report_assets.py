"""Dagster assets, jobs and schedules of the finance reports: the month-end close and the weekly flash.

* ``month_close`` (monthly partitions): closes the month (``pipelines.close``) and writes its close pack
  (XLSX, HTML, PDF). A materialization of a month already closed keeps the close and rewrites the pack
  with the changes since; ``reclose: true`` in the run config records a new close.
* ``weekly_flash`` (weekly partitions, Monday to Sunday): the week-over-week flash.
* ``cogs_close`` job: ``month_close`` and everything upstream of it, so a close freezes numbers refreshed
  in the same run. Scheduled on ``reports.close_day`` of the next month at ``reports.close_hour`` UTC.
* ``cogs_weekly_flash`` job: scheduled on ``reports.flash_weekday`` at ``reports.flash_hour`` UTC for the
  last complete week.

Both assets are in the ``finance`` group, which the daily refresh job must leave out (it would otherwise
close the month every day).

No ``from __future__ import annotations`` here: Dagster reads the context and resource annotations.
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from models.config import CogsConfig
from models.period import BillingPeriod
from pipelines.close import AlreadyClosed, close_month
from pipelines.flash import last_complete_week, write_flash
from pipelines.report import write_pack
from pipelines.warehouse import Warehouse

FINANCE = "finance"
CLOSE_ASSET = "month_close"
FLASH_ASSET = "weekly_flash"
CLOSE_JOB = "cogs_close"
FLASH_JOB = "cogs_weekly_flash"
CLOSE_SCHEDULE = "month_close"
FLASH_SCHEDULE = "weekly_flash"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
UPSTREAM = [dg.AssetKey("feature_costs_daily"), dg.AssetKey("cost_anomalies")]


CLOSE_RUN_CONFIG = {
    "reclose": dg.Field(bool, default_value=False, description="record a new close of a month already closed"),
    "closed_by": dg.Field(str, default_value="dagster", description="who closes, kept with the close"),
}


def first_flash_week(config: CogsConfig) -> date:
    """The first Monday on or after the first day of ``start_month``."""
    first = BillingPeriod(config.start_month).start.date()
    return first + timedelta(days=(7 - first.weekday()) % 7)


def flash_partitions(config: CogsConfig) -> dg.WeeklyPartitionsDefinition:
    """Complete weeks, Monday to Sunday in UTC, keyed by their Monday (YYYY-MM-DD)."""
    return dg.WeeklyPartitionsDefinition(
        start_date=first_flash_week(config).isoformat(), day_offset=1, timezone="UTC", fmt="%Y-%m-%d"
    )


def _money(value: object) -> str:
    return f"{value:,.2f}" if value is not None else "—"


def build_report_assets(config: CogsConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """``month_close`` on the month partitions and ``weekly_flash`` on weekly ones."""

    @dg.asset(
        name=CLOSE_ASSET,
        group_name=FINANCE,
        partitions_def=partitions,
        deps=UPSTREAM,
        kinds={"xlsx", "html", "pdf"},
        config_schema=CLOSE_RUN_CONFIG,
        description="Closes the month (freezes its cost lines and usage) and writes the close pack: XLSX, HTML, PDF.",
    )
    def month_close(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        month, run = context.partition_key, context.op_execution_context.op_config
        try:
            close = close_month(warehouse, month, run["closed_by"], reclose=run["reclose"])
            new = True
        except AlreadyClosed as exc:  # scheduled again or re-run: keep the close, show what moved since
            context.log.info(str(exc))
            close, new = exc.close, False
        pack = write_pack(warehouse, config, month)
        if pack.pdf_note:
            context.log.warning(pack.pdf_note)
        metadata: dict[str, object] = {
            "closed_at": close.closed_at.isoformat(),
            "closed_by": close.closed_by,
            "new_close": new,
            "lines_frozen": close.lines,
            "effective_cost_at_close": _money(close.effective_cost),
            "billed_cost_at_close": _money(close.billed_cost),
            "changed_lines_since_close": pack.changed_lines,
            "xlsx": dg.MetadataValue.path(str(pack.xlsx)),
            "html": dg.MetadataValue.path(str(pack.html)),
            "pdf": dg.MetadataValue.path(str(pack.pdf)) if pack.pdf else str(pack.pdf_note),
        }
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        name=FLASH_ASSET,
        group_name=FINANCE,
        partitions_def=flash_partitions(config),
        deps=[dg.AssetKey("feature_costs_daily")],
        kinds={"html"},
        description="Week-over-week spend and unit cost per feature, and the top movers (HTML).",
    )
    def weekly_flash(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        flash, path = write_flash(warehouse, config, date.fromisoformat(context.partition_key))
        movers = flash.movers.select(
            "feature", "provider_name", "service_name", pl.col("change").map_elements(_money, return_dtype=pl.String)
        )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "spend": _money(flash.total("spend")),
                "change": _money(flash.total("spend_change")),
                "complete_weeks": flash.complete,
                "top_movers": dg.MetadataValue.md(_markdown(movers)),
            }
        )

    return [month_close, weekly_flash]


def _markdown(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "_none_"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows())


def report_jobs() -> tuple["dg.UnresolvedAssetJobDefinition", "dg.UnresolvedAssetJobDefinition"]:
    """The close job (the month refreshed, then closed, in one run) and the weekly flash job.

    Their partitions are those of the assets they select (months, weeks).
    """
    close_job = dg.define_asset_job(
        CLOSE_JOB,
        selection=dg.AssetSelection.assets(CLOSE_ASSET).upstream(),
        description="Refresh a month end to end, then close it and write its close pack.",
    )
    flash_job = dg.define_asset_job(
        FLASH_JOB,
        selection=dg.AssetSelection.assets(FLASH_ASSET),
        description="Write the weekly flash of a complete week.",
    )
    return close_job, flash_job


def month_to_close(now: datetime) -> str:
    """The month a close on ``now`` closes: the one before ``now``'s."""
    return BillingPeriod.containing(now).previous.key


def report_schedules(
    config: CogsConfig,
    close_job: "dg.UnresolvedAssetJobDefinition",
    flash_job: "dg.UnresolvedAssetJobDefinition",
) -> Sequence[dg.ScheduleDefinition]:
    """The monthly close on ``reports.close_day`` and the weekly flash on ``reports.flash_weekday`` (UTC)."""
    reports = config.reports
    cron_weekday = (WEEKDAYS.index(reports.flash_weekday) + 1) % 7  # cron: 0 is Sunday

    @dg.schedule(
        job=close_job,
        cron_schedule=f"0 {reports.close_hour} {reports.close_day} * *",
        execution_timezone="UTC",
        name=CLOSE_SCHEDULE,
    )
    def _month_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        month = month_to_close(context.scheduled_execution_time or datetime.now(UTC))
        if month < config.start_month:
            return dg.SkipReason(f"{month} is before start_month {config.start_month}")
        return dg.RunRequest(run_key=f"close-{month}", partition_key=month, tags={"cogs/close": month})

    @dg.schedule(
        job=flash_job,
        cron_schedule=f"0 {reports.flash_hour} * * {cron_weekday}",
        execution_timezone="UTC",
        name=FLASH_SCHEDULE,
    )
    def _weekly_flash(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        monday = last_complete_week((context.scheduled_execution_time or datetime.now(UTC)).date())
        if monday < first_flash_week(config):
            return dg.SkipReason(f"the week of {monday} is before start_month {config.start_month}")
        return dg.RunRequest(run_key=f"flash-{monday}", partition_key=monday.isoformat())

    return [_month_close, _weekly_flash]
