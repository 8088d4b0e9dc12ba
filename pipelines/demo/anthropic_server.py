"""A local stand-in for Anthropic's Admin usage and cost API, serving recorded pages over real HTTP.

It answers like the Claude API reference describes (platform.claude.com/docs/en/api/admin/...):
- ``GET /v1/organizations/cost_report``: ``starting_at`` (required, RFC 3339), ``ending_at``,
  ``bucket_width=1d``, ``limit`` 1–31 (default 7), ``group_by[]`` ⊂ {workspace_id, description},
  ``page``; results merged over the fields not grouped by, cent strings summed exactly.
- ``GET /v1/organizations/usage_report/messages``: the same window and paging, ``group_by[]`` ⊂
  {api_key_id, workspace_id, model, service_tier, context_window}; daily buckets only (the recording).
- ``GET /v1/organizations/me``: ``{"id", "name", "type": "organization"}``.
- ``GET /v1/organizations/workspaces``: ``limit`` (default 20, max 1000), ``after_id``,
  ``include_archived``; ``{"data", "has_more", "first_id", "last_id"}``.

Every request needs ``x-api-key: <key>`` (401 ``authentication_error`` otherwise) and an
``anthropic-version`` header (400 otherwise); errors use Anthropic's shape
``{"type": "error", "error": {"type", "message"}, "request_id"}`` and every reply a ``request-id``
header. At most ``max_buckets_per_page`` buckets are served per page, so the recorded query gets the
recorded pages back byte for byte. Tests script failures with :meth:`inject` (:class:`Failure`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines.demo.anthropic import (
    COST_FOLDER,
    COST_PATH,
    PAGE_BUCKETS,
    USAGE_FOLDER,
    USAGE_PATH,
    decode_page_token,
    dumps,
    paginate,
    read_pages,
)
from pipelines.demo.company import (
    ANTHROPIC_ORG,
    ANTHROPIC_ORG_NAME,
    ANTHROPIC_WORKSPACE,
    ANTHROPIC_WORKSPACE_NAME,
    ANTHROPIC_WORKSPACE_TAGS,
)
from pipelines.demo.replay_server import BadRequest, ReplayServer, Reply, int_param, parse_target, query_values
from pipelines.demo.replay_server import Failure as _Failure

ORGANIZATION_PATH = "/v1/organizations/me"
WORKSPACES_PATH = "/v1/organizations/workspaces"
DEMO_WORKSPACES = (
    {
        "id": ANTHROPIC_WORKSPACE,
        "archived_at": None,
        "created_at": "2025-03-04T09:12:44.118273Z",
        "display_color": "#6C5BB9",
        "name": ANTHROPIC_WORKSPACE_NAME,
        "tags": ANTHROPIC_WORKSPACE_TAGS,
        "type": "workspace",
    },
)
MAX_LIMIT = 31
DEFAULT_LIMIT = 7
COST_GROUPABLE = ("workspace_id", "description")
COST_DESCRIPTION_FIELDS = ("description", "cost_type", "model", "service_tier", "token_type", "context_window")
USAGE_GROUPABLE = ("api_key_id", "workspace_id", "model", "service_tier", "context_window")


class Failure(_Failure):
    """A scripted failure with Anthropic's error bodies."""

    @classmethod
    def rate_limited(cls, retry_after: str = "1") -> Failure:
        message = "Number of request tokens has exceeded your per-minute rate limit"
        return cls(429, retry_after, error_body("rate_limit_error", message))

    @classmethod
    def server_error(cls) -> Failure:
        return cls(500, None, error_body("api_error", "Internal server error"))

    @classmethod
    def overloaded(cls) -> Failure:
        return cls(529, None, error_body("overloaded_error", "Overloaded"))

    @classmethod
    def malformed_json(cls) -> Failure:
        return cls(200, None, b'{"data": [{"starting_at": "2025-06-01T00:00:00Z", "results": [{"amount": "12')


class AnthropicServer(ReplayServer):
    """Anthropic's Admin usage and cost endpoints on 127.0.0.1; ``base_url`` is set once started."""

    thread_name = "anthropic-replay"

    def __init__(
        self,
        cost_buckets: list[dict[str, Any]],
        usage_buckets: list[dict[str, Any]],
        *,
        api_key: str,
        organization: Mapping[str, str] | None = None,
        workspaces: list[dict[str, Any]] | None = None,
        max_buckets_per_page: int = PAGE_BUCKETS,
    ) -> None:
        super().__init__()
        self.cost_buckets = sorted(cost_buckets, key=lambda b: b["starting_at"])
        self.usage_buckets = sorted(usage_buckets, key=lambda b: b["starting_at"])
        self.api_key = api_key
        self.organization = dict(organization or {"id": ANTHROPIC_ORG, "name": ANTHROPIC_ORG_NAME})
        self.workspaces = list(DEMO_WORKSPACES if workspaces is None else workspaces)
        self.max_buckets_per_page = max_buckets_per_page

    @classmethod
    def from_pages(cls, folder: Path, **kwargs: Any) -> AnthropicServer:
        """A server for the pages :func:`pipelines.demo.anthropic.write` recorded in ``folder``."""
        cost, usage = read_pages(folder / COST_FOLDER), read_pages(folder / USAGE_FOLDER)
        if not cost:
            raise FileNotFoundError(f"{folder / COST_FOLDER}: no page_*.json files")
        return cls([b for p in cost for b in p["data"]], [b for p in usage for b in p["data"]], **kwargs)

    def revise(self, day: str, amounts: Mapping[tuple[str | None, str], str]) -> None:
        """Restate a day like a provider does: new cent strings for (workspace_id, token_type) results."""
        for bucket in self.cost_buckets:
            if bucket["starting_at"].startswith(day):
                for result in bucket["results"]:
                    key = (result.get("workspace_id"), result.get("token_type"))
                    if key in amounts:
                        result["amount"] = amounts[key]

    # --- request handling -------------------------------------------------------------------

    def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        path, query = parse_target(target)
        authorized = headers.get("x-api-key") == self.api_key
        request_id = f"req_{self.record(path, query, authorized):024x}"
        route = path.rstrip("/")
        if method != "GET" or route not in (COST_PATH, USAGE_PATH, ORGANIZATION_PATH, WORKSPACES_PATH):
            return self._reply(404, error_body("not_found_error", "Not found", request_id), request_id)
        if not authorized:
            return self._reply(401, error_body("authentication_error", "invalid x-api-key", request_id), request_id)
        if not headers.get("anthropic-version"):
            message = "anthropic-version: header is required"
            return self._reply(400, error_body("invalid_request_error", message, request_id), request_id)
        if route == ORGANIZATION_PATH:
            return self._reply(200, json.dumps({**self.organization, "type": "organization"}).encode(), request_id)
        if route == WORKSPACES_PATH:
            return self._reply(200, json.dumps(self._workspaces_page(query)).encode(), request_id)
        if (failure := self.next_failure()) is not None:
            extra = {"retry-after": failure.retry_after} if failure.retry_after else {}
            return self._reply(failure.status, failure.body or b"", request_id, extra)
        try:
            body = self._cost_page(query) if route == COST_PATH else self._usage_page(query)
        except BadRequest as exc:
            message = f"{exc.param}: {exc.message}" if exc.param else exc.message
            return self._reply(400, error_body("invalid_request_error", message, request_id), request_id)
        return self._reply(200, dumps(body).encode(), request_id)

    def _reply(self, status: int, body: bytes, request_id: str, extra: dict[str, str] | None = None) -> Reply:
        headers = {
            "Content-Type": "application/json",
            "request-id": request_id,
            "anthropic-organization-id": self.organization["id"],
        }
        return Reply(status, body, {**headers, **(extra or {})})

    def _workspaces_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = int_param(query, "limit", required=False) or 20
        archived = query_values(query, "include_archived") == ["true"]
        listed = [w for w in self.workspaces if archived or w.get("archived_at") is None]
        if after := (query_values(query, "after_id") or [None])[0]:
            ids = [w["id"] for w in listed]
            listed = listed[ids.index(after) + 1 :] if after in ids else []
        data = listed[: max(1, min(limit, 1000))]
        return {
            "data": data,
            "has_more": len(listed) > len(data),
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def _cost_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        group_by = _group_by(query, COST_GROUPABLE)
        return self._page(query, [_regroup_costs(b, group_by) for b in self._window(self.cost_buckets, query)])

    def _usage_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        group_by = _group_by(query, USAGE_GROUPABLE)
        return self._page(query, [_regroup_usage(b, group_by) for b in self._window(self.usage_buckets, query)])

    def _window(self, buckets: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Buckets starting on or after ``starting_at`` (or the page token) and ending by ``ending_at``."""
        start = _time_param(query, "starting_at", required=True)
        end = _time_param(query, "ending_at", required=False)
        assert start is not None  # required
        if query_values(query, "bucket_width") not in ([], ["1d"]):
            raise BadRequest("bucket_width", "this replay serves daily buckets only ('1d')")
        first = start
        if token := (query_values(query, "page") or [None])[0]:
            try:
                first = decode_page_token(token)
            except ValueError:
                raise BadRequest("page", f"Invalid page token: {token}") from None
        return [
            b
            for b in buckets
            if _parse(b["starting_at"]) >= max(start, first) and (end is None or _parse(b["ending_at"]) <= end)
        ]

    def _page(self, query: dict[str, list[str]], buckets: list[dict[str, Any]]) -> dict[str, Any]:
        limit = int_param(query, "limit", required=False) or DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest("limit", f"Input should be less than or equal to {MAX_LIMIT}")
        return paginate(buckets, min(limit, self.max_buckets_per_page))[0]


def _group_by(query: dict[str, list[str]], allowed: tuple[str, ...]) -> list[str]:
    group_by = query_values(query, "group_by")
    if unknown := sorted(set(group_by) - set(allowed)):
        raise BadRequest("group_by", f"Input should be {' or '.join(repr(a) for a in allowed)}, got {unknown}")
    return group_by


def _regroup_costs(bucket: dict[str, Any], group_by: list[str]) -> dict[str, Any]:
    """The bucket's results merged over the fields the query does not group by, cents summed exactly."""
    hidden = [*([] if "workspace_id" in group_by else ["workspace_id"])]
    hidden += [] if "description" in group_by else [*COST_DESCRIPTION_FIELDS, "inference_geo"]
    merged: dict[str, dict[str, Any]] = {}
    for result in bucket["results"]:
        shown = {**result, **dict.fromkeys(hidden)}
        key = json.dumps({k: v for k, v in shown.items() if k != "amount"}, sort_keys=True)
        if key in merged:
            total = Decimal(merged[key]["amount"]) + Decimal(result["amount"])
            merged[key]["amount"] = format(total.normalize(), "f")
        else:
            merged[key] = shown
    return {**bucket, "results": list(merged.values())}


def _regroup_usage(bucket: dict[str, Any], group_by: list[str]) -> dict[str, Any]:
    """The bucket's results merged over the dimensions not grouped by, token counts summed."""
    hidden = [d for d in USAGE_GROUPABLE if d not in group_by]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for result in bucket["results"]:
        shown = {**result, **dict.fromkeys(hidden)}
        key = tuple(shown.get(d) for d in USAGE_GROUPABLE)
        merged[key] = _add_counts(merged[key], shown) if key in merged else json.loads(json.dumps(shown))
    return {**bucket, "results": list(merged.values())}


def _add_counts(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for name, value in other.items():
        if isinstance(value, dict):
            into[name] = _add_counts(dict(into.get(name) or {}), value)
        elif isinstance(value, int) and not isinstance(value, bool):
            into[name] = into.get(name, 0) + value
    return into


def _time_param(query: dict[str, list[str]], name: str, *, required: bool) -> datetime | None:
    values = query_values(query, name)
    if not values:
        if required:
            raise BadRequest(name, "Field required")
        return None
    try:
        return _parse(values[0])
    except ValueError:
        raise BadRequest(name, f"Input should be a valid datetime, got {values[0]!r}") from None


def _parse(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment


def error_body(kind: str, message: str, request_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body).encode()
