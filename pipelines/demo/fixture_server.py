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

Stdlib only (``http.server``); binds 127.0.0.1 on a free port; ``start()``/``stop()`` or ``with``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipelines.demo.openai_costs import (
    COSTS_PATH,
    PAGE_BUCKETS,
    decode_cursor,
    dumps_exact,
    paginate,
    read_pages,
)

GROUPABLE = ("project_id", "line_item", "api_key_id")
MAX_LIMIT = 180
DEFAULT_LIMIT = 7


@dataclass(frozen=True)
class Failure:
    """A scripted failure for the next request: a status, optional ``Retry-After``, optional raw body."""

    status: int
    retry_after: str | None = None
    body: bytes | None = None

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


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    query: dict[str, list[str]]
    authorized: bool


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FixtureServer:
    """OpenAI Costs API on 127.0.0.1; ``base_url`` is set once started."""

    def __init__(
        self,
        buckets: list[dict[str, Any]],
        *,
        api_key: str,
        organization: str | None = None,
        max_buckets_per_page: int = PAGE_BUCKETS,
    ) -> None:
        self.buckets = sorted(buckets, key=lambda b: b["start_time"])
        self.api_key = api_key
        self.organization = organization or _first_organization(self.buckets)
        self.max_buckets_per_page = max_buckets_per_page
        self.requests: list[RecordedRequest] = []
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self._served = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_pages(cls, folder: Path, **kwargs: Any) -> FixtureServer:
        """A server for the pages :func:`pipelines.demo.openai_costs.write` recorded in ``folder``."""
        pages = read_pages(folder)
        if not pages:
            raise FileNotFoundError(f"{folder}: no page_*.json files")
        return cls([b for p in pages for b in p["data"]], **kwargs)

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FixtureServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        if self._httpd is None:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
            self._httpd.daemon_threads = True
            # A short poll interval keeps stop() fast (shutdown waits for the next poll).
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-fixture", daemon=True
            )
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> FixtureServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *failures: Failure) -> None:
        """Queue failures; each answers one future authorized costs request, in order."""
        with self._lock:
            self._failures.extend(failures)

    # --- request handling (pure apart from the request log and failure queue) --------------

    def respond(self, method: str, target: str, authorization: str | None) -> Reply:
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
        authorized = authorization == f"Bearer {self.api_key}"
        with self._lock:
            self.requests.append(RecordedRequest(url.path, query, authorized))
            self._served += 1
            request_id = f"req_{self._served:032x}"
        if method != "GET" or url.path.rstrip("/") != COSTS_PATH:
            return self._reply(
                404, _error_body(f"Invalid URL ({method} {url.path})", "invalid_request_error"), request_id
            )
        if not authorized:
            return self._reply(401, self._auth_error(authorization), request_id)
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return self._reply(failure.status, failure.body or b"", request_id, headers)
        try:
            body = self._costs_page(query)
        except ValueError as exc:
            param, message = exc.args if len(exc.args) == 2 else (None, str(exc))
            return self._reply(400, _error_body(message, "invalid_request_error", param=param), request_id)
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
        start = _int_param(query, "start_time", required=True)
        end = _int_param(query, "end_time", required=False)
        limit = _int_param(query, "limit", required=False) or DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError("limit", f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if _values(query, "bucket_width") not in ([], ["1d"]):
            raise ValueError("bucket_width", "bucket_width must be '1d' for costs")
        group_by = _values(query, "group_by")
        if unknown := sorted(set(group_by) - set(GROUPABLE)):
            raise ValueError("group_by", f"Invalid group_by value(s): {', '.join(unknown)}")
        first = start
        if cursor := (_values(query, "page") or [None])[0]:
            try:
                cursor_start, first = decode_cursor(cursor)
            except ValueError:
                raise ValueError("page", f"Invalid page cursor: {cursor}") from None
            if cursor_start != start:
                raise ValueError("page", "page cursor does not belong to this query")
        selected = [
            _regroup(b, group_by, _values(query, "project_ids"))
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


def _values(query: dict[str, list[str]], name: str) -> list[str]:
    """A repeated parameter, accepting both ``name=x`` and the SDK's ``name[]=x``."""
    return [v for key in (name, f"{name}[]") for v in query.get(key, []) if v != ""]


def _int_param(query: dict[str, list[str]], name: str, *, required: bool) -> int | None:
    values = _values(query, name)
    if not values:
        if required:
            raise ValueError(name, f"Missing required parameter: '{name}'.")
        return None
    try:
        return int(values[0])
    except ValueError:
        raise ValueError(name, f"Invalid value for '{name}': expected an integer, got {values[0]!r}.") from None


def _error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def _first_organization(buckets: list[dict[str, Any]]) -> str | None:
    return next((r.get("organization_id") for b in buckets for r in b["results"] if r.get("organization_id")), None)


def _handler_for(server: FixtureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def do_GET(self) -> None:
            self._send(server.respond("GET", self.path, self.headers.get("Authorization")))

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
