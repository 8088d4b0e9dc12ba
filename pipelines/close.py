"""Month-end close: freeze a month's numbers, then show what providers restated since, line by line.

Closing a month copies its cost lines (source × provider × service × charge category × feature × class ×
kind, from ``cost_allocations``) and its per-feature usage into ``close_snapshots`` and
``close_snapshot_usage`` (``sql/ddl/080_close_snapshots.sql``). Nothing ever rewrites a close: when a
provider restates a closed month, the warehouse follows the provider, and ``v_close_changes`` (the close
pack's "Changes since last close") lists each line whose amounts moved, with both amounts. Closing again
(``reclose``) records a new close beside the old one; the latest close is the one reports compare to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl

from pipelines.warehouse import Warehouse

LINE_KEYS = (
    "x_source",
    "provider_name",
    "service_name",
    "charge_category",
    "feature",
    "cost_class",
    "allocation_kind",
)
"""The grain of a close: enough to say which bill moved and whose cost it changed."""

_KEYS = ", ".join(LINE_KEYS)
_CURRENT_LINES = f"""
    SELECT {_KEYS}, COUNT(DISTINCT x_charge_id) AS charges, SUM(effective_cost) AS effective_cost,
        SUM(billed_cost) AS billed_cost
    FROM cost_allocations WHERE x_billing_period = :p
    GROUP BY {_KEYS}
"""
_CURRENT_USAGE = """
    SELECT feature, SUM(cogs) AS cogs, SUM(requests) AS requests, SUM(useful_outputs) AS useful_outputs
    FROM feature_costs_daily WHERE billing_period = :p
    GROUP BY feature
"""


class CloseError(RuntimeError):
    """A month can't be closed (nothing to close, or already closed); the message says what to do."""


class AlreadyClosed(CloseError):
    """The month has a close already and no new one was asked for."""

    def __init__(self, message: str, close: Close) -> None:
        super().__init__(message)
        self.close = close


@dataclass(frozen=True)
class Close:
    """One close of a month: when, by whom, and the totals it froze."""

    month: str
    closed_at: datetime
    closed_by: str
    lines: int
    effective_cost: Decimal
    billed_cost: Decimal

    @property
    def label(self) -> str:
        return f"{self.closed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC by {self.closed_by}"


def latest_close(warehouse: Warehouse, month: str) -> Close | None:
    """The month's latest close, or None if it was never closed."""
    found = warehouse.read(
        "SELECT closed_at, MIN(closed_by) AS closed_by, COUNT(*) AS lines, SUM(effective_cost) AS effective_cost, "
        "SUM(billed_cost) AS billed_cost FROM close_snapshots WHERE billing_period = :p "
        "GROUP BY closed_at ORDER BY closed_at DESC LIMIT 1",
        p=month,
    )
    if found.is_empty():
        return None
    row = found.row(0, named=True)
    return Close(
        month=month,
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        lines=int(row["lines"]),
        effective_cost=Decimal(row["effective_cost"]),
        billed_cost=Decimal(row["billed_cost"]),
    )


def close_month(
    warehouse: Warehouse, month: str, closed_by: str, *, reclose: bool = False, now: datetime | None = None
) -> Close:
    """Freeze ``month``'s cost lines and usage as they are in the warehouse now; returns the new close.

    Refuses a month without allocated cost, and a month already closed unless ``reclose`` (the earlier
    close is kept: history is never rewritten).
    """
    warehouse.ensure_schema()  # a warehouse from an older version gets the close tables
    previous = latest_close(warehouse, month)
    if previous and not reclose:
        moved = changes(warehouse, month, only_month=True).height
        raise AlreadyClosed(
            f"{month} is already closed ({previous.label}); {moved} cost line(s) changed since. "
            "Use --reclose to record a new close (the earlier one is kept).",
            previous,
        )
    charges = warehouse.read("SELECT COUNT(*) AS n FROM cost_allocations WHERE x_billing_period = :p", p=month)
    if not charges["n"][0]:
        raise CloseError(f"nothing to close: {month} has no allocated cost; run `cogs run --month {month}` first")
    closed_at = now or datetime.now(UTC)
    if previous and closed_at <= previous.closed_at:  # the latest close must sort last, whatever the clock says
        closed_at = previous.closed_at + timedelta(microseconds=1)
    params = {"p": month, "closed_at": closed_at, "closed_by": closed_by}
    with warehouse.transaction() as conn:  # lines and usage of a close are written together or not at all
        warehouse.execute(
            f"INSERT INTO close_snapshots (billing_period, closed_at, closed_by, {_KEYS}, charges, effective_cost, "
            f"billed_cost) SELECT :p, :closed_at, :closed_by, {_KEYS}, charges, effective_cost, billed_cost "
            f"FROM ({_CURRENT_LINES}) AS lines",
            conn,
            **params,
        )
        warehouse.execute(
            "INSERT INTO close_snapshot_usage (billing_period, closed_at, feature, cogs, requests, useful_outputs) "
            f"SELECT :p, :closed_at, feature, cogs, requests, useful_outputs FROM ({_CURRENT_USAGE}) AS used",
            conn,
            p=month,
            closed_at=closed_at,
        )
    close = latest_close(warehouse, month)
    assert close is not None
    return close


def current_lines(warehouse: Warehouse, month: str) -> pl.DataFrame:
    """The month's cost lines now, at the grain of a close."""
    return warehouse.read(_CURRENT_LINES + f" ORDER BY {_KEYS}", p=month)


def closed_lines(warehouse: Warehouse, close: Close) -> pl.DataFrame:
    """The cost lines ``close`` froze."""
    return warehouse.read(
        f"SELECT {_KEYS}, charges, effective_cost, billed_cost FROM close_snapshots "
        f"WHERE billing_period = :p AND closed_at = :t ORDER BY {_KEYS}",
        p=close.month,
        t=close.closed_at,
    )


def current_usage(warehouse: Warehouse, month: str) -> pl.DataFrame:
    """Per feature: COGS, COGS-class requests and useful outputs now."""
    return warehouse.read(_CURRENT_USAGE + " ORDER BY feature", p=month)


def closed_usage(warehouse: Warehouse, close: Close) -> pl.DataFrame:
    """Per feature: COGS, requests and useful outputs as ``close`` froze them."""
    return warehouse.read(
        "SELECT feature, cogs, requests, useful_outputs FROM close_snapshot_usage "
        "WHERE billing_period = :p AND closed_at = :t ORDER BY feature",
        p=close.month,
        t=close.closed_at,
    )


def changes(warehouse: Warehouse, month: str, *, only_month: bool = False) -> pl.DataFrame:
    """Cost lines of closed months up to ``month`` (or of ``month`` only) that moved since their latest close.

    Largest moves first within a month; the months in order.
    """
    where = "billing_period = :p" if only_month else "billing_period <= :p"
    return warehouse.read(
        f"SELECT * FROM v_close_changes WHERE {where} ORDER BY billing_period, "
        f"ABS(effective_cost_change) DESC, ABS(billed_cost_change) DESC, {_KEYS}",
        p=month,
    )


def usage_changes(warehouse: Warehouse, month: str) -> pl.DataFrame:
    """Features of closed months up to ``month`` whose usage or COGS moved since the latest close."""
    return warehouse.read(
        "SELECT * FROM v_close_usage_changes WHERE billing_period <= :p ORDER BY billing_period, feature", p=month
    )


def all_closes(warehouse: Warehouse) -> pl.DataFrame:
    """Every close: month, when, by whom, lines and totals frozen (the audit trail)."""
    return warehouse.read(
        "SELECT billing_period, closed_at, MIN(closed_by) AS closed_by, COUNT(*) AS lines, "
        "SUM(effective_cost) AS effective_cost, SUM(billed_cost) AS billed_cost FROM close_snapshots "
        "GROUP BY billing_period, closed_at ORDER BY billing_period, closed_at"
    )
