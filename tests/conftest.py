"""Shared fixtures: a real PostgreSQL server for the session, warehouses on both engines."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.warehouse import Warehouse
from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def duckdb_warehouse(tmp_path: Path) -> Warehouse:
    wh = Warehouse(url=f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    wh.ensure_schema()
    return wh


@pytest.fixture
def postgres_warehouse(postgres: PostgresServer) -> Warehouse:
    wh = Warehouse(url=postgres.create_database(f"cogs_{uuid.uuid4().hex[:8]}"))
    wh.ensure_schema()
    return wh


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest) -> Warehouse:
    """The same test on the embedded DuckDB file and on a real PostgreSQL server."""
    name = "duckdb_warehouse" if request.param == "duckdb" else "postgres_warehouse"
    return request.getfixturevalue(name)
