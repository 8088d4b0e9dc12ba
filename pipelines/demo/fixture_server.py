"""A local stand-in for OpenAI's Costs API, serving recorded pages over real HTTP.

It answers ``GET /v1/organization/costs`` like the OpenAI API reference "Costs" describes: requires
``Authorization: Bearer <key>`` (401 with OpenAI's ``{"error": {...}}`` body otherwise), honours
``start_time``/``end_time``, ``limit`` (1–180), ``project_ids``, ``group_by`` (``group_by=x`` or the
SDK's ``group_by[]=x``) and the ``page`` cursor, and sends an ``openai-organization`` header.
Buckets come from pages written by :mod:`pipelines.demo.openai_costs`; when the query matches the
recording (the month, ``group_by=project_id&group_by=line_item``, a ``limit`` of at least the
recorded page size) the pages served are the
recorded ones. Tests script failures with :meth:`FixtureServer.inject`: a 429 with ``Retry-After``,
a 500, or a body that is not JSON, each used by the next request.

The socket server, request log and failure queue live in :mod:`pipelines.demo.replay_server`
(shared with the Anthropic stand-in); binds 127.0.0.1 on a free port; ``start()``/``stop()`` or ``with``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.demo.openai_costs import (
    COSTS_PATH,
    PAGE_BUCKETS,
    decode_cursor,
    dumps_exact,
    paginate,
    read_pages,
)
from pipelines.demo.replay_server import (
    BadRequest,
    RecordedRequest,
    ReplayServer,
    Reply,
    int_param,
    parse_target,
    query_values,
)
from pipelines.demo.replay_server import Failure as _Failure

__all__ = ["Failure", "FixtureServer", "RecordedRequest", "Reply"]

GROUPABLE = ("project_id", "line_item", "api_key_id")
MAX_LIMIT = 180
DEFAULT_LIMIT = 7


class Failure(_Failure):
    """A scripted failure with OpenAI's error bodies: a 429 with ``Retry-After``, a 500, or broken JSON."""

    @classmethod
    def rate_limited(cls, retry_after: str = "1") -> Failure:
        return cls(429, retry_after, _error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"))

    @classmethod
    def server_error(cls) -> Failure:
        message = "The server had an error while processing your request. Sorry about that!"
        return cls(500, None, _error_body(message, "server_error"))

    @classmethod
    def malformed_json(cls) -> Failure:
        return cls(200, None, b'{"object": "page", "data": [{"object": "bucket", "start_time": 17')


class FixtureServer(ReplayServer):
    """OpenAI Costs API on 127.0.0.1; ``base_url`` is set once started."""

    thread_name = "openai-fixture"

    def __init__(
        self,
        buckets: list[dict[str, Any]],
        *,
        api_key: str,
        organization: str | None = None,
        max_buckets_per_page: int = PAGE_BUCKETS,
    ) -> None:
        super().__init__()
        self.buckets = sorted(buckets, key=lambda b: b["start_time"])
        self.api_key = api_key
        self.organization = organization or _first_organization(self.buckets)
        self.max_buckets_per_page = max_buckets_per_page

    @classmethod
    def from_pages(cls, folder: Path, **kwargs: Any) -> FixtureServer:
        """A server for the pages :func:`pipelines.demo.openai_costs.write` recorded in ``folder``."""
        pages = read_pages(folder)
        if not pages:
            raise FileNotFoundError(f"{folder}: no page_*.json files")
        return cls([b for p in pages for b in p["data"]], **kwargs)

    # --- request handling (pure apart from the request log and failure queue) --------------

    def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        path, query = parse_target(target)
        authorization = headers.get("Authorization")
        authorized = authorization == f"Bearer {self.api_key}"
        request_id = f"req_{self.record(path, query, authorized):032x}"
        if method != "GET" or path.rstrip("/") != COSTS_PATH:
            return self._reply(404, _error_body(f"Invalid URL ({method} {path})", "invalid_request_error"), request_id)
        if not authorized:
            return self._reply(401, self._auth_error(authorization), request_id)
        if (failure := self.next_failure()) is not None:
            extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return self._reply(failure.status, failure.body or b"", request_id, extra)
        try:
            body = self._costs_page(query)
        except BadRequest as exc:
            return self._reply(400, _error_body(exc.message, "invalid_request_error", param=exc.param), request_id)
        return self._reply(200, (dumps_exact(body) + "\n").encode(), request_id)

    def _reply(self, status: int, body: bytes, request_id: str, extra: dict[str, str] | None = None) -> Reply:
        headers = {"Content-Type": "application/json", "x-request-id": request_id, "openai-processing-ms": "41"}
        if self.organization:
            headers["openai-organization"] = self.organization
        return Reply(status, body, {**headers, **(extra or {})})

    def _auth_error(self, authorization: str | None) -> bytes:
        if not authorization or not authorization.startswith("Bearer "):
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return _error_body(message, "invalid_request_error")
        given = authorization.removeprefix("Bearer ")
        masked = f"{given[:9]}{'*' * max(0, len(given) - 13)}{given[-4:]}" if len(given) > 13 else "****"
        message = f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
        return _error_body(message, "invalid_request_error", code="invalid_api_key")

    def _costs_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        start = int_param(query, "start_time", required=True)
        end = int_param(query, "end_time", required=False)
        limit = int_param(query, "limit", required=False) or DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest("limit", f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if query_values(query, "bucket_width") not in ([], ["1d"]):
            raise BadRequest("bucket_width", "bucket_width must be '1d' for costs")
        group_by = query_values(query, "group_by")
        if unknown := sorted(set(group_by) - set(GROUPABLE)):
            raise BadRequest("group_by", f"Invalid group_by value(s): {', '.join(unknown)}")
        first = start
        if cursor := (query_values(query, "page") or [None])[0]:
            try:
                cursor_start, first = decode_cursor(cursor)
            except ValueError:
                raise BadRequest("page", f"Invalid page cursor: {cursor}") from None
            if cursor_start != start:
                raise BadRequest("page", "page cursor does not belong to this query")
        selected = [
            _regroup(b, group_by, query_values(query, "project_ids"))
            for b in self.buckets
            if b["start_time"] >= first and (end is None or b["start_time"] < end)
        ]
        size = min(limit, self.max_buckets_per_page)
        return paginate(selected, start, size)[0]


def _regroup(bucket: dict[str, Any], group_by: list[str], project_ids: list[str]) -> dict[str, Any]:
    """The bucket as the query asks: filtered by project, results merged over ungrouped fields."""
    results = [r for r in bucket["results"] if not project_ids or r.get("project_id") in project_ids]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for result in results:
        key = tuple(result.get(k) if k in group_by else None for k in GROUPABLE)
        if key not in merged:
            merged[key] = _reshaped(result, group_by)
            continue
        into = merged[key]
        into["amount"] = {**into["amount"], "value": into["amount"]["value"] + result["amount"]["value"]}
        if into.get("quantity") is not None and result.get("quantity") is not None:
            into["quantity"] += result["quantity"]
    return {**bucket, "results": list(merged.values())}


def _reshaped(result: dict[str, Any], group_by: list[str]) -> dict[str, Any]:
    out = {**result, **{k: (result.get(k) if k in group_by else None) for k in GROUPABLE}}
    if "line_item" not in group_by:  # quantities are only meaningful per line item
        out["quantity"] = out["quantity_unit"] = None
    return out


def _error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def _first_organization(buckets: list[dict[str, Any]]) -> str | None:
    return next((r.get("organization_id") for b in buckets for r in b["results"] if r.get("organization_id")), None)
