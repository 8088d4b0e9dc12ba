from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest

from models.usage import INFERENCE_USAGE_SCHEMA, USAGE_MEASURES
from pipelines.warehouse import Warehouse, WarehouseError


def usage_rows(source: str, n: int, feature: str = "chat") -> pl.DataFrame:
    hour = datetime(2026, 10, 1, tzinfo=UTC)
    return pl.DataFrame(
        [
            {
                "hour": hour,
                "source": source,
                "deployment": "d",
                "provider": "openai",
                "model": "m",
                "feature": feature,
                "environment": "production",
                "requests": i,
                "succeeded": i,
                "failed": 0,
                "retried": 0,
                "accepted": 0,
                "useful_outputs": i,
                "input_tokens": 10 * i,
                "output_tokens": i,
                "cached_input_tokens": 0,
                "gpu_seconds": Decimal("1.5"),
                "billing_period": "2026-10",
                "batch_id": "b1",
            }
            for i in range(1, n + 1)
        ],
        schema=INFERENCE_USAGE_SCHEMA,
    ).with_columns(pl.col(m).fill_null(0) for m in USAGE_MEASURES)


def test_replace_swaps_only_the_partition(warehouse: Warehouse) -> None:
    where = {"source": "otel", "billing_period": "2026-10"}
    assert warehouse.replace("inference_usage", where, usage_rows("otel", 3)) == 3
    warehouse.replace("inference_usage", {"source": "other", "billing_period": "2026-10"}, usage_rows("other", 2))
    warehouse.replace("inference_usage", where, usage_rows("otel", 5, feature="search"))
    got = warehouse.read(
        "SELECT source, feature, COUNT(*) AS n, CAST(SUM(requests) AS BIGINT) AS r, SUM(gpu_seconds) AS g "
        "FROM inference_usage "
        "GROUP BY source, feature ORDER BY source"
    )
    assert got.rows() == [("otel", "search", 5, 15, Decimal("7.500000")), ("other", "chat", 2, 3, Decimal("3.000000"))]


def test_failed_replace_keeps_previous_rows(warehouse: Warehouse) -> None:
    where = {"source": "otel", "billing_period": "2026-10"}
    warehouse.replace("inference_usage", where, usage_rows("otel", 3))
    broken = usage_rows("otel", 2).with_columns(feature=pl.lit(None, pl.String))  # feature is NOT NULL
    with pytest.raises(WarehouseError, match=r"loading 2 rows into inference_usage failed, nothing changed: .*feature"):
        warehouse.replace("inference_usage", where, broken)
    assert warehouse.read("SELECT SUM(requests) AS r FROM inference_usage")["r"][0] == 6


def test_read_keeps_types_and_timezone(warehouse: Warehouse) -> None:
    warehouse.replace("inference_usage", {"source": "otel", "billing_period": "2026-10"}, usage_rows("otel", 1))
    frame = warehouse.read("SELECT hour, gpu_seconds FROM inference_usage WHERE source = :s", s="otel")
    assert frame["hour"][0] == datetime(2026, 10, 1, tzinfo=UTC)
    assert frame["gpu_seconds"][0] == Decimal("1.5")
