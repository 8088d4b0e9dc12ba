"""OpenAI organization Costs API → FOCUS 1.2 rows.

Follows the OpenAI API reference "Costs" (``GET /v1/organization/costs``, operationId
``usage-costs`` in openai/openai-openapi ``openapi.yaml``; platform.openai.com/docs/api-reference/
usage/costs) and its ``CostsResult`` schema: daily buckets (``bucket_width=1d`` is the only width),
``group_by`` an array query parameter sent in the OpenAPI default style (form, exploded:
``group_by=project_id&group_by=line_item``, as the OpenAI cookbook "How to use the Usage API and
Cost API" sends it), ``limit`` 1–180 buckets per page, cursor ``page`` ← ``next_page``.

Provider quirks handled, each seen in real responses:
- ``amount.value`` is a JSON number in dollars with up to 16–17 decimals and ragged trailing zeros
  (``0.5617712500000000``); some responses send it as a numeric string (steipete/CodexBar#999).
  Both are read exactly as Decimal; a string counts as a repair.
- ``currency`` is lowercase ISO 4217 (``"usd"``); FOCUS wants upper case.
- Results also carry ``organization_id``/``organization_name`` (not in the OpenAPI schema).
- ``line_item`` is a display string, e.g. ``"gpt-4.1-mini-2025-04-14, cached input"`` or
  ``"priority | gpt-5, output, long context"`` or ``"web search tool calls"``.

FOCUS choices (documented because the API has no FOCUS export):
- one result → one row; ChargePeriod = the bucket; all four costs = ``amount.value`` (no discounts
  are exposed; BilledCost is what the invoice shows).
- SubAccountId = ``project_id`` (the unit that owns keys and budgets), SubAccountType ``Project``;
  BillingAccountId = the result's ``organization_id``, else the ``OpenAI-Organization`` response header,
  else ``"openai"``, BillingAccountType ``Organization``. The ``CostsResult`` schema carries no names, so
  BillingAccountName/SubAccountName are ``organization_name``/``project_name`` when a response has them,
  else the id (FOCUS 1.2: a name MUST NOT be null when its id is not null).
- SkuId = the model parsed from ``line_item`` (one SKU per model), SkuPriceId = the full
  ``line_item`` (each model × token type has its own price), SkuMeter = what is metered
  ("Cached Input Tokens"), SkuPriceDetails = ``{"x_Model", "x_TokenType", ...}``; ChargeDescription =
  ``line_item`` verbatim (``"OpenAI API costs"`` when the result has none). Line items that name no
  model keep ``line_item`` as SkuId/SkuPriceId/SkuMeter.
- ``quantity``/``quantity_unit`` → ConsumedQuantity/Unit as measured (``Tokens``) and
  PricingQuantity/Unit in the unit OpenAI prices in (``1000000 Tokens``: prices are per 1M tokens);
  ListUnitPrice = ContractedUnitPrice = cost ÷ PricingQuantity (the list price per 1M tokens, since
  the API exposes no discounts), so cost = unit price × PricingQuantity as FOCUS requires.
- OpenAI prices and bills in the same currency: PricingCurrency = BillingCurrency and the
  PricingCurrency* columns repeat the billing-currency values (a focus_costs table holding a
  multi-currency provider too has these columns, and FOCUS wants them filled on every row).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import httpx
import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.http import ApiClient, JsonResponse
from models.config import OpenAICostsSource
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP

COSTS_PATH = "/v1/organization/costs"
PAGE_LIMIT = 31  # buckets per request: a month in one page when the API allows it (max 180)
GROUP_BY = ("project_id", "line_item")
PROVIDER = "OpenAI"
DEFAULT_ACCOUNT_ID = "openai"
BILLING_ACCOUNT_TYPE = "Organization"
SUB_ACCOUNT_TYPE = "Project"
NO_LINE_ITEM_DESCRIPTION = "OpenAI API costs"
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)

# line_item = "[tier | ]<model>[ <modality>], <token type>[, <context tier>]"
_LINE_ITEM = re.compile(
    r"^(?:(?P<tier>[\w.-]+) \| )?(?P<model>[^\s,]+)(?: (?P<modality>text|image|audio|video))?, "
    r"(?P<kind>cached input|cache writes?|input|output)(?:, (?P<context>[^,]+))?$"
)

# quantity_unit (CostsResult enum) → (ConsumedUnit, PricingUnit, units per pricing unit)
_UNITS: dict[str, tuple[str, str, int]] = {
    "tokens": ("Tokens", "1000000 Tokens", 1_000_000),
    "1000_tokens": ("1000 Tokens", "1000 Tokens", 1),
    "duration_seconds": ("Seconds", "Seconds", 1),
    "duration_minutes": ("Minutes", "Minutes", 1),
    "duration_hours": ("Hours", "Hours", 1),
    "gibibyte_hours": ("GiB-Hours", "GiB-Hours", 1),
    "images": ("Images", "Images", 1),
    "characters": ("Characters", "1000000 Characters", 1_000_000),
}

_STRING_COLUMNS = (
    "BillingAccountId", "BillingAccountName", "BillingAccountType", "BillingCurrency", "ChargeCategory",
    "ChargeDescription", "ChargeFrequency", "ConsumedUnit", "InvoiceIssuerName", "PricingCategory",
    "PricingCurrency", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName",
    "SubAccountType", "x_source_file", "x_source_line",
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


@dataclass(frozen=True)
class LineItem:
    """What a ``line_item`` string says: the model and the token type it prices."""

    model: str
    kind: str  # input | cached input | output | cache write(s)
    tier: str | None = None  # "priority", "flex", "batch" prefix
    modality: str | None = None
    context: str | None = None  # e.g. "long context"

    @property
    def meter(self) -> str:
        words = [self.modality.title()] if self.modality else []
        words.append(self.kind.title())
        meter = " ".join([*words, "Tokens"])
        return f"{meter} ({self.context.title()})" if self.context else meter

    @property
    def price_details(self) -> str:
        details = {"x_Model": self.model, "x_TokenType": self.kind}
        for key, value in (("x_ServiceTier", self.tier), ("x_Modality", self.modality), ("x_Context", self.context)):
            if value:
                details[key] = value
        return json.dumps(details, separators=(",", ":"))


def parse_line_item(line_item: str) -> LineItem | None:
    """The model and token type in a Costs API ``line_item``; None for items that name no model."""
    match = _LINE_ITEM.match(line_item.strip())
    if not match:
        return None
    return LineItem(
        model=match["model"],
        kind=match["kind"],
        tier=match["tier"],
        modality=match["modality"],
        context=match["context"],
    )


def costs_query(source: OpenAICostsSource, period: BillingPeriod) -> dict[str, Any]:
    """Query parameters for one billing month (``end_time`` is exclusive, so buckets stay inside it)."""
    return {
        "start_time": int(period.start.timestamp()),
        "end_time": int(period.end.timestamp()),
        "bucket_width": "1d",
        "group_by": list(GROUP_BY),
        "limit": PAGE_LIMIT,
        "project_ids": list(source.project_ids),
    }


def load(
    source: OpenAICostsSource,
    period: BillingPeriod,
    *,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> LoadResult:
    """Every cost result of ``period`` as one FOCUS row; bad results go to quarantine."""
    with ApiClient(
        source=source.name,
        provider=PROVIDER,
        base_url=source.base_url,
        token_env=source.api_key_env,
        timeout_seconds=source.timeout_seconds,
        max_retries=source.max_retries,
        sleep=sleep,
        transport=transport,
    ) as client:
        pages = list(client.paginate(COSTS_PATH, costs_query(source, period)))
    return map_pages(source.name, period, pages)


def map_pages(source: str, period: BillingPeriod, pages: list[JsonResponse]) -> LoadResult:
    """Map fetched pages to FOCUS rows (pure: no I/O), checking every bucket and amount."""
    mapper = _Mapper(source, period)
    for number, page in enumerate(pages, start=1):
        mapper.add_page(number, page)
    frame = (
        pl.DataFrame(mapper.rows, schema=FRAME_SCHEMA, orient="row")
        if mapper.rows
        else pl.DataFrame(schema=FRAME_SCHEMA)
    )
    return LoadResult(
        frame=frame,
        quarantine=pl.DataFrame(mapper.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=[p.url for p in pages],
        source_total=provider_total(source, pages),
        repairs=dict(mapper.repairs),
        stats={"pages": len(pages), "buckets": mapper.buckets, "results": mapper.results},
    )


def provider_total(source: str, pages: Iterable[JsonResponse]) -> Decimal:
    """Sum of ``amount.value`` exactly as returned, independent of the row mapping."""
    total = Decimal(0)
    currencies: set[str] = set()
    for amount in _raw_amounts(pages):
        value = _decimal(amount.get("value"))
        if value is not None:
            total += value
            currencies.add(str(amount.get("currency") or "").upper())
    if len(currencies - {""}) > 1:
        raise SourceError(source, COSTS_PATH, f"amounts in more than one currency ({', '.join(sorted(currencies))})")
    return total


def _raw_amounts(pages: Iterable[JsonResponse]) -> Iterable[dict[str, Any]]:
    """Every ``amount`` object in the pages, whatever bucket or result it sits in."""
    for page in pages:
        for bucket in page.body.get("data") or []:
            results = bucket.get("results") if isinstance(bucket, dict) else None
            for result in results if isinstance(results, list) else []:
                amount = result.get("amount") if isinstance(result, dict) else None
                if isinstance(amount, dict):
                    yield amount


class _Mapper:
    """Accumulates FOCUS rows, quarantine rows and counters while walking the pages."""

    def __init__(self, source: str, period: BillingPeriod) -> None:
        self.source, self.period = source, period
        self.rows: list[tuple[Any, ...]] = []
        self.quarantine: list[tuple[str, str, str]] = []
        self.repairs: Counter[str] = Counter()
        self.buckets = self.results = 0

    def add_page(self, number: int, page: JsonResponse) -> None:
        path = httpx.URL(page.url).path
        account_id = page.headers.get("openai-organization") or DEFAULT_ACCOUNT_ID
        for b, bucket in enumerate(page.body["data"], start=1):
            self.buckets += 1
            where = f"page {number} bucket {b}"
            window = self._bucket_window(bucket)
            if isinstance(window, str):
                results = bucket.get("results") if isinstance(bucket, dict) else None
                self.quarantine.append((path, where, window))
                self.results += len(results) if isinstance(results, list) else 0
                continue
            for k, result in enumerate(bucket.get("results") or [], start=1):
                self.results += 1
                line = f"{where} result {k}"
                row = self._row(result, window, account_id, path, line)
                if isinstance(row, str):
                    self.quarantine.append((path, line, row))
                else:
                    self.rows.append(row)

    def _bucket_window(self, bucket: Any) -> tuple[datetime, datetime] | str:
        """The bucket's [start, end) in UTC, or why it can't be used."""
        if not isinstance(bucket, dict):
            return f"bucket is {type(bucket).__name__}, expected an object"
        start, end = bucket.get("start_time"), bucket.get("end_time")
        if not isinstance(start, int) or not isinstance(end, int) or end <= start:
            return f"bucket start_time/end_time must be increasing unix seconds, got {start!r}/{end!r}"
        window = (datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
        if window[0] < self.period.start or window[1] > self.period.end:
            return f"bucket {window[0]:%Y-%m-%dT%H:%M:%SZ} is outside billing period {self.period.key}"
        if not isinstance(bucket.get("results"), list):
            return "bucket has no 'results' list"
        return window

    def _row(
        self, result: Any, window: tuple[datetime, datetime], header_account: str, path: str, line: str
    ) -> tuple[Any, ...] | str:
        """One FOCUS row as a tuple in FRAME_SCHEMA order, or the reason it is quarantined."""
        if not isinstance(result, dict):
            return f"result is {type(result).__name__}, expected an object"
        amount = result.get("amount")
        if not isinstance(amount, dict):
            return "field 'amount' is missing or not an object"
        cost = _decimal(amount.get("value"))
        if cost is None:
            return f"amount.value {amount.get('value')!r} is not a decimal number"
        if isinstance(amount.get("value"), str):
            self.repairs["amount_value_as_string"] += 1
        if cost != (rounded := cost.quantize(MONEY_QUANTUM, ROUND_HALF_EVEN)):
            self.repairs[f"amount_rounded_to_{MONEY_SCALE}_decimals"] += 1
            cost = rounded
        currency = amount.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            return f"amount.currency {currency!r} is not an ISO 4217 code"
        line_item = _text(result.get("line_item"))
        parsed = parse_line_item(line_item) if line_item else None
        consumed, consumed_unit, pricing, pricing_unit = self._quantities(result)
        unit_price = _unit_price(cost, pricing)
        project = _text(result.get("project_id"))
        account = _text(result.get("organization_id")) or header_account
        values = {
            "BillingAccountId": account,
            "BillingAccountName": _text(result.get("organization_name")) or account,
            "BillingAccountType": BILLING_ACCOUNT_TYPE,
            "BillingCurrency": currency.upper(),
            "ChargeCategory": "Usage",
            "ChargeDescription": line_item or NO_LINE_ITEM_DESCRIPTION,
            "ChargeFrequency": "Usage-Based",
            "ConsumedUnit": consumed_unit,
            "InvoiceIssuerName": PROVIDER,
            "PricingCategory": "Standard",
            "PricingCurrency": currency.upper(),
            "PricingUnit": pricing_unit,
            "ProviderName": PROVIDER,
            "PublisherName": PROVIDER,
            "ServiceCategory": "AI and Machine Learning",
            "ServiceName": "OpenAI API",
            "ServiceSubcategory": "Generative AI",
            "SkuId": parsed.model if parsed else line_item,
            "SkuMeter": parsed.meter if parsed else line_item,
            "SkuPriceDetails": parsed.price_details if parsed else None,
            "SkuPriceId": line_item,
            "SubAccountId": project,
            "SubAccountName": (_text(result.get("project_name")) or project) if project else None,
            "SubAccountType": SUB_ACCOUNT_TYPE if project else None,
            "x_source_file": path,
            "x_source_line": line,
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

    def _quantities(self, result: dict[str, Any]) -> tuple[Decimal | None, str | None, Decimal | None, str | None]:
        """(ConsumedQuantity, ConsumedUnit, PricingQuantity, PricingUnit) from quantity/quantity_unit."""
        quantity = _decimal(result.get("quantity"))
        unit = _text(result.get("quantity_unit"))
        if quantity is None:
            if result.get("quantity") is not None:
                self.repairs["quantity_not_a_number_dropped"] += 1
            return None, None, None, None
        if unit is None:
            self.repairs["quantity_without_unit_dropped"] += 1
            return None, None, None, None
        consumed_unit, pricing_unit, per = _UNITS.get(unit, (unit, unit, 1))
        if unit not in _UNITS:
            self.repairs[f"unknown_quantity_unit:{unit}"] += 1
        return quantity, consumed_unit, quantity / per, pricing_unit


def _decimal(value: Any) -> Decimal | None:
    """An exact Decimal from a JSON number (already Decimal/int) or a numeric string; else None."""
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


def _unit_price(cost: Decimal, pricing_quantity: Decimal | None) -> Decimal | None:
    """Cost per pricing unit at the warehouse scale; None without a (non-zero) quantity to divide by."""
    if not pricing_quantity:
        return None
    return (cost / pricing_quantity).quantize(MONEY_QUANTUM, ROUND_HALF_EVEN)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None
