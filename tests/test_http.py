"""The shared HTTP client: auth from env, retries and backoff, error messages, pagination."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from connectors.base import SourceError
from connectors.http import ApiClient, backoff_seconds, retry_after_seconds

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
