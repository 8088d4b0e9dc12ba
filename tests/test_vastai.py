"""Vast.ai charges connector against a local server answering like ``GET /api/v0/charges/``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest

from conformance.gpu_answers import DAY_SECONDS as DAY
from conformance.gpu_answers import VastaiCharges, vastai_charges
from connectors import connector, vastai
from connectors.base import BillingPeriod, SourceError
from connectors.vastai import Page, days, map_pages
from models.config import VastAiSource, parse_config
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse
from tests.fixtures.gpu_clouds.api_server import ApiServer, Reply, Request, malformed, rate_limited, server_error

KEY = "9f2c4e1a7b3d5f60c8e2a4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a6c8e0b2d4f6"
PERIOD = BillingPeriod("2025-06")
ANSWER = VastaiCharges(PERIOD)
ts, charge, item = ANSWER.ts, ANSWER.charge, ANSWER.item

# Day of June → the contracts charged that day, as the API returns them: the conformance case's two days
# (an instance with GPU, storage and bandwidth items; a volume whose amount is a string; a serverless worker
# whose items leave $0.0001 unexplained; an instance still running after day 2), and the first instance
# charged again on day 2.
CASE = vastai_charges(PERIOD)
CHARGES: dict[int, list[dict]] = {1: CASE[1], 2: [ANSWER.serving_instance(2), *CASE[2]]}
TOTAL = Decimal("23.9697")


def encode(offset: int) -> str:
    return base64.b64encode(json.dumps({"values": {"offset": offset}}).encode()).decode()


def route(request: Request) -> Reply:
    if request.path != "/api/v0/charges/":
        return Reply.json({"success": False, "error": "not_found", "msg": "no such endpoint"}, 404)
    filters = json.loads(request.one("select_filters") or "{}")
    if "day" not in filters:
        return Reply.json({"success": False, "error": "invalid_args", "msg": "select_filters.day is required"}, 400)
    gte, lte = filters["day"]["gte"], filters["day"]["lte"]
    kinds = filters.get("type", {}).get("in")
    selected = [
        c for day, cs in sorted(CHARGES.items()) for c in cs
        if gte <= ts(day) <= lte and (kinds is None or c["type"] in kinds)
    ]  # fmt: skip
    limit = min(int(request.one("limit") or 20), 500)
    token = request.one("after_token")
    offset = json.loads(base64.b64decode(token))["values"]["offset"] if token else 0
    page = selected[offset : offset + limit]
    more = offset + limit < len(selected)
    return Reply.json(
        {
            "success": True,
            "count": len(page),
            "total": len(selected),
            "next_token": encode(offset + limit) if more else None,
            "results": page,
        }
    )


@pytest.fixture
def server() -> Iterator[ApiServer]:
    unauthorized = Reply.json({"success": False, "error": "invalid_api_key", "msg": "Invalid API key"}, 401)
    with ApiServer(route, token=KEY, unauthorized=unauthorized) as srv:
        yield srv


@pytest.fixture
def source(server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> VastAiSource:
    monkeypatch.setenv("VAST_API_KEY", KEY)
    return VastAiSource(name="vast", type="vastai", base_url=server.base_url, page_limit=2, max_retries=2)


def test_month_loads_every_page_with_exact_totals(source: VastAiSource, server: ApiServer) -> None:
    result = vastai.load(source, PERIOD, sleep=lambda s: None)
    frame = result.frame
    # day 1: 3 items + a volume + a worker's gpu item and its unitemized cent fraction; day 2: 3 + 1 items
    assert frame.height == 10 and result.quarantine.height == 0
    assert result.source_total == TOTAL
    for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert frame[column].sum() == TOTAL
    assert result.repairs == {"amount_as_string": 1}
    assert result.stats == {"pages": 31, "results": 5, "results_with_unitemized_rest": 1}
    # 30 days, day 1 has three contracts at two per page: 31 requests, the second one with the cursor
    assert len(server.requests) == 31
    assert server.requests[1].one("after_token") == encode(2)


def test_requests_use_the_documented_day_filter(source: VastAiSource, server: ApiServer) -> None:
    vastai.load(source, PERIOD)
    first = server.requests[0]
    assert first.path == "/api/v0/charges/"
    assert first.query == {
        "select_filters": ['{"day":{"gte":1748736000,"lte":1748822399}}'],
        "latest_first": ["false"],
        "limit": ["2"],
        "format": ["table"],
    }
    last = server.requests[-1]
    assert json.loads(last.one("select_filters") or "") == {"day": {"gte": ts(30), "lte": ts(30) + DAY - 1}}


def test_rows_carry_contract_item_quantities_and_tags(source: VastAiSource) -> None:
    frame = vastai.load(source, PERIOD).frame
    gpu = frame.filter((pl.col("ResourceId") == "instance-12345678") & (pl.col("SkuId") == "instance-gpu")).sort(
        "ChargePeriodStart"
    )
    row = gpu.row(0, named=True)
    assert (row["ChargePeriodStart"], row["ChargePeriodEnd"]) == (
        datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 2, tzinfo=UTC)
    )  # fmt: skip
    assert (row["ConsumedQuantity"], row["ConsumedUnit"], row["PricingUnit"]) == (Decimal(24), "Hours", "Hours")
    assert (row["ListUnitPrice"], row["ContractedUnitPrice"]) == (Decimal("0.389"), Decimal("0.389"))
    assert row["ListUnitPrice"] * row["PricingQuantity"] == row["ListCost"] == Decimal("9.336")
    assert (row["ServiceName"], row["ServiceCategory"], row["ServiceSubcategory"]) == (
        "Vast.ai Instances", "Compute", "Containers"
    )  # fmt: skip
    assert (row["ResourceName"], row["ResourceType"], row["SkuMeter"]) == ("qwen-serving", "Instance", "GPU")
    assert json.loads(row["Tags"]) == {"label": "qwen-serving", "vastai/template_id": "101"}
    assert (row["x_source_file"], row["x_source_line"]) == (
        "GET /api/v0/charges/ day 2025-06-01",
        "page 1 result 1 item 1",
    )
    storage = frame.filter(pl.col("SkuId") == "instance-storage").row(0, named=True)
    assert (storage["ConsumedQuantity"], storage["ListUnitPrice"], storage["BilledCost"]) == (
        None,
        None,
        Decimal("0.24"),
    )
    volume = frame.filter(pl.col("ResourceId") == "volume-555").row(0, named=True)
    assert (volume["ServiceName"], volume["ServiceCategory"], volume["SkuId"]) == (
        "Vast.ai Volumes",
        "Storage",
        "volume",
    )
    assert volume["ChargeDescription"] == "Volume 555 Charges - 1 day" and volume["BilledCost"] == Decimal("0.48")
    worker = frame.filter(pl.col("ResourceId") == "instance-23456789").sort("SkuId")
    assert worker.select("SkuId", "BilledCost", "ServiceName").rows() == [
        ("instance-gpu", Decimal("1.556"), "Vast.ai Serverless"),
        ("instance-unitemized", Decimal("0.0001"), "Vast.ai Serverless"),
    ]
    assert json.loads(worker["Tags"][0]) == {
        "vastai/endpoint_id": "19392", "vastai/template_id": "207", "vastai/workergroup_id": "25355"
    }  # fmt: skip
    assert worker["ChargePeriodStart"][0] == datetime(2025, 6, 1, 8, tzinfo=UTC)
    late = frame.filter(pl.col("ResourceId") == "instance-34567890").row(0, named=True)
    assert (late["ChargePeriodStart"], late["ChargePeriodEnd"]) == (
        datetime(2025, 6, 2, 13, 30, tzinfo=UTC), datetime(2025, 6, 3, tzinfo=UTC)
    )  # fmt: skip
    assert (late["ConsumedQuantity"], late["ListUnitPrice"]) == (Decimal("10.5"), Decimal("0.25"))


def test_type_filter_is_sent_and_honoured(source: VastAiSource, server: ApiServer) -> None:
    volumes = source.model_copy(update={"charge_types": ["volume"]})
    result = vastai.load(volumes, PERIOD)
    assert json.loads(server.requests[0].one("select_filters") or "")["type"] == {"in": ["volume"]}
    assert result.frame["ResourceId"].to_list() == ["volume-555"] and result.source_total == Decimal("0.48")


def test_days_not_started_are_not_asked_for(source: VastAiSource, server: ApiServer) -> None:
    result = vastai.load(source, PERIOD, now=datetime(2025, 6, 2, 9, tzinfo=UTC))
    assert len(server.requests) == 3  # day 1 (two pages) and day 2
    assert result.source_total == TOTAL
    assert days(PERIOD, datetime(2025, 5, 1, tzinfo=UTC)) == []


def test_429_with_retry_after_then_500_then_success(source: VastAiSource, server: ApiServer) -> None:
    server.inject(rate_limited("4", {"detail": "API requests too frequent endpoint threshold=3.0"}), server_error())
    sleeps: list[float] = []
    result = vastai.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [4.0, 2.0] and len(server.requests) == 33
    assert result.frame["BilledCost"].sum() == TOTAL


def test_expired_key_401_names_provider_never_the_key(source: VastAiSource, monkeypatch: pytest.MonkeyPatch) -> None:
    expired = "0" * 64
    monkeypatch.setenv("VAST_API_KEY", expired)
    with pytest.raises(SourceError) as err:
        vastai.load(source, PERIOD, sleep=lambda s: None)
    message = str(err.value)
    assert message.startswith(
        f"source 'vast': GET {source.base_url}/api/v0/charges/: HTTP 401: credentials rejected by Vast.ai"
    )
    assert expired not in message and KEY not in message


def test_malformed_json_names_the_url(source: VastAiSource, server: ApiServer) -> None:
    server.inject(malformed('{"success": true, "results": [{"amount": 9.'))
    with pytest.raises(SourceError, match=r"/api/v0/charges/: response from Vast.ai is not valid JSON"):
        vastai.load(source, PERIOD)


def test_repeated_cursor_is_an_error(source: VastAiSource, server: ApiServer) -> None:
    server.route = lambda request: Reply.json({"success": True, "count": 0, "next_token": "abc", "results": []})
    with pytest.raises(SourceError, match=r"pagination cursor 'abc' repeated; stopping a loop"):
        vastai.load(source, PERIOD)


def test_success_false_is_an_error(source: VastAiSource, server: ApiServer) -> None:
    server.route = lambda request: Reply.json(
        {"success": False, "msg": "select_filters.day is required", "results": []}
    )
    with pytest.raises(SourceError, match=r"Vast.ai answered success=false: select_filters.day is required"):
        vastai.load(source, PERIOD)


# --- mapping edge cases on hand-written pages --------------------------------------------------


def test_bad_results_are_quarantined_and_stay_visible_in_the_total() -> None:
    source = VastAiSource(name="vast", type="vastai", billing_account_id="vast-user-311")
    day = datetime(2025, 6, 15, tzinfo=UTC)
    results = [
        charge(15, "instance-1", "abc", "broken", []),
        charge(
            15, "instance-2", Decimal("0.5"), "item without amount", [item(15, "gpu", None, "1.000 hours at $0.5/hour")]
        ),
        "not an object",
        charge(15, "instance-3", Decimal("1.23456789012345"), "no window", [], start=None, end=None),
        charge(15, "instance-4", Decimal("2"), "1.000 hours at $1.99/hour", [], start=ts(20), end=ts(21)),
    ]
    result = map_pages(source, PERIOD, [Page(day, 1, {"results": results, "next_token": None})])
    where = "GET /api/v0/charges/ day 2025-06-15"
    assert result.quarantine.rows() == [
        (where, "page 1 result 1", "result amount 'abc' is not a decimal number"),
        (where, "page 1 result 2", "item 1 amount null is not a decimal number"),
        (where, "page 1 result 3", "result is not a JSON object"),
    ]
    assert result.frame["BilledCost"].to_list() == [Decimal("1.234567890123"), Decimal(2)]
    assert set(result.frame["ChargePeriodStart"]) == {day}  # no window, or a window outside the day → the day
    assert result.frame["ListUnitPrice"].to_list() == [None, None]  # 1 × 1.99 ≠ 2: no unit price claimed
    assert result.frame["PricingQuantity"].to_list() == [None, Decimal(1)]
    assert set(result.frame["BillingAccountId"]) == {"vast-user-311"}
    assert result.repairs == {"amount_rounded_to_12_decimals": 1, "charge_window_outside_queried_day": 1}
    assert result.stats == {"pages": 1, "results": 5, "charges_without_start_end": 1, "unit_price_not_exact": 1}
    # the quarantined $0.50 stays in the provider total, so reconciliation shows it missing
    assert result.source_total == Decimal("0.5") + Decimal("1.23456789012345") + 2


def test_config_and_registry() -> None:
    config = parse_config("sources:\n  - {name: vast, type: vastai, charge_types: [instance]}\n")
    assert isinstance(config.sources[0], VastAiSource) and config.sources[0].page_limit == 100
    with pytest.raises(Exception, match="less than or equal to 100"):
        parse_config("sources:\n  - {name: vast, type: vastai, page_limit: 500}\n")
    assert connector("vastai") is vastai


def test_a_revised_day_replaces_the_old_one(
    server: ApiServer, monkeypatch: pytest.MonkeyPatch, duckdb_warehouse: Warehouse
) -> None:
    monkeypatch.setenv("VAST_API_KEY", KEY)
    config = parse_config(f"sources:\n  - {{name: vast, type: vastai, base_url: '{server.base_url}'}}\n")
    ingest(duckdb_warehouse, config, "vast", "2025-06")
    revised = charge(2, "instance-34567890", Decimal("2.5"), "Instance 34567890 Charges - 1 day",
                     [item(2, "gpu", Decimal("2.5"), "10.000 hours at $0.25/hour")])  # fmt: skip
    monkeypatch.setitem(CHARGES, 2, [CHARGES[2][0], revised])  # Vast.ai corrected day 2
    summary = ingest(duckdb_warehouse, config, "vast", "2025-06")
    assert summary.loaded_billed_cost == summary.source_total == TOTAL - Decimal("0.125")
    rows = duckdb_warehouse.read('SELECT "BilledCost" FROM focus_costs WHERE "ResourceId" = \'instance-34567890\'')[
        "BilledCost"
    ].to_list()
    assert rows == [Decimal("2.5")]
    assert duckdb_warehouse.read("SELECT difference FROM v_reconciliation").row(0) == (0,)
