"""OpenAI Costs API connector, against the demo's recorded pages served over real local HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import polars as pl
import pytest

from connectors import openai_costs
from connectors.base import BillingPeriod, SourceError
from connectors.http import JsonResponse
from connectors.openai_costs import LineItem, map_pages, parse_line_item
from models.config import OpenAICostsSource
from pipelines.demo import openai_costs as demo
from pipelines.demo.company import OPENAI_ORG, OPENAI_PROJECT, DemoMonth
from pipelines.demo.fixture_server import Failure, FixtureServer

KEY = "sk-admin-Lm7cQ2xYp4RfT9sVw1eKzzzz0000"
MONTH = "2025-06"
PERIOD = BillingPeriod(MONTH)


@pytest.fixture(scope="module")
def pages_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.write(DemoMonth(MONTH), tmp_path_factory.mktemp("demo"), seed=7)


@pytest.fixture
def server(pages_dir: Path) -> Iterator[FixtureServer]:
    with FixtureServer.from_pages(pages_dir, api_key=KEY) as srv:
        yield srv


@pytest.fixture
def source(server: FixtureServer, monkeypatch: pytest.MonkeyPatch) -> OpenAICostsSource:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", KEY)
    return OpenAICostsSource(name="openai", type="openai_costs", base_url=server.base_url, max_retries=3)


def recorded_total(pages_dir: Path) -> Decimal:
    """Sum of amount.value straight from the recorded JSON text, without the connector."""
    return sum(
        (r["amount"]["value"] for p in demo.read_pages(pages_dir) for b in p["data"] for r in b["results"]),
        Decimal(0),
    )


def test_demo_month_loads_every_result_with_exact_totals(source: OpenAICostsSource, pages_dir: Path) -> None:
    sleeps: list[float] = []
    result = openai_costs.load(source, PERIOD, sleep=sleeps.append)
    frame = result.frame
    # 30 days × 2 models × 3 line items (input, cached input, output), nothing quarantined or repaired.
    assert frame.height == 180 and result.quarantine.height == 0 and result.repairs == {}
    assert result.stats == {"pages": 5, "buckets": 30, "results": 180}
    assert result.source_total == Decimal("8786.868169") == recorded_total(pages_dir)
    for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert frame[column].sum() == Decimal("8786.868169")
    assert sleeps == []


def test_rows_carry_focus_values(source: OpenAICostsSource) -> None:
    frame = openai_costs.load(source, PERIOD).frame
    row = frame.filter(
        (pl.col("ChargeDescription") == "gpt-4.1-mini-2025-04-14, cached input")
        & (pl.col("ChargePeriodStart") == datetime(2025, 6, 17, tzinfo=UTC))
    ).row(0, named=True)
    assert row["ChargePeriodEnd"] == datetime(2025, 6, 18, tzinfo=UTC)
    assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == (PERIOD.start, PERIOD.end)
    assert (row["BillingAccountId"], row["SubAccountId"]) == (OPENAI_ORG, OPENAI_PROJECT)
    assert (row["BillingCurrency"], row["ProviderName"], row["ServiceName"]) == ("USD", "OpenAI", "OpenAI API")
    assert (row["ServiceCategory"], row["ServiceSubcategory"]) == ("AI and Machine Learning", "Generative AI")
    assert (row["ChargeCategory"], row["ChargeFrequency"]) == ("Usage", "Usage-Based")
    assert (row["SkuId"], row["SkuMeter"]) == ("gpt-4.1-mini-2025-04-14", "Cached Input Tokens")
    assert row["SkuPriceId"] == "gpt-4.1-mini-2025-04-14, cached input"
    assert json.loads(row["SkuPriceDetails"]) == {"x_Model": "gpt-4.1-mini-2025-04-14", "x_TokenType": "cached input"}
    assert (row["ConsumedUnit"], row["PricingUnit"]) == ("Tokens", "1000000 Tokens")
    # The exact price identity: cost = PricingQuantity (millions of tokens) × $0.10.
    assert row["BilledCost"] == row["PricingQuantity"] * Decimal("0.10")
    assert row["ConsumedQuantity"] == row["PricingQuantity"] * 1_000_000
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == row["PricingCurrencyListUnitPrice"] == Decimal("0.10")
    assert (row["PricingCurrency"], row["PricingCurrencyEffectiveCost"]) == ("USD", row["BilledCost"])
    assert (row["BillingAccountType"], row["SubAccountType"]) == ("Organization", "Project")
    assert (row["BillingAccountName"], row["SubAccountName"]) == ("Lumen Assist, Inc.", OPENAI_PROJECT)
    assert row["x_source_file"] == "/v1/organization/costs"
    assert row["x_source_line"] == "page 3 bucket 3 result 5"


def test_request_follows_pages_with_the_documented_query(source: OpenAICostsSource, server: FixtureServer) -> None:
    openai_costs.load(source, PERIOD)
    assert len(server.requests) == 5
    first = server.requests[0].query
    assert first == {
        "start_time": [str(int(PERIOD.start.timestamp()))],
        "end_time": [str(int(PERIOD.end.timestamp()))],
        "bucket_width": ["1d"],
        "group_by": ["project_id", "line_item"],
        "limit": ["31"],
    }
    cursors = [r.query.get("page", [None])[0] for r in server.requests]
    assert cursors[0] is None and len(set(cursors[1:])) == 4
    assert [demo.decode_cursor(c)[1] for c in cursors[1:]] == [
        int(datetime(2025, 6, d, tzinfo=UTC).timestamp()) for d in (8, 15, 22, 29)
    ]


def test_project_filter_is_sent_and_honoured(server: FixtureServer, source: OpenAICostsSource) -> None:
    other = source.model_copy(update={"project_ids": ["proj_other"]})
    result = openai_costs.load(other, PERIOD)
    assert server.requests[0].query["project_ids"] == ["proj_other"]
    assert result.frame.height == 0 and result.source_total == 0 and result.stats["buckets"] == 30


def test_429_with_retry_after_then_success(source: OpenAICostsSource, server: FixtureServer) -> None:
    server.inject(Failure.rate_limited(retry_after="3"))
    sleeps: list[float] = []
    result = openai_costs.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [3.0]
    assert len(server.requests) == 6 and result.frame.height == 180
    assert result.source_total == Decimal("8786.868169")


def test_500_once_then_success(source: OpenAICostsSource, server: FixtureServer) -> None:
    server.inject(Failure.server_error())
    sleeps: list[float] = []
    result = openai_costs.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [1.0] and result.frame.height == 180


def test_persistent_429_gives_up_after_max_retries(source: OpenAICostsSource, server: FixtureServer) -> None:
    server.inject(*[Failure.rate_limited("1")] * 4)
    sleeps: list[float] = []
    with pytest.raises(SourceError) as err:
        openai_costs.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [1.0, 1.0, 1.0]
    assert f"GET {server.base_url}/v1/organization/costs: HTTP 429 from OpenAI after 4 attempt(s)" in str(err.value)
    assert "Rate limit reached for requests (rate_limit_exceeded, requests)" in str(err.value)


def test_wrong_key_401_message_never_contains_the_key(
    source: OpenAICostsSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-admin-WRONGwrongWRONGwrong9876"
    monkeypatch.setenv("OPENAI_ADMIN_KEY", wrong)
    with pytest.raises(SourceError) as err:
        openai_costs.load(source, PERIOD, sleep=lambda s: None)
    message = str(err.value)
    assert message.startswith(
        f"source 'openai': GET {source.base_url}/v1/organization/costs: HTTP 401: credentials rejected by OpenAI: "
        "Incorrect API key provided: ***. You can find your API key at"
    )
    assert "check that the key in OPENAI_ADMIN_KEY is valid" in message
    for secret in (wrong, wrong[9:], "9876", KEY):
        assert secret not in message


def test_missing_key_env_var(source: OpenAICostsSource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_ADMIN_KEY")
    with pytest.raises(
        SourceError, match=r"^source 'openai': api_key_env: environment variable OPENAI_ADMIN_KEY is not set"
    ):
        openai_costs.load(source, PERIOD)


def test_malformed_json_error_names_the_url(source: OpenAICostsSource, server: FixtureServer) -> None:
    server.inject(Failure.malformed_json())
    with pytest.raises(SourceError) as err:
        openai_costs.load(source, PERIOD)
    assert str(err.value).startswith(
        f"source 'openai': GET {server.base_url}/v1/organization/costs: response from OpenAI is not valid JSON"
    )


def test_fixture_server_answers_like_openai(server: FixtureServer, pages_dir: Path) -> None:
    start, end = int(PERIOD.start.timestamp()), int(PERIOD.end.timestamp())
    auth = {"Authorization": f"Bearer {KEY}"}
    base = f"{server.base_url}/v1/organization/costs"
    # The recorded query gets the recorded page back, byte for byte.
    recorded_query = {"start_time": start, "end_time": end, "group_by": ["project_id", "line_item"]}
    first = httpx.get(base, params=recorded_query, headers=auth)
    assert first.text == (pages_dir / "page_001.json").read_text()
    assert first.headers["openai-organization"] == OPENAI_ORG
    # Without line_item grouping, a day's results merge into one per project, amounts summed exactly.
    merged = httpx.get(base, params={"start_time": start, "limit": 1, "group_by[]": "project_id"}, headers=auth)
    day = json.loads(merged.text, parse_float=Decimal)["data"][0]
    recorded = demo.read_pages(pages_dir)[0]["data"][0]["results"]
    assert [r["line_item"] for r in day["results"]] == [None]
    assert day["results"][0]["amount"]["value"] == sum(r["amount"]["value"] for r in recorded)
    missing = httpx.get(base, params={"end_time": end}, headers=auth)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "start_time"
    anonymous = httpx.get(base, params={"start_time": start})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "invalid_request_error"


def test_demo_generator_is_deterministic_and_priced_from_company(tmp_path: Path, pages_dir: Path) -> None:
    again = demo.write(DemoMonth(MONTH), tmp_path, seed=7)
    assert [p.read_text() for p in sorted(again.glob("*.json"))] == [
        p.read_text() for p in sorted(pages_dir.glob("*.json"))
    ]
    other = demo.write(DemoMonth(MONTH), tmp_path / "other", seed=8)
    assert recorded_total(other) != recorded_total(pages_dir)
    for body in demo.read_pages(pages_dir):
        for bucket in body["data"]:
            for result in bucket["results"]:
                model, kind = result["line_item"].split(", ")
                price = {"input": "input", "cached input": "cached_input", "output": "output"}[kind]
                expected = Decimal(result["quantity"]) * demo.OPENAI_PRICES[model][price] / 1_000_000
                assert result["amount"]["value"] == expected


# --- mapping edge cases on hand-written pages ---------------------------------------------------


def response(body: dict, headers: dict[str, str] | None = None, page: str = "") -> JsonResponse:
    url = "https://api.openai.com/v1/organization/costs?start_time=1748736000" + (f"&page={page}" if page else "")
    return JsonResponse(url, 200, httpx.Headers(headers or {}), body)


def bucket(day: int, *results: dict) -> dict:
    start = int(datetime(2025, 6, day, tzinfo=UTC).timestamp())
    return {"object": "bucket", "start_time": start, "end_time": start + 86400, "results": list(results)}


def cost(value: object, line_item: str | None = None, **extra: object) -> dict:
    return {"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
            "line_item": line_item, "project_id": extra.pop("project_id", "proj_a"), **extra}  # fmt: skip


def test_mapping_edge_cases() -> None:
    body = {
        "object": "page",
        "has_more": False,
        "next_page": None,
        "data": [
            bucket(
                1,
                cost(Decimal("0.06"), "gpt-4o-mini-2024-07-18, input", quantity=400000, quantity_unit="tokens"),
                cost("12.50", "web search tool calls", project_name="Support bot"),
                cost(Decimal("0"), "priority | gpt-5, output, long context"),
                cost("n/a", "gpt-4o, output"),
                cost(Decimal("0.123456789012345678"), None, project_id=None),
            ),
            bucket(30, cost(Decimal("1"), "gpt-4o, input")),
            {"object": "bucket", "start_time": 1751328000, "end_time": 1751414400, "results": [cost(Decimal("5"))]},
        ],
    }
    result = map_pages("openai", PERIOD, [response(body, {"OpenAI-Organization": "org-fromheader"})])
    frame = result.frame
    assert frame["ChargeDescription"].to_list() == [
        "gpt-4o-mini-2024-07-18, input", "web search tool calls", "priority | gpt-5, output, long context",
        "OpenAI API costs", "gpt-4o, input",
    ]  # fmt: skip
    assert frame["BilledCost"].to_list() == [
        Decimal("0.06"),
        Decimal("12.5"),
        Decimal(0),
        Decimal("0.123456789012"),
        Decimal(1),
    ]
    assert frame["BillingAccountId"].unique().to_list() == ["org-fromheader"]
    # The Costs API sends no names: the ids stand in (FOCUS: a name MUST NOT be null when its id is not null).
    assert frame["BillingAccountName"].unique().to_list() == ["org-fromheader"]
    assert frame["SubAccountName"].to_list() == ["proj_a", "Support bot", "proj_a", None, "proj_a"]
    assert frame["SubAccountType"].to_list() == ["Project", "Project", "Project", None, "Project"]
    assert frame["BillingAccountType"].unique().to_list() == ["Organization"]
    assert frame["SkuMeter"].to_list() == [
        "Input Tokens", "web search tool calls", "Output Tokens (Long Context)", None, "Input Tokens",
    ]  # fmt: skip
    assert frame["PricingQuantity"][0] == Decimal("0.4") and frame["ConsumedQuantity"][0] == 400000
    # $0.06 for 0.4M tokens: $0.15 per 1M; no quantity, no unit price.
    assert frame["ListUnitPrice"].to_list() == [Decimal("0.15"), None, None, None, None]
    assert frame["ContractedUnitPrice"].to_list() == frame["ListUnitPrice"].to_list()
    assert frame["PricingCurrencyListUnitPrice"].to_list() == frame["ListUnitPrice"].to_list()
    assert frame["PricingCurrencyEffectiveCost"].to_list() == frame["EffectiveCost"].to_list()
    assert frame["PricingCurrency"].unique().to_list() == ["USD"]
    assert result.repairs == {"amount_value_as_string": 1, "amount_rounded_to_12_decimals": 1}
    assert result.quarantine.rows() == [
        ("/v1/organization/costs", "page 1 bucket 1 result 4", "amount.value 'n/a' is not a decimal number"),
        ("/v1/organization/costs", "page 1 bucket 3", "bucket 2025-07-01T00:00:00Z is outside billing period 2025-06"),
    ]
    # The provider total counts every valid amount as returned, quarantined bucket included.
    assert result.source_total == Decimal("18.683456789012345678")
    assert result.stats == {"pages": 1, "buckets": 3, "results": 7}


def test_mixed_currencies_are_refused() -> None:
    eur = cost(Decimal("1"), "gpt-4o, input")
    eur["amount"]["currency"] = "eur"
    body = {"object": "page", "has_more": False, "next_page": None, "data": [bucket(1, cost(Decimal("1")), eur)]}
    with pytest.raises(SourceError, match=r"more than one currency \(EUR, USD\)"):
        map_pages("openai", PERIOD, [response(body)])


@pytest.mark.parametrize(
    ("line_item", "expected"),
    [
        ("gpt-4.1-2025-04-14, input", LineItem("gpt-4.1-2025-04-14", "input")),
        ("gpt-4.1-mini-2025-04-14, cached input", LineItem("gpt-4.1-mini-2025-04-14", "cached input")),
        (
            "ft:gpt-4o-mini-2024-07-18:acme::abc123, output",
            LineItem("ft:gpt-4o-mini-2024-07-18:acme::abc123", "output"),
        ),
        ("gpt-audio-mini-2025-12-15 audio, input", LineItem("gpt-audio-mini-2025-12-15", "input", modality="audio")),
        (
            "priority | gpt-5, output, long context",
            LineItem("gpt-5", "output", tier="priority", context="long context"),
        ),
        ("web search tool calls", None),
        ("Vector storage", None),
    ],
)
def test_parse_line_item(line_item: str, expected: LineItem | None) -> None:
    assert parse_line_item(line_item) == expected
