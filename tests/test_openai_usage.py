"""OpenAI Usage API joined to the Costs API: quantities filled, costs untouched, over real local HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors import openai_costs, openai_usage
from connectors.base import BillingPeriod, LoadResult, SourceError
from connectors.http import JsonResponse
from connectors.openai_usage import join_usage
from models.config import OpenAICostsSource, OpenAICostsUsageSource
from pipelines.demo import openai_costs as demo
from pipelines.demo.company import OPENAI_PRICES, OPENAI_PROJECT, DemoMonth
from pipelines.demo.fixture_server import Failure, FixtureServer
from pipelines.demo.replay_server import Reply, int_param, parse_target, query_values

KEY = "sk-admin-Uv8cQ2xYp4RfT9sVw1eKzzzz1111"
ENV = "OPENAI_ADMIN_KEY"
MONTH = "2025-06"
PERIOD = BillingPeriod(MONTH)
USAGE_PREFIX = "/v1/organization/usage/"
DEMO_TOTAL = Decimal("8786.868169")
# group_by values each endpoint documents (openapi.yaml, /organization/usage/*), checked independently.
DOCUMENTED_GROUP_BY = {
    "completions": {"project_id", "user_id", "api_key_id", "model", "batch", "service_tier"},
    "embeddings": {"project_id", "user_id", "api_key_id", "model"},
    "moderations": {"project_id", "user_id", "api_key_id", "model"},
    "images": {"project_id", "user_id", "api_key_id", "model", "size", "source"},
    "audio_speeches": {"project_id", "user_id", "api_key_id", "model"},
    "audio_transcriptions": {"project_id", "user_id", "api_key_id", "model"},
    "vector_stores": {"project_id"},
    "code_interpreter_sessions": {"project_id"},
}
KINDS = {"input": "input_uncached_tokens", "cached input": "input_cached_tokens", "output": "output_tokens"}


class UsageServer(FixtureServer):
    """The OpenAI Costs API replay plus the Usage API endpoints, answering like the OpenAPI spec."""

    def __init__(self, buckets: list[dict[str, Any]], usage: Mapping[str, list[dict[str, Any]]], **kw: Any) -> None:
        super().__init__(buckets, **kw)
        self.usage = dict(usage)
        self.usage_failures: list[Failure] = []

    def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        path, query = parse_target(target)
        if not path.startswith(USAGE_PREFIX):
            return super().respond(method, target, headers)
        authorization = headers.get("Authorization")
        authorized = authorization == f"Bearer {self.api_key}"
        request_id = f"req_{self.record(path, query, authorized):032x}"
        endpoint = path.removeprefix(USAGE_PREFIX)
        if endpoint not in self.usage:
            return self._reply(
                404, b'{"error": {"message": "Invalid URL", "type": "invalid_request_error"}}', request_id
            )
        if not authorized:
            return self._reply(401, self._auth_error(authorization), request_id)
        if self.usage_failures:
            failure = self.usage_failures.pop(0)
            extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return self._reply(failure.status, failure.body or b"", request_id, extra)
        group_by = query_values(query, "group_by")
        assert set(group_by) <= DOCUMENTED_GROUP_BY[endpoint], group_by
        assert 1 <= (int_param(query, "limit", required=False) or 7) <= 31 and query_values(query, "bucket_width") == [
            "1d"
        ]
        start, end = int_param(query, "start_time", required=True), int_param(query, "end_time", required=False)
        first = demo.decode_cursor(query["page"][0])[1] if "page" in query else start
        selected = [
            _regroup(b, DOCUMENTED_GROUP_BY[endpoint] - set(group_by))
            for b in self.usage[endpoint]
            if b["start_time"] >= first and (end is None or b["end_time"] <= end)
        ]
        body = demo.paginate(selected, start, demo.PAGE_BUCKETS)[0]
        return self._reply(200, (demo.dumps_exact(body) + "\n").encode(), request_id)


def _regroup(bucket: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    merged: dict[str, dict[str, Any]] = {}
    for result in bucket["results"]:
        shown = {**result, **dict.fromkeys(hidden & set(result))}
        key = json.dumps({k: v for k, v in shown.items() if not isinstance(v, int) or isinstance(v, bool)})
        if key in merged:
            for name, value in shown.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    merged[key][name] += value
        else:
            merged[key] = dict(shown)
    return {**bucket, "results": list(merged.values())}


def completions_result(model: str, key: str, uncached: int, cached: int, output: int) -> dict[str, Any]:
    return {
        "object": "organization.usage.completions.result", "input_tokens": uncached + cached,
        "input_cached_tokens": cached, "input_cache_write_tokens": 0, "input_uncached_tokens": uncached,
        "output_tokens": output, "input_text_tokens": uncached, "output_text_tokens": output,
        "input_cached_text_tokens": cached, "input_audio_tokens": 0, "input_cached_audio_tokens": 0,
        "output_audio_tokens": 0, "input_image_tokens": 0, "input_cached_image_tokens": 0, "output_image_tokens": 0,
        "num_model_requests": max(1, (uncached + cached) // 3_000), "project_id": OPENAI_PROJECT, "user_id": None,
        "api_key_id": key, "model": model, "batch": False, "service_tier": "default",
    }  # fmt: skip


def usage_from_costs(cost_buckets: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Usage buckets that agree with the recorded costs' quantities, split 70/30 over two API keys."""
    usage: dict[str, list[dict[str, Any]]] = {endpoint: [] for endpoint in DOCUMENTED_GROUP_BY}
    for bucket in cost_buckets:
        window = {"object": "bucket", "start_time": bucket["start_time"], "end_time": bucket["end_time"]}
        per_model: dict[str, dict[str, int]] = {}
        for result in bucket["results"]:
            model, kind = result["line_item"].split(", ")
            per_model.setdefault(model, {})[KINDS[kind]] = result["quantity"]
        completions = []
        for model, counts in sorted(per_model.items()):
            a = {k: v * 7 // 10 for k, v in counts.items()}
            b = {k: v - a[k] for k, v in counts.items()}
            for key, part in (("key_a", a), ("key_b", b)):
                completions.append(completions_result(model, key, part["input_uncached_tokens"],
                                                      part["input_cached_tokens"], part["output_tokens"]))  # fmt: skip
        embedding = {"object": "organization.usage.embeddings.result", "input_tokens": 1_000_000,
                     "num_model_requests": 50, "project_id": OPENAI_PROJECT, "user_id": None, "api_key_id": "key_a",
                     "model": "text-embedding-3-small"}  # fmt: skip
        image = {"object": "organization.usage.images.result", "images": 4, "num_model_requests": 4,
                 "size": "1024x1024", "source": "image.generation", "project_id": OPENAI_PROJECT, "user_id": None,
                 "api_key_id": "key_b", "model": "gpt-image-1"}  # fmt: skip
        images = [image] if bucket["start_time"] == int(datetime(2025, 6, 3, tzinfo=UTC).timestamp()) else []
        for endpoint, results in (("completions", completions), ("embeddings", [embedding]), ("images", images)):
            usage[endpoint].append({**window, "results": results})
        for endpoint in ("moderations", "audio_speeches", "audio_transcriptions", "vector_stores",
                         "code_interpreter_sessions"):  # fmt: skip
            usage[endpoint].append({**window, "results": []})
    return usage


@pytest.fixture(scope="module")
def recorded() -> list[dict[str, Any]]:
    return demo.cost_buckets(DemoMonth(MONTH), seed=7)


def without_quantities_on_even_days(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stripped = copy.deepcopy(buckets)
    for bucket in stripped:
        if datetime.fromtimestamp(bucket["start_time"], UTC).day % 2 == 0:
            for result in bucket["results"]:
                result["quantity"] = result["quantity_unit"] = None
    return stripped


@pytest.fixture
def server(recorded: list[dict[str, Any]]) -> Iterator[UsageServer]:
    with UsageServer(without_quantities_on_even_days(recorded), usage_from_costs(recorded), api_key=KEY) as srv:
        yield srv


@pytest.fixture
def source(server: UsageServer, monkeypatch: pytest.MonkeyPatch) -> OpenAICostsUsageSource:
    monkeypatch.setenv(ENV, KEY)
    return OpenAICostsUsageSource(name="openai", type="openai_costs_usage", base_url=server.base_url, max_retries=3)


def expected_quantities(recorded: list[dict[str, Any]]) -> list[Decimal]:
    return [Decimal(r["quantity"]) for b in recorded for r in b["results"]]


def test_usage_fills_every_missing_quantity_and_keeps_costs_exact(
    source: OpenAICostsUsageSource, recorded: list[dict[str, Any]]
) -> None:
    sleeps: list[float] = []
    result = openai_usage.load(source, PERIOD, sleep=sleeps.append)
    costs_only = openai_costs.load(
        OpenAICostsSource(**source.model_dump(include={"name", "base_url"}), type="openai_costs"), PERIOD
    )
    frame = result.frame
    assert frame.height == 180 and result.quarantine.height == 0 and sleeps == []
    # Costs are the Costs API's, row for row; the quantities the Costs API left out come from usage.
    assert frame["BilledCost"].to_list() == costs_only.frame["BilledCost"].to_list()
    assert result.source_total == DEMO_TOTAL == frame["BilledCost"].sum()
    assert costs_only.frame["ConsumedQuantity"].null_count() == 90
    assert frame["ConsumedQuantity"].to_list() == expected_quantities(recorded)
    assert frame["PricingQuantity"].to_list() == [q / 1_000_000 for q in expected_quantities(recorded)]
    assert set(frame["ConsumedUnit"]) == {"Tokens"} and set(frame["PricingUnit"]) == {"1000000 Tokens"}
    assert result.repairs == {"quantity_from_usage_api": 90}
    stats = result.stats
    assert (stats["quantity_matches_usage_api"], stats.get("quantity_differs_from_usage_api", 0)) == (90, 0)
    assert stats.get("rows_without_usage_match", 0) == 0
    assert stats["usage_keys_without_cost_row"] == 30  # the embeddings model, which the Costs pages don't bill
    assert stats["usage_completions_results"] == 30 * 2 * 2  # days × models × API keys
    assert stats["usage_embeddings_input_tokens"] == 30_000_000 and stats["usage_images_images"] == 4
    assert stats["usage_pages"] == 8 * 5  # 8 endpoints, 30 daily buckets at 7 a page


def test_filled_rows_get_the_list_price_per_million_tokens(source: OpenAICostsUsageSource) -> None:
    frame = openai_usage.load(source, PERIOD).frame
    price_keys = {"input": "input", "cached input": "cached_input", "output": "output"}
    for row in frame.iter_rows(named=True):
        model, kind = row["ChargeDescription"].split(", ")
        price = OPENAI_PRICES[model][price_keys[kind]]
        assert row["BilledCost"] == row["PricingQuantity"] * price, row["x_source_line"]
        if "ListUnitPrice" in row:
            assert row["ListUnitPrice"] == price and row["ContractedUnitPrice"] == price


def test_usage_requests_follow_the_documented_query(source: OpenAICostsUsageSource, server: UsageServer) -> None:
    openai_usage.load(source, PERIOD)
    usage = [r for r in server.requests if r.path.startswith(USAGE_PREFIX)]
    assert [r.path.removeprefix(USAGE_PREFIX) for r in usage[::5]] == list(DOCUMENTED_GROUP_BY)
    window = {"start_time": [str(int(PERIOD.start.timestamp()))], "end_time": [str(int(PERIOD.end.timestamp()))]}
    assert usage[0].query == window | {
        "bucket_width": ["1d"], "group_by": ["project_id", "api_key_id", "model", "batch", "service_tier"],
        "limit": ["31"],
    }  # fmt: skip
    assert usage[30].query["group_by"] == ["project_id"]  # vector_stores
    assert [demo.decode_cursor(r.query["page"][0])[1] for r in usage[1:5]] == [
        int(datetime(2025, 6, d, tzinfo=UTC).timestamp()) for d in (8, 15, 22, 29)
    ]


def test_only_the_configured_endpoints_are_read(source: OpenAICostsUsageSource, server: UsageServer) -> None:
    result = openai_usage.load(source.model_copy(update={"usage_endpoints": ["completions"]}), PERIOD)
    assert {r.path for r in server.requests} == {"/v1/organization/costs", "/v1/organization/usage/completions"}
    assert result.repairs == {"quantity_from_usage_api": 90} and result.stats["usage_keys_without_cost_row"] == 0


def test_usage_429_and_500_are_retried(source: OpenAICostsUsageSource, server: UsageServer) -> None:
    server.usage_failures += [Failure.rate_limited(retry_after="2"), Failure.server_error()]
    sleeps: list[float] = []
    result = openai_usage.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [2.0, 2.0]  # the 500 comes on the first retry: backoff 2 s
    assert result.repairs == {"quantity_from_usage_api": 90}


def test_usage_malformed_json_names_the_usage_url(source: OpenAICostsUsageSource, server: UsageServer) -> None:
    server.usage_failures.append(Failure.malformed_json())
    with pytest.raises(SourceError) as err:
        openai_usage.load(source, PERIOD)
    assert str(err.value).startswith(
        f"source 'openai': GET {server.base_url}/v1/organization/usage/completions: response from OpenAI is not "
        "valid JSON"
    )


def test_expired_key_401_names_openai(source: OpenAICostsUsageSource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "sk-admin-EXPIREDexpired0000")
    with pytest.raises(SourceError, match=r"HTTP 401: credentials rejected by OpenAI: Incorrect API key") as err:
        openai_usage.load(source, PERIOD, sleep=lambda s: None)
    assert "EXPIREDexpired" not in str(err.value)


def test_lookback_refetches_recent_days_of_costs_and_usage(
    source: OpenAICostsUsageSource, server: UsageServer, tmp_path: Any
) -> None:
    incremental = source.model_copy(update={"lookback_days": 1, "cache_dir": str(tmp_path)})
    first = openai_usage.load(incremental, PERIOD, today=date(2025, 6, 10))
    assert first.frame.height == 60 and first.repairs == {"quantity_from_usage_api": 30}
    server.requests.clear()
    second = openai_usage.load(incremental, PERIOD, today=date(2025, 6, 10))
    starts = {(r.path, r.query["start_time"][0]) for r in server.requests}
    june_9 = str(int(datetime(2025, 6, 9, tzinfo=UTC).timestamp()))
    assert starts == {("/v1/organization/costs", june_9)} | {
        (f"{USAGE_PREFIX}{e}", june_9) for e in DOCUMENTED_GROUP_BY
    }
    keep = ["ChargePeriodStart", "ChargeDescription", "BilledCost", "ConsumedQuantity", "PricingQuantity"]
    assert second.frame.select(keep).equals(first.frame.select(keep))
    assert second.source_total == first.source_total


# --- the join on hand-written pages ---------------------------------------------------------------


def page(path: str, *buckets: dict[str, Any]) -> JsonResponse:
    body = {"object": "page", "data": list(buckets), "has_more": False, "next_page": None}
    return JsonResponse(f"https://api.openai.com{path}?start_time=1748736000", 200, httpx.Headers(), body)


def bucket(day: int, *results: dict[str, Any]) -> dict[str, Any]:
    start = int(datetime(2025, 6, day, tzinfo=UTC).timestamp())
    return {"object": "bucket", "start_time": start, "end_time": start + 86400, "results": list(results)}


def cost(value: str, line_item: str, quantity: int | None = None) -> dict[str, Any]:
    return {"object": "organization.costs.result", "amount": {"value": Decimal(value), "currency": "usd"},
            "line_item": line_item, "project_id": "proj_a", "quantity": quantity,
            "quantity_unit": "tokens" if quantity is not None else None}  # fmt: skip


def usage(model: str, **fields: Any) -> dict[str, Any]:
    return {"object": "organization.usage.completions.result", "project_id": "proj_a", "api_key_id": "key_a",
            "model": model, "batch": False, "service_tier": "default", "num_model_requests": 1, **fields}  # fmt: skip


def test_join_matches_tier_modality_and_older_usage_shapes() -> None:
    costs = openai_costs.map_pages("openai", PERIOD, [page("/v1/organization/costs", bucket(
        3,
        cost("0.50", "priority | gpt-5, output"),
        cost("0.10", "batch | gpt-5, input"),
        cost("0.20", "gpt-5, input"),
        cost("0.04", "gpt-5, cached input"),
        cost("0.30", "gpt-4o-audio-preview audio, input"),
        cost("0.60", "gpt-5, output, long context"),
        cost("0.02", "text-embedding-3-small, input"),
        cost("1.00", "web search tool calls"),
        cost("0.09", "gpt-5, output", quantity=9_000),
    ))])  # fmt: skip
    pages = {
        "completions": [page("/v1/organization/usage/completions", bucket(
            3,
            usage("gpt-5", service_tier="priority", input_tokens=10, output_tokens=25_000),
            usage("gpt-5", batch=True, input_tokens=80_000, input_cached_tokens=0, output_tokens=0),
            # an older result without input_uncached_tokens: input_tokens includes cached and cache writes
            usage("gpt-5", input_tokens=200_000, input_cached_tokens=40_000, input_cache_write_tokens=1_000,
                  output_tokens=5_000),
            usage("gpt-5", api_key_id="key_b", input_tokens=1_000, input_cached_tokens=0, output_tokens=4_000),
            usage("gpt-4o-audio-preview", input_tokens=7_500, input_audio_tokens=7_000, input_text_tokens=500,
                  output_tokens=10),
            usage("gpt-5-mini", input_tokens="12", output_tokens=1),
        ))],
        "embeddings": [page("/v1/organization/usage/embeddings", bucket(
            3, {"object": "organization.usage.embeddings.result", "input_tokens": 1_000_000,
                "num_model_requests": 2, "project_id": "proj_a", "model": "text-embedding-3-small"},
        ))],
    }  # fmt: skip
    joined = join_usage(costs, pages)
    frame = joined.frame
    assert frame["BilledCost"].to_list() == costs.frame["BilledCost"].to_list()
    assert frame["ConsumedQuantity"].to_list() == [
        25_000,  # priority tier ↔ service_tier "priority"
        80_000,  # batch ↔ batch: true
        160_000,  # 200,000 + 1,000 (key_b) input, minus 40,000 cached and 1,000 cache writes
        40_000,
        7_000,  # the audio line item counts audio tokens only
        None,  # long context: the Usage API has no context split
        1_000_000,  # embeddings input
        None,  # no model named
        9_000,  # the Costs API's own quantity is kept (usage says 9,000 as well)
    ]
    assert joined.repairs == {"quantity_from_usage_api": 6, "usage_result_unreadable": 1}
    assert joined.stats["rows_without_usage_match"] == 2 and joined.stats["quantity_matches_usage_api"] == 1
    assert joined.stats["usage_completions_results"] == 6
    assert frame["ListUnitPrice"].to_list()[:3] == [Decimal("20"), Decimal("1.25"), Decimal("1.25")]


def test_a_costs_quantity_that_disagrees_with_usage_is_kept_and_counted() -> None:
    costs = openai_costs.map_pages(
        "openai", PERIOD, [page("/v1/organization/costs", bucket(4, cost("0.08", "gpt-5, output", quantity=8_000)))]
    )
    pages = {
        "completions": [page("/v1/organization/usage/completions", bucket(4, usage("gpt-5", output_tokens=8_500)))]
    }
    joined = join_usage(costs, pages)
    assert joined.frame["ConsumedQuantity"].to_list() == [8_000]
    assert joined.stats["quantity_differs_from_usage_api"] == 1 and "quantity_from_usage_api" not in joined.repairs


def test_an_empty_month_joins_to_an_empty_frame() -> None:
    costs = openai_costs.map_pages("openai", PERIOD, [page("/v1/organization/costs")])
    joined = join_usage(costs, {"completions": [page("/v1/organization/usage/completions")]})
    assert isinstance(joined, LoadResult) and joined.frame.height == 0 and joined.source_total == 0
