"""Load one source's billing period into the warehouse: connector → checks → one-transaction replace."""

from __future__ import annotations

import inspect
import json
import queue
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any, TypeVar

import polars as pl

from connectors import connector
from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from models.config import CogsConfig
from models.focus import CHARGE_CATEGORIES, MONEY, conform, null_violations
from models.usage import INFERENCE_USAGE_SCHEMA
from pipelines.warehouse import Warehouse

T = TypeVar("T")
_DONE = object()  # the worker's last message: no more items


@dataclass(frozen=True)
class IngestSummary:
    source: str
    billing_period: str
    batch_id: str
    rows: int
    quarantined: int
    files: int
    source_total: Decimal | None
    loaded_billed_cost: Decimal | None
    repairs: dict[str, int]
    stats: dict[str, int]


def new_batch_id(source: str, period: str) -> str:
    return f"{source}-{period}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def _check_quarantine(name: str, quarantine: pl.DataFrame, rows: int, config: CogsConfig) -> None:
    bad = quarantine.height
    if bad and bad > config.ingest.max_quarantined_share * max(rows + bad, 1):
        first = quarantine.row(0, named=True)
        raise SourceError(
            name,
            str(first["file"]),
            f"{bad} of {rows + bad} rows could not be parsed (more than "
            f"{config.ingest.max_quarantined_share:.1%}); first: line {first['line']}: {first['reason']}",
            "fix the export or raise ingest.max_quarantined_share; the warehouse keeps the previous load",
        )


def _focus_rows(
    name: str, source_type: str, period: str, batch_id: str, frame: pl.DataFrame, offset: int
) -> pl.DataFrame:
    charge_number = (pl.int_range(pl.len()) + offset).cast(pl.String).str.zfill(8)
    frame = frame.with_columns(
        x_source=pl.lit(name),
        x_source_type=pl.lit(source_type),
        x_billing_period=pl.lit(period),
        x_batch_id=pl.lit(batch_id),
        x_charge_id=pl.format("{}:{}:{}", pl.lit(name), pl.lit(period), charge_number),
    )
    try:
        rows = conform(frame)
    except (ValueError, pl.exceptions.PolarsError) as exc:
        raise SourceError(name, "mapped rows", f"don't fit the FOCUS schema: {exc}") from exc
    nulls = null_violations(rows)
    if nulls:
        detail = ", ".join(f"{c} ({n} rows)" for c, n in nulls.items())
        raise SourceError(name, "mapped rows", f"NULL in mandatory FOCUS column(s): {detail}")
    categories = set(rows["ChargeCategory"].unique().to_list()) - set(CHARGE_CATEGORIES)
    if categories:
        raise SourceError(name, "mapped rows", f"ChargeCategory not in {CHARGE_CATEGORIES}: {sorted(categories)}")
    return rows


def _usage_rows(name: str, period: str, batch_id: str, frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.with_columns(source=pl.lit(name), billing_period=pl.lit(period), batch_id=pl.lit(batch_id))
    missing = [c for c in INFERENCE_USAGE_SCHEMA if c not in frame.columns]
    if missing:
        raise SourceError(name, "telemetry rows", f"missing inference_usage column(s): {missing}")
    return frame.select(pl.col(c).cast(t) for c, t in INFERENCE_USAGE_SCHEMA.items())


def _batches(module: ModuleType, source: object, period: BillingPeriod, **kwargs: object) -> Iterator[LoadResult]:
    """A connector that can stream yields batches (bounded memory); others return one result."""
    if hasattr(module, "load_batches"):
        yield from module.load_batches(source, period, **kwargs)
    else:
        yield module.load(source, period, **kwargs)


def _in_worker(items: Callable[[], Iterator[T]], ahead: int = 1) -> Iterator[T]:
    """Iterate ``items()`` in a worker thread, at most ``ahead`` items in front of the caller.

    Mapping a batch (polars) and inserting the previous one (the database) both release the GIL, so on
    several cores the load takes about the longer of the two instead of their sum; memory grows by ``ahead``
    batches. The worker's exception is raised here; if the caller stops early, the worker stops too and
    closes its generator (temporary copies of source files are removed).
    """
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def send(message: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = items()
        try:
            for item in iterator:
                if not send((False, item)):
                    return
            send((False, _DONE))
        except BaseException as exc:  # raised again in the caller's thread
            send((True, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="ingest-map", daemon=True)
    worker.start()
    try:
        while True:
            failed, item = handoff.get()
            if failed:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


@dataclass
class _Totals:
    rows: int = 0
    files: list[str] = field(default_factory=list)
    source_total: Decimal | None = Decimal(0)
    billed: Decimal = Decimal(0)
    currencies: set[str] = field(default_factory=set)
    quarantine: list[pl.DataFrame] = field(default_factory=list)
    repairs: Counter[str] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)

    def add(self, result: LoadResult, rows: pl.DataFrame) -> None:
        self.rows += rows.height
        self.files += result.files
        self.source_total = (
            None
            if self.source_total is None or result.source_total is None
            else self.source_total + result.source_total
        )
        self.quarantine.append(result.quarantine)
        self.repairs.update(result.repairs)
        self.stats.update(result.stats)
        if "BilledCost" in rows.columns:
            self.billed += rows["BilledCost"].sum() or Decimal(0)
            self.currencies |= set(rows["BillingCurrency"].unique().to_list())


def _connector_arguments(
    module: ModuleType, warehouse: Warehouse, config: CogsConfig, period: str
) -> dict[str, object]:
    """What a connector asks for beyond (source, period): feature definitions, or the month's telemetry."""
    wanted = inspect.signature(getattr(module, "load_batches", None) or module.load).parameters
    kwargs: dict[str, object] = {}
    if "useful_output" in wanted:
        kwargs["useful_output"] = {f: c.useful_output_rule for f, c in config.features.items()}
    if "usage" in wanted:  # reserved capacity: Used/Unused hours from the busy GPU-seconds of its deployments
        # Busy GPU-seconds measured by DCGM win over the GPU-seconds requests report for the same hour.
        kwargs["usage"] = warehouse.read(
            "SELECT hour, deployment, CASE WHEN SUM(gpu_seconds_busy) > 0 THEN SUM(gpu_seconds_busy)"
            " ELSE SUM(gpu_seconds) END AS gpu_seconds FROM inference_usage WHERE billing_period = :p"
            " GROUP BY hour, deployment",
            p=period,
        )
    return kwargs


def ingest(warehouse: Warehouse, config: CogsConfig, name: str, period_key: str) -> IngestSummary:
    """Load source/telemetry ``name`` for ``period_key`` in one transaction, streaming the connector's batches.

    On any error the transaction rolls back: the warehouse keeps the previous load of the partition.
    """
    period = BillingPeriod(period_key)
    batch_id = new_batch_id(name, period_key)
    source = {s.name: s for s in [*config.sources, *config.telemetry]}[name]
    module = connector(source.type)
    usage = any(t.name == name for t in config.telemetry)
    table, where = (
        ("inference_usage", {"source": name, "billing_period": period_key})
        if usage
        else ("focus_costs", {"x_source": name, "x_billing_period": period_key})
    )
    kwargs = _connector_arguments(module, warehouse, config, period_key)

    def mapped() -> Iterator[tuple[LoadResult, pl.DataFrame]]:
        offset = 0
        for result in _batches(module, source, period, **kwargs):
            if usage:
                rows = _usage_rows(name, period_key, batch_id, result.frame)
            else:
                rows = _focus_rows(name, source.type, period_key, batch_id, result.frame, offset=offset)
            offset += rows.height
            yield result, rows

    totals = _Totals()
    with warehouse.load_transaction() as conn:
        warehouse.delete(table, where, conn)
        # The next batch is mapped while this one is inserted; still one transaction: all or nothing.
        for result, rows in _in_worker(mapped):
            warehouse.insert(table, rows, conn)
            totals.add(result, rows)
        if len(totals.currencies) > 1:
            raise SourceError(
                name, "mapped rows", f"mixed billing currencies in one period: {sorted(totals.currencies)}"
            )
        quarantine = pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *totals.quarantine], how="vertical_relaxed")
        # Telemetry aggregates many records into one hourly row: the share is of the records read.
        read = totals.stats.get("records_read") or totals.stats.get("spans_read") or totals.rows
        _check_quarantine(name, quarantine, read, config)
        quarantine = quarantine.select(
            batch_id=pl.lit(batch_id),
            source=pl.lit(name),
            billing_period=pl.lit(period_key),
            file="file",
            line="line",
            reason="reason",
        )
        billed = None if usage else totals.billed
        source_total = totals.source_total if totals.source_total is not None and not usage else None
        batch = pl.DataFrame(
            [
                {
                    "batch_id": batch_id,
                    "source": name,
                    "source_type": source.type,
                    "billing_period": period_key,
                    "loaded_at": datetime.now(UTC),
                    "rows_loaded": totals.rows,
                    "rows_quarantined": quarantine.height,
                    "files": len(totals.files),
                    "source_total": source_total,
                    "loaded_billed_cost": billed,
                    "repairs": json.dumps(dict(totals.repairs), sort_keys=True),
                }
            ],
            schema_overrides={"source_total": MONEY, "loaded_billed_cost": MONEY},
        )
        warehouse.replace("ingest_quarantine", {"source": name, "billing_period": period_key}, quarantine, conn)
        warehouse.insert("ingest_batches", batch, conn)
    return IngestSummary(
        source=name,
        billing_period=period_key,
        batch_id=batch_id,
        rows=totals.rows,
        quarantined=quarantine.height,
        files=len(totals.files),
        source_total=source_total,
        loaded_billed_cost=billed,
        repairs=dict(totals.repairs),
        stats=dict(totals.stats),
    )
