"""What every connector returns, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl

from models.period import BillingPeriod

__all__ = ["QUARANTINE_SCHEMA", "BillingPeriod", "LoadResult", "SourceError"]

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "line": pl.String(),
    "reason": pl.String(),
}


class SourceError(RuntimeError):
    """A source can't be read: the message names the source, the file or URL, and the field."""

    def __init__(self, source: str, where: str, problem: str, hint: str = "") -> None:
        self.source, self.where, self.problem = source, where, problem
        msg = f"source {source!r}: {where}: {problem}"
        super().__init__(f"{msg}. {hint}" if hint else msg)


@dataclass
class LoadResult:
    """Rows of one source for one billing period, ready for the warehouse.

    ``frame`` holds FOCUS columns (for bills) or inference_usage columns (for telemetry), plus
    ``x_source_file``/``x_source_line`` where known; the pipeline adds the partition columns.
    ``source_total`` is the provider's own BilledCost total, summed from the raw input before
    mapping, so reconciliation compares two independent computations.
    """

    frame: pl.DataFrame
    quarantine: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=QUARANTINE_SCHEMA))
    files: list[str] = field(default_factory=list)
    source_total: Decimal | None = None
    repairs: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
