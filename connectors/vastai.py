"""Vast.ai charges → FOCUS 1.2 rows.

Follows the Vast.ai API reference "show charges" (docs.vast.ai/api-reference/billing/show-charges,
``GET /api/v0/charges/``, Bearer API key) and the CLI that calls it (vast-ai/vast-cli
``vastai/api/billing.py`` ``show_invoices_v1`` and ``vastai/api/client.py``; ``vastai show invoices-v1
--charges``):

- ``select_filters`` is a JSON object in the query string: ``day`` (required, unix seconds, ``gte``/``lte``)
  and optionally ``type`` ``{"in": [instance|volume|serverless]}``; ``latest_first``, ``limit`` (the CLI caps
  it at 100), ``format`` ``table`` (default: one row per contract, serverless workers appear as instances
  with ``metadata.endpoint_id``) and the cursor ``after_token`` ← the previous page's ``next_token``
  (``null`` on the last page). Non-string query values are JSON-encoded, as the CLI does.
- The answer is ``{success, count, total, next_token, results}``; each result is a contract's charge
  ``{start, end, type, source: "instance-<id>", description, amount, metadata{template_id, label,
  endpoint_id, workergroup_id}, items[]}`` and each item the same shape (``type`` gpu, storage,
  bandwidth, …; ``description`` like ``"96.000 hours at $0.389/hour"``).
- Amounts are JSON numbers in the reference and strings in other Vast.ai answers (``search invoices``):
  both are read exactly; strings count as a repair.

The month is read one UTC day at a time (``day`` gte = midnight, lte = 23:59:59) so every charge is
dated to its day and a revised day replaces the old one when the month is reloaded. Days that have not
started yet are not asked for.

FOCUS choices: one row per item (ChargeDescription = the item's description), plus a row for any part of
the contract's ``amount`` its items do not explain, so rows add up to the provider total (the sum of the
results' ``amount``, ``source_total``). ResourceId = ``source``; ResourceName = ``metadata.label``;
SkuId = ``<result type>-<item type>``; quantities and unit prices come from ``"<q> hours at $<p>/hour"``
descriptions (unit prices only when q × p is exactly the amount); all four costs = the amount. Tags:
``label`` is the user's own; the other metadata keys are provider tags, prefixed ``vastai/``.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import httpx
import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.http import ApiClient
from models.config import VastAiSource
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP

CHARGES_PATH = "/api/v0/charges/"
PROVIDER = "Vast.ai"
QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
DAY = timedelta(days=1)

# "<quantity> <unit> at $<price>/<unit>", e.g. "96.000 hours at $0.389/hour"
_PRICED = re.compile(
    r"^(?P<qty>\d[\d,]*(?:\.\d+)?) (?P<unit>[A-Za-z][\w-]*) at \$(?P<price>\d+(?:\.\d+)?)/(?P<per>\w+)"
)
_UNITS = {
    "hour": "Hours",
    "hours": "Hours",
    "gb": "GB",
    "tb": "TB",
    "gib": "GiB",
    "month": "Months",
    "months": "Months",
}

_STRINGS = (
    "BillingAccountId", "BillingCurrency", "ChargeCategory", "ChargeDescription", "ChargeFrequency", "ConsumedUnit",
    "InvoiceIssuerName", "PricingCategory", "PricingUnit", "ProviderName", "PublisherName", "ResourceId",
    "ResourceName", "ResourceType", "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuMeter",
    "Tags", "x_source_file", "x_source_line", "x_line_item_type",
)  # fmt: skip
_DECIMALS = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice",
    "ConsumedQuantity", "PricingQuantity",
)  # fmt: skip
_TIMES = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
FRAME_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in _STRINGS},
    **{c: MONEY for c in _DECIMALS},
    **{c: TIMESTAMP for c in _TIMES},
}


@dataclass(frozen=True)
class Service:
    name: str
    category: str
    subcategory: str
    resource_type: str


SERVICES = {
    "instance": Service("Vast.ai Instances", "Compute", "Containers", "Instance"),
    "serverless": Service("Vast.ai Serverless", "Compute", "Serverless Compute", "Serverless Worker"),
    "volume": Service("Vast.ai Volumes", "Storage", "Block Storage", "Volume"),
}
OTHER_SERVICE = Service("Vast.ai Other Charges", "Other", "Other (Other)", "Contract")


@dataclass(frozen=True)
class Page:
    """One answer of the charges endpoint for one day."""

    day: datetime
    number: int
    body: dict[str, Any]

    @property
    def where(self) -> str:
        return f"GET {CHARGES_PATH} day {self.day:%Y-%m-%d}"


# --- fetching ------------------------------------------------------------------------------------


def load(
    source: VastAiSource,
    period: BillingPeriod,
    *,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
    now: datetime | None = None,
) -> LoadResult:
    """Every charge of ``period`` (day by day, every page) as FOCUS rows."""
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
        pages = [page for day in days(period, now) for page in fetch_day(client, source, day)]
    return map_pages(source, period, pages)


def days(period: BillingPeriod, now: datetime | None = None) -> list[datetime]:
    """The UTC days of ``period`` that have started by ``now``."""
    until = min(period.end, (now or datetime.now(UTC)).astimezone(UTC))
    count = (period.end - period.start) // DAY
    return [d for d in (period.start + i * DAY for i in range(count)) if d < until]


def day_query(source: VastAiSource, day: datetime) -> dict[str, str | int]:
    """The documented query for one UTC day (``day`` filter inclusive at both ends, in unix seconds)."""
    first = int(day.timestamp())
    filters: dict[str, Any] = {"day": {"gte": first, "lte": first + int(DAY.total_seconds()) - 1}}
    if source.charge_types:
        filters["type"] = {"in": list(source.charge_types)}
    return {
        "select_filters": json.dumps(filters, separators=(",", ":")),
        "latest_first": "false",
        "limit": source.page_limit,
        "format": "table",
    }


def fetch_day(client: ApiClient, source: VastAiSource, day: datetime) -> Iterator[Page]:
    """Every page of one day: ``after_token`` ← ``next_token`` until it is null (the shared cursor pager)."""
    pages = client.paginate(
        CHARGES_PATH,
        day_query(source, day),
        cursor_param="after_token",
        items_field="results",
        cursor_field="next_token",
        has_more_field=None,
    )
    for number, response in enumerate(pages, start=1):
        if response.body.get("success") is False:
            where = f"GET {httpx.URL(response.url).copy_with(query=None)} (day {day:%Y-%m-%d}, page {number})"
            raise SourceError(source.name, where, f"Vast.ai answered success=false: {response.body.get('msg')}")
        yield Page(day, number, response.body)


# --- mapping (pure) ------------------------------------------------------------------------------


def map_pages(source: VastAiSource, period: BillingPeriod, pages: list[Page]) -> LoadResult:
    """FOCUS rows for fetched pages (no I/O), with quarantine, repairs and the provider total."""
    mapper = _Mapper(source, period)
    for page in pages:
        for k, result in enumerate(page.body["results"], start=1):
            mapper.add_result(page, f"page {page.number} result {k}", result)
    return LoadResult(
        frame=pl.DataFrame(mapper.rows, schema=FRAME_SCHEMA, orient="row"),
        quarantine=pl.DataFrame(mapper.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=sorted({p.where for p in pages}),
        source_total=provider_total(pages),
        repairs=dict(mapper.repairs),
        stats={"pages": len(pages), "results": mapper.results, **dict(mapper.stats)},
    )


def provider_total(pages: list[Page]) -> Decimal:
    """Vast.ai's own total: every result's ``amount`` as returned, summed without the mapping."""
    total = Decimal(0)
    for page in pages:
        for result in page.body["results"]:
            amount = _decimal(result.get("amount")) if isinstance(result, dict) else None
            total += amount or Decimal(0)
    return total


@dataclass(frozen=True)
class _Charge:
    """A validated result or item: what it costs, over which window, and what it says."""

    amount: Decimal
    kind: str
    description: str | None
    window: tuple[datetime, datetime]


class _Mapper:
    """Validates results and items and accumulates FOCUS rows (tuples in FRAME_SCHEMA order)."""

    def __init__(self, source: VastAiSource, period: BillingPeriod) -> None:
        self.source, self.period = source, period
        self.rows: list[tuple[Any, ...]] = []
        self.quarantine: list[tuple[str, str, str]] = []
        self.repairs: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.results = 0

    def add_result(self, page: Page, line: str, result: Any) -> None:
        """Rows for one contract's charge of the day: one per item, plus what the items leave out."""
        self.results += 1
        parsed = self._parse(result, page.day) if isinstance(result, dict) else "result is not a JSON object"
        if isinstance(parsed, str):
            self.quarantine.append((page.where, line, parsed))
            return
        charge, items = parsed
        if not (self.period.start <= page.day < self.period.end):
            self.stats["days_outside_period"] += 1
            return
        service = self._service(result)
        context = (page, result, service)
        for i, item in enumerate(items, start=1):
            self._row(context, f"{line} item {i}", item, sku=f"{charge.kind}-{item.kind}")
        rest = charge.amount - sum((item.amount for item in items), Decimal(0))
        if rest or not items:
            sku = f"{charge.kind}-unitemized" if items else charge.kind
            description = charge.description if not items else "Part of the charge its items do not break down"
            self._row(context, line, _Charge(rest, charge.kind, description, charge.window), sku=sku)
            if items:
                self.stats["results_with_unitemized_rest"] += 1

    def _parse(self, result: dict[str, Any], day: datetime) -> tuple[_Charge, list[_Charge]] | str:
        charge = self._charge(result, day, "result")
        if isinstance(charge, str):
            return charge
        raw_items = result.get("items") or []
        if not isinstance(raw_items, list):
            return f"field 'items' is {type(raw_items).__name__}, expected a list"
        items = []
        for i, raw in enumerate(raw_items, start=1):
            item = self._charge(raw, day, f"item {i}") if isinstance(raw, dict) else f"item {i} is not a JSON object"
            if isinstance(item, str):
                return item
            items.append(item)
        return charge, items

    def _charge(self, raw: dict[str, Any], day: datetime, what: str) -> _Charge | str:
        value = raw.get("amount")
        amount = _decimal(value)
        if amount is None:
            return f"{what} amount {_show(value)} is not a decimal number"
        if isinstance(value, str):
            self.repairs["amount_as_string"] += 1
        if amount != (rounded := amount.quantize(QUANTUM, ROUND_HALF_EVEN)):
            self.repairs[f"amount_rounded_to_{MONEY_SCALE}_decimals"] += 1
            amount = rounded
        kind = _text(raw.get("type")) or "unknown"
        return _Charge(amount, kind, _text(raw.get("description")), self._window(raw, day))

    def _window(self, raw: dict[str, Any], day: datetime) -> tuple[datetime, datetime]:
        """The charge's own start/end clipped to the queried day; the whole day when they don't overlap it."""
        start, end = _unix(raw.get("start")), _unix(raw.get("end"))
        if start is None or end is None:
            self.stats["charges_without_start_end"] += 1
            return day, day + DAY
        first, last = max(start, day), min(end, day + DAY)
        if first >= last:
            self.repairs["charge_window_outside_queried_day"] += 1
            return day, day + DAY
        return first, last

    def _service(self, result: dict[str, Any]) -> Service:
        kind = _text(result.get("type")) or ""
        metadata = result.get("metadata") if isinstance(result.get("metadata"), dict) else {}
        if kind == "instance" and metadata.get("endpoint_id") is not None:
            return SERVICES["serverless"]  # table format lists serverless workers as instances of an endpoint
        return SERVICES.get(kind, OTHER_SERVICE)

    def _row(self, context: tuple[Page, dict[str, Any], Service], line: str, charge: _Charge, *, sku: str) -> None:
        page, result, service = context
        metadata = result.get("metadata") if isinstance(result.get("metadata"), dict) else {}
        quantity, unit, price = self._quantity(charge)
        values = {
            "BillingAccountId": self.source.billing_account_id or self.source.name,
            "BillingCurrency": "USD",
            "ChargeCategory": "Usage",
            "ChargeDescription": charge.description,
            "ChargeFrequency": "Usage-Based",
            "ConsumedUnit": unit,
            "InvoiceIssuerName": PROVIDER,
            "PricingCategory": "Standard",
            "PricingUnit": unit,
            "ProviderName": PROVIDER,
            "PublisherName": PROVIDER,
            "ResourceId": _text(result.get("source")),
            "ResourceName": _text(metadata.get("label")),
            "ResourceType": service.resource_type,
            "ServiceCategory": service.category,
            "ServiceName": service.name,
            "ServiceSubcategory": service.subcategory,
            "SkuId": sku,
            "SkuMeter": charge.kind.replace("_", " ").title() if charge.kind != "gpu" else "GPU",
            "Tags": _tags(metadata),
            "x_source_file": page.where,
            "x_source_line": line,
            "x_line_item_type": _text(result.get("type")),
            "BilledCost": charge.amount,
            "EffectiveCost": charge.amount,
            "ListCost": charge.amount,
            "ContractedCost": charge.amount,
            "ListUnitPrice": price,
            "ContractedUnitPrice": price,
            "ConsumedQuantity": quantity,
            "PricingQuantity": quantity,
            "BillingPeriodStart": self.period.start,
            "BillingPeriodEnd": self.period.end,
            "ChargePeriodStart": charge.window[0],
            "ChargePeriodEnd": charge.window[1],
        }
        self.rows.append(tuple(values[c] for c in FRAME_SCHEMA))

    def _quantity(self, charge: _Charge) -> tuple[Decimal | None, str | None, Decimal | None]:
        """(quantity, unit, unit price) from a ``"<q> <unit> at $<p>/<unit>"`` description."""
        match = _PRICED.match(charge.description or "")
        if not match:
            return None, None, None
        quantity, price = Decimal(match["qty"].replace(",", "")), Decimal(match["price"])
        unit = _UNITS.get(match["unit"].lower(), match["unit"])
        if quantity * price != charge.amount:
            self.stats["unit_price_not_exact"] += 1
            return quantity, unit, None
        return quantity, unit, price


def _tags(metadata: dict[str, Any]) -> str | None:
    """``label`` as the user's tag; every other metadata key as a ``vastai/`` provider tag."""
    tags = {}
    for key, value in sorted(metadata.items()):
        if value is None or isinstance(value, dict | list):
            continue
        tags["label" if key == "label" else f"vastai/{key}"] = str(value)
    return json.dumps(tags, separators=(",", ":")) if tags else None


def _unix(value: Any) -> datetime | None:
    number = _decimal(value)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(float(number), UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _decimal(value: Any) -> Decimal | None:
    """An exact Decimal from a JSON number (int/Decimal) or a numeric string; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return None
        return parsed if parsed.is_finite() else None
    return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
