"""The HTTP client every API connector uses: bearer auth from an env var, retries, JSON, cursor pages.

Retry policy follows RFC 9110 §10.2.3 (``Retry-After`` as delta-seconds or an HTTP-date) and
OpenAI's "Error codes" guide (help.openai.com / platform.openai.com/docs/guides/error-codes): 429
and 5xx are transient and retried with exponential backoff; 401/403 mean the key is wrong or lacks
the scope, so they fail at once. OpenAI also sends ``retry-after-ms``, which is honoured first.
Cursor pagination follows the OpenAI/Anthropic admin APIs: ``has_more`` + ``next_page`` → ``page``.

Secrets: the token is read from the environment variable named in the config, sent only in the
``Authorization`` header, and scrubbed from every message this module produces.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connectors.base import SourceError

log = logging.getLogger(__name__)

QueryValue = str | int | Sequence[str]
Sleep = Callable[[float], None]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
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

    ``sleep`` is injectable so tests exercise retries without waiting; ``transport`` lets tests
    plug an ``httpx.MockTransport``. Use as a context manager to close the connection pool.
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
    ) -> None:
        self.source, self.provider, self.token_env = source, provider, token_env
        self.max_retries = max(0, max_retries)
        self._sleep = sleep
        self._token = read_token(source, token_env) if token_env else None
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token}"
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
        self, path: str, params: Mapping[str, QueryValue] | None = None, *, cursor_param: str = "page"
    ) -> Iterator[JsonResponse]:
        """Yield every page of a ``has_more``/``next_page`` cursor listing, the first page first."""
        query = dict(params or {})
        seen: set[str] = set()
        while True:
            page = self.get_json(path, query)
            body = page.body
            where = f"GET {httpx.URL(page.url).copy_with(query=None)}"
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise SourceError(self.source, where, "expected a JSON object with a 'data' list (a paginated listing)")
            yield page
            if not body.get("has_more"):
                return
            cursor = body.get("next_page")
            if not isinstance(cursor, str) or not cursor:
                raise SourceError(self.source, where, "field 'next_page' is empty although 'has_more' is true")
            if cursor in seen:
                raise SourceError(self.source, where, f"pagination cursor {cursor!r} repeated; stopping a loop")
            seen.add(cursor)
            query[cursor_param] = cursor

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
            raise SourceError(
                self.source,
                where,
                f"HTTP {status}: credentials rejected by {self.provider}{detail}",
                f"check that {key} is valid and allowed to call this endpoint",
            )
        if status in RETRYABLE_STATUS:
            raise SourceError(
                self.source,
                where,
                f"HTTP {status} from {self.provider} after {attempts} attempt(s){detail}",
                "the provider is rate limiting or failing; retry later or raise max_retries",
            )
        if 400 <= status < 500:
            raise SourceError(self.source, where, f"HTTP {status}: {self.provider} rejected the request{detail}")
        raise SourceError(self.source, where, f"unexpected HTTP {status} from {self.provider}{detail}")

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
            position = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
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
