"""RunPod billing history → FOCUS 1.2 rows.

Follows the RunPod REST API v1 reference ("Runpod API" 0.1.0, server ``https://rest.runpod.io/v1``;
runpod/docs ``api-reference/openapi.json``, pages docs.runpod.io/api-reference/billing/GET/billing/pods,
…/endpoints and …/networkvolumes) and runpod/runpodctl ``internal/api/billing.go``:

- ``GET /billing/pods`` and ``GET /billing/endpoints`` take ``bucketSize`` (hour|day|week|month|year),
  ``startTime``/``endTime`` (RFC 3339), ``grouping`` (pods: podId|gpuTypeId; endpoints: endpointId|podId|
  gpuTypeId) and a ``gpuTypeId`` filter; both answer a bare JSON array of ``BillingRecord``
  ``{time, amount, timeBilledMs, diskSpaceBilledGb, podId, endpointId, gpuTypeId}``, no pagination.
  ``amount`` is USD; ``time`` is the start of the bucket; a record names only its grouping key.
- ``GET /billing/networkvolumes`` takes ``bucketSize``/``startTime``/``endTime`` and answers
  ``{time, amount, diskSpaceBilledGb, highPerformanceStorageAmount, highPerformanceStorageDiskSpaceBilledGb}``
  with no volume id. ``amount``/``diskSpaceBilledGb`` are read as the standard tier and the
  high-performance pair as a second, additive charge (how third-party clients read it; the schema
  text does not say whether ``amount`` includes it).

Because a record carries only its grouping key, pods and endpoints are read in three steps: grouped by
GPU type (which types occur), grouped by resource within each type (``gpuTypeId`` filter), and grouped by
resource without a filter. Each (resource, bucket) of the last answer that the per-type answers do not
fully explain (CPU pods, an unknown type) becomes a row without SkuId, so the rows always add up to the
unfiltered total, which is the provider total (``source_total``).

Money arrives as JSON numbers (read exactly as Decimal) or, from some proxies, numeric strings
(accepted, counted as a repair). ``endTime`` is sent as the last second of the month, like the
reference's example (``2023-01-31T23:59:59Z``), and records outside the month are skipped and counted.

FOCUS choices: ResourceId = pod or endpoint id (null for volumes: the API names none); SkuId = the GPU
type, and SkuMeter only beside a SkuId (FOCUS: "SkuMeter MUST be null when SkuId is null");
ConsumedQuantity/PricingQuantity = ``timeBilledMs`` in Hours (volumes: GB × bucket hours in GB-Hours); all
four costs = ``amount`` (the API exposes no list price or discount); BillingAccountId = ``billing_account_id``
from the config, else the source name.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import httpx
import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.http import ApiClient
from models.config import RunPodSource
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP

PROVIDER = "RunPod"
QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
MS_PER_HOUR = Decimal(3_600_000)
BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True)
class Kind:
    """One billing endpoint and how its rows read in FOCUS terms."""

    path: str
    id_field: str | None  # the grouping key naming the resource; None: the endpoint names no resource
    service: str
    category: str
    subcategory: str
    resource_type: str
    meter: str


KINDS: dict[str, Kind] = {
    "pods": Kind("/billing/pods", "podId", "RunPod Pods", "Compute", "Containers", "Pod", "Pod Hours"),
    "endpoints": Kind(
        "/billing/endpoints", "endpointId", "RunPod Serverless", "Compute", "Serverless Compute",
        "Serverless Endpoint", "Worker Hours",
    ),
    "networkvolumes": Kind(
        "/billing/networkvolumes", None, "RunPod Network Volumes", "Storage", "File Storage", "Network Volume",
        "Storage GB-Hours",
    ),
}  # fmt: skip

_STRINGS = (
    "BillingAccountId", "BillingCurrency", "ChargeCategory", "ChargeDescription", "ChargeFrequency", "ConsumedUnit",
    "InvoiceIssuerName", "PricingCategory", "PricingUnit", "ProviderName", "PublisherName", "ResourceId",
    "ResourceType", "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuMeter",
    "x_source_file", "x_source_line", "x_line_item_type",
)  # fmt: skip
_DECIMALS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ConsumedQuantity", "PricingQuantity")
_TIMES = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
FRAME_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in _STRINGS},
    **{c: MONEY for c in _DECIMALS},
    **{c: TIMESTAMP for c in _TIMES},
}


@dataclass(frozen=True)
class Answer:
    """One GET: where it went (``label`` names the query), and the records it returned."""

    path: str
    label: str
    records: list[Any]

    @property
    def where(self) -> str:
        return f"GET {self.path}?{self.label}" if self.label else f"GET {self.path}"


@dataclass(frozen=True)
class Record:
    """A validated billing record."""

    start: datetime
    amount: Decimal
    resource: str | None
    billed_ms: int | None
    disk_gb: Decimal | None
    hp_amount: Decimal | None = None
    hp_disk_gb: Decimal | None = None


# --- fetching ------------------------------------------------------------------------------------


def load(
    source: RunPodSource,
    period: BillingPeriod,
    *,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> LoadResult:
    """Every billed pod, endpoint and network volume bucket of ``period`` as FOCUS rows."""
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
        answers = {k: fetch(client, source.name, KINDS[k], period, source.bucket_size) for k in source.resources}
    return map_answers(source, period, answers)


def window_query(period: BillingPeriod, bucket_size: str) -> dict[str, str]:
    """``bucketSize``, ``startTime`` and ``endTime`` for one month (end = the month's last second)."""
    last_second = period.end - timedelta(seconds=1)
    return {
        "bucketSize": bucket_size,
        "startTime": f"{period.start:%Y-%m-%dT%H:%M:%SZ}",
        "endTime": f"{last_second:%Y-%m-%dT%H:%M:%SZ}",
    }


def fetch(client: ApiClient, source: str, kind: Kind, period: BillingPeriod, bucket_size: str) -> list[Answer]:
    """The answers needed for one kind: by GPU type, by resource per type, then by resource overall."""
    base = window_query(period, bucket_size)
    if kind.id_field is None:
        return [_get(client, source, kind.path, base, "")]
    by_type = _get(client, source, kind.path, {**base, "grouping": "gpuTypeId"}, "grouping=gpuTypeId")
    types = sorted({r["gpuTypeId"] for r in by_type.records if isinstance(r, dict) and _text(r.get("gpuTypeId"))})
    answers = [by_type]
    for gpu_type in types:
        query = {**base, "grouping": kind.id_field, "gpuTypeId": gpu_type}
        answers.append(_get(client, source, kind.path, query, f"grouping={kind.id_field}&gpuTypeId={gpu_type}"))
    answers.append(_get(client, source, kind.path, {**base, "grouping": kind.id_field}, f"grouping={kind.id_field}"))
    return answers


def _get(client: ApiClient, source: str, path: str, query: dict[str, str], label: str) -> Answer:
    response = client.get_json(path, query)
    if not isinstance(response.body, list):
        raise SourceError(
            source,
            f"GET {httpx.URL(response.url).copy_with(query=None)}",
            f"expected a JSON array of billing records, got {type(response.body).__name__}",
            "is base_url the RunPod REST API v1 (https://rest.runpod.io/v1)?",
        )
    return Answer(httpx.URL(response.url).path, label, response.body)


# --- mapping (pure) ------------------------------------------------------------------------------


def map_answers(source: RunPodSource, period: BillingPeriod, answers: dict[str, list[Answer]]) -> LoadResult:
    """FOCUS rows for the fetched answers, with quarantine, repairs and the provider total."""
    mapper = _Mapper(source, period)
    for kind_name, kind_answers in answers.items():
        kind = KINDS[kind_name]
        if kind.id_field is None:
            mapper.add_volumes(kind_name, kind, kind_answers[0])
            continue
        mapper.add_resources(kind_name, kind, kind_answers)
        if raw_total(kind_answers[0], period) != raw_total(kind_answers[-1], period):
            mapper.stats[f"{kind_name}_gpu_type_total_differs"] += 1
    frame = pl.DataFrame(mapper.rows, schema=FRAME_SCHEMA, orient="row")
    return LoadResult(
        frame=frame,
        quarantine=pl.DataFrame(mapper.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=[a.where for kind_answers in answers.values() for a in kind_answers],
        source_total=provider_total(answers, period),
        repairs=dict(mapper.repairs),
        stats=dict(mapper.stats),
    )


def provider_total(answers: dict[str, list[Answer]], period: BillingPeriod) -> Decimal:
    """RunPod's own total: every unfiltered answer's amounts in ``period``, summed from the raw JSON."""
    return sum((raw_total(kind_answers[-1], period) for kind_answers in answers.values()), Decimal(0))


def raw_total(answer: Answer, period: BillingPeriod) -> Decimal:
    """Sum of ``amount`` (and ``highPerformanceStorageAmount``) of the records dated in ``period``."""
    total = Decimal(0)
    for raw in answer.records:
        start = _timestamp(raw.get("time")) if isinstance(raw, dict) else None
        if start is None or not period.start <= start < period.end:
            continue
        for field in ("amount", "highPerformanceStorageAmount"):
            total += _decimal(raw.get(field)) or Decimal(0)
    return total


class _Mapper:
    """Validates records and accumulates FOCUS rows (tuples in FRAME_SCHEMA order)."""

    def __init__(self, source: RunPodSource, period: BillingPeriod) -> None:
        self.source, self.period = source, period
        self.bucket = BUCKETS[source.bucket_size]
        self.rows: list[tuple[Any, ...]] = []
        self.quarantine: list[tuple[str, str, str]] = []
        self.repairs: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()

    # --- pods and endpoints -----------------------------------------------------------------

    def add_resources(self, kind_name: str, kind: Kind, answers: list[Answer]) -> None:
        """Rows per (resource, GPU type, bucket), plus a row for what the per-type answers leave unexplained."""
        overall = answers[-1]
        explained: dict[tuple[str | None, datetime], tuple[Decimal, int]] = defaultdict(lambda: (Decimal(0), 0))
        for answer in answers[1:-1]:
            gpu_type = answer.label.split("gpuTypeId=", 1)[1]
            for line, record in self._records(answer, kind.id_field):
                key = (record.resource, record.start)
                amount, ms = explained[key]
                explained[key] = (amount + record.amount, ms + (record.billed_ms or 0))
                self._resource_row(kind_name, kind, answer, line, record, gpu_type)
        for line, record in self._records(overall, kind.id_field):
            amount, ms = explained.pop((record.resource, record.start), (Decimal(0), 0))
            rest_amount, rest_ms = record.amount - amount, (record.billed_ms or 0) - ms
            if rest_amount or rest_ms:
                rest = Record(record.start, rest_amount, record.resource, rest_ms, record.disk_gb)
                self._resource_row(kind_name, kind, overall, line, rest, None)
                self.stats[f"{kind_name}_without_gpu_type"] += 1
        if explained:
            self.stats[f"{kind_name}_per_type_records_missing_from_total"] += len(explained)

    def _resource_row(
        self, kind_name: str, kind: Kind, answer: Answer, line: str, record: Record, gpu_type: str | None
    ) -> None:
        hours = _hours(record.billed_ms)
        what = f"{kind.resource_type} {record.resource or '(unnamed)'}"
        description = f"{what} on {gpu_type}" if gpu_type else f"{what} (no GPU type reported)"
        self._row(
            kind_name, kind, answer, line, record.start, record.amount,
            resource=record.resource, sku=gpu_type, meter=kind.meter if gpu_type else None, description=description,
            quantity=hours, unit="Hours" if hours is not None else None,
        )  # fmt: skip

    # --- network volumes --------------------------------------------------------------------

    def add_volumes(self, kind_name: str, kind: Kind, answer: Answer) -> None:
        """A standard-tier row and, when billed, a high-performance row per bucket."""
        bucket_hours = Decimal(self.bucket // timedelta(hours=1))
        for line, record in self._records(answer, None):
            tiers = [("standard", record.amount, record.disk_gb)]
            if record.hp_amount is not None:
                tiers.append(("high-performance", record.hp_amount, record.hp_disk_gb))
            for tier, amount, gb in tiers:
                if not amount and not gb:
                    continue
                quantity = None if gb is None else gb * bucket_hours
                self._row(
                    kind_name, kind, answer, line, record.start, amount,
                    resource=None, sku=f"network-volume-{tier}", meter=f"{tier.title()} Storage GB-Hours",
                    description=f"Network volume storage, {tier} tier, {gb if gb is not None else '?'} GB",
                    quantity=quantity, unit="GB-Hours" if quantity is not None else None,
                )  # fmt: skip

    # --- shared -----------------------------------------------------------------------------

    def _row(
        self,
        kind_name: str,
        kind: Kind,
        answer: Answer,
        line: str,
        start: datetime,
        amount: Decimal,
        *,
        resource: str | None,
        sku: str | None,
        meter: str,
        description: str,
        quantity: Decimal | None,
        unit: str | None,
    ) -> None:
        values = {
            "BillingAccountId": self.source.billing_account_id or self.source.name,
            "BillingCurrency": "USD",
            "ChargeCategory": "Usage",
            "ChargeDescription": description,
            "ChargeFrequency": "Usage-Based",
            "ConsumedUnit": unit,
            "InvoiceIssuerName": PROVIDER,
            "PricingCategory": "Standard",
            "PricingUnit": unit,
            "ProviderName": PROVIDER,
            "PublisherName": PROVIDER,
            "ResourceId": resource,
            "ResourceType": kind.resource_type if resource else None,
            "ServiceCategory": kind.category,
            "ServiceName": kind.service,
            "ServiceSubcategory": kind.subcategory,
            "SkuId": sku,
            "SkuMeter": meter,
            "x_source_file": answer.where,
            "x_source_line": line,
            "x_line_item_type": kind_name,
            "BilledCost": amount,
            "EffectiveCost": amount,
            "ListCost": amount,
            "ContractedCost": amount,
            "ConsumedQuantity": quantity,
            "PricingQuantity": quantity,
            "BillingPeriodStart": self.period.start,
            "BillingPeriodEnd": self.period.end,
            "ChargePeriodStart": start,
            "ChargePeriodEnd": start + self.bucket,
        }
        self.rows.append(tuple(values[c] for c in FRAME_SCHEMA))

    def _records(self, answer: Answer, id_field: str | None) -> Iterable[tuple[str, Record]]:
        """The answer's valid in-period records; bad ones are quarantined."""
        for number, raw in enumerate(answer.records, start=1):
            line = f"record {number}"
            record = self._record(raw, id_field)
            if isinstance(record, str):
                self.quarantine.append((answer.where, line, record))
                continue
            if not self.period.start <= record.start < self.period.end:
                self.stats["records_outside_period"] += 1
                continue
            yield line, record

    def _record(self, raw: Any, id_field: str | None) -> Record | str:
        """A validated record, or the reason it can't be used."""
        if not isinstance(raw, dict):
            return f"record is {type(raw).__name__}, expected an object"
        start = _timestamp(raw.get("time"))
        if start is None:
            return f"field 'time' {_show(raw.get('time'))} is not an RFC 3339 date-time"
        money: dict[str, Decimal | None] = {}
        for field in ("amount", "highPerformanceStorageAmount"):
            money[field] = self._money(raw, field)
            if money[field] is None and (field == "amount" or raw.get(field) is not None):
                return f"field {field!r} {_show(raw.get(field))} is not a decimal number"
        billed_ms = _integer(raw.get("timeBilledMs"))
        if raw.get("timeBilledMs") is not None and billed_ms is None:
            return f"field 'timeBilledMs' {_show(raw.get('timeBilledMs'))} is not a whole number of milliseconds"
        resource = _text(raw.get(id_field)) if id_field else None
        return Record(
            start=start,
            amount=money["amount"] or Decimal(0),
            resource=resource,
            billed_ms=billed_ms,
            disk_gb=_decimal(raw.get("diskSpaceBilledGb")),
            hp_amount=money["highPerformanceStorageAmount"],
            hp_disk_gb=_decimal(raw.get("highPerformanceStorageDiskSpaceBilledGb")),
        )

    def _money(self, raw: dict[str, Any], field: str) -> Decimal | None:
        value = raw.get(field)
        parsed = _decimal(value)
        if parsed is not None and isinstance(value, str):
            self.repairs[f"{field}_as_string"] += 1
        if parsed is not None and parsed != (rounded := parsed.quantize(QUANTUM, ROUND_HALF_EVEN)):
            self.repairs[f"{field}_rounded_to_{MONEY_SCALE}_decimals"] += 1
            parsed = rounded
        return parsed


def _hours(billed_ms: int | None) -> Decimal | None:
    if billed_ms is None:
        return None
    return (Decimal(billed_ms) / MS_PER_HOUR).quantize(QUANTUM, ROUND_HALF_EVEN)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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


def _integer(value: Any) -> int | None:
    parsed = _decimal(value)
    if parsed is None or parsed != parsed.to_integral_value():
        return None
    return int(parsed)


def _show(value: Any) -> str:
    """A JSON value as it appeared: strings quoted, numbers plain, null as null."""
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
