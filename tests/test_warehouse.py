from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

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
    empty = warehouse.read("SELECT hour, gpu_seconds, feature FROM inference_usage WHERE source = :s", s="none")
    assert empty.height == 0
    assert [type(t) for t in empty.schema.values()] == [pl.Datetime, pl.Decimal, pl.String]


def setting(conn: object, name: str) -> object:
    return conn.connection.driver_connection.execute(f"SELECT current_setting('{name}')").fetchone()[0]  # type: ignore[attr-defined]


def memory_limit(conn: object) -> str:
    return str(setting(conn, "memory_limit"))


def test_a_load_caps_duckdbs_memory_only_while_it_runs(tmp_path: Path) -> None:
    wh = Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}", load_memory_limit="512MB", load_threads=1)
    wh.ensure_schema()
    with wh.engine.connect() as other:  # the same DuckDB instance: the setting is global to it
        default, threads = memory_limit(other), setting(other, "threads")
        with wh.load_transaction() as conn:
            assert memory_limit(conn) == memory_limit(other) == "488.2 MiB"  # DuckDB shows 512 MB in MiB
            assert setting(conn, "threads") == 1
            wh.replace("inference_usage", {"source": "otel", "billing_period": "2026-10"}, usage_rows("otel", 1), conn)
        assert memory_limit(other) == default != "488.2 MiB"
        assert setting(other, "threads") == threads
    url_wins = Warehouse(url=f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=256MB", load_memory_limit="512MB")
    with url_wins.load_transaction() as conn:
        assert memory_limit(conn) == "244.1 MiB"


def test_a_load_transaction_is_all_or_nothing(warehouse: Warehouse) -> None:
    where = {"source": "otel", "billing_period": "2026-10"}
    warehouse.replace("inference_usage", where, usage_rows("otel", 3))
    with pytest.raises(WarehouseError), warehouse.load_transaction() as conn:
        warehouse.delete("inference_usage", where, conn)
        warehouse.insert("inference_usage", usage_rows("otel", 2), conn)
        warehouse.insert("inference_usage", usage_rows("otel", 1).with_columns(feature=pl.lit(None, pl.String)), conn)
    assert warehouse.read("SELECT SUM(requests) AS r FROM inference_usage")["r"][0] == 6
