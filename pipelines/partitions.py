"""Partitions: one per billing month (bills are restated within and shortly after the month)."""

from __future__ import annotations

import dagster as dg


def monthly_partitions(start_month: str) -> dg.MonthlyPartitionsDefinition:
    """Months from ``start_month`` (YYYY-MM) up to and including the month in progress."""
    return dg.MonthlyPartitionsDefinition(start_date=start_month, fmt="%Y-%m", end_offset=1)
