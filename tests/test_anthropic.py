"""Anthropic Admin API connector: the demo month over real local HTTP, edge cases, revisions, look-back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import polars as pl
import pytest

from connectors import anthropic
from connectors.anthropic import Organization, fetch_organization, map_reports
from connectors.base import BillingPeriod, SourceError
from connectors.http import JsonResponse
from models.config import AnthropicCostsSource, parse_config
from pipelines.demo import anthropic as demo
from pipelines.demo.anthropic_server import AnthropicServer, Failure
from pipelines.demo.company import (
    ANTHROPIC_ORG,
    ANTHROPIC_PRICES,
    ANTHROPIC_WORKSPACE,
    ANTHROPIC_WORKSPACE_NAME,
    ANTHROPIC_WORKSPACE_TAGS,
    COMPANY,
    DemoMonth,
)
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

KEY = "sk-ant-admin01-Qz7vR2mXp9LkT4wY8bN3cH6dF1gJ5sUe-AAAA"
ENV = "ANTHROPIC_ADMIN_KEY"
MONTH = "2025-06"
PERIOD = BillingPeriod(MONTH)
FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
DEMO_TOTAL = Decimal("2560.3163067")  # the recorded month's cent strings summed, / 100
SONNET = "claude-sonnet-4-5-20250929"


@pytest.fixture(scope="module")
def pages_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.write(DemoMonth(MONTH), tmp_path_factory.mktemp("demo"), seed=7)


@pytest.fixture
def server(pages_dir: Path) -> Iterator[AnthropicServer]:
    with AnthropicServer.from_pages(pages_dir, api_key=KEY) as srv:
        yield srv


@pytest.fixture
def source(server: AnthropicServer, monkeypatch: pytest.MonkeyPatch) -> AnthropicCostsSource:
    monkeypatch.setenv(ENV, KEY)
    return AnthropicCostsSource(name="anthropic", type="anthropic_costs", base_url=server.base_url, max_retries=3)


def recorded_total(pages_dir: Path) -> Decimal:
    """Sum of the recorded cent strings, / 100, straight from the JSON text."""
    pages = demo.read_pages(pages_dir / demo.COST_FOLDER)
    return sum((Decimal(r["amount"]) for p in pages for b in p["data"] for r in b["results"]), Decimal(0)) / 100


# --- the demo month over HTTP -----------------------------------------------------------------


def test_demo_month_loads_every_result_with_exact_totals(source: AnthropicCostsSource, pages_dir: Path) -> None:
    sleeps: list[float] = []
    result = anthropic.load(source, PERIOD, sleep=sleeps.append)
    frame = result.frame
    # 30 days × 4 token types in the doc-summaries workspace, + 2 (input, output) on each of 21 weekdays
    # in the default workspace: 162 results; every one gets its quantity from the usage report.
    assert frame.height == 162 and result.quarantine.height == 0 and result.repairs == {}
    assert result.stats == {
        "pages": 5, "buckets": 30, "results": 162, "usage_pages": 5, "usage_results": 51,
        "rows_with_quantity": 162, "rows_without_quantity": 0, "priority_tier_tokens": 0, "api_keys": 1,
    }  # fmt: skip
    assert result.source_total == DEMO_TOTAL == recorded_total(pages_dir)
    for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert frame[column].sum() == DEMO_TOTAL
    assert sleeps == []


def test_rows_carry_focus_values_and_usage_quantities(source: AnthropicCostsSource) -> None:
    frame = anthropic.load(source, PERIOD).frame
    day = datetime(2025, 6, 17, tzinfo=UTC)
    row = frame.filter(
        (pl.col("SubAccountId") == ANTHROPIC_WORKSPACE)
        & (pl.col("ChargePeriodStart") == day)
        & (pl.col("SkuMeter") == "Cache Read Input Tokens")
    ).row(0, named=True)
    assert row["ChargePeriodEnd"] == datetime(2025, 6, 18, tzinfo=UTC)
    assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == (PERIOD.start, PERIOD.end)
    assert (row["BillingAccountId"], row["BillingAccountName"]) == (ANTHROPIC_ORG, COMPANY)
    assert (row["BillingCurrency"], row["ProviderName"], row["ServiceName"]) == ("USD", "Anthropic", "Claude API")
    assert (row["ServiceCategory"], row["ServiceSubcategory"]) == ("AI and Machine Learning", "Generative AI")
    assert (row["ChargeCategory"], row["ChargeFrequency"], row["PricingCategory"]) == (
        "Usage",
        "Usage-Based",
        "Standard",
    )
    assert (row["SubAccountType"], row["SubAccountName"], row["x_line_item_type"]) == (
        "Workspace",
        ANTHROPIC_WORKSPACE_NAME,
        "tokens",
    )
    assert json.loads(row["Tags"]) == ANTHROPIC_WORKSPACE_TAGS
    assert row["PricingCurrency"] == "USD" and row["PricingCurrencyEffectiveCost"] == row["BilledCost"]
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == row["PricingCurrencyListUnitPrice"] == Decimal("0.3")
    assert row["ChargeDescription"] == "Claude Sonnet 4.5 Usage - Prompt Caching Read"
    assert (row["SkuId"], row["SkuPriceId"]) == (SONNET, f"{SONNET}, cache_read_input_tokens, standard, 0-200k")
    assert json.loads(row["SkuPriceDetails"]) == {
        "x_Model": SONNET, "x_TokenType": "cache_read_input_tokens", "x_ServiceTier": "standard",
        "x_ContextWindow": "0-200k", "x_CostType": "tokens",
    }  # fmt: skip
    assert (row["ConsumedUnit"], row["PricingUnit"]) == ("Tokens", "1000000 Tokens")
    # The price identity with quantities from the usage report: cost = millions of tokens × $0.30.
    assert row["BilledCost"] == row["PricingQuantity"] * Decimal("0.30")
    assert row["ConsumedQuantity"] == row["PricingQuantity"] * 1_000_000
    default = frame.filter((pl.col("SubAccountId") == "default") & (pl.col("ChargePeriodStart") == day))
    assert default["SubAccountName"].to_list() == ["Default Workspace"] * 2
    assert default["Tags"].to_list() == [None, None]
    assert sorted(default["SkuMeter"].to_list()) == ["Input Tokens", "Output Tokens"]
    # 40 Console requests × 1,200 output tokens, ±1.5% noise, at $15 per 1M.
    output = default.filter(pl.col("SkuMeter") == "Output Tokens").row(0, named=True)
    assert output["BilledCost"] == output["ConsumedQuantity"] * Decimal("15") / 1_000_000
    assert abs(output["ConsumedQuantity"] - 48_000) < 48_000 * Decimal("0.1")


def test_requests_follow_the_documented_query(source: AnthropicCostsSource, server: AnthropicServer) -> None:
    anthropic.load(source, PERIOD)
    paths = [r.path for r in server.requests]
    assert paths == [
        "/v1/organizations/me",
        "/v1/organizations/workspaces",
        *["/v1/organizations/cost_report"] * 5,
        *["/v1/organizations/usage_report/messages"] * 5,
    ]
    assert server.requests[1].query == {"limit": ["1000"], "include_archived": ["true"]}
    window = {"starting_at": ["2025-06-01T00:00:00Z"], "ending_at": ["2025-07-01T00:00:00Z"]}
    assert server.requests[2].query == window | {
        "bucket_width": ["1d"], "limit": ["31"], "group_by[]": ["workspace_id", "description"],
    }  # fmt: skip
    assert server.requests[7].query == window | {
        "bucket_width": ["1d"], "limit": ["31"],
        "group_by[]": ["api_key_id", "workspace_id", "model", "service_tier", "context_window"],
    }  # fmt: skip
    tokens = [r.query.get("page", [None])[0] for r in server.requests[2:7]]
    assert tokens[0] is None
    assert [demo.decode_page_token(t).day for t in tokens[1:]] == [8, 15, 22, 29]
    assert all(r.authorized for r in server.requests)


def test_auth_goes_in_x_api_key_with_the_version_header(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "org-1", "name": "Org", "type": "organization"})

    monkeypatch.setenv(ENV, KEY)
    source = AnthropicCostsSource(name="anthropic", type="anthropic_costs")
    with anthropic._client(source, lambda s: None, httpx.MockTransport(handler)) as client:
        assert fetch_organization(client) == Organization("org-1", "Org")
    assert seen[0].headers["x-api-key"] == KEY and "authorization" not in seen[0].headers
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    assert str(seen[0].url) == "https://api.anthropic.com/v1/organizations/me"


def test_organization_endpoint_missing_falls_back_but_a_403_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)
    source = AnthropicCostsSource(name="anthropic", type="anthropic_costs")
    missing = httpx.MockTransport(
        lambda r: httpx.Response(
            404, json={"type": "error", "error": {"type": "not_found_error", "message": "Not found"}}
        )
    )
    with anthropic._client(source, lambda s: None, missing) as client:
        assert fetch_organization(client) == Organization("anthropic")
    forbidden = httpx.MockTransport(
        lambda r: httpx.Response(403, json={"type": "error", "error": {"type": "permission_error", "message": "no"}})
    )
    with anthropic._client(source, lambda s: None, forbidden) as client, pytest.raises(SourceError) as err:
        fetch_organization(client)
    assert "HTTP 403: credentials rejected by Anthropic: no (permission_error)" in str(err.value)


def test_workspace_names_and_tags_come_from_the_workspace_list(monkeypatch: pytest.MonkeyPatch) -> None:
    workspaces = [
        {"id": "wrkspc_A", "archived_at": None, "name": "search", "tags": {"feature": "search_rewrite"}},
        {"id": "wrkspc_B", "archived_at": "2025-05-01T00:00:00Z", "name": "old-batch", "tags": {}},
    ]
    monkeypatch.setenv(ENV, KEY)
    source = AnthropicCostsSource(name="anthropic", type="anthropic_costs")
    with AnthropicServer([], [], api_key=KEY, workspaces=workspaces) as srv:
        client = anthropic._client(source.model_copy(update={"base_url": srv.base_url}), lambda s: None, None)
        with client:
            found = anthropic.fetch_workspaces(client)
    assert found == {
        "wrkspc_A": anthropic.Workspace("search", {"feature": "search_rewrite"}),
        "wrkspc_B": anthropic.Workspace("old-batch", {}),  # archived, but its past costs still need a name
    }
    gone = httpx.MockTransport(
        lambda r: httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error"}})
    )
    with anthropic._client(source, lambda s: None, gone) as client:
        assert anthropic.fetch_workspaces(client) == {}


def test_429_with_retry_after_then_success(source: AnthropicCostsSource, server: AnthropicServer) -> None:
    server.inject(Failure.rate_limited(retry_after="3"))
    sleeps: list[float] = []
    result = anthropic.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [3.0]
    assert len(server.requests) == 13 and result.frame.height == 162 and result.source_total == DEMO_TOTAL


def test_500_and_529_overloaded_are_retried_with_backoff(source: AnthropicCostsSource, server: AnthropicServer) -> None:
    server.inject(Failure.server_error(), Failure.overloaded())
    sleeps: list[float] = []
    result = anthropic.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [1.0, 2.0] and result.frame.height == 162


def test_persistent_429_names_provider_status_and_attempts(
    source: AnthropicCostsSource, server: AnthropicServer
) -> None:
    server.inject(*[Failure.rate_limited("1")] * 4)
    with pytest.raises(SourceError) as err:
        anthropic.load(source, PERIOD, sleep=lambda s: None)
    assert str(err.value).startswith(
        f"source 'anthropic': GET {server.base_url}/v1/organizations/cost_report: HTTP 429 from Anthropic after "
        "4 attempt(s): Number of request tokens has exceeded your per-minute rate limit (rate_limit_error)"
    )


def test_expired_key_401_fails_at_once_naming_anthropic_without_the_key(
    source: AnthropicCostsSource, server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expired = "sk-ant-admin01-EXPIREDexpiredEXPIRED-9876"
    monkeypatch.setenv(ENV, expired)
    sleeps: list[float] = []
    with pytest.raises(SourceError) as err:
        anthropic.load(source, PERIOD, sleep=sleeps.append)
    message = str(err.value)
    assert message == (
        f"source 'anthropic': GET {server.base_url}/v1/organizations/me: HTTP 401: credentials rejected by "
        f"Anthropic: invalid x-api-key (authentication_error). check that the key in {ENV} is valid and allowed "
        "to call this endpoint"
    )
    assert sleeps == [] and len(server.requests) == 1
    for secret in (expired, expired[15:], KEY):
        assert secret not in message


def test_missing_key_env_var(source: AnthropicCostsSource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(SourceError, match=rf"^source 'anthropic': api_key_env: environment variable {ENV} is not set"):
        anthropic.load(source, PERIOD)


def test_malformed_json_names_the_url_and_provider(source: AnthropicCostsSource, server: AnthropicServer) -> None:
    server.inject(Failure.malformed_json())
    with pytest.raises(SourceError) as err:
        anthropic.load(source, PERIOD)
    assert str(err.value) == (
        f"source 'anthropic': GET {server.base_url}/v1/organizations/cost_report: response from Anthropic is not "
        "valid JSON (Unterminated string starting at: line 1 column 74; 76 bytes, content-type 'application/json'). "
        "a proxy or gateway in base_url may be answering instead of the API"
    )


def test_replay_server_answers_like_anthropic(server: AnthropicServer, pages_dir: Path) -> None:
    base = f"{server.base_url}/v1/organizations/cost_report"
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    recorded = {"starting_at": "2025-06-01T00:00:00Z", "group_by[]": ["workspace_id", "description"]}
    first = httpx.get(base, params=recorded, headers=headers)
    assert first.text == (pages_dir / demo.COST_FOLDER / "page_001.json").read_text()
    assert first.headers["request-id"].startswith("req_")
    # Without description grouping, a day's results merge into one per workspace, cents summed exactly.
    merged = httpx.get(base, params={"starting_at": "2025-06-02T00:00:00Z", "limit": 1, "group_by[]": "workspace_id"},
                       headers=headers)  # fmt: skip
    day = merged.json()["data"][0]
    assert day["starting_at"] == "2025-06-02T00:00:00Z" and merged.json()["has_more"] is True
    recorded_day = demo.read_pages(pages_dir / demo.COST_FOLDER)[0]["data"][1]["results"]
    for result in day["results"]:
        assert result["description"] is None and result["token_type"] is None
        parts = [Decimal(r["amount"]) for r in recorded_day if r["workspace_id"] == result["workspace_id"]]
        assert Decimal(result["amount"]) == sum(parts) and len(parts) > 1
    assert httpx.get(base, params=recorded).json()["error"] == {
        "type": "authentication_error", "message": "invalid x-api-key",
    }  # fmt: skip
    no_version = httpx.get(base, params=recorded, headers={"x-api-key": KEY})
    assert no_version.status_code == 400 and "anthropic-version" in no_version.json()["error"]["message"]
    bad_group = httpx.get(base, params={"starting_at": "2025-06-01T00:00:00Z", "group_by[]": "model"}, headers=headers)
    assert bad_group.status_code == 400 and bad_group.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(base, params={"limit": 3}, headers=headers).status_code == 400  # starting_at is required


def test_demo_is_deterministic_and_priced_from_company(tmp_path: Path, pages_dir: Path) -> None:
    again = demo.write(DemoMonth(MONTH), tmp_path, seed=7)
    assert [p.read_text() for p in sorted(again.rglob("*.json"))] == [
        p.read_text() for p in sorted(pages_dir.rglob("*.json"))
    ]
    assert recorded_total(demo.write(DemoMonth(MONTH), tmp_path / "other", seed=8)) != recorded_total(pages_dir)
    usage = demo.read_pages(pages_dir / demo.USAGE_FOLDER)
    tokens: dict[tuple[str, str | None, str], int] = {}
    for bucket in (b for p in usage for b in p["data"]):
        for r in bucket["results"]:
            for token_type, (path, _meter) in anthropic.TOKEN_TYPES.items():
                value = r[path[0]] if len(path) == 1 else r[path[0]][path[1]]
                key = (bucket["starting_at"], r["workspace_id"], token_type)
                tokens[key] = tokens.get(key, 0) + value
    for bucket in (b for p in demo.read_pages(pages_dir / demo.COST_FOLDER) for b in p["data"]):
        for r in bucket["results"]:
            n = tokens[(bucket["starting_at"], r["workspace_id"], r["token_type"])]
            assert Decimal(r["amount"]) == Decimal(n) * ANTHROPIC_PRICES[SONNET][r["token_type"]] * 100 / 1_000_000


# --- mapping edge cases on documented-shape pages -----------------------------------------------


def fixture_page(name: str) -> JsonResponse:
    body = json.loads((FIXTURES / name).read_text())
    path = anthropic.USAGE_PATH if name.startswith("usage") else anthropic.COST_PATH
    return JsonResponse(f"https://api.anthropic.com{path}?starting_at=2025-06-01T00:00:00Z", 200, httpx.Headers(), body)


def test_mapping_edge_cases_cents_strings_default_workspace_and_usage_join() -> None:
    result = map_reports(
        "anthropic",
        PERIOD,
        [fixture_page("cost_report_page_1.json"), fixture_page("cost_report_page_2.json")],
        [fixture_page("usage_report_page_1.json")],
        organization=Organization("org-uuid", "Acme"),
        workspaces={"wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ": anthropic.Workspace("research", {"team": "r", "env": "dev"})},
    )
    frame = result.frame
    assert frame["SubAccountName"].to_list() == ["research", "Default Workspace", *["research"] * 6]
    assert frame["Tags"].to_list() == ['{"env":"dev","team":"r"}', None, *['{"env":"dev","team":"r"}'] * 6]
    # Unit prices: cost ÷ PricingQuantity, the list price per 1M tokens (per 1,000 searches).
    assert frame["ListUnitPrice"].to_list() == [
        Decimal("3"), Decimal("15"), Decimal("1.5"), Decimal("10"), None, Decimal("15"), Decimal("0"), Decimal("6"),
    ]  # fmt: skip
    # Cents as strings: "123.45" is $1.2345, "1500" is $15, 225 (a JSON number) is $2.25.
    assert frame["BilledCost"].to_list() == [
        Decimal("1.2345"), Decimal("15"), Decimal("0.15"), Decimal("0.30"), Decimal("0.05"), Decimal("2.25"),
        Decimal("0"), Decimal("6"),
    ]  # fmt: skip
    assert frame["SubAccountId"].to_list() == [
        "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
        "default",
        *["wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"] * 6,
    ]
    assert frame["ConsumedQuantity"].to_list() == [
        411_500, 1_000_000, 100_000, 30, None, 150_000, 1_000, 1_000_000,  # web search: 20 + 10 requests over 2 keys
    ]  # fmt: skip
    assert frame["PricingUnit"].to_list() == [
        "1000000 Tokens", "1000000 Tokens", "1000000 Tokens", "1000 Requests", None, "1000000 Tokens",
        "1000000 Tokens", "1000000 Tokens",
    ]  # fmt: skip
    # Each quantity times its list price gives the billed cents back (web search: $10 per 1,000).
    prices = ["3", "15", "1.5", "10", None, "15", None, "6"]
    for row, price in zip(frame.iter_rows(named=True), prices, strict=True):
        if price is not None:
            assert row["PricingQuantity"] * Decimal(price) == row["BilledCost"], row["x_source_line"]
    assert frame["SkuId"].to_list()[3:5] == ["web_search", "code_execution"]
    assert frame["SkuMeter"].to_list() == [
        "Input Tokens", "Output Tokens", "Input Tokens", "Web Search Requests", "Code Execution", "Output Tokens",
        "1h Cache Write Input Tokens", "Input Tokens",
    ]  # fmt: skip
    assert json.loads(frame["SkuPriceDetails"][2])["x_ServiceTier"] == "batch"
    assert json.loads(frame["SkuPriceDetails"][7]) == {
        "x_Model": SONNET, "x_TokenType": "uncached_input_tokens", "x_ServiceTier": "standard",
        "x_ContextWindow": "200k-1M", "x_CostType": "tokens", "x_InferenceGeo": "global",
    }  # fmt: skip
    assert frame["SkuPriceDetails"][3] == '{"x_CostType":"web_search"}'
    assert set(frame["BillingAccountId"]) == {"org-uuid"} and set(frame["BillingAccountName"]) == {"Acme"}
    assert result.quarantine.rows() == [
        (anthropic.COST_PATH, "page 1 bucket 1 result 7", "amount 'n/a' is not a decimal string of cents"),
        (anthropic.COST_PATH, "page 2 bucket 1", "bucket 2025-07-01T00:00:00Z is outside billing period 2025-06"),
        (
            anthropic.COST_PATH,
            "page 2 bucket 2",
            "bucket starting_at/ending_at must be increasing RFC 3339 timestamps, "
            "got 'yesterday'/'2025-06-04T00:00:00Z'",
        ),
    ]
    assert result.repairs == {
        "amount_not_a_string": 1, "amount_rounded_to_12_decimals": 1, "usage_result_unreadable": 1,
    }  # fmt: skip
    # The provider total sums every amount as returned (the July bucket too), exactly, in dollars.
    assert result.source_total == Decimal("25.984500000000001")
    assert frame["BilledCost"].sum() == Decimal("24.9845")
    assert result.stats == {
        "pages": 2, "buckets": 4, "results": 10, "usage_pages": 1, "usage_results": 7, "rows_with_quantity": 7,
        "rows_without_quantity": 1, "priority_tier_tokens": 5_700, "api_keys": 2,
    }  # fmt: skip


def test_cents_are_never_floats() -> None:
    """0.1 + 0.2 cents in floats is 0.30000000000000004; the connector keeps it exact."""
    results = [{"amount": "0.1", "currency": "USD"}, {"amount": "0.2", "currency": "USD"}]
    bucket = {"starting_at": "2025-06-03T00:00:00Z", "ending_at": "2025-06-04T00:00:00Z", "results": results}
    page = JsonResponse("https://api.anthropic.com/v1/organizations/cost_report", 200, httpx.Headers(),
                        {"data": [bucket], "has_more": False, "next_page": None})  # fmt: skip
    result = map_reports("anthropic", PERIOD, [page], [])
    assert result.source_total == Decimal("0.003") == result.frame["BilledCost"].sum()
    assert result.frame["BilledCost"].to_list() == [Decimal("0.001"), Decimal("0.002")]


def test_mixed_currencies_are_refused() -> None:
    results = [{"amount": "1", "currency": "USD"}, {"amount": "1", "currency": "EUR"}]
    bucket = {"starting_at": "2025-06-03T00:00:00Z", "ending_at": "2025-06-04T00:00:00Z", "results": results}
    page = JsonResponse("https://x/v1/organizations/cost_report", 200, httpx.Headers(), {"data": [bucket]})
    with pytest.raises(SourceError, match=r"more than one currency \(EUR, USD\)"):
        map_reports("anthropic", PERIOD, [page], [])


# --- revisions: a restated day replaces the old one -----------------------------------------------

REVISED_DAY = "2025-06-19"
REVISION = {(ANTHROPIC_WORKSPACE, "output_tokens"): "99999.99", (ANTHROPIC_WORKSPACE, "uncached_input_tokens"): "0.01"}


def day_costs(frame: pl.DataFrame, day: str) -> dict[str, Decimal]:
    rows = frame.filter(
        (pl.col("ChargePeriodStart") == datetime.fromisoformat(day).replace(tzinfo=UTC))
        & (pl.col("SubAccountId") == ANTHROPIC_WORKSPACE)
    )
    return dict(zip(rows["SkuMeter"].to_list(), rows["BilledCost"].to_list(), strict=True))


def revised_total(server: AnthropicServer) -> Decimal:
    cents = sum((Decimal(r["amount"]) for b in server.cost_buckets for r in b["results"]), Decimal(0))
    return cents / 100


def test_rerun_after_a_revision_leaves_exactly_the_revised_amounts(
    source: AnthropicCostsSource, server: AnthropicServer
) -> None:
    before = anthropic.load(source, PERIOD)
    server.revise(REVISED_DAY, REVISION)
    after = anthropic.load(source, PERIOD)
    assert after.frame.height == before.frame.height == 162
    assert day_costs(after.frame, REVISED_DAY)["Output Tokens"] == Decimal("999.9999")
    assert day_costs(after.frame, REVISED_DAY)["Input Tokens"] == Decimal("0.0001")
    assert after.frame["BilledCost"].sum() == after.source_total == revised_total(server) != before.source_total
    unchanged = pl.col("ChargePeriodStart").dt.date() != date.fromisoformat(REVISED_DAY)
    assert before.frame.filter(unchanged).equals(after.frame.filter(unchanged))


def test_warehouse_partition_holds_exactly_the_revised_amounts(
    source: AnthropicCostsSource, server: AnthropicServer, duckdb_warehouse: Warehouse
) -> None:
    config = parse_config(
        f"sources: [{{name: anthropic, type: anthropic_costs, base_url: '{server.base_url}', max_retries: 0}}]"
    )
    first = ingest(duckdb_warehouse, config, "anthropic", MONTH)
    server.revise(REVISED_DAY, REVISION)
    second = ingest(duckdb_warehouse, config, "anthropic", MONTH)
    stored = duckdb_warehouse.read(
        'SELECT COUNT(*) AS n, SUM("BilledCost") AS billed, COUNT(DISTINCT x_batch_id) AS batches FROM focus_costs'
    ).row(0)
    assert first.rows == second.rows == stored[0] == 162
    assert stored[1:] == (revised_total(server), 1)
    day = duckdb_warehouse.read(
        f"""SELECT "BilledCost" FROM focus_costs WHERE "SkuMeter" = 'Output Tokens' AND "SubAccountId" =
        '{ANTHROPIC_WORKSPACE}' AND CAST("ChargePeriodStart" AS DATE) = DATE '{REVISED_DAY}'"""
    )
    assert day["BilledCost"].to_list() == [Decimal("999.9999")]
    assert second.source_total == second.loaded_billed_cost == revised_total(server)


def test_lookback_refetches_only_recent_days_and_rebuilds_the_month_from_the_store(
    source: AnthropicCostsSource, server: AnthropicServer, tmp_path: Path
) -> None:
    incremental = source.model_copy(update={"lookback_days": 2, "cache_dir": str(tmp_path / "cache")})
    today = date(2025, 6, 20)
    full = anthropic.load(source, PERIOD)
    first = anthropic.load(incremental, PERIOD, today=today)
    # Nothing stored yet: days 1..20 are fetched, as one window; later days have no data yet.
    cost_queries = [r.query for r in server.requests if r.path == anthropic.COST_PATH][-3:]
    assert [q["ending_at"] for q in cost_queries] == [["2025-06-21T00:00:00Z"]] * 3
    assert first.frame["ChargePeriodStart"].max() == datetime(2025, 6, 20, tzinfo=UTC)
    up_to_today = full.frame.filter(pl.col("ChargePeriodStart") <= datetime(2025, 6, 20, tzinfo=UTC))
    assert first.frame.drop("x_source_line").equals(up_to_today.drop("x_source_line"))
    assert len(list((tmp_path / "cache" / "anthropic").rglob("2025-06-*.json"))) == 2 * 20  # cost + usage days

    server.revise(REVISED_DAY, REVISION)  # inside the window
    server.revise("2025-06-05", {(ANTHROPIC_WORKSPACE, "output_tokens"): "1"})  # older than the window
    server.requests.clear()
    second = anthropic.load(incremental, PERIOD, today=today)
    assert [(r.path, r.query["starting_at"]) for r in server.requests if "_report" in r.path] == [
        (anthropic.COST_PATH, ["2025-06-18T00:00:00Z"]),
        (anthropic.USAGE_PATH, ["2025-06-18T00:00:00Z"]),
    ]
    assert second.frame.height == first.frame.height
    assert day_costs(second.frame, REVISED_DAY)["Output Tokens"] == Decimal("999.9999")
    assert day_costs(second.frame, "2025-06-05") == day_costs(first.frame, "2025-06-05")  # missed until a full run
    assert second.frame["ChargePeriodStart"].is_sorted()
    stored = [f for f in second.files if f.startswith("file://")]
    assert len(stored) == 2 * 17 and second.source_total == second.frame["BilledCost"].sum()
    assert set(
        second.frame.filter(pl.col("ChargePeriodStart") < datetime(2025, 6, 18, tzinfo=UTC))["x_source_file"]
    ) == {
        str(p.resolve())
        for p in (tmp_path / "cache").rglob("2025-06-*.json")
        if "cost_report" in str(p) and p.stem < "2025-06-18"
    }
