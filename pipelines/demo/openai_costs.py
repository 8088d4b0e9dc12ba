"""The pages OpenAI's Costs API would return for the demo company's month.

Shape follows the OpenAI API reference "Costs" (``GET /v1/organization/costs``, ``CostsResult``) and
real responses: one bucket per UTC day (empty days keep an empty ``results`` list), results grouped
by ``project_id`` and ``line_item`` (``"gpt-4.1-2025-04-14, cached input"``), ``organization_id``
and ``organization_name`` on every result, ``amount.value`` the exact tokens × list price with
OpenAI's ragged formatting (``0.5617712500000000`` next to ``0.569788``), ``currency`` lower case,
cursor pagination of ``PAGE_BUCKETS`` buckets a page with base64 ``next_page`` cursors.

Token volumes come from ``company.py``: every route served by provider ``openai``, hour by hour,
including the planted retry storm. ``Route.input_tokens`` counts all prompt tokens, of which
``cached_input_tokens`` are billed at the cached rate (OpenAI's ``input_tokens`` includes cached
ones); failed requests are billed their input but produce no output.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines.demo.company import (
    COMPANY,
    FEATURES,
    OPENAI_ORG,
    OPENAI_PRICES,
    OPENAI_PROJECT,
    DemoMonth,
    expected_requests,
)

PAGE_BUCKETS = 7  # the API's default ``limit``; what a plain request returns per page
TOKEN_NOISE = 0.015  # relative day-to-day jitter of billed tokens around the expected volume
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)  # OPENAI_PRICES are USD per 1M tokens
COSTS_PATH = "/v1/organization/costs"

# price key in OPENAI_PRICES → the token type as it appears in ``line_item``
LINE_ITEM_KINDS: tuple[tuple[str, str], ...] = (
    ("input", "input"),
    ("cached_input", "cached input"),
    ("output", "output"),
)


def daily_tokens(month: DemoMonth) -> dict[tuple[date, str, str], float]:
    """Expected billed tokens per (day, model, price key) for OpenAI-served routes."""
    tokens: dict[tuple[date, str, str], float] = defaultdict(float)
    for feature in FEATURES:
        for route in (r for r in feature.routes if r.provider == "openai"):
            for hour in month.hours():
                requests = expected_requests(feature, hour, month) * route.share
                error_rate = month.storm.error_rate if month.storm_active(feature.name, hour) else feature.error_rate
                key = (hour.date(), route.model)
                tokens[(*key, "input")] += requests * (route.input_tokens - route.cached_input_tokens)
                tokens[(*key, "cached_input")] += requests * route.cached_input_tokens
                tokens[(*key, "output")] += requests * (1 - error_rate) * route.output_tokens
    return dict(tokens)


def cost_buckets(month: DemoMonth, seed: int) -> list[dict[str, Any]]:
    """Every daily bucket of the month, as the API returns it grouped by project and line item."""
    rng = random.Random(seed)
    tokens = daily_tokens(month)
    buckets = []
    for day in month.days():
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        results = []
        for model in sorted(OPENAI_PRICES):
            for price_key, kind in LINE_ITEM_KINDS:
                expected = tokens.get((day, model, price_key), 0.0)
                if expected <= 0:
                    continue
                billed = max(0, round(expected * (1 + rng.gauss(0, TOKEN_NOISE))))
                amount = Decimal(billed) * OPENAI_PRICES[model][price_key] / TOKENS_PER_PRICE_UNIT
                results.append(_result(f"{model}, {kind}", amount, billed, ragged=rng.random() < 0.7))
        buckets.append(
            {
                "object": "bucket",
                "start_time": int(start.timestamp()),
                "end_time": int((start + timedelta(days=1)).timestamp()),
                "results": results,
            }
        )
    return buckets


def _result(line_item: str, amount: Decimal, tokens: int, *, ragged: bool) -> dict[str, Any]:
    # OpenAI prints most values padded to 16 decimals and some trimmed; keep both forms.
    value = amount.quantize(Decimal("1e-16")) if ragged else Decimal(format(amount.normalize(), "f"))
    return {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": "usd"},
        "line_item": line_item,
        "project_id": OPENAI_PROJECT,
        "api_key_id": None,
        "organization_id": OPENAI_ORG,
        "organization_name": COMPANY,
        "quantity": tokens,
        "quantity_unit": "tokens",
    }


def encode_cursor(query_start: int, next_bucket_start: int) -> str:
    """An opaque ``next_page`` cursor like OpenAI's (base64 of the query start and the next bucket)."""
    return base64.b64encode(struct.pack(">qq", query_start, next_bucket_start)).decode("ascii")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """(query start, next bucket start) from a cursor made by :func:`encode_cursor`; ValueError if not."""
    raw = base64.b64decode(cursor.encode("ascii"), validate=True)
    if len(raw) != 16:
        raise ValueError(f"cursor {cursor!r} has {len(raw)} bytes, expected 16")
    query_start, next_start = struct.unpack(">qq", raw)
    return query_start, next_start


def page(buckets: list[dict[str, Any]], query_start: int, has_more_after: int | None) -> dict[str, Any]:
    """One response body: these buckets, and a cursor to the bucket starting at ``has_more_after``."""
    return {
        "object": "page",
        "data": buckets,
        "has_more": has_more_after is not None,
        "next_page": encode_cursor(query_start, has_more_after) if has_more_after is not None else None,
    }


def paginate(buckets: list[dict[str, Any]], query_start: int, size: int) -> list[dict[str, Any]]:
    """The response bodies of a listing of ``buckets``, ``size`` buckets a page."""
    chunks = [buckets[i : i + size] for i in range(0, len(buckets), size)] or [[]]
    return [
        page(chunk, query_start, chunks[n + 1][0]["start_time"] if n + 1 < len(chunks) else None)
        for n, chunk in enumerate(chunks)
    ]


def dumps_exact(value: Any, indent: int = 2, _level: int = 0) -> str:
    """JSON text where Decimals are written exactly as their digits (``json.dumps`` can't)."""
    pad, inner = " " * indent * _level, " " * indent * (_level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dumps_exact(v, indent, _level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{inner}{dumps_exact(v, indent, _level + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value))
    return json.dumps(value)


def write(month: DemoMonth, out_dir: Path, seed: int) -> Path:
    """Write the month's Costs API pages as ``page_001.json``...; returns the folder holding them."""
    folder = out_dir / "openai_costs" / month.month
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("page_*.json"):
        stale.unlink()
    query_start = int(month.start.timestamp())
    for n, body in enumerate(paginate(cost_buckets(month, seed), query_start, PAGE_BUCKETS), start=1):
        (folder / f"page_{n:03d}.json").write_text(dumps_exact(body) + "\n", encoding="utf-8")
    return folder


def read_pages(folder: Path) -> list[dict[str, Any]]:
    """The recorded pages in order, amounts parsed exactly."""
    return [json.loads(p.read_text(encoding="utf-8"), parse_float=Decimal) for p in sorted(folder.glob("page_*.json"))]
