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


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_warehouse_made_by_an_older_version_gets_the_new_columns(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if engine == "duckdb":
        url = f"duckdb:///{tmp_path / 'old.duckdb'}"
    else:
        url = request.getfixturevalue("postgres").create_database(f"cogs_old_{tmp_path.name[-8:].lower()}")
    old = Warehouse(url=url)
    # ingest_batches as it was before the FOCUS repairs were counted: no "repairs" column.
    old.execute(
        "CREATE TABLE ingest_batches (batch_id VARCHAR NOT NULL, source VARCHAR NOT NULL,"
        " source_type VARCHAR NOT NULL, billing_period VARCHAR NOT NULL, loaded_at TIMESTAMPTZ NOT NULL,"
        " rows_loaded BIGINT NOT NULL, rows_quarantined BIGINT NOT NULL, files BIGINT NOT NULL,"
        " source_total DECIMAL(38, 12), loaded_billed_cost DECIMAL(38, 12))"
    )
    old.execute(
        "INSERT INTO ingest_batches VALUES ('b1', 'aws', 'aws_cur2', '2026-10', :at, 3, 0, 1, 1.5, 1.5)",
        at=datetime(2026, 11, 2, tzinfo=UTC),
    )
    old.ensure_schema()
    old.ensure_schema()  # a second run adds nothing
    rows = old.read("SELECT batch_id, rows_loaded, repairs FROM ingest_batches")
    assert rows.rows() == [("b1", 3, None)]
    columns = old.read(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'ingest_batches' AND table_schema = current_schema()"
    )
    assert sorted(columns["column_name"].to_list()) == sorted(
        ["batch_id", "source", "source_type", "billing_period", "loaded_at", "rows_loaded", "rows_quarantined",
         "files", "source_total", "loaded_billed_cost", "repairs"]
    )  # fmt: skip
