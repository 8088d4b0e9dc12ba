"""The warehouse resource: any SQLAlchemy URL, DuckDB file by default.

Writes replace a whole partition in one transaction (readers never see half of one) and go through
each engine's bulk path: Arrow for DuckDB, ``COPY ... FROM STDIN`` for PostgreSQL.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import sqlalchemy as sa

import sql
from models.config import DEFAULT_WAREHOUSE_URL

_PARAM = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


@cache
def _engine(url: str) -> sa.Engine:
    if url.startswith("duckdb:///") and not url.startswith("duckdb:///:memory:"):
        Path(url.removeprefix("duckdb:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool if url.startswith("duckdb") else sa.pool.QueuePool)
    if engine.dialect.name == "postgresql":
        sa.event.listen(engine, "connect", _json_as_text)
    return engine


def _json_as_text(dbapi_connection: Any, _record: object) -> None:
    """Read JSON columns (Tags, drivers, ...) as their text, as DuckDB does, not as Python dicts."""
    from psycopg.types.string import TextLoader

    for name in ("json", "jsonb"):
        dbapi_connection.adapters.register_loader(name, TextLoader)


class WarehouseError(RuntimeError):
    """A write was refused by the database; the transaction was rolled back and nothing changed."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# PostgreSQL type OIDs (pg_type.dat) → polars, for results without rows, whose types can't be inferred.
_PG_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(), 20: pl.Int64(), 21: pl.Int64(), 23: pl.Int64(), 700: pl.Float64(), 701: pl.Float64(),
    1082: pl.Date(), 1114: pl.Datetime("us"), 1184: pl.Datetime("us", "UTC"),
}  # fmt: skip


def _pg_schema(description: Any) -> dict[str, pl.DataType]:
    """Column types of an empty result from its cursor description (NUMERIC keeps precision and scale)."""
    schema: dict[str, pl.DataType] = {}
    for column in description or []:
        if column.type_code == 1700:  # numeric
            schema[column.name] = pl.Decimal(column.precision or 38, column.scale or 0)
        else:  # text, varchar and JSON (read as text) included
            schema[column.name] = _PG_TYPES.get(column.type_code, pl.String())
    return schema


class Warehouse(dg.ConfigurableResource):
    """Tables and views from ``sql/``; partition replace; polars frames in and out."""

    url: str = DEFAULT_WAREHOUSE_URL
    # DuckDB's memory cap while a streamed load's transaction is open: its default is 80 % of RAM, and an
    # uncommitted load keeps its inserted blocks cached up to it. A low cap evicts blocks already written to the
    # file and spills some of the row groups being built to its temporary directory (tens of MiB at 64MB): 1M CUR
    # rows peak ~100 MiB lower than with 512MB for ~1 more CPU second (benchmarks/README.md, CUR section).
    # "" keeps DuckDB's own; a memory_limit in the URL
    # (``duckdb:///w.duckdb?memory_limit=4GB``) applies to every connection and wins.
    load_memory_limit: str = "64MB"
    # DuckDB's threads while a load inserts: a streamed batch (25k rows) is less than one of its row groups,
    # so more threads only add overhead (1 thread: about a quarter less CPU for the same insert) while the
    # next batch is mapped on another core; 0 keeps DuckDB's own (one per core). A threads in the URL wins.
    load_threads: int = 1

    @property
    def engine(self) -> sa.Engine:
        return _engine(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def load_transaction(self) -> Iterator[sa.Connection]:
        """A transaction for a large load: all or nothing, as ``transaction``; on DuckDB with the load settings."""
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            settings = self._load_settings()
            for name, value in settings.items():  # global to the database instance, closed with this connection
                raw.execute(f"SET {name} = {value}")  # type: ignore[union-attr]
            try:
                with conn.begin():
                    yield conn
            finally:
                for name in settings:  # for any other connection sharing the instance
                    raw.execute(f"RESET {name}")  # type: ignore[union-attr]

    def _load_settings(self) -> dict[str, str]:
        if self.dialect != "duckdb":
            return {}
        in_url = sa.make_url(self.url).query
        settings = {}
        if self.load_memory_limit and "memory_limit" not in in_url:
            settings["memory_limit"] = "'" + self.load_memory_limit.replace("'", "") + "'"
        if self.load_threads > 0 and "threads" not in in_url:
            settings["threads"] = str(int(self.load_threads))
        return settings

    def ensure_schema(self) -> None:
        """Create the tables (``sql/ddl``) and (re)create the analyst views (``sql/views``).

        A table made by an older version gets the columns this version added (nullable: its rows have
        none; the next load of a partition fills them), so upgrading never needs a rebuilt warehouse.
        """
        with self.transaction() as conn:
            self._add_missing_columns(conn, self._run_files(conn, "ddl"))
            self._run_files(conn, "views")

    @staticmethod
    def _run_files(conn: sa.Connection, folder: str) -> list[str]:
        """Execute every statement of ``sql/<folder>``, in order; returns them."""
        statements = [s for name in sql.files(folder) for s in sql.statements(sql.read(name))]
        for statement in statements:
            conn.exec_driver_sql(statement)
        return statements

    def _add_missing_columns(self, conn: sa.Connection, ddl: list[str]) -> None:
        present: dict[str, set[str]] = {}
        query = "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        for table, column in conn.execute(sa.text(query)):
            present.setdefault(table, set()).add(column)
        dialect = "postgres" if self.dialect == "postgresql" else "duckdb"
        for statement in ddl:
            created = sql.created_columns(statement, dialect)
            if created is None:
                continue
            table, columns = created
            for column, kind in columns:
                if column not in present.get(table, set()):
                    conn.exec_driver_sql(f'ALTER TABLE {table} ADD COLUMN "{column}" {kind}')

    def execute(self, statement: str, conn: sa.Connection | None = None, **params: Any) -> None:
        if conn is None:
            with self.transaction() as own:
                own.execute(sa.text(statement), params)
        else:
            conn.execute(sa.text(statement), params)

    def read(self, query: str, **params: Any) -> pl.DataFrame:
        """Run a query (``:name`` parameters) and return a polars frame with the engine's types."""
        with self.engine.connect() as conn:
            return self._read(conn, query, params)

    def _read(self, conn: sa.Connection, query: str, params: Mapping[str, Any]) -> pl.DataFrame:
        if self.dialect == "duckdb":
            raw = conn.connection.driver_connection
            table = raw.sql(_PARAM.sub(r"$\1", query), params=dict(params)).to_arrow_table()  # type: ignore[union-attr]
            frame = pl.from_arrow(table)
        else:
            result = conn.execute(sa.text(query), dict(params))
            description = result.cursor.description  # gone once the rows are read
            rows = [tuple(r) for r in result]
            schema = list(result.keys()) if rows else _pg_schema(description)  # with rows, types come from them
            frame = pl.DataFrame(rows, schema=schema, orient="row", infer_schema_length=None)
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(
            pl.col(c).dt.convert_time_zone("UTC")
            for c, t in frame.schema.items()
            if isinstance(t, pl.Datetime) and t.time_zone
        )

    def replace(
        self, table: str, where: Mapping[str, str], frame: pl.DataFrame, conn: sa.Connection | None = None
    ) -> int:
        """Delete the partition ``where`` and insert ``frame`` in one transaction; returns rows written."""
        if conn is None:
            with self.transaction() as own:
                return self.replace(table, where, frame, own)
        self.delete(table, where, conn)
        return self.insert(table, frame, conn)

    def delete(self, table: str, where: Mapping[str, str], conn: sa.Connection) -> None:
        condition = " AND ".join(f"{_quote(k)} = :{k}" for k in where) or "TRUE"
        conn.execute(sa.text(f"DELETE FROM {table} WHERE {condition}"), dict(where))

    def insert(self, table: str, frame: pl.DataFrame, conn: sa.Connection) -> int:
        """Bulk-insert ``frame`` inside the caller's transaction (e.g. one batch of a streamed load)."""
        if frame.height:
            try:
                self._bulk_insert(conn, table, frame)
            except Exception as exc:  # the driver's own error type differs per engine
                reason = str(exc).strip().splitlines()[0]
                raise WarehouseError(
                    f"loading {frame.height} rows into {table} failed, nothing changed: {reason}"
                ) from exc
        return frame.height

    def _bulk_insert(self, conn: sa.Connection, table: str, frame: pl.DataFrame) -> None:
        columns = ", ".join(_quote(c) for c in frame.columns)
        raw = conn.connection.driver_connection
        if self.dialect == "duckdb":
            # DuckDB scans the local Arrow table by its name (a replacement scan): unlike a registered view, nothing
            # keeps the batch referenced after this call, so a streamed load's memory does not grow with the month.
            # string_view columns: polars' own layout, no copy of every string (DuckDB reads them as VARCHAR).
            _cogs_load = frame.to_arrow(compat_level=pl.CompatLevel.newest())  # read by its name in the SQL below
            raw.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _cogs_load")  # type: ignore[union-attr]
        elif self.dialect == "postgresql":
            buffer = io.BytesIO()
            frame.write_csv(buffer, include_header=False, null_value=r"\N", datetime_format="%Y-%m-%dT%H:%M:%S%.f%z")
            with raw.cursor() as cur:  # type: ignore[union-attr]
                copy_sql = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
                with cur.copy(copy_sql) as copy:
                    copy.write(buffer.getvalue())
        else:  # any other SQLAlchemy dialect: a portable executemany
            target = sa.table(table, *(sa.column(c) for c in frame.columns))
            conn.execute(sa.insert(target), frame.to_dicts())

    def run_sql_file(self, name: str, conn: sa.Connection | None = None, **params: Any) -> None:
        """Run every statement of ``sql/<name>`` with ``:name`` parameters, in one transaction."""
        if conn is None:
            with self.transaction() as own:
                return self.run_sql_file(name, own, **params)
        for statement in sql.statements(sql.read(name)):
            used = {k: v for k, v in params.items() if f":{k}" in statement}
            conn.execute(sa.text(statement), used)
        return None
