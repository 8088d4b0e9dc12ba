"""The shared HTTP client: auth from env, retries and backoff, error messages, pagination."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from connectors.base import BillingPeriod, SourceError
from connectors.http import (
    ApiClient,
    DayPlan,
    DayStore,
    HttpStatusError,
    backoff_seconds,
    dumps_exact,
    fetch_by_day,
    plan_days,
    retry_after_seconds,
    store_key,
)

KEY = "sk-admin-Zq8v3Lk2PnX7rT1wYb6cHs0dMf4gJ9uE"
ENV = "TEST_PROVIDER_KEY"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)


def client(handler, sleeps: list[float] | None = None, max_retries: int = 3) -> ApiClient:
    return ApiClient(
        source="prov",
        provider="Prov",
        base_url="https://api.example.test/base",
        token_env=ENV,
        max_retries=max_retries,
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        transport=httpx.MockTransport(handler),
    )


def scripted(*responses: httpx.Response):
    """A handler answering with ``responses`` in order, recording each request."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return handler, seen


def test_missing_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(SourceError) as err:
        client(lambda r: httpx.Response(200))
    assert str(err.value).startswith(f"source 'prov': api_key_env: environment variable {ENV} is not set.")


def test_sends_bearer_token_path_under_base_url_and_repeated_array_params() -> None:
    handler, seen = scripted(httpx.Response(200, json={"ok": True}))
    with client(handler) as api:
        api.get_json("/v1/things", {"group_by": ["a", "b"], "limit": 7, "ids": []})
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"
    assert str(seen[0].url) == "https://api.example.test/base/v1/things?group_by=a&group_by=b&limit=7"


def test_json_floats_are_parsed_as_exact_decimals() -> None:
    body = b'{"value": 0.5617712500000000, "n": 3}'
    handler, _ = scripted(httpx.Response(200, content=body))
    with client(handler) as api:
        parsed = api.get_json("/x").body
    assert parsed == {"value": Decimal("0.5617712500000000"), "n": 3}
    assert str(parsed["value"]) == "0.5617712500000000"


def test_429_waits_retry_after_then_succeeds() -> None:
    sleeps: list[float] = []
    handler, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"message": "slow down"}}),
        httpx.Response(200, json={"ok": True}),
    )
    with client(handler, sleeps) as api:
        assert api.get_json("/x").body == {"ok": True}
    assert sleeps == [7.0]
    assert len(seen) == 2


def test_5xx_and_transport_errors_back_off_exponentially() -> None:
    sleeps: list[float] = []
    calls = iter(["500", "boom", "503", "ok"])

    def handler(request: httpx.Request) -> httpx.Response:
        step = next(calls)
        if step == "boom":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200 if step == "ok" else int(step), json={})

    with client(handler, sleeps) as api:
        api.get_json("/x")
    assert sleeps == [1.0, 2.0, 4.0]


def test_retries_exhausted_names_url_status_and_attempts() -> None:
    sleeps: list[float] = []
    handler, seen = scripted(*[httpx.Response(503, text="upstream down")] * 3)
    with client(handler, sleeps, max_retries=2) as api, pytest.raises(SourceError) as err:
        api.get_json("/v1/costs", {"start_time": 1})
    assert len(seen) == 3 and sleeps == [1.0, 2.0]
    assert str(err.value) == (
        "source 'prov': GET https://api.example.test/base/v1/costs: HTTP 503 from Prov after 3 attempt(s): "
        "upstream down. the provider is rate limiting or failing; retry later or raise max_retries"
    )


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_fail_at_once_without_leaking_the_key(status: int) -> None:
    sleeps: list[float] = []
    echo = {
        "error": {"message": f"Incorrect API key provided: {KEY}. Also sk-admin-****9uE.", "code": "invalid_api_key"}
    }
    handler, seen = scripted(httpx.Response(status, json=echo))
    with client(handler, sleeps) as api, pytest.raises(SourceError) as err:
        api.get_json("/v1/costs")
    message = str(err.value)
    assert len(seen) == 1 and sleeps == []
    assert f"GET https://api.example.test/base/v1/costs: HTTP {status}: credentials rejected by Prov" in message
    assert "invalid_api_key" in message and f"check that the key in {ENV} is valid" in message
    assert KEY not in message and KEY[10:] not in message and "9uE" not in message
    assert KEY not in repr(err.value.args)


def test_other_4xx_reports_provider_message() -> None:
    body = {"error": {"message": "Invalid value for 'limit'", "type": "invalid_request_error", "param": "limit"}}
    handler, _ = scripted(httpx.Response(400, json=body))
    with client(handler) as api, pytest.raises(SourceError) as err:
        api.get_json("/v1/costs")
    assert str(err.value) == (
        "source 'prov': GET https://api.example.test/base/v1/costs: HTTP 400: Prov rejected the request: "
        "Invalid value for 'limit' (invalid_request_error)"
    )


def test_malformed_json_names_the_url() -> None:
    handler, _ = scripted(httpx.Response(200, content=b'{"data": [', headers={"content-type": "application/json"}))
    with client(handler) as api, pytest.raises(SourceError) as err:
        api.get_json("/v1/costs", {"page": "abc"})
    message = str(err.value)
    assert message.startswith(
        "source 'prov': GET https://api.example.test/base/v1/costs: response from Prov is not valid JSON"
    )
    assert "line 1 column 11" in message and "10 bytes" in message


def test_retry_after_forms() -> None:
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(httpx.Headers({"retry-after": "2"})) == 2.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert retry_after_seconds(httpx.Headers({"retry-after": "Sun, 01 Jun 2025 12:00:30 GMT"}), now) == 30.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "86400"})) == 300.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None
    assert [backoff_seconds(a) for a in (0, 1, 2, 6, 10)] == [1.0, 2.0, 4.0, 60.0, 60.0]


def page(data: list[int], next_page: str | None) -> httpx.Response:
    return httpx.Response(
        200, content=json.dumps({"data": data, "has_more": next_page is not None, "next_page": next_page})
    )


def test_paginate_follows_next_page_into_page_param() -> None:
    handler, seen = scripted(page([1, 2], "c2"), page([3], "c3"), page([], None))
    with client(handler) as api:
        bodies = [p.body["data"] for p in api.paginate("/v1/list", {"limit": 2})]
    assert bodies == [[1, 2], [3], []]
    assert [r.url.params.get("page") for r in seen] == [None, "c2", "c3"]
    assert all(r.url.params["limit"] == "2" for r in seen)


def test_paginate_stops_on_a_repeated_cursor() -> None:
    handler, _ = scripted(page([1], "same"), page([2], "same"))
    with client(handler) as api, pytest.raises(SourceError, match="cursor 'same' repeated"):
        list(api.paginate("/v1/list"))


def test_paginate_rejects_has_more_without_cursor() -> None:
    body = json.dumps({"data": [], "has_more": True, "next_page": None})
    handler, _ = scripted(httpx.Response(200, content=body))
    with client(handler) as api, pytest.raises(SourceError, match="'next_page' is empty although 'has_more' is true"):
        list(api.paginate("/v1/list"))


# --- provider-specific auth, status errors, other pagination shapes ---------------------------------


def test_provider_auth_header_without_scheme_and_configurable_provider_name() -> None:
    error = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    handler, seen = scripted(httpx.Response(401, json=error))
    api = ApiClient(
        source="claude",
        provider="Anthropic",
        base_url="https://api.example.test",
        token_env=ENV,
        transport=httpx.MockTransport(handler),
        auth_header="x-api-key",
        auth_scheme=None,
    )
    with api, pytest.raises(HttpStatusError) as err:
        api.get_json("/v1/organizations/cost_report")
    assert seen[0].headers["x-api-key"] == KEY and "authorization" not in seen[0].headers
    assert err.value.status == 401 and isinstance(err.value, SourceError)
    assert str(err.value).startswith(
        "source 'claude': GET https://api.example.test/v1/organizations/cost_report: HTTP 401: credentials rejected "
        "by Anthropic: invalid x-api-key (authentication_error)."
    )


def test_529_overloaded_is_transient() -> None:
    sleeps: list[float] = []
    handler, _ = scripted(
        httpx.Response(529, json={"type": "error", "error": {"type": "overloaded_error"}}),
        httpx.Response(200, json={"ok": 1}),
    )
    with client(handler, sleeps) as api:
        assert api.get_json("/x").body == {"ok": 1}
    assert sleeps == [1.0]


def test_paginate_with_id_cursors_like_anthropic_list_endpoints() -> None:
    def listing(ids: list[str], has_more: bool) -> httpx.Response:
        return httpx.Response(
            200, json={"data": [{"id": i} for i in ids], "has_more": has_more, "first_id": ids[0], "last_id": ids[-1]}
        )

    handler, seen = scripted(listing(["w1", "w2"], True), listing(["w3"], False))
    with client(handler) as api:
        pages = list(
            api.paginate("/v1/organizations/workspaces", {"limit": 2}, cursor_param="after_id", cursor_field="last_id")
        )
    assert [i["id"] for p in pages for i in p.body["data"]] == ["w1", "w2", "w3"]
    assert [r.url.params.get("after_id") for r in seen] == [None, "w2"]


def test_paginate_until_the_cursor_is_empty_when_there_is_no_has_more_field() -> None:
    def results(items: list[int], token: str | None) -> httpx.Response:
        return httpx.Response(200, json={"results": items, "next_token": token})

    handler, seen = scripted(results([1, 2], "t2"), results([3], ""))
    with client(handler) as api:
        pages = list(
            api.paginate(
                "/api/v0/charges/",
                items_field="results",
                cursor_field="next_token",
                cursor_param="after_token",
                has_more_field=None,
            )
        )
    assert [p.body["results"] for p in pages] == [[1, 2], [3]]
    assert [r.url.params.get("after_token") for r in seen] == [None, "t2"]
    bad, _ = scripted(httpx.Response(200, json={"items": []}))
    with client(bad) as api, pytest.raises(SourceError, match="expected a JSON object with a 'results' list"):
        list(api.paginate("/api/v0/charges/", items_field="results", has_more_field=None))


def test_paginate_numbered_stops_on_a_short_or_empty_page() -> None:
    handler, seen = scripted(page([1, 2], None), page([3, 4], None), page([5], None))
    with client(handler) as api:
        bodies = [p.body["data"] for p in api.paginate_numbered("/v2/billing", {"size": 2}, page_size=2)]
    assert bodies == [[1, 2], [3, 4], [5]] and [r.url.params["page"] for r in seen] == ["1", "2", "3"]
    handler, seen = scripted(page([1], None), page([], None))
    with client(handler) as api:
        assert [p.body["data"] for p in api.paginate_numbered("/v2/billing")] == [[1]]
    assert len(seen) == 2


# --- incremental sync by day ----------------------------------------------------------------------

JUNE = BillingPeriod("2025-06")


def test_plan_fetches_the_whole_month_without_a_lookback() -> None:
    plan = plan_days(JUNE, today=date(2025, 6, 20), lookback_days=None, stored={date(2025, 6, 1)})
    assert len(plan.fetch) == 30 and plan.reuse == ()
    assert plan.ranges() == [(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC))]


def test_plan_with_lookback_refetches_the_window_and_missing_days_and_reuses_the_rest() -> None:
    stored = {date(2025, 6, d) for d in range(1, 21) if d != 7}
    plan = plan_days(JUNE, today=date(2025, 6, 20), lookback_days=3, stored=stored)
    assert plan.fetch == (date(2025, 6, 7), date(2025, 6, 17), date(2025, 6, 18), date(2025, 6, 19), date(2025, 6, 20))
    assert plan.reuse == tuple(date(2025, 6, d) for d in range(1, 17) if d != 7)
    assert plan.ranges() == [
        (datetime(2025, 6, 7, tzinfo=UTC), datetime(2025, 6, 8, tzinfo=UTC)),
        (datetime(2025, 6, 17, tzinfo=UTC), datetime(2025, 6, 21, tzinfo=UTC)),
    ]
    # A closed month whose days are all stored: only the window's overlap (here June 30) is fetched again.
    closed = plan_days(JUNE, today=date(2025, 7, 2), lookback_days=2, stored={date(2025, 6, d) for d in range(1, 31)})
    assert closed.fetch == (date(2025, 6, 30),) and len(closed.reuse) == 29
    assert plan_days(JUNE, today=date(2025, 5, 31), lookback_days=2) == DayPlan(fetch=(), reuse=())


def test_day_store_keeps_exact_amounts_and_serves_a_day_as_a_page(tmp_path: Path) -> None:
    store = DayStore(tmp_path / "costs")
    assert store.days() == set()
    bucket = {"start_time": 1749945600, "results": [{"amount": {"value": Decimal("0.5617712500000000")}, "n": 3}]}
    store.save(date(2025, 6, 15), {"headers": {"openai-organization": "org-1"}, "buckets": [bucket]})
    assert store.days() == {date(2025, 6, 15)} and not list((tmp_path / "costs").glob("*.tmp"))
    day = store.page(date(2025, 6, 15))
    assert (
        day.body["data"] == [bucket]
        and str(day.body["data"][0]["results"][0]["amount"]["value"]) == "0.5617712500000000"
    )
    assert (
        day.headers["openai-organization"] == "org-1"
        and day.url.startswith("file://")
        and day.url.endswith("2025-06-15.json")
    )
    assert dumps_exact({"a": [Decimal("1.10"), 2, None, "x"]}) == '{"a":[1.10,2,null,"x"]}'


def test_fetch_by_day_stores_fetched_days_and_rebuilds_the_rest(tmp_path: Path) -> None:
    def day_bucket(d: int, value: str) -> dict:
        start = int(datetime(2025, 6, d, tzinfo=UTC).timestamp())
        return {"start_time": start, "end_time": start + 86400, "results": [{"v": Decimal(value)}]}

    def bucket_day(b: dict) -> date:
        return datetime.fromtimestamp(b["start_time"], UTC).date()

    def query(start: datetime, end: datetime) -> dict:
        return {"start_time": int(start.timestamp()), "end_time": int(end.timestamp())}

    store = DayStore(tmp_path)
    served = {d: day_bucket(d, f"{d}.5") for d in range(1, 4)}

    def handler(request: httpx.Request) -> httpx.Response:
        start, end = int(request.url.params["start_time"]), int(request.url.params["end_time"])
        data = [b for b in served.values() if start <= b["start_time"] < end]
        return httpx.Response(200, content=dumps_exact({"data": data, "has_more": False, "next_page": None}))

    with client(handler) as api:
        first = plan_days(JUNE, today=date(2025, 6, 3), lookback_days=1, stored=store.days())
        pages = fetch_by_day(api, "/v1/costs", query, plan=first, bucket_day=bucket_day, store=store)
        assert [b["results"][0]["v"] for p in pages for b in p.body["data"]] == [
            Decimal("1.5"),
            Decimal("2.5"),
            Decimal("3.5"),
        ]
        served[3] = day_bucket(3, "30.25")  # the provider restates day 3; day 4 is new
        served[4] = day_bucket(4, "4.5")
        second = plan_days(JUNE, today=date(2025, 6, 4), lookback_days=1, stored=store.days())
        assert second.fetch == (date(2025, 6, 3), date(2025, 6, 4))
        pages = fetch_by_day(api, "/v1/costs", query, plan=second, bucket_day=bucket_day, store=store)
    values = sorted(b["results"][0]["v"] for p in pages for b in p.body["data"])
    assert values == [Decimal("1.5"), Decimal("2.5"), Decimal("4.5"), Decimal("30.25")]
    assert store.days() == {date(2025, 6, d) for d in range(1, 5)}
    assert store.load(date(2025, 6, 3))["buckets"][0]["results"][0]["v"] == Decimal("30.25")


def test_store_key_separates_queries() -> None:
    a = store_key("/v1/organization/costs", {"group_by": ["project_id", "line_item"], "limit": 31})
    assert a == store_key("/v1/organization/costs", {"limit": 31, "group_by": ["project_id", "line_item"]})
    assert a != store_key("/v1/organization/costs", {"group_by": ["project_id"], "limit": 31})
    assert a.startswith("v1_organization_costs-")
