"""Anthropic Admin API cost report and messages usage report → FOCUS 1.2 rows.

Follows the Claude API reference "Get Cost Report" (``GET /v1/organizations/cost_report``,
platform.claude.com/docs/en/api/admin/cost_report/retrieve), "Get Messages Usage Report"
(``GET /v1/organizations/usage_report/messages``, platform.claude.com/docs/en/api/admin/usage_report),
"Get Current Organization" (``GET /v1/organizations/me``), "List Workspaces"
(``GET /v1/organizations/workspaces``: ``after_id`` ← ``last_id`` paging), the "Usage and Cost API" guide
(platform.claude.com/docs/en/build-with-claude/usage-cost-api) and "Errors" (docs.claude.com/en/api/errors).
Requests carry ``x-api-key: <Admin key>`` and ``anthropic-version: 2023-06-01``; both reports take
``starting_at``/``ending_at`` (RFC 3339), ``bucket_width=1d``, ``limit`` ≤ 31 and ``group_by[]``, and
page with ``has_more``/``next_page`` → ``page``.

Provider quirks handled:
- ``amount`` is a decimal STRING in the lowest currency unit: ``"123.45"`` in USD is $1.2345. It is
  divided by 100 exactly (Decimal), never parsed as a float; a JSON number counts as a repair.
- ``workspace_id`` is null for the default workspace → SubAccountId ``"default"``.
- ``api_key_id`` is null for Console (Workbench) usage; the cost report can't group by key at all.
- The cost report carries no quantities. Token counts come from the usage report, joined on
  (day, workspace, model, service_tier, context_window) and summed over API keys, into
  ConsumedQuantity (Tokens) / PricingQuantity (1000000 Tokens); web search cost rows get
  ``server_tool_use.web_search_requests`` (Requests / 1000 Requests). Code execution has no usage
  counter, so its rows keep NULL quantities.
- Priority Tier cost is not in the cost report (the usage guide says so): usage in the ``priority``
  tiers has no cost row here. Its tokens are reported in ``stats`` (``priority_tier_tokens``) so the
  gap is visible; reconcile it against the invoice.
- Newer docs point to a beta Usage & Cost Analytics API (``/v1/organizations/analytics/...``, header
  ``anthropic-beta: analytics-usage-cost-2026-08-24``); these two endpoints are the documented ones for
  Console (Claude Platform) organizations with an Admin key, and what this connector reads.

FOCUS choices: one cost result → one row; ChargePeriod = the daily bucket; all four costs = the
amount (no discounts exposed); BillingAccountId/Name from ``/v1/organizations/me`` (``"anthropic"`` if
a gateway doesn't serve it); SubAccountId/Name = the workspace id and name (from the workspace list,
archived ones included; ``"default"``/``"Default Workspace"``), SubAccountType ``Workspace``, Tags = the
workspace's own tags; SkuId = the model (``cost_type`` for non-token costs); SkuPriceId = model, token
type, tier and context window (each has its own price); SkuMeter names the token type;
SkuPriceDetails = ``{"x_Model", "x_TokenType", "x_ServiceTier", "x_ContextWindow", "x_CostType"}``;
ChargeDescription = ``description`` verbatim; x_line_item_type = ``cost_type``. Anthropic prices and
bills in USD: PricingCurrency = BillingCurrency; where the quantity is known, ListUnitPrice =
ContractedUnitPrice = cost ÷ PricingQuantity (the price per 1M tokens), so cost = price × quantity
(the same conventions as connectors/openai_costs.py). FOCUS names must not be null beside an id, so
a name falls back to its id.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.http import (
    ApiClient,
    DayStore,
    HttpStatusError,
    JsonResponse,
    fetch_by_day,
    plan_days,
    store_key,
)
from models.config import AnthropicCostsSource
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP

COST_PATH = "/v1/organizations/cost_report"
USAGE_PATH = "/v1/organizations/usage_report/messages"
ORGANIZATION_PATH = "/v1/organizations/me"
WORKSPACES_PATH = "/v1/organizations/workspaces"
WORKSPACES_PAGE_LIMIT = 1000  # the documented maximum
COST_GROUP_BY = ("workspace_id", "description")
USAGE_GROUP_BY = ("api_key_id", "workspace_id", "model", "service_tier", "context_window")
PAGE_LIMIT = 31  # buckets per request: the documented maximum for 1d buckets, a month in one page
PROVIDER = "Anthropic"
SERVICE_NAME = "Claude API"
DEFAULT_ACCOUNT_ID = "anthropic"
DEFAULT_WORKSPACE = "default"
DEFAULT_WORKSPACE_NAME = "Default Workspace"
PRIORITY_TIERS = frozenset({"priority", "priority_on_demand"})
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
TOKENS_PER_PRICING_UNIT = Decimal(1_000_000)
SEARCHES_PER_PRICING_UNIT = Decimal(1_000)  # web search is priced per 1,000 searches

# token_type → (usage report field path, SkuMeter)
TOKEN_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "uncached_input_tokens": (("uncached_input_tokens",), "Input Tokens"),
    "output_tokens": (("output_tokens",), "Output Tokens"),
    "cache_read_input_tokens": (("cache_read_input_tokens",), "Cache Read Input Tokens"),
    "cache_creation.ephemeral_5m_input_tokens": (
        ("cache_creation", "ephemeral_5m_input_tokens"),
        "5m Cache Write Input Tokens",
    ),
    "cache_creation.ephemeral_1h_input_tokens": (
        ("cache_creation", "ephemeral_1h_input_tokens"),
        "1h Cache Write Input Tokens",
    ),
}
WEB_SEARCH_FIELD = ("server_tool_use", "web_search_requests")
COST_TYPE_METERS = {"web_search": "Web Search Requests", "code_execution": "Code Execution"}

_STRING_COLUMNS = (
    "BillingAccountId", "BillingAccountName", "BillingAccountType", "BillingCurrency", "ChargeCategory",
    "ChargeDescription", "ChargeFrequency", "ConsumedUnit", "InvoiceIssuerName", "PricingCategory",
    "PricingCurrency", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName",
    "SubAccountType", "Tags", "x_source_file", "x_source_line", "x_line_item_type",
)  # fmt: skip
_MONEY_COLUMNS = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity", "PricingQuantity",
    "ListUnitPrice", "ContractedUnitPrice", "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
)  # fmt: skip
_TIME_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
FRAME_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in _STRING_COLUMNS},
    **{c: MONEY for c in _MONEY_COLUMNS},
    **{c: TIMESTAMP for c in _TIME_COLUMNS},
}

UsageKey = tuple[date, str, str | None, str | None, str | None]  # day, workspace, model, tier, context window


@dataclass(frozen=True)
class Organization:
    id: str
    name: str | None = None


@dataclass(frozen=True)
class Workspace:
    name: str
    tags: dict[str, str] = field(default_factory=dict)


# --- fetching -------------------------------------------------------------------------------------


def load(
    source: AnthropicCostsSource,
    period: BillingPeriod,
    *,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
    today: date | None = None,
) -> LoadResult:
    """The month's cost report as FOCUS rows, quantities filled from the usage report."""
    today = today or datetime.now(UTC).date()
    with _client(source, sleep, transport) as client:
        organization = fetch_organization(client)
        workspaces = fetch_workspaces(client)
        cost_pages = _fetch(client, source, period, today, COST_PATH, cost_query)
        usage_pages = _fetch(client, source, period, today, USAGE_PATH, usage_query) if source.usage_report else []
    result = map_reports(source.name, period, cost_pages, usage_pages, organization=organization, workspaces=workspaces)
    if source.lookback_days is not None:  # pages mix fresh and stored days: keep a stable day order
        result.frame = result.frame.sort("ChargePeriodStart", maintain_order=True)
    return result


def _client(
    source: AnthropicCostsSource, sleep: Callable[[float], None], transport: httpx.BaseTransport | None
) -> ApiClient:
    return ApiClient(
        source=source.name,
        provider=PROVIDER,
        base_url=source.base_url,
        token_env=source.api_key_env,
        timeout_seconds=source.timeout_seconds,
        max_retries=source.max_retries,
        sleep=sleep,
        transport=transport,
        headers={"anthropic-version": source.anthropic_version},
        auth_header="x-api-key",
        auth_scheme=None,
    )


def _fetch(
    client: ApiClient,
    source: AnthropicCostsSource,
    period: BillingPeriod,
    today: date,
    path: str,
    query: Callable[[datetime, datetime], dict[str, Any]],
) -> list[JsonResponse]:
    store = None
    if source.lookback_days is not None:
        shape = {k: v for k, v in query(period.start, period.end).items() if k not in ("starting_at", "ending_at")}
        store = DayStore(Path(source.cache_dir) / source.name / store_key(path, shape))
    plan = plan_days(period, today=today, lookback_days=source.lookback_days, stored=store.days() if store else ())
    return fetch_by_day(client, path, query, plan=plan, bucket_day=bucket_day, store=store)


def cost_query(start: datetime, end: datetime) -> dict[str, Any]:
    """Cost report parameters for ``[start, end)``: daily buckets, by workspace and line item."""
    return {
        "starting_at": rfc3339(start),
        "ending_at": rfc3339(end),
        "bucket_width": "1d",
        "limit": PAGE_LIMIT,
        "group_by[]": list(COST_GROUP_BY),
    }


def usage_query(start: datetime, end: datetime) -> dict[str, Any]:
    """Messages usage report parameters for ``[start, end)``, at the finest documented grouping."""
    return {
        "starting_at": rfc3339(start),
        "ending_at": rfc3339(end),
        "bucket_width": "1d",
        "limit": PAGE_LIMIT,
        "group_by[]": list(USAGE_GROUP_BY),
    }


def fetch_organization(client: ApiClient) -> Organization:
    """The organization the key belongs to; ``"anthropic"`` when a gateway doesn't serve the endpoint (404).

    A rejected key (401/403) fails here, before any report is read.
    """
    try:
        body = client.get_json(ORGANIZATION_PATH).body
    except HttpStatusError as exc:
        if exc.status == 404:
            return Organization(DEFAULT_ACCOUNT_ID)
        raise
    if isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"]:
        return Organization(body["id"], _text(body.get("name")))
    return Organization(DEFAULT_ACCOUNT_ID)


def fetch_workspaces(client: ApiClient) -> dict[str, Workspace]:
    """Names and tags of every workspace, archived ones included (their past costs are still billed)."""
    try:
        pages = list(
            client.paginate(
                WORKSPACES_PATH,
                {"limit": WORKSPACES_PAGE_LIMIT, "include_archived": "true"},
                cursor_param="after_id",
                cursor_field="last_id",
            )
        )
    except HttpStatusError as exc:
        if exc.status == 404:
            return {}
        raise
    workspaces = {}
    for item in (i for p in pages for i in p.body["data"]):
        if isinstance(item, dict) and _text(item.get("id")):
            tags = item.get("tags") if isinstance(item.get("tags"), dict) else {}
            workspaces[item["id"]] = Workspace(
                _text(item.get("name")) or item["id"], {str(k): str(v) for k, v in tags.items()}
            )
    return workspaces


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bucket_day(bucket: Any) -> date | None:
    """The UTC day of a bucket's ``starting_at``; None if it has none."""
    start = parse_time(bucket.get("starting_at")) if isinstance(bucket, dict) else None
    return start.date() if start else None


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as tz-aware UTC; None if it isn't one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


# --- mapping (pure) -------------------------------------------------------------------------------


def map_reports(
    source: str,
    period: BillingPeriod,
    cost_pages: list[JsonResponse],
    usage_pages: list[JsonResponse],
    *,
    organization: Organization | None = None,
    workspaces: dict[str, Workspace] | None = None,
) -> LoadResult:
    """FOCUS rows for the cost report's results, quantities from the usage report (no I/O)."""
    usage = UsageIndex.from_pages(usage_pages)
    mapper = _CostMapper(source, period, usage, organization or Organization(DEFAULT_ACCOUNT_ID), workspaces or {})
    for number, page in enumerate(cost_pages, start=1):
        mapper.add_page(number, page)
    frame = (
        pl.DataFrame(mapper.rows, schema=FRAME_SCHEMA, orient="row")
        if mapper.rows
        else pl.DataFrame(schema=FRAME_SCHEMA)
    )
    stats = {
        "pages": len(cost_pages),
        "buckets": mapper.buckets,
        "results": mapper.results,
        "usage_pages": len(usage_pages),
        "usage_results": usage.results,
        "rows_with_quantity": mapper.with_quantity,
        "rows_without_quantity": len(mapper.rows) - mapper.with_quantity,
        "priority_tier_tokens": usage.priority_tokens,
        "api_keys": len(usage.api_keys),
    }
    return LoadResult(
        frame=frame,
        quarantine=pl.DataFrame(mapper.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=[p.url for p in [*cost_pages, *usage_pages]],
        source_total=provider_total(source, cost_pages),
        repairs=dict(mapper.repairs + usage.repairs),
        stats=stats,
    )


def provider_total(source: str, pages: Iterable[JsonResponse]) -> Decimal:
    """Sum of every cost result's ``amount`` (cents) / 100, exactly as returned."""
    cents = Decimal(0)
    currencies: set[str] = set()
    for result in _raw_results(pages):
        value = cents_amount(result.get("amount"))
        if value is not None:
            cents += value
            currencies.add(str(result.get("currency") or "").upper())
    if len(currencies - {""}) > 1:
        raise SourceError(source, COST_PATH, f"amounts in more than one currency ({', '.join(sorted(currencies))})")
    return cents.scaleb(-2)


def cents_amount(value: Any) -> Decimal | None:
    """An amount in cents from the decimal string (or, tolerated, a JSON number); None if neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal | int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return None
        return parsed if parsed.is_finite() else None
    return None


def _raw_results(pages: Iterable[JsonResponse]) -> Iterable[dict[str, Any]]:
    for page in pages:
        for bucket in page.body.get("data") or []:
            results = bucket.get("results") if isinstance(bucket, dict) else None
            for result in results if isinstance(results, list) else []:
                if isinstance(result, dict):
                    yield result


@dataclass
class UsageIndex:
    """Usage report token counts, summed over API keys, looked up by a cost row's dimensions."""

    # (day, workspace) → (model, service_tier, context_window) → counts by token type / "web_search"
    counts: dict[tuple[date, str], dict[tuple[str | None, ...], Counter[str]]] = field(default_factory=dict)
    results: int = 0
    priority_tokens: int = 0
    api_keys: set[str] = field(default_factory=set)
    repairs: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_pages(cls, pages: Iterable[JsonResponse]) -> UsageIndex:
        index = cls()
        for page in pages:
            for bucket in page.body.get("data") or []:
                index._add_bucket(bucket)
        return index

    def _add_bucket(self, bucket: Any) -> None:
        day = bucket_day(bucket)
        results = bucket.get("results") if isinstance(bucket, dict) else None
        for result in results if isinstance(results, list) else []:
            self.results += 1
            counts = _usage_counts(result) if day is not None and isinstance(result, dict) else None
            if counts is None:
                self.repairs["usage_result_unreadable"] += 1
                continue
            if result.get("service_tier") in PRIORITY_TIERS:
                self.priority_tokens += sum(v for k, v in counts.items() if k in TOKEN_TYPES)
            if key_id := _text(result.get("api_key_id")):
                self.api_keys.add(key_id)
            workspace = _text(result.get("workspace_id")) or DEFAULT_WORKSPACE
            dims = tuple(_text(result.get(k)) for k in ("model", "service_tier", "context_window"))
            self.counts.setdefault((day, workspace), {}).setdefault(dims, Counter()).update(counts)

    def quantity(self, day: date, workspace: str, counter: str, **dims: str | None) -> int | None:
        """Total ``counter`` for the cost row's day and workspace over usage entries matching ``dims``.

        A dimension the cost row leaves NULL matches any value; None when nothing matches or it is 0.
        """
        wanted = (dims.get("model"), dims.get("service_tier"), dims.get("context_window"))
        total = sum(
            counts[counter]
            for values, counts in self.counts.get((day, workspace), {}).items()
            if all(w is None or w == v for w, v in zip(wanted, values, strict=True))
        )
        return total or None


def _usage_counts(result: dict[str, Any]) -> Counter[str] | None:
    """Token and web-search counts of one usage result, keyed like the cost report's token_type."""
    counts: Counter[str] = Counter()
    for token_type, (path, _meter) in TOKEN_TYPES.items():
        value = _dig(result, path)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None
        counts[token_type] = value
    searches = _dig(result, WEB_SEARCH_FIELD)
    if isinstance(searches, int) and not isinstance(searches, bool):
        counts["web_search"] = searches
    return counts


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class _CostMapper:
    """Accumulates FOCUS rows, quarantine rows and counters while walking the cost report pages."""

    def __init__(
        self,
        source: str,
        period: BillingPeriod,
        usage: UsageIndex,
        organization: Organization,
        workspaces: dict[str, Workspace],
    ) -> None:
        self.source, self.period, self.usage, self.organization = source, period, usage, organization
        self.workspaces = {DEFAULT_WORKSPACE: Workspace(DEFAULT_WORKSPACE_NAME), **workspaces}
        self.rows: list[tuple[Any, ...]] = []
        self.quarantine: list[tuple[str, str, str]] = []
        self.repairs: Counter[str] = Counter()
        self.buckets = self.results = self.with_quantity = 0

    def add_page(self, number: int, page: JsonResponse) -> None:
        path = httpx.URL(page.url).path
        for b, bucket in enumerate(page.body.get("data") or [], start=1):
            self.buckets += 1
            where = f"page {number} bucket {b}"
            window = self._bucket_window(bucket)
            results = bucket.get("results") if isinstance(bucket, dict) else None
            if isinstance(window, str):
                self.quarantine.append((path, where, window))
                self.results += len(results) if isinstance(results, list) else 0
                continue
            for k, result in enumerate(results or [], start=1):
                self.results += 1
                line = f"{where} result {k}"
                row = self._row(result, window, path, line)
                if isinstance(row, str):
                    self.quarantine.append((path, line, row))
                else:
                    self.rows.append(row)

    def _bucket_window(self, bucket: Any) -> tuple[datetime, datetime] | str:
        """The bucket's [start, end) in UTC, or why it can't be used."""
        if not isinstance(bucket, dict):
            return f"bucket is {type(bucket).__name__}, expected an object"
        start, end = parse_time(bucket.get("starting_at")), parse_time(bucket.get("ending_at"))
        if start is None or end is None or end <= start:
            return (
                "bucket starting_at/ending_at must be increasing RFC 3339 timestamps, "
                f"got {bucket.get('starting_at')!r}/{bucket.get('ending_at')!r}"
            )
        if start < self.period.start or end > self.period.end:
            return f"bucket {rfc3339(start)} is outside billing period {self.period.key}"
        if not isinstance(bucket.get("results"), list):
            return "bucket has no 'results' list"
        return start, end

    def _row(self, result: Any, window: tuple[datetime, datetime], path: str, line: str) -> tuple[Any, ...] | str:
        """One FOCUS row as a tuple in FRAME_SCHEMA order, or the reason it is quarantined."""
        if not isinstance(result, dict):
            return f"result is {type(result).__name__}, expected an object"
        cost = self._dollars(result.get("amount"))
        if isinstance(cost, str):
            return cost
        currency = result.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            return f"currency {currency!r} is not an ISO 4217 code"
        workspace = _text(result.get("workspace_id")) or DEFAULT_WORKSPACE
        dims = {k: _text(result.get(k)) for k in ("model", "service_tier", "context_window")}
        cost_type, token_type = _text(result.get("cost_type")), _text(result.get("token_type"))
        day = window[0].date()
        consumed, consumed_unit, pricing, pricing_unit = self._quantities(day, workspace, cost_type, token_type, dims)
        self.with_quantity += consumed is not None
        unit_price = (cost / pricing).quantize(MONEY_QUANTUM, ROUND_HALF_EVEN) if pricing else None
        known = self.workspaces.get(workspace)
        values = {
            "BillingAccountId": self.organization.id,
            "BillingAccountName": self.organization.name or self.organization.id,
            "BillingAccountType": "Organization",
            "BillingCurrency": currency.upper(),
            "ChargeCategory": "Usage",
            "ChargeDescription": _text(result.get("description")),
            "ChargeFrequency": "Usage-Based",
            "ConsumedUnit": consumed_unit,
            "InvoiceIssuerName": PROVIDER,
            "PricingCategory": "Standard",
            "PricingCurrency": currency.upper(),
            "PricingUnit": pricing_unit,
            "ProviderName": PROVIDER,
            "PublisherName": PROVIDER,
            "ServiceCategory": "AI and Machine Learning",
            "ServiceName": SERVICE_NAME,
            "ServiceSubcategory": "Generative AI",
            "SkuId": dims["model"] or cost_type,
            "SkuMeter": _meter(cost_type, token_type),
            "SkuPriceDetails": _price_details(result, dims, cost_type, token_type),
            "SkuPriceId": _price_id(dims, cost_type, token_type, _text(result.get("description"))),
            "SubAccountId": workspace,
            "SubAccountName": known.name if known else workspace,
            "SubAccountType": "Workspace",
            "Tags": json.dumps(known.tags, sort_keys=True, separators=(",", ":")) if known and known.tags else None,
            "x_source_file": path,
            "x_source_line": line,
            "x_line_item_type": cost_type,
            "BilledCost": cost,
            "EffectiveCost": cost,
            "ListCost": cost,
            "ContractedCost": cost,
            "ConsumedQuantity": consumed,
            "PricingQuantity": pricing,
            "ListUnitPrice": unit_price,
            "ContractedUnitPrice": unit_price,
            "PricingCurrencyEffectiveCost": cost,
            "PricingCurrencyListUnitPrice": unit_price,
            "PricingCurrencyContractedUnitPrice": unit_price,
            "BillingPeriodStart": self.period.start,
            "BillingPeriodEnd": self.period.end,
            "ChargePeriodStart": window[0],
            "ChargePeriodEnd": window[1],
        }
        return tuple(values[c] for c in FRAME_SCHEMA)

    def _dollars(self, amount: Any) -> Decimal | str:
        """The amount in dollars (cents / 100, exact), or why it can't be read."""
        cents = cents_amount(amount)
        if cents is None:
            return f"amount {amount!r} is not a decimal string of cents"
        if not isinstance(amount, str):
            self.repairs["amount_not_a_string"] += 1
        dollars = cents.scaleb(-2)
        if dollars != (rounded := dollars.quantize(MONEY_QUANTUM, ROUND_HALF_EVEN)):
            self.repairs[f"amount_rounded_to_{MONEY_SCALE}_decimals"] += 1
        return rounded

    def _quantities(
        self, day: date, workspace: str, cost_type: str | None, token_type: str | None, dims: dict[str, str | None]
    ) -> tuple[Decimal | None, str | None, Decimal | None, str | None]:
        """(ConsumedQuantity, ConsumedUnit, PricingQuantity, PricingUnit) from the usage report."""
        if token_type in TOKEN_TYPES and (cost_type in (None, "tokens")):
            tokens = self.usage.quantity(day, workspace, token_type, **dims)
            if tokens is not None:
                return Decimal(tokens), "Tokens", Decimal(tokens) / TOKENS_PER_PRICING_UNIT, "1000000 Tokens"
        elif cost_type == "web_search":
            searches = self.usage.quantity(day, workspace, "web_search")
            if searches is not None:
                return Decimal(searches), "Requests", Decimal(searches) / SEARCHES_PER_PRICING_UNIT, "1000 Requests"
        return None, None, None, None


def _meter(cost_type: str | None, token_type: str | None) -> str | None:
    if token_type in TOKEN_TYPES:
        return TOKEN_TYPES[token_type][1]
    return COST_TYPE_METERS.get(cost_type or "", cost_type)


def _price_id(
    dims: dict[str, str | None], cost_type: str | None, token_type: str | None, description: str | None
) -> str | None:
    """One id per price: model × token type × tier × context window (or the cost type / description)."""
    parts = [dims["model"], token_type, dims["service_tier"], dims["context_window"]]
    if any(parts):
        return ", ".join(p for p in parts if p)
    return cost_type or description


def _price_details(
    result: dict[str, Any], dims: dict[str, str | None], cost_type: str | None, token_type: str | None
) -> str | None:
    details = {
        "x_Model": dims["model"],
        "x_TokenType": token_type,
        "x_ServiceTier": dims["service_tier"],
        "x_ContextWindow": dims["context_window"],
        "x_CostType": cost_type,
        "x_InferenceGeo": _text(result.get("inference_geo")),
        "x_Speed": _text(result.get("speed")),
    }
    present = {k: v for k, v in details.items() if v is not None}
    return json.dumps(present, separators=(",", ":")) if present else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None
