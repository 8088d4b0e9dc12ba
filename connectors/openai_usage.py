"""OpenAI Costs API rows with token quantities joined from the organization Usage API → FOCUS 1.2.

Follows the OpenAI API reference "Usage" (``GET /v1/organization/usage/{completions, embeddings,
moderations, images, audio_speeches, audio_transcriptions, vector_stores, code_interpreter_sessions}``,
operationIds ``usage-*`` in openai/openai-openapi ``openapi.yaml``: ``UsageResponse``,
``UsageTimeBucket``, ``Usage*Result``; platform.openai.com/docs/api-reference/usage) and "Costs" through
:mod:`connectors.openai_costs`, whose rows are kept as they are: BilledCost and every other cost column
stay exactly the Costs API amounts. Usage queries: ``bucket_width=1d``, ``limit=31`` (the 1d maximum),
``group_by`` each endpoint's documented dimensions (completions: project_id, api_key_id, model,
batch, service_tier), ``project_ids`` like the costs query, cursor ``page`` ← ``next_page``.

What the join does (why: allocation weights a model API's cost by token price × tokens, so it needs
the quantity of every model × token-type row):
- Usage results are summed over API keys per (day, project, model, tier); the tier is ``batch`` for
  batch results, else ``service_tier`` unless that is the default tier (``default``/``auto``).
- A cost row's ``line_item`` names its model, token type, optional ``<tier> |`` prefix and modality
  (:func:`connectors.openai_costs.parse_line_item`); the matching count is ``input_uncached_tokens``
  (``input``; ``input_tokens`` − cached − cache writes when absent), ``input_cached_tokens`` (``cached
  input``), ``input_cache_write_tokens`` (``cache write``), ``output_tokens``, or the text/audio/image
  split (``input_audio_tokens``, ...) when the line item names a modality. Embeddings and moderations
  count ``input_tokens``.
- Rows WITHOUT a Costs API quantity get ConsumedQuantity/Unit (``Tokens``) and PricingQuantity/Unit
  (``1000000 Tokens``), unit prices = cost ÷ PricingQuantity (as connectors/openai_costs.py does), and
  the repair ``quantity_from_usage_api``. Rows WITH one keep it; agreement and disagreement with the
  Usage API are counted in ``stats``.
- Not filled (counted in ``stats["rows_without_usage_match"]``): long-context line items (the Usage API
  doesn't split by context length), line items naming no model, and images/audio/vector store/code
  interpreter line items, whose Costs API quantities (images, characters, seconds, GiB-hours) are
  the billed ones. Those endpoints' totals are reported in ``stats`` (``usage_<endpoint>_<measure>``).
- Usage with no cost row on the same (day, project, model) is counted in ``stats``
  (``usage_keys_without_cost_row``): free usage, or a Costs API that lags the Usage API.

Incremental sync: ``lookback_days`` as in :mod:`connectors.http` (default: the whole month every run).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from connectors import openai_costs
from connectors.base import BillingPeriod, LoadResult
from connectors.http import ApiClient, DayStore, JsonResponse, fetch_by_day, plan_days, store_key
from connectors.openai_costs import COSTS_PATH, LineItem, parse_line_item
from models.config import OpenAICostsUsageSource
from models.focus import MONEY, MONEY_SCALE

USAGE_PATH = "/v1/organization/usage/{endpoint}"
USAGE_LIMIT = 31  # buckets per request: the documented maximum for 1d buckets
GROUP_BY: dict[str, tuple[str, ...]] = {
    "completions": ("project_id", "api_key_id", "model", "batch", "service_tier"),
    "embeddings": ("project_id", "api_key_id", "model"),
    "moderations": ("project_id", "api_key_id", "model"),
    "images": ("project_id", "api_key_id", "model", "size", "source"),
    "audio_speeches": ("project_id", "api_key_id", "model"),
    "audio_transcriptions": ("project_id", "api_key_id", "model"),
    "vector_stores": ("project_id",),
    "code_interpreter_sessions": ("project_id",),
}
# What each endpoint measures, summed into stats.
MEASURES: dict[str, tuple[str, ...]] = {
    "completions": ("input_tokens", "output_tokens", "num_model_requests"),
    "embeddings": ("input_tokens", "num_model_requests"),
    "moderations": ("input_tokens", "num_model_requests"),
    "images": ("images", "num_model_requests"),
    "audio_speeches": ("characters", "num_model_requests"),
    "audio_transcriptions": ("seconds", "num_model_requests"),
    "vector_stores": ("usage_bytes",),
    "code_interpreter_sessions": ("num_sessions",),
}
TOKEN_ENDPOINTS = ("completions", "embeddings", "moderations")
DEFAULT_TIERS = frozenset({None, "default", "auto", "standard"})
TOKENS_PER_PRICING_UNIT = Decimal(1_000_000)
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
UNIT_PRICE_COLUMNS = (
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
)

# (token type in line_item, modality) → the completions usage field that counts it
_COUNTERS: dict[tuple[str, str | None], str] = {
    ("input", None): "input_uncached_tokens",
    ("input", "text"): "input_text_tokens",
    ("input", "audio"): "input_audio_tokens",
    ("input", "image"): "input_image_tokens",
    ("cached input", None): "input_cached_tokens",
    ("cached input", "text"): "input_cached_text_tokens",
    ("cached input", "audio"): "input_cached_audio_tokens",
    ("cached input", "image"): "input_cached_image_tokens",
    ("cache write", None): "input_cache_write_tokens",
    ("cache writes", None): "input_cache_write_tokens",
    ("output", None): "output_tokens",
    ("output", "text"): "output_text_tokens",
    ("output", "audio"): "output_audio_tokens",
    ("output", "image"): "output_image_tokens",
}
_TOKEN_FIELDS = frozenset(_COUNTERS.values()) | {"input_tokens"}

UsageKey = tuple[date, str | None, str, str | None]  # day, project, model, tier


# --- fetching -------------------------------------------------------------------------------------


def load(
    source: OpenAICostsUsageSource,
    period: BillingPeriod,
    *,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
    today: date | None = None,
) -> LoadResult:
    """The month's Costs API rows, with token quantities from the Usage API where the costs lack them."""
    today = today or datetime.now(UTC).date()
    with ApiClient(
        source=source.name,
        provider=openai_costs.PROVIDER,
        base_url=source.base_url,
        token_env=source.api_key_env,
        timeout_seconds=source.timeout_seconds,
        max_retries=source.max_retries,
        sleep=sleep,
        transport=transport,
    ) as client:
        fetch = _Fetcher(client, source, period, today)
        cost_pages = fetch(COSTS_PATH, lambda s, e: costs_query(source, s, e), keep_headers=("openai-organization",))
        usage_pages = {
            endpoint: fetch(USAGE_PATH.format(endpoint=endpoint), _usage_query_for(source, endpoint))
            for endpoint in source.usage_endpoints
        }
    costs = openai_costs.map_pages(source.name, period, cost_pages)
    result = join_usage(costs, usage_pages)
    if source.lookback_days is not None:  # pages mix fresh and stored days: keep a stable day order
        result.frame = result.frame.sort("ChargePeriodStart", maintain_order=True)
    return result


def costs_query(source: OpenAICostsUsageSource, start: datetime, end: datetime) -> dict[str, Any]:
    """The Costs API query of connectors.openai_costs, for ``[start, end)`` instead of the whole month."""
    query = openai_costs.costs_query(source, BillingPeriod.containing(start))
    return {**query, "start_time": int(start.timestamp()), "end_time": int(end.timestamp())}


def usage_query(source: OpenAICostsUsageSource, endpoint: str, start: datetime, end: datetime) -> dict[str, Any]:
    """One Usage API endpoint's query for ``[start, end)``: daily buckets at its finest grouping."""
    return {
        "start_time": int(start.timestamp()),
        "end_time": int(end.timestamp()),
        "bucket_width": "1d",
        "group_by": list(GROUP_BY[endpoint]),
        "limit": USAGE_LIMIT,
        "project_ids": list(source.project_ids),
    }


def _usage_query_for(source: OpenAICostsUsageSource, endpoint: str) -> Callable[[datetime, datetime], dict[str, Any]]:
    return lambda start, end: usage_query(source, endpoint, start, end)


def bucket_day(bucket: Any) -> date | None:
    start = bucket.get("start_time") if isinstance(bucket, dict) else None
    if not isinstance(start, int) or isinstance(start, bool):
        return None
    return datetime.fromtimestamp(start, UTC).date()


@dataclass
class _Fetcher:
    """Fetches one endpoint's pages for the period, by day plan and (with a look-back) day store."""

    client: ApiClient
    source: OpenAICostsUsageSource
    period: BillingPeriod
    today: date

    def __call__(
        self,
        path: str,
        query: Callable[[datetime, datetime], dict[str, Any]],
        keep_headers: tuple[str, ...] = (),
    ) -> list[JsonResponse]:
        store = None
        if self.source.lookback_days is not None:
            shape = {k: v for k, v in query(self.period.start, self.period.end).items() if "time" not in k}
            store = DayStore(Path(self.source.cache_dir) / self.source.name / store_key(path, shape))
        plan = plan_days(
            self.period, today=self.today, lookback_days=self.source.lookback_days, stored=store.days() if store else ()
        )
        return fetch_by_day(
            self.client, path, query, plan=plan, bucket_day=bucket_day, store=store, keep_headers=keep_headers
        )


# --- the join (pure) ------------------------------------------------------------------------------


@dataclass
class UsageIndex:
    """Token counts per (day, project, model, tier), summed over API keys, plus per-endpoint totals."""

    tokens: dict[UsageKey, Counter[str]] = field(default_factory=dict)
    totals: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_pages(cls, pages: Mapping[str, Iterable[JsonResponse]]) -> UsageIndex:
        index = cls()
        for endpoint, endpoint_pages in pages.items():
            for page in endpoint_pages:
                for bucket in page.body.get("data") or []:
                    index._add_bucket(endpoint, bucket)
        return index

    def _add_bucket(self, endpoint: str, bucket: Any) -> None:
        day = bucket_day(bucket)
        results = bucket.get("results") if isinstance(bucket, dict) else None
        for result in results if isinstance(results, list) else []:
            self.totals[f"usage_{endpoint}_results"] += 1
            if day is None or not isinstance(result, dict) or not _counts_are_integers(result):
                self.repairs["usage_result_unreadable"] += 1
                continue
            for measure in MEASURES.get(endpoint, ()):
                self.totals[f"usage_{endpoint}_{measure}"] += result.get(measure) or 0
            model = result.get("model")
            if endpoint in TOKEN_ENDPOINTS and isinstance(model, str) and model:
                key = (day, _text(result.get("project_id")), model, usage_tier(result))
                self.tokens.setdefault(key, Counter()).update(_token_counts(endpoint, result))

    def count(self, day: date, project: str | None, item: LineItem) -> int | None:
        """Tokens the usage reports for a cost row's line item; None when they can't say."""
        counter = _COUNTERS.get((item.kind, item.modality))
        counts = self.tokens.get((day, project, item.model, _line_item_tier(item.tier)))
        if counter is None or counts is None or item.context:
            return None
        return counts[counter] or None  # zero tokens can't explain a cost


def usage_tier(result: Mapping[str, Any]) -> str | None:
    """The tier a usage result is priced in: ``batch``, a non-default ``service_tier``, or None."""
    if result.get("batch") is True:
        return "batch"
    tier = result.get("service_tier")
    return None if tier in DEFAULT_TIERS else str(tier)


def _line_item_tier(tier: str | None) -> str | None:
    return None if tier in DEFAULT_TIERS else tier


def _counts_are_integers(result: Mapping[str, Any]) -> bool:
    """Token and request counts are integers (or absent); anything else makes the result unreadable."""
    numeric = _TOKEN_FIELDS | {m for ms in MEASURES.values() for m in ms}
    return all(
        result.get(k) is None or (isinstance(result.get(k), int) and not isinstance(result.get(k), bool))
        for k in numeric
    )


def _token_counts(endpoint: str, result: Mapping[str, Any]) -> Counter[str]:
    counts = Counter({k: v for k in _TOKEN_FIELDS if isinstance(v := result.get(k), int)})
    if endpoint != "completions":  # embeddings and moderations: every input token is uncached
        counts["input_uncached_tokens"] = counts["input_tokens"]
    elif result.get("input_uncached_tokens") is None:  # older responses: input_tokens includes the rest
        rest = counts["input_cached_tokens"] + counts["input_cache_write_tokens"]
        counts["input_uncached_tokens"] = counts["input_tokens"] - rest
    return counts


def join_usage(costs: LoadResult, usage_pages: Mapping[str, list[JsonResponse]]) -> LoadResult:
    """``costs`` with quantities filled from the usage pages; every cost column left untouched."""
    index = UsageIndex.from_pages(usage_pages)
    frame = costs.frame
    stats: Counter[str] = Counter()
    repairs: Counter[str] = Counter(costs.repairs) + index.repairs
    quantities: list[Decimal | None] = []
    used_keys: set[tuple[date, str | None, str]] = set()
    for row in frame.select("ChargePeriodStart", "SubAccountId", "ChargeDescription", "ConsumedQuantity",
                            "ConsumedUnit").iter_rows():  # fmt: skip
        start, project, line_item, quantity, unit = row
        item = parse_line_item(line_item) if line_item else None
        tokens = index.count(start.date(), project, item) if item else None
        if item:
            used_keys.add((start.date(), project, item.model))
        if tokens is None:
            stats["rows_without_usage_match"] += 1
            quantities.append(None)
        elif quantity is None:
            repairs["quantity_from_usage_api"] += 1
            quantities.append(Decimal(tokens))
        else:
            same = unit == "Tokens" and quantity == tokens
            stats["quantity_matches_usage_api" if same else "quantity_differs_from_usage_api"] += 1
            quantities.append(None)
    stats["usage_keys_without_cost_row"] = sum(
        1
        for (day, project, model, _tier), counts in index.tokens.items()
        if (day, project, model) not in used_keys and any(counts.values())
    )
    usage_urls = [p.url for pages in usage_pages.values() for p in pages]
    return LoadResult(
        frame=_fill(frame, quantities),
        quarantine=costs.quarantine,
        files=[*costs.files, *usage_urls],
        source_total=costs.source_total,
        repairs=dict(repairs),
        stats={**costs.stats, "usage_pages": len(usage_urls), **index.totals, **stats},
    )


def _fill(frame: pl.DataFrame, tokens: list[Decimal | None]) -> pl.DataFrame:
    """Set quantities (and unit prices) on the rows where ``tokens`` has a value; others unchanged."""
    has = pl.Series(values=[t is not None for t in tokens], dtype=pl.Boolean)
    consumed = pl.Series(values=tokens, dtype=MONEY)
    pricing = pl.Series(values=[t / TOKENS_PER_PRICING_UNIT if t is not None else None for t in tokens], dtype=MONEY)
    unit_prices = [_unit_price(c, t) for c, t in zip(frame["BilledCost"].to_list(), tokens, strict=True)]
    prices = pl.Series(values=unit_prices, dtype=MONEY)
    updates = {
        "ConsumedQuantity": pl.when(has).then(consumed).otherwise(pl.col("ConsumedQuantity")),
        "ConsumedUnit": pl.when(has).then(pl.lit("Tokens")).otherwise(pl.col("ConsumedUnit")),
        "PricingQuantity": pl.when(has).then(pricing).otherwise(pl.col("PricingQuantity")),
        "PricingUnit": pl.when(has).then(pl.lit("1000000 Tokens")).otherwise(pl.col("PricingUnit")),
    }
    for column in UNIT_PRICE_COLUMNS:
        if column in frame.columns:
            updates[column] = pl.when(has).then(prices).otherwise(pl.col(column))
    return frame.with_columns(**updates) if frame.height else frame


def _unit_price(cost: Decimal | None, tokens: Decimal | None) -> Decimal | None:
    """Cost per 1M tokens at the warehouse scale; None without a (non-zero) count."""
    if cost is None or not tokens:
        return None
    return (cost * TOKENS_PER_PRICING_UNIT / tokens).quantize(MONEY_QUANTUM, ROUND_HALF_EVEN)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None
