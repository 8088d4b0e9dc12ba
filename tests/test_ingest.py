"""Streamed loads: every batch lands in one transaction, or none does."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest

from connectors import MODULES
from connectors.base import BillingPeriod, LoadResult, SourceError
from models.config import parse_config
from pipelines.ingest import _in_worker, ingest
from pipelines.warehouse import Warehouse, WarehouseError

START = datetime(2026, 10, 1, tzinfo=UTC)
closed: list[bool] = []  # one entry each time the fake connector's generator finished or was closed


def focus_batch(costs: list[str], currency: str = "USD") -> pl.DataFrame:
    n = len(costs)
    money = [Decimal(c) for c in costs]
    return pl.DataFrame(
        {
            "BilledCost": money,
            "EffectiveCost": money,
            "ListCost": money,
            "ContractedCost": money,
            "BillingAccountId": ["acct"] * n,
            "BillingCurrency": [currency] * n,
            "BillingPeriodStart": [START] * n,
            "BillingPeriodEnd": [datetime(2026, 11, 1, tzinfo=UTC)] * n,
            "ChargePeriodStart": [START] * n,
            "ChargePeriodEnd": [datetime(2026, 10, 1, 1, tzinfo=UTC)] * n,
            "ChargeCategory": ["Usage"] * n,
            "InvoiceIssuerName": ["X"] * n,
            "ProviderName": ["X"] * n,
            "PublisherName": ["X"] * n,
            "ServiceCategory": ["Compute"] * n,
            "ServiceName": ["VMs"] * n,
        }
    )


@pytest.fixture
def streaming_connector(monkeypatch: pytest.MonkeyPatch) -> list[LoadResult | Exception]:
    """A fake connector module, registered as type focus_file, that yields the scripted batches."""
    script: list[LoadResult | Exception] = []
    closed.clear()

    def load_batches(source: object, period: BillingPeriod) -> Iterator[LoadResult]:
        try:
            for item in script:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            closed.append(True)  # the connector's clean-up ran (temporary copies of source files)

    module = types.ModuleType("fake_streaming")
    module.load_batches = load_batches  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_streaming", module)
    monkeypatch.setitem(MODULES, "focus_file", "fake_streaming")
    return script


CONFIG = parse_config("sources: [{name: cloud, type: focus_file, path: /unused}]")


def totals(wh: Warehouse) -> tuple[object, ...]:
    return wh.read('SELECT COUNT(*) AS n, SUM("BilledCost") AS billed FROM focus_costs').row(0)


def test_batches_are_numbered_and_totalled_across_the_stream(
    warehouse: Warehouse, streaming_connector: list[LoadResult | Exception]
) -> None:
    streaming_connector += [
        LoadResult(focus_batch(["1.10", "2.20"]), files=["a"], source_total=Decimal("3.30")),
        LoadResult(focus_batch(["0.000000000001"]), files=["b"], source_total=Decimal("0.000000000001")),
    ]
    summary = ingest(warehouse, CONFIG, "cloud", "2026-10")
    assert (summary.rows, summary.files, summary.source_total) == (3, 2, Decimal("3.300000000001"))
    ids = warehouse.read("SELECT x_charge_id FROM focus_costs ORDER BY x_charge_id")["x_charge_id"].to_list()
    assert ids == ["cloud:2026-10:00000000", "cloud:2026-10:00000001", "cloud:2026-10:00000002"]
    recon = warehouse.read("SELECT difference FROM v_reconciliation")
    assert recon["difference"].to_list() == [0]


def test_a_failing_batch_leaves_the_previous_load_untouched(
    warehouse: Warehouse, streaming_connector: list[LoadResult | Exception]
) -> None:
    streaming_connector.append(LoadResult(focus_batch(["5"]), source_total=Decimal(5)))
    ingest(warehouse, CONFIG, "cloud", "2026-10")
    streaming_connector[:] = [
        LoadResult(focus_batch(["7", "8"]), source_total=Decimal(15)),
        SourceError("cloud", "part-00002.parquet", "not a Parquet file"),
    ]
    with pytest.raises(SourceError, match=r"part-00002\.parquet: not a Parquet file"):
        ingest(warehouse, CONFIG, "cloud", "2026-10")
    assert totals(warehouse) == (1, Decimal(5))
    assert warehouse.read("SELECT COUNT(*) AS n FROM ingest_batches")["n"][0] == 1


def test_mixed_currencies_across_batches_are_refused(
    warehouse: Warehouse, streaming_connector: list[LoadResult | Exception]
) -> None:
    streaming_connector += [LoadResult(focus_batch(["1"])), LoadResult(focus_batch(["1"], currency="EUR"))]
    with pytest.raises(SourceError, match=r"mixed billing currencies in one period: \['EUR', 'USD'\]"):
        ingest(warehouse, CONFIG, "cloud", "2026-10")
    assert totals(warehouse) == (0, None)


def test_too_many_quarantined_rows_fail_the_load(
    warehouse: Warehouse, streaming_connector: list[LoadResult | Exception]
) -> None:
    bad = pl.DataFrame({"file": ["f.csv"] * 2, "line": ["7", "9"], "reason": ["BilledCost 'n/a' is not a decimal"] * 2})
    streaming_connector.append(LoadResult(focus_batch(["1"] * 10), quarantine=bad))
    with pytest.raises(SourceError, match=r"f.csv: 2 of 12 rows could not be parsed .*line 7: BilledCost 'n/a'"):
        ingest(warehouse, CONFIG, "cloud", "2026-10")
    assert totals(warehouse) == (0, None)


def test_a_failing_insert_stops_the_mapping_and_rolls_back(
    warehouse: Warehouse, streaming_connector: list[LoadResult | Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are mapped in a worker while the previous one is inserted: a refused insert stops the worker,
    the connector is closed and the previous load stays."""
    streaming_connector.append(LoadResult(focus_batch(["5"]), source_total=Decimal(5)))
    ingest(warehouse, CONFIG, "cloud", "2026-10")
    streaming_connector[:] = [LoadResult(focus_batch([str(n)]), source_total=Decimal(n)) for n in range(1, 50)]
    inserted: list[int] = []
    real_insert = Warehouse.insert

    def insert_twice(self: Warehouse, table: str, frame: pl.DataFrame, conn: object) -> int:
        if len(inserted) == 2:
            raise WarehouseError("disk full")
        inserted.append(frame.height)
        return real_insert(self, table, frame, conn)  # type: ignore[arg-type]

    monkeypatch.setattr(Warehouse, "insert", insert_twice)
    closed.clear()
    with pytest.raises(WarehouseError, match="disk full"):
        ingest(warehouse, CONFIG, "cloud", "2026-10")
    assert closed == [True]  # stopped early and closed, not run to the end of the 49 batches
    monkeypatch.undo()
    assert totals(warehouse) == (1, Decimal(5))


def test_in_worker_keeps_order_and_raises_the_workers_error() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise ValueError("bad batch")

    got: list[int] = []
    with pytest.raises(ValueError, match="bad batch"):
        for item in _in_worker(items):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    assert list(_in_worker(lambda: iter(range(3)), ahead=2)) == [0, 1, 2]
