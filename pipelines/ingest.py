"""Load one source's billing period into the warehouse: connector → checks → one-transaction replace."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl

from connectors import connector
from connectors.base import BillingPeriod, LoadResult, SourceError
from models.config import CogsConfig, OtelGenAITelemetry
from models.focus import CHARGE_CATEGORIES, MONEY, conform, null_violations
from models.usage import INFERENCE_USAGE_SCHEMA
from pipelines.warehouse import Warehouse


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


def _check_quarantine(name: str, result: LoadResult, rows: int, config: CogsConfig) -> None:
    bad = result.quarantine.height
    if bad and bad > config.ingest.max_quarantined_share * max(rows + bad, 1):
        first = result.quarantine.row(0, named=True)
        raise SourceError(
            name,
            str(first["file"]),
            f"{bad} of {rows + bad} rows could not be parsed (more than "
            f"{config.ingest.max_quarantined_share:.1%}); first: line {first['line']}: {first['reason']}",
            "fix the export or raise ingest.max_quarantined_share; the warehouse keeps the previous load",
        )


def _focus_rows(name: str, source_type: str, period: str, batch_id: str, frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.with_columns(
        x_source=pl.lit(name),
        x_source_type=pl.lit(source_type),
        x_billing_period=pl.lit(period),
        x_batch_id=pl.lit(batch_id),
        x_charge_id=pl.format(
            "{}:{}:{}", pl.lit(name), pl.lit(period), pl.int_range(pl.len()).cast(pl.String).str.zfill(7)
        ),
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
    currencies = rows["BillingCurrency"].unique().to_list()
    if len(currencies) > 1:
        raise SourceError(name, "mapped rows", f"mixed billing currencies in one period: {sorted(currencies)}")
    return rows


def _usage_rows(name: str, period: str, batch_id: str, frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.with_columns(source=pl.lit(name), billing_period=pl.lit(period), batch_id=pl.lit(batch_id))
    missing = [c for c in INFERENCE_USAGE_SCHEMA if c not in frame.columns]
    if missing:
        raise SourceError(name, "telemetry rows", f"missing inference_usage column(s): {missing}")
    return frame.select(pl.col(c).cast(t) for c, t in INFERENCE_USAGE_SCHEMA.items())


def ingest(warehouse: Warehouse, config: CogsConfig, name: str, period_key: str) -> IngestSummary:
    """Load source/telemetry ``name`` for ``period_key``; the warehouse keeps its previous state on error."""
    period = BillingPeriod(period_key)
    batch_id = new_batch_id(name, period_key)
    sources = {s.name: s for s in [*config.sources, *config.telemetry]}
    source = sources[name]
    module = connector(source.type)
    if isinstance(source, OtelGenAITelemetry):
        useful = {f: c.useful_output for f, c in config.features.items()}
        result: LoadResult = module.load(source, period, useful_output=useful)
        rows = _usage_rows(name, period_key, batch_id, result.frame)
        table, where = "inference_usage", {"source": name, "billing_period": period_key}
        billed = None
    else:
        result = module.load(source, period)
        rows = _focus_rows(name, source.type, period_key, batch_id, result.frame)
        table, where = "focus_costs", {"x_source": name, "x_billing_period": period_key}
        billed = rows["BilledCost"].sum() if rows.height else Decimal(0)
    _check_quarantine(name, result, rows.height, config)
    quarantine = result.quarantine.with_columns(
        batch_id=pl.lit(batch_id), source=pl.lit(name), billing_period=pl.lit(period_key)
    ).select("batch_id", "source", "billing_period", "file", "line", "reason")
    batch = pl.DataFrame(
        [
            {
                "batch_id": batch_id,
                "source": name,
                "source_type": source.type,
                "billing_period": period_key,
                "loaded_at": datetime.now(UTC),
                "rows_loaded": rows.height,
                "rows_quarantined": quarantine.height,
                "files": len(result.files),
                "source_total": result.source_total,
                "loaded_billed_cost": billed,
                "repairs": json.dumps(result.repairs, sort_keys=True),
            }
        ],
        schema_overrides={"source_total": MONEY, "loaded_billed_cost": MONEY},
    )
    with warehouse.transaction() as conn:
        warehouse.replace(table, where, rows, conn)
        warehouse.replace("ingest_quarantine", {"source": name, "billing_period": period_key}, quarantine, conn)
        warehouse.replace("ingest_batches", {"batch_id": batch_id}, batch, conn)
    return IngestSummary(
        source=name,
        billing_period=period_key,
        batch_id=batch_id,
        rows=rows.height,
        quarantined=quarantine.height,
        files=len(result.files),
        source_total=result.source_total,
        loaded_billed_cost=billed,
        repairs=result.repairs,
        stats=result.stats,
    )
