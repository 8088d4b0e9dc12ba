"""What every connector returns, and the errors it raises."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import polars as pl

from models.period import BillingPeriod

__all__ = ["QUARANTINE_SCHEMA", "BillingPeriod", "LoadResult", "SourceError", "customer_salt", "find_files"]

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


def find_files(source: str, path: str) -> list[Path]:
    """Every file a folder (searched recursively), a glob or a file names; the caller filters by suffix."""
    root = Path(path)
    if root.is_dir():
        return sorted(p for p in root.rglob("*") if p.is_file())
    if glob.has_magic(path):
        return sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file())
    if root.is_file():
        return [root]
    raise SourceError(source, path, "no such file or folder", "set `path` to a folder or a glob")


def customer_salt(source: str, needed: bool, salt_env: str | None, store_raw: bool) -> bytes | None:
    """The customer-hashing salt from its environment variable (its value is never shown)."""
    if not needed or (store_raw and not salt_env):
        return None
    salt = os.environ.get(salt_env or "", "")
    if not salt:
        raise SourceError(
            source,
            f"environment variable {salt_env}",
            "is not set or empty: customer ids can't be hashed",
            "set it to a long random secret (the same one every run, so pseudonyms stay stable)",
        )
    return salt.encode("utf-8")
