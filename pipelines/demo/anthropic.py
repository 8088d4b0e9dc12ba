"""The pages Anthropic's Admin API would return for the demo company's month: cost and usage reports.

Shapes follow the Claude API reference "Get Cost Report" and "Get Messages Usage Report"
(platform.claude.com/docs/en/api/admin/cost_report, .../usage_report): one bucket per UTC day with
RFC 3339 ``starting_at``/``ending_at`` (empty days keep an empty ``results`` list), ``has_more`` and a
``next_page`` token (``page_`` + base64 of the next bucket's start, like the docs' example
``page_MjAyNS0wNS0xNFQwMDowMDowMFo=``), ``PAGE_BUCKETS`` buckets a page (the documented default limit).

- Cost report, grouped by ``workspace_id`` and ``description``: ``amount`` is a decimal string in
  CENTS with as many decimals as the exact price needs (``"370.3701"``, ``"1500"``), ``currency``
  ``"USD"``, ``cost_type`` ``"tokens"``, ``token_type``, ``model``, ``service_tier``,
  ``context_window``, and ``inference_geo`` null (newer responses carry it). Description texts such
  as ``"Claude Sonnet 4.5 Usage - Input Tokens"`` follow the docs' one example; the others are guesses.
- Usage report, grouped by ``api_key_id``, ``workspace_id``, ``model``, ``service_tier`` and
  ``context_window``: ``uncached_input_tokens``, ``cache_read_input_tokens``, ``cache_creation``
  (``ephemeral_1h_input_tokens``, ``ephemeral_5m_input_tokens``), ``output_tokens`` and
  ``server_tool_use.web_search_requests``.

Volumes come from ``company.py``: every route served by provider ``anthropic``, hour by hour, in the
``doc-summaries`` workspace under one API key. A prompt prefix of ``cached_input_tokens`` is written
to the 5-minute cache at most ``CACHE_WRITES_PER_HOUR`` times an hour and read by every other request;
failed requests are billed their input but produce no output (as in the OpenAI pages). Engineers'
Console (Workbench) experiments add a little weekday usage in the default workspace (``workspace_id``
and ``api_key_id`` null), which no product feature owns. Cost = tokens × list price, exactly.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines.demo.company import (
    ANTHROPIC_API_KEY_ID,
    ANTHROPIC_PRICES,
    ANTHROPIC_WORKSPACE,
    FEATURES,
    DemoMonth,
    expected_requests,
)

COST_PATH = "/v1/organizations/cost_report"
USAGE_PATH = "/v1/organizations/usage_report/messages"
COST_FOLDER, USAGE_FOLDER = "cost_report", "usage_report_messages"
PAGE_BUCKETS = 7
TOKEN_NOISE = 0.015  # relative day-to-day jitter of billed tokens around the expected volume
CACHE_WRITES_PER_HOUR = 12  # a 5-minute cache entry is rewritten at most every 5 minutes
CONSOLE_MODEL = "claude-sonnet-4-5-20250929"
CONSOLE_REQUESTS_PER_WEEKDAY = 40
CONSOLE_INPUT_TOKENS, CONSOLE_OUTPUT_TOKENS = 6_000, 1_200
SERVICE_TIER, CONTEXT_WINDOW = "standard", "0-200k"
CENTS_PER_DOLLAR = Decimal(100)
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)  # ANTHROPIC_PRICES are USD per 1M tokens

# token_type → words of the cost report's description
TOKEN_DESCRIPTIONS = {
    "uncached_input_tokens": "Input Tokens",
    "cache_read_input_tokens": "Prompt Caching Read",
    "cache_creation.ephemeral_5m_input_tokens": "Prompt Caching Write (5m)",
    "cache_creation.ephemeral_1h_input_tokens": "Prompt Caching Write (1h)",
    "output_tokens": "Output Tokens",
}
MODEL_NAMES = {"claude-sonnet-4-5-20250929": "Claude Sonnet 4.5"}

UsageKey = tuple[date, str | None, str | None, str]  # day, workspace_id, api_key_id, model


def expected_tokens(month: DemoMonth) -> dict[UsageKey, Counter[str]]:
    """Expected tokens per (day, workspace, API key, model) by the cost report's token_type."""
    tokens: dict[UsageKey, Counter[str]] = defaultdict(Counter)
    for feature in FEATURES:
        for route in (r for r in feature.routes if r.provider == "anthropic"):
            for hour in month.hours():
                requests = expected_requests(feature, hour, month) * route.share
                error_rate = month.storm.error_rate if month.storm_active(feature.name, hour) else feature.error_rate
                writes = min(requests, CACHE_WRITES_PER_HOUR) if route.cached_input_tokens else 0.0
                counts = tokens[(hour.date(), ANTHROPIC_WORKSPACE, ANTHROPIC_API_KEY_ID, route.model)]
                counts["uncached_input_tokens"] += requests * (route.input_tokens - route.cached_input_tokens)
                counts["cache_creation.ephemeral_5m_input_tokens"] += writes * route.cached_input_tokens
                counts["cache_read_input_tokens"] += (requests - writes) * route.cached_input_tokens
                counts["output_tokens"] += requests * (1 - error_rate) * route.output_tokens
    for day in month.days():
        if day.weekday() < 5:
            console = tokens[(day, None, None, CONSOLE_MODEL)]
            console["uncached_input_tokens"] += CONSOLE_REQUESTS_PER_WEEKDAY * CONSOLE_INPUT_TOKENS
            console["output_tokens"] += CONSOLE_REQUESTS_PER_WEEKDAY * CONSOLE_OUTPUT_TOKENS
    return dict(tokens)


def billed_tokens(month: DemoMonth, seed: int) -> dict[UsageKey, Counter[str]]:
    """Whole billed tokens per key and token type: the expected volume with day-to-day noise."""
    rng = random.Random(f"anthropic:{seed}")
    billed: dict[UsageKey, Counter[str]] = {}
    for key, counts in sorted(expected_tokens(month).items(), key=lambda kv: (kv[0][0], str(kv[0][1:]))):
        billed[key] = Counter(
            {t: max(0, round(n * (1 + rng.gauss(0, TOKEN_NOISE)))) for t, n in sorted(counts.items()) if n > 0}
        )
    return billed


def cents(tokens: int, model: str, token_type: str) -> Decimal:
    """The exact cost of ``tokens`` in cents."""
    return Decimal(tokens) * ANTHROPIC_PRICES[model][token_type] * CENTS_PER_DOLLAR / TOKENS_PER_PRICE_UNIT


def cent_string(amount: Decimal) -> str:
    """Cents as the API writes them: a plain decimal string, no exponent, no padding."""
    return format(amount.normalize(), "f")


def cost_buckets(month: DemoMonth, seed: int) -> list[dict[str, Any]]:
    """Every daily cost report bucket of the month, grouped by workspace and description."""
    billed = billed_tokens(month, seed)
    buckets = []
    for day in month.days():
        per_line: dict[tuple[str | None, str, str], Decimal] = defaultdict(Decimal)
        for (d, workspace, _key, model), counts in billed.items():
            if d == day:
                for token_type, n in counts.items():
                    per_line[(workspace, model, token_type)] += cents(n, model, token_type)
        results = [
            _cost_result(workspace, model, token_type, amount)
            for (workspace, model, token_type), amount in sorted(per_line.items(), key=lambda kv: str(kv[0]))
        ]
        buckets.append(_bucket(day, results))
    return buckets


def usage_buckets(month: DemoMonth, seed: int) -> list[dict[str, Any]]:
    """Every daily messages usage bucket of the month, at the finest grouping."""
    billed = billed_tokens(month, seed)
    return [
        _bucket(day, [_usage_result(key, counts) for key, counts in billed.items() if key[0] == day])
        for day in month.days()
    ]


def _bucket(day: date, results: list[dict[str, Any]]) -> dict[str, Any]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {"starting_at": rfc3339(start), "ending_at": rfc3339(start + timedelta(days=1)), "results": results}


def _cost_result(workspace: str | None, model: str, token_type: str, amount: Decimal) -> dict[str, Any]:
    return {
        "amount": cent_string(amount),
        "context_window": CONTEXT_WINDOW,
        "cost_type": "tokens",
        "currency": "USD",
        "description": f"{MODEL_NAMES.get(model, model)} Usage - {TOKEN_DESCRIPTIONS[token_type]}",
        "inference_geo": None,
        "model": model,
        "service_tier": SERVICE_TIER,
        "token_type": token_type,
        "workspace_id": workspace,
    }


def _usage_result(key: UsageKey, counts: Counter[str]) -> dict[str, Any]:
    _day, workspace, api_key, model = key
    return {
        "api_key_id": api_key,
        "cache_creation": {
            "ephemeral_1h_input_tokens": counts["cache_creation.ephemeral_1h_input_tokens"],
            "ephemeral_5m_input_tokens": counts["cache_creation.ephemeral_5m_input_tokens"],
        },
        "cache_read_input_tokens": counts["cache_read_input_tokens"],
        "context_window": CONTEXT_WINDOW,
        "model": model,
        "output_tokens": counts["output_tokens"],
        "server_tool_use": {"web_search_requests": 0},
        "service_tier": SERVICE_TIER,
        "uncached_input_tokens": counts["uncached_input_tokens"],
        "workspace_id": workspace,
    }


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_page_token(next_start: str) -> str:
    """A ``next_page`` token like the docs' example: ``page_`` + base64 of the next bucket's start."""
    return "page_" + base64.b64encode(next_start.encode("ascii")).decode("ascii")


def decode_page_token(token: str) -> datetime:
    """The bucket start a token made by :func:`encode_page_token` points to; ValueError if it isn't one."""
    if not token.startswith("page_"):
        raise ValueError(f"page token {token!r} does not start with 'page_'")
    moment = datetime.fromisoformat(base64.b64decode(token[5:], validate=True).decode("ascii").replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"page token {token!r} has no time zone")
    return moment.astimezone(UTC)


def paginate(buckets: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The response bodies of a listing of ``buckets``, ``size`` buckets a page."""
    chunks = [buckets[i : i + size] for i in range(0, len(buckets), size)] or [[]]
    return [
        {
            "data": chunk,
            "has_more": n + 1 < len(chunks),
            "next_page": encode_page_token(chunks[n + 1][0]["starting_at"]) if n + 1 < len(chunks) else None,
        }
        for n, chunk in enumerate(chunks)
    ]


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2) + "\n"


def write(month: DemoMonth, out_dir: Path, seed: int) -> Path:
    """Write the month's cost and usage report pages under ``anthropic/<month>/``; returns that folder."""
    folder = out_dir / "anthropic" / month.month
    for name, buckets in ((COST_FOLDER, cost_buckets(month, seed)), (USAGE_FOLDER, usage_buckets(month, seed))):
        pages = folder / name
        pages.mkdir(parents=True, exist_ok=True)
        for stale in pages.glob("page_*.json"):
            stale.unlink()
        for n, body in enumerate(paginate(buckets, PAGE_BUCKETS), start=1):
            (pages / f"page_{n:03d}.json").write_text(dumps(body), encoding="utf-8")
    return folder


def read_pages(folder: Path) -> list[dict[str, Any]]:
    """The recorded pages of one report folder in order (amounts stay strings)."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("page_*.json"))]
