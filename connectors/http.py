"""The HTTP client every API connector uses: auth from an env var, retries, JSON, pagination, day sync.

Retry policy follows RFC 9110 §10.2.3 (``Retry-After`` as delta-seconds or an HTTP-date), OpenAI's
"Error codes" guide (platform.openai.com/docs/guides/error-codes) and Anthropic's "Errors" page
(docs.claude.com/en/api/errors): 429, 5xx and Anthropic's 529 ``overloaded_error`` are transient and
retried with exponential backoff; 401/403 mean the key is wrong or lacks the scope, so they fail at
once naming the provider. OpenAI also sends ``retry-after-ms``, which is honoured first.

Pagination: cursor listings (OpenAI/Anthropic admin APIs: ``has_more`` + ``next_page`` → ``page``;
field names configurable for APIs like Vast.ai's ``next_token``) and numbered pages (``page=1,2,...``).

Incremental sync by day (:func:`plan_days`, :class:`DayStore`, :func:`fetch_by_day`): the warehouse
replaces a whole (source, month) partition in one transaction, so every load must return the whole
month. The default (``lookback_days=None``) therefore re-fetches the full month on every run: one
or two requests per endpoint, and a revised day is simply read again. With ``lookback_days=N`` a run
re-fetches only the days in ``[today - N, today]`` (plus days never fetched) and rebuilds the rest of
the month from the raw daily buckets kept on disk by the previous runs; the month is still complete,
so the partition replace stays correct. A revision older than the window is missed until a full run.

Secrets: the token is read from the environment variable named in the config, sent only in the
auth header (``Authorization: Bearer`` or a provider header such as Anthropic's ``x-api-key``), and
scrubbed from every message this module produces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from connectors.base import BillingPeriod, SourceError

log = logging.getLogger(__name__)

QueryValue = str | int | Sequence[str]
Sleep = Callable[[float], None]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})  # 529: Anthropic's overloaded_error
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
RETRY_AFTER_CAP_SECONDS = 300.0  # a server asking for longer is treated as down, not waited on
ERROR_TEXT_LIMIT = 300
USER_AGENT = "inference-cogs/0.1 (+https://github.com/inference-cogs)"

# Key shapes that must never reach a log or an exception, even partially echoed by the provider.
_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-*]{3,}"),
    re.compile(r"(?i)bearer\s+\S+"),
)


class HttpStatusError(SourceError):
    """The provider answered with an error status (after retries); ``status`` says which."""

    def __init__(self, source: str, where: str, problem: str, hint: str = "", *, status: int) -> None:
        super().__init__(source, where, problem, hint)
        self.status = status


@dataclass(frozen=True)
class JsonResponse:
    """A successful response: the URL asked for (no secrets in it), headers, and the parsed body."""

    url: str
    status: int
    headers: httpx.Headers
    body: Any


def read_token(source: str, env_var: str) -> str:
    """The secret held in ``env_var``; a clear error naming the variable (never its value) if unset."""
    token = os.environ.get(env_var, "").strip()
    if not token:
        raise SourceError(
            source,
            "api_key_env",
            f"environment variable {env_var} is not set",
            f"export {env_var} with the API key before running (the key never goes in cogs.yaml)",
        )
    return token


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff for retry number ``attempt`` (0-based): 1, 2, 4, ... capped at 60 s."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)


def retry_after_seconds(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """The wait a 429/503 asks for: ``retry-after-ms``, then ``Retry-After`` seconds or HTTP-date."""
    if ms := headers.get("retry-after-ms"):
        try:
            return min(RETRY_AFTER_CAP_SECONDS, max(0.0, float(ms) / 1000))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(RETRY_AFTER_CAP_SECONDS, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    wait = (when - (now or datetime.now(UTC))).total_seconds()
    return min(RETRY_AFTER_CAP_SECONDS, max(0.0, wait))


class ApiClient:
    """GET JSON from one provider API with auth, timeouts, retries and clear errors.

    ``provider`` names the provider in every error ("OpenAI", "Anthropic"). The token goes in
    ``auth_header``, prefixed by ``auth_scheme`` when there is one (``Authorization: Bearer <key>``;
    Anthropic: ``auth_header="x-api-key", auth_scheme=None``). ``sleep`` is injectable so tests
    exercise retries without waiting; ``transport`` lets tests plug an ``httpx.MockTransport``.
    Use as a context manager to close the connection pool.
    """

    def __init__(
        self,
        *,
        source: str,
        provider: str,
        base_url: str,
        token_env: str | None,
        timeout_seconds: float = 30.0,
        max_retries: int = 5,
        sleep: Sleep = time.sleep,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        auth_header: str = "Authorization",
        auth_scheme: str | None = "Bearer",
    ) -> None:
        self.source, self.provider, self.token_env = source, provider, token_env
        self.max_retries = max(0, max_retries)
        self._sleep = sleep
        self._token = read_token(source, token_env) if token_env else None
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if self._token:
            all_headers[auth_header] = f"{auth_scheme} {self._token}" if auth_scheme else self._token
        # Redirects are not followed: a redirect to another host must not carry the bearer token.
        self._client = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds),
            headers=all_headers,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # --- requests ---------------------------------------------------------------------------

    def get_json(self, path: str, params: Mapping[str, QueryValue] | None = None) -> JsonResponse:
        """GET ``path`` and parse the JSON body (floats as Decimal), retrying transient failures."""
        request = self._client.build_request("GET", path, params=_drop_empty(params or {}))
        where = f"GET {request.url.copy_with(query=None)}"
        for attempt in range(self.max_retries + 1):
            last_try = attempt == self.max_retries
            try:
                response = self._client.send(request)
            except httpx.TransportError as exc:
                if last_try:
                    raise SourceError(
                        self.source,
                        where,
                        f"request failed after {attempt + 1} attempt(s): {type(exc).__name__}: {self.redact(str(exc))}",
                        "check base_url and network access, or raise timeout_seconds",
                    ) from None
                self._wait(where, type(exc).__name__, backoff_seconds(attempt), attempt)
                continue
            if response.status_code in RETRYABLE_STATUS and not last_try:
                delay = retry_after_seconds(response.headers)
                self._wait(where, f"HTTP {response.status_code}", delay or backoff_seconds(attempt), attempt)
                continue
            self._raise_for_status(where, response, attempts=attempt + 1)
            return JsonResponse(str(request.url), response.status_code, response.headers, self._parse(where, response))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def paginate(
        self,
        path: str,
        params: Mapping[str, QueryValue] | None = None,
        *,
        cursor_param: str = "page",
        items_field: str = "data",
        cursor_field: str = "next_page",
        has_more_field: str | None = "has_more",
    ) -> Iterator[JsonResponse]:
        """Yield every page of a cursor listing, the first page first.

        Defaults follow the OpenAI/Anthropic admin APIs (``data``, ``has_more``, ``next_page`` →
        ``page``). With ``has_more_field=None`` the listing ends when the cursor is empty.
        """
        query = dict(params or {})
        seen: set[str] = set()
        while True:
            page = self.get_json(path, query)
            body = page.body
            where = f"GET {httpx.URL(page.url).copy_with(query=None)}"
            if not isinstance(body, dict) or not isinstance(body.get(items_field), list):
                raise SourceError(
                    self.source, where, f"expected a JSON object with a '{items_field}' list (a paginated listing)"
                )
            yield page
            cursor = body.get(cursor_field)
            if has_more_field is not None:
                if not body.get(has_more_field):
                    return
                if not isinstance(cursor, str) or not cursor:
                    raise SourceError(
                        self.source, where, f"field '{cursor_field}' is empty although '{has_more_field}' is true"
                    )
            elif cursor is None or cursor == "":
                return
            cursor = str(cursor)
            if cursor in seen:
                raise SourceError(self.source, where, f"pagination cursor {cursor!r} repeated; stopping a loop")
            seen.add(cursor)
            query[cursor_param] = cursor

    def paginate_numbered(
        self,
        path: str,
        params: Mapping[str, QueryValue] | None = None,
        *,
        page_param: str = "page",
        first_page: int = 1,
        items_field: str = "data",
        page_size: int | None = None,
        max_pages: int = 10_000,
    ) -> Iterator[JsonResponse]:
        """Yield numbered pages (``page=1, 2, ...``) until one is empty or shorter than ``page_size``."""
        query = dict(params or {})
        for number in range(first_page, first_page + max_pages):
            query[page_param] = number
            page = self.get_json(path, query)
            items = page.body.get(items_field) if isinstance(page.body, dict) else None
            if not isinstance(items, list):
                where = f"GET {httpx.URL(page.url).copy_with(query=None)}"
                raise SourceError(
                    self.source, where, f"expected a JSON object with a '{items_field}' list on page {number}"
                )
            if not items:
                return
            yield page
            if page_size is not None and len(items) < page_size:
                return
        raise SourceError(self.source, f"GET {path}", f"more than {max_pages} pages; stopping a loop")

    # --- helpers ----------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with the token and anything shaped like a key replaced by ``***``."""
        if self._token:
            text = text.replace(self._token, "***")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub("***", text)
        return text

    def _wait(self, where: str, why: str, delay: float, attempt: int) -> None:
        log.warning(
            "source %r: %s: %s, retry %d of %d in %.1f s", self.source, where, why, attempt + 1, self.max_retries, delay
        )
        self._sleep(delay)

    def _raise_for_status(self, where: str, response: httpx.Response, *, attempts: int) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = self._provider_message(response)
        if status in (401, 403):
            key = f"the key in {self.token_env}" if self.token_env else "the request"
            raise HttpStatusError(
                self.source,
                where,
                f"HTTP {status}: credentials rejected by {self.provider}{detail}",
                f"check that {key} is valid and allowed to call this endpoint",
                status=status,
            )
        if status in RETRYABLE_STATUS:
            raise HttpStatusError(
                self.source,
                where,
                f"HTTP {status} from {self.provider} after {attempts} attempt(s){detail}",
                "the provider is rate limiting or failing; retry later or raise max_retries",
                status=status,
            )
        if 400 <= status < 500:
            raise HttpStatusError(
                self.source, where, f"HTTP {status}: {self.provider} rejected the request{detail}", status=status
            )
        raise HttpStatusError(
            self.source, where, f"unexpected HTTP {status} from {self.provider}{detail}", status=status
        )

    def _provider_message(self, response: httpx.Response) -> str:
        """The provider's own error message (OpenAI/Anthropic ``{"error": {...}}``), redacted."""
        text = response.text
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict):
            parts = [str(error[k]) for k in ("code", "type") if error.get(k)]
            message = str(error.get("message") or "")
            text = f"{message} ({', '.join(parts)})" if parts else message
        elif isinstance(error, str):
            text = error
        text = self.redact(" ".join(text.split()))[:ERROR_TEXT_LIMIT]
        return f": {text}" if text else ""

    def _parse(self, where: str, response: httpx.Response) -> Any:
        try:
            return json.loads(response.content, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            position = f": line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise SourceError(
                self.source,
                where,
                f"response from {self.provider} is not valid JSON ({reason}{position}; "
                f"{len(response.content)} bytes, content-type {response.headers.get('content-type', '?')!r})",
                "a proxy or gateway in base_url may be answering instead of the API",
            ) from None


def _drop_empty(params: Mapping[str, QueryValue]) -> dict[str, QueryValue]:
    """Query parameters without empty lists (``project_ids=[]`` means "no filter", not "none")."""
    return {k: v for k, v in params.items() if not (isinstance(v, list | tuple) and not v)}


# --- incremental sync by day ----------------------------------------------------------------------

BucketDay = Callable[[Any], date | None]
"""The UTC day a raw bucket covers (None when the bucket can't tell), per provider's bucket shape."""


@dataclass(frozen=True)
class DayPlan:
    """Which days of a billing period a run requests from the API, and which it reuses from a DayStore."""

    fetch: tuple[date, ...]
    reuse: tuple[date, ...] = ()

    def ranges(self) -> list[tuple[datetime, datetime]]:
        """``fetch`` as contiguous ``[start, end)`` UTC windows, one API query each."""
        windows: list[tuple[datetime, datetime]] = []
        for day in sorted(self.fetch):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if windows and windows[-1][1] == start:
                windows[-1] = (windows[-1][0], start + timedelta(days=1))
            else:
                windows.append((start, start + timedelta(days=1)))
        return windows


def period_days(period: BillingPeriod) -> list[date]:
    """Every UTC day of the billing period, in order."""
    first, count = period.start.date(), (period.end - period.start).days
    return [first + timedelta(days=n) for n in range(count)]


def plan_days(
    period: BillingPeriod, *, today: date, lookback_days: int | None, stored: Collection[date] = ()
) -> DayPlan:
    """The days to (re)fetch for ``period``.

    ``lookback_days=None``: the whole month, every run (the default; always correct). Otherwise the
    days of ``[today - lookback_days, today]`` in the month, plus elapsed days missing from
    ``stored``; every other elapsed day is reused. Days after ``today`` have no data yet.
    """
    days = period_days(period)
    if lookback_days is None:
        return DayPlan(fetch=tuple(days))
    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    window_start = today - timedelta(days=lookback_days)
    elapsed = [d for d in days if d <= today]
    fetch = tuple(d for d in elapsed if d >= window_start or d not in stored)
    return DayPlan(fetch=fetch, reuse=tuple(d for d in elapsed if d not in fetch))


class DayStore:
    """Raw API buckets of one endpoint and query, one JSON file per UTC day, written atomically.

    Amounts keep their exact JSON text (Decimals are written digit for digit), so a month rebuilt
    from the store maps to the same cents as the responses it came from.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, day: date) -> Path:
        return self.root / f"{day.isoformat()}.json"

    def days(self) -> set[date]:
        if not self.root.is_dir():
            return set()
        found = set()
        for file in self.root.glob("????-??-??.json"):
            try:
                found.add(date.fromisoformat(file.stem))
            except ValueError:
                continue
        return found

    def save(self, day: date, record: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.path(day).with_suffix(".json.tmp")
        temporary.write_text(dumps_exact(record), encoding="utf-8")
        os.replace(temporary, self.path(day))  # readers see the old day or the new one, never half

    def load(self, day: date) -> dict[str, Any]:
        return json.loads(self.path(day).read_text(encoding="utf-8"), parse_float=Decimal)

    def page(self, day: date) -> JsonResponse:
        """The stored day as a one-page listing whose URL is the file it came from."""
        record = self.load(day)
        body = {"data": record.get("buckets", []), "has_more": False, "next_page": None}
        return JsonResponse(self.path(day).resolve().as_uri(), 200, httpx.Headers(record.get("headers", {})), body)


def store_key(endpoint: str, query: Mapping[str, QueryValue]) -> str:
    """A folder name for an endpoint and the non-time parts of its query (a changed filter starts afresh)."""
    shape = json.dumps(dict(query), sort_keys=True, default=list)
    digest = hashlib.sha256(shape.encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', endpoint.strip('/'))}-{digest}"


def fetch_by_day(
    client: ApiClient,
    path: str,
    query: Callable[[datetime, datetime], Mapping[str, QueryValue]],
    *,
    plan: DayPlan,
    bucket_day: BucketDay,
    store: DayStore | None = None,
    keep_headers: Sequence[str] = (),
) -> list[JsonResponse]:
    """Fetch the plan's day ranges (``query(start, end)`` builds each request), then add reused days.

    Fetched days are written to ``store`` (days without a bucket are stored empty, so "no usage"
    is remembered too). Reused days come back as one page each, read from the store.
    """
    if plan.reuse and store is None:
        raise ValueError("a plan that reuses days needs a DayStore")
    pages: list[JsonResponse] = []
    for start, end in plan.ranges():
        fetched = list(client.paginate(path, query(start, end)))
        pages += fetched
        if store is not None:
            _store_fetched(client, store, fetched, (start, end), bucket_day, keep_headers)
    return pages + [store.page(day) for day in plan.reuse if store is not None]


def _store_fetched(
    client: ApiClient,
    store: DayStore,
    pages: list[JsonResponse],
    window: tuple[datetime, datetime],
    bucket_day: BucketDay,
    keep_headers: Sequence[str],
) -> None:
    first, last = window[0].date(), (window[1] - timedelta(days=1)).date()
    by_day: dict[date, list[Any]] = {}
    for page in pages:
        for bucket in page.body.get("data", []):
            day = bucket_day(bucket)
            if day is None or not first <= day <= last:
                # The mapper quarantines such a bucket; storing the window would hide it next run.
                log.warning("source %r: %s: bucket outside %s..%s not stored", client.source, page.url, first, last)
                return
            by_day.setdefault(day, []).append(bucket)
    headers = {k: v for k, v in pages[-1].headers.items() if k.lower() in {h.lower() for h in keep_headers}}
    fetched_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    day = first
    while day <= last:
        url = pages[0].url if pages else ""
        store.save(day, {"url": url, "fetched_at": fetched_at, "headers": headers, "buckets": by_day.get(day, [])})
        day += timedelta(days=1)


def dumps_exact(value: Any) -> str:
    """Compact JSON where Decimals keep their exact digits (``json.dumps`` would need floats)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value))
    return json.dumps(value)
