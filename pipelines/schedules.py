"""The daily refresh: providers restate the current bill daily, and the previous one for two weeks."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from models.period import BillingPeriod

RESTATEMENT_DAYS = 15  # AWS may update the previous billing period for up to two weeks after it closes


def months_to_refresh(now: datetime) -> list[str]:
    """The month in progress, and the previous one while it can still be restated."""
    current = BillingPeriod.containing(now)
    if now.day > RESTATEMENT_DAYS:
        return [current.key]
    return [current.previous.key, current.key]


def daily_refresh(job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(job=job, cron_schedule="0 6 * * *", execution_timezone="UTC", name="daily_refresh")
    def _daily_refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time or datetime.now(UTC)
        return [
            dg.RunRequest(run_key=f"{month}@{now:%Y-%m-%d}", partition_key=month) for month in months_to_refresh(now)
        ]

    return _daily_refresh
