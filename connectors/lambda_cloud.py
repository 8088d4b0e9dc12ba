"""Lambda Cloud: cost estimated from sampled instance uptime × list price, replaced by invoices.

Lambda publishes no billing, usage or invoice endpoint. The Lambda Cloud API v1.10.0 (OpenAPI
"Lambda Cloud API", servers ``https://cloud.lambda.ai/``; ``GET /api/v1/instances`` "List running
instances", Bearer API key, success ``{"data": [...]}``, errors ``{"error": {code, message, suggestion}}``,
about one request per second) gives each instance's ``id``, ``name``, ``status`` (booting | active |
unhealthy | terminated | terminating | preempted), ``region {name, description}``, ``tags [{key, value}]``
and ``instance_type {name, gpu_description, price_cents_per_hour, specs {gpus}}``. Lambda's "Billing"
page (docs.lambda.ai/public-cloud/billing) says on-demand instances are priced per hour, billed in
one-minute increments from launch (once health checks pass) to termination, invoiced weekly, with
sales tax on the invoice.

So this module has three parts:

1. Sampling (for a sensor, see ``sample_instances`` / ``append_observations``): one GET of
   ``/api/v1/instances`` becomes a list of ``Observation``; the sensor appends each sample as one JSON
   line ``{"observed_at": "...Z", "instances": [...]}`` to ``<uptime_log_dir>/<YYYY-MM>.jsonl`` — an
   empty list included, because "nothing was running" is an observation. Only the fields needed for
   cost are kept (never ``jupyter_token`` or addresses).
2. Estimate: a sample's state holds until the next sample, but never longer than
   ``max_sample_gap_minutes`` (a sensor outage is unobserved time, not uptime); an instance counts while
   its status is in ``billable_statuses`` (default active and unhealthy). Uptime is cut into hours and
   priced at the observed ``price_cents_per_hour``: PricingQuantity = hours (12 places), ListUnitPrice =
   ContractedUnitPrice = the hourly price, cost = price × quantity rounded to 12 places.
3. Invoices: CSV files under ``invoice_path`` replace the estimate for every moment they cover. Lambda
   publishes no invoice file layout, so this module reads a documented one (header names are matched
   case-insensitively, spaces and hyphens as underscores): required ``invoice_id``, ``period_start``,
   ``period_end``, ``amount``; optional ``description``, ``instance_type``, ``instance_id``, ``quantity``
   (hours), ``unit_price``, ``currency`` (default USD), ``line_type`` (usage | tax | credit | adjustment,
   default usage). A date-only ``period_end`` is inclusive (the invoice's last day), a date-time one
   exclusive. A line whose period straddles months is split by time, with cumulative rounding so the
   parts add back to the line exactly. BilledCost and EffectiveCost are the line's ``amount`` (the invoice
   rounds it to cents); a usage line with ``quantity`` and ``unit_price`` has ListCost = ContractedCost =
   unit price × hours (12 places), as FOCUS 1.2 defines them ("The product of ListUnitPrice and
   PricingQuantity MUST match the ListCost", ListCost-C-009-C; ContractedUnitPrice-C-011-C likewise), so
   ``2.4167 h × $2.49`` is ListCost 6.017583 beside BilledCost 6.02. Its SkuPriceId is the instance type
   and the unit price in cents, as for the estimate (``gpu_1x_h100_pcie:249c``; FOCUS 1.2 SkuPriceId-C-005-C
   "MUST NOT be null when ChargeCategory is "Usage""); without a unit price it stays null.

How a row says it is an estimate (FOCUS has no column for it): ``x_line_item_type`` = ``Estimate`` (and
``Invoice`` for invoice lines), InvoiceId is null, and ChargeDescription starts with "Estimate:". Tags
stay the instance's own tags.

``source_total`` = the month's invoice amounts plus the estimate, recomputed from the raw files (there
is no provider total to compare an estimate with).
"""

from __future__ import annotations

import csv
import glob
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.http import ApiClient
from models.config import LambdaCloudSource
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP

PROVIDER = "Lambda"
INSTANCES_PATH = "/api/v1/instances"
SERVICE = ("Lambda On-Demand Cloud", "Compute", "Virtual Machines")
QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
HOUR = timedelta(hours=1)
MICROS_PER_HOUR = 3_600_000_000
ESTIMATE, INVOICE = "Estimate", "Invoice"
REQUIRED_INVOICE_COLUMNS = ("invoice_id", "period_start", "period_end", "amount")
LINE_TYPES = {"usage": "Usage", "tax": "Tax", "credit": "Credit", "adjustment": "Adjustment"}

_STRINGS = (
    "BillingAccountId", "BillingCurrency", "ChargeCategory", "ChargeDescription", "ChargeFrequency", "ConsumedUnit",
    "InvoiceId", "InvoiceIssuerName", "PricingCategory", "PricingUnit", "ProviderName", "PublisherName", "RegionId",
    "RegionName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory", "ServiceName",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceId", "SkuPriceDetails", "Tags", "x_source_file",
    "x_source_line", "x_line_item_type",
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


# --- sampling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One instance as one sample saw it: what is needed to price its uptime, nothing secret."""

    observed_at: datetime
    instance_id: str
    status: str
    instance_type: str
    price_cents_per_hour: int
    name: str | None = None
    gpu_description: str | None = None
    gpus: int | None = None
    region: str | None = None
    region_description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["observed_at"]  # the sample line carries it once
        return data


def sample_instances(
    source: LambdaCloudSource,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> list[Observation]:
    """The instances running now (``GET /api/v1/instances``), as observations stamped ``now``."""
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
        response = client.get_json(INSTANCES_PATH)
    observed_at = (now or datetime.now(UTC)).astimezone(UTC)
    where = f"GET {httpx.URL(response.url).copy_with(query=None)}"
    body = response.body
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise SourceError(source.name, where, "expected a JSON object with a 'data' list of instances")
    return [_observation(source.name, where, i, raw, observed_at) for i, raw in enumerate(body["data"])]


def _observation(source: str, where: str, index: int, raw: Any, observed_at: datetime) -> Observation:
    """An ``Instance`` object (Lambda Cloud API schema) as an observation; a clear error naming the field."""

    def fail(path: str, expected: str) -> SourceError:
        return SourceError(source, where, f"data[{index}].{path}: expected {expected}")

    if not isinstance(raw, dict):
        raise fail("", "an Instance object")
    kind = raw.get("instance_type")
    region = raw.get("region") if isinstance(raw.get("region"), dict) else {}
    if not isinstance(raw.get("id"), str) or not raw["id"]:
        raise fail("id", "a non-empty string")
    if not isinstance(raw.get("status"), str):
        raise fail("status", "a string")
    if not isinstance(kind, dict) or not isinstance(kind.get("name"), str):
        raise fail("instance_type.name", "a string")
    price = kind.get("price_cents_per_hour")
    if isinstance(price, bool) or not isinstance(price, int) or price < 0:
        raise fail("instance_type.price_cents_per_hour", "a whole number of US cents")
    specs = kind.get("specs") if isinstance(kind.get("specs"), dict) else {}
    gpus = specs.get("gpus")
    tags = raw.get("tags") if isinstance(raw.get("tags"), list) else []
    return Observation(
        observed_at=observed_at,
        instance_id=raw["id"],
        status=raw["status"],
        instance_type=kind["name"],
        price_cents_per_hour=price,
        name=raw.get("name") or None,
        gpu_description=kind.get("gpu_description"),
        gpus=gpus if isinstance(gpus, int) and not isinstance(gpus, bool) else None,
        region=region.get("name"),
        region_description=region.get("description"),
        tags={str(t["key"]): str(t["value"]) for t in tags if isinstance(t, dict) and "key" in t and "value" in t},
    )


def log_file(source: LambdaCloudSource, month: BillingPeriod) -> Path:
    return Path(source.uptime_log_dir).expanduser() / f"{month.key}.jsonl"


def append_observations(source: LambdaCloudSource, observations: list[Observation], *, observed_at: datetime) -> Path:
    """Append one sample (one JSON line, even when no instance runs) to the month's uptime log."""
    moment = observed_at.astimezone(UTC)
    if any(o.observed_at != observed_at for o in observations):
        raise ValueError("every observation of a sample must carry the sample's observed_at")
    path = log_file(source, BillingPeriod.containing(moment))
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"observed_at": _iso(moment), "instances": [o.to_json() for o in observations]},
        separators=(",", ":"),
        sort_keys=True,
    )
    # A crash mid-write leaves a line without its newline: start a fresh line so only that one is bad.
    torn = path.is_file() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
    with path.open("ab") as out:
        out.write((("\n" if torn else "") + line + "\n").encode())
    return path


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1)


# --- reading the log -----------------------------------------------------------------------------


@dataclass
class _Report:
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)


def read_samples(
    source: LambdaCloudSource, period: BillingPeriod, report: _Report
) -> list[tuple[datetime, list[Observation]]]:
    """Samples of the month, plus the last one before it and the first after it (to bound the edges)."""
    folder = Path(source.uptime_log_dir).expanduser()
    if not folder.is_dir():
        raise SourceError(
            source.name,
            str(folder),
            "uptime_log_dir does not exist",
            "start the Lambda uptime sensor (it creates the folder), or point uptime_log_dir at its folder",
        )
    by_time: dict[datetime, list[Observation]] = {}
    months = (period.previous, period, BillingPeriod.containing(period.end))
    for month in months:
        path = log_file(source, month)
        if not path.is_file():
            continue
        report.files.append(str(path))
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            sample = _sample(text)
            if isinstance(sample, str):
                report.quarantine.append((str(path), f"line {number}", sample))
                continue
            if sample[0] in by_time:
                report.stats["duplicate_samples"] += 1
                continue
            by_time[sample[0]] = sample[1]
    ordered = sorted(by_time.items())
    before = [s for s in ordered if s[0] < period.start][-1:]
    after = [s for s in ordered if s[0] >= period.end][:1]
    inside = [s for s in ordered if period.start <= s[0] < period.end]
    report.stats["samples"] += len(inside)
    return before + inside + after


def _sample(text: str) -> tuple[datetime, list[Observation]] | str:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(data, dict):
        return "expected a JSON object"
    observed_at = _datetime(data.get("observed_at"))
    if observed_at is None:
        return f"observed_at {data.get('observed_at')!r} is not an ISO 8601 date-time"
    instances = data.get("instances")
    if not isinstance(instances, list):
        return "field 'instances' is not a list"
    observations = []
    for i, raw in enumerate(instances):
        price = raw.get("price_cents_per_hour") if isinstance(raw, dict) else None
        if not isinstance(price, int) or isinstance(price, bool):
            return f"instances[{i}].price_cents_per_hour {price!r} is not a whole number of cents"
        try:
            observations.append(Observation(observed_at=observed_at, **raw))
        except TypeError as exc:
            return f"instances[{i}]: {exc}"
    return observed_at, observations


# --- estimate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Uptime:
    """One instance's billable time at one price: [start, end)."""

    observation: Observation
    start: datetime
    end: datetime


def billable_uptime(
    samples: list[tuple[datetime, list[Observation]]], source: LambdaCloudSource, report: _Report
) -> list[_Uptime]:
    """Each billable observation holds until the next sample, capped at the maximum sample gap."""
    gap = timedelta(minutes=source.max_sample_gap_minutes)
    billable = set(source.billable_statuses)
    spans: list[_Uptime] = []
    for (at, observations), (next_at, _) in pairwise(samples):
        until = min(next_at, at + gap)
        if next_at - at > gap:
            report.stats["sample_gaps_longer_than_max"] += 1
        spans += [_Uptime(o, at, until) for o in observations if o.status in billable]
    return _merged(spans)


def _merged(spans: list[_Uptime]) -> list[_Uptime]:
    """Adjacent spans of the same instance at the same price joined (fewer hour splits later)."""
    merged: list[_Uptime] = []
    for span in sorted(spans, key=lambda s: (s.observation.instance_id, s.start)):
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.observation.instance_id == span.observation.instance_id
            and last.observation.price_cents_per_hour == span.observation.price_cents_per_hour
            and last.end == span.start
        ):
            merged[-1] = _Uptime(last.observation, last.start, span.end)
        else:
            merged.append(span)
    return merged


def _subtract(
    start: datetime, end: datetime, covered: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """[start, end) minus the (sorted, merged) covered windows."""
    pieces, cursor = [], start
    for c_start, c_end in covered:
        if c_end <= cursor or c_start >= end:
            continue
        if c_start > cursor:
            pieces.append((cursor, c_start))
        cursor = max(cursor, c_end)
    if cursor < end:
        pieces.append((cursor, end))
    return pieces


def estimate_hours(
    spans: list[_Uptime], period: BillingPeriod, covered: list[tuple[datetime, datetime]]
) -> dict[tuple[str, datetime, int], tuple[Observation, int]]:
    """Billable microseconds per (instance, hour, price) inside ``period`` and outside invoiced windows."""
    hours: dict[tuple[str, datetime, int], tuple[Observation, int]] = {}
    for span in spans:
        start, end = max(span.start, period.start), min(span.end, period.end)
        for piece_start, piece_end in _subtract(start, end, covered) if start < end else []:
            cursor = piece_start
            while cursor < piece_end:
                hour = cursor.replace(minute=0, second=0, microsecond=0)
                stop = min(piece_end, hour + HOUR)
                key = (span.observation.instance_id, hour, span.observation.price_cents_per_hour)
                seen, micros = hours.get(key, (span.observation, 0))
                hours[key] = (seen, micros + (stop - cursor) // timedelta(microseconds=1))
                cursor = stop
    return hours


def _estimate_cost(price_cents: int, micros: int) -> tuple[Decimal, Decimal, Decimal]:
    """(hours, hourly price, cost): cost = price × hours, both at 12 places, so ListCost = unit price × quantity."""
    hours = (Decimal(micros) / MICROS_PER_HOUR).quantize(QUANTUM, ROUND_HALF_EVEN)
    price = Decimal(price_cents) / 100
    return hours, price, (price * hours).quantize(QUANTUM, ROUND_HALF_EVEN)


# --- invoices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InvoiceLine:
    file: str
    line: int
    values: dict[str, str]
    start: datetime
    end: datetime
    amount: Decimal
    category: str
    quantity: Decimal | None
    unit_price: Decimal | None


def invoice_files(source: LambdaCloudSource) -> list[Path]:
    if not source.invoice_path:
        return []
    root = Path(source.invoice_path).expanduser()
    candidates: Iterable[Path] = root.rglob("*.csv") if root.is_dir() else (Path(p) for p in glob.glob(str(root)))
    return sorted(p for p in candidates if p.is_file())


def read_invoices(source: LambdaCloudSource, report: _Report) -> list[_InvoiceLine]:
    lines: list[_InvoiceLine] = []
    for path in invoice_files(source):
        report.files.append(str(path))
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            names = {n: n.strip().lower().replace(" ", "_").replace("-", "_") for n in reader.fieldnames or []}
            missing = [c for c in REQUIRED_INVOICE_COLUMNS if c not in names.values()]
            if missing:
                raise SourceError(
                    source.name,
                    str(path),
                    f"missing invoice column(s) {', '.join(missing)} (found {', '.join(names) or 'no header'})",
                    "invoice CSVs need invoice_id, period_start, period_end and amount (connectors/lambda_cloud.py)",
                )
            for row in reader:
                values = {names[k]: (v or "").strip() for k, v in row.items() if k in names}
                parsed = _invoice_line(str(path), reader.line_num, values)
                if isinstance(parsed, str):
                    report.quarantine.append((str(path), f"line {reader.line_num}", parsed))
                else:
                    lines.append(parsed)
    return lines


def _invoice_line(file: str, line: int, values: dict[str, str]) -> _InvoiceLine | str:
    start = _boundary(values["period_start"], inclusive_end=False)
    end = _boundary(values["period_end"], inclusive_end=True)
    if start is None:
        return f"period_start {values['period_start']!r} is not a date or date-time"
    if end is None or end <= start:
        return f"period_end {values['period_end']!r} is not a date or date-time after period_start"
    amount = _decimal(values["amount"])
    if amount is None:
        return f"amount {values['amount']!r} is not a decimal number"
    category = LINE_TYPES.get((values.get("line_type") or "usage").lower())
    if category is None:
        return f"line_type {values.get('line_type')!r} is not one of {', '.join(LINE_TYPES)}"
    quantity, unit_price = _decimal(values.get("quantity", "")), _decimal(values.get("unit_price", ""))
    for name, parsed in (("quantity", quantity), ("unit_price", unit_price)):
        if values.get(name) and parsed is None:
            return f"{name} {values[name]!r} is not a decimal number"
    return _InvoiceLine(file, line, values, start, end, amount, category, quantity, unit_price)


def covered_windows(lines: list[_InvoiceLine]) -> list[tuple[datetime, datetime]]:
    """The union of every invoice line's period, sorted and merged."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted((line.start, line.end) for line in lines):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def month_share(value: Decimal, start: datetime, end: datetime, period: BillingPeriod) -> Decimal:
    """The part of ``value`` spread evenly over [start, end) that falls in ``period``.

    Cumulative rounding: share = R(value × t_out / T) − R(value × t_in / T), so the shares of all months
    add back to ``value`` exactly.
    """
    total = (end - start) // timedelta(microseconds=1)

    def upto(moment: datetime) -> Decimal:
        elapsed = (min(max(moment, start), end) - start) // timedelta(microseconds=1)
        return (value * elapsed / total).quantize(QUANTUM, ROUND_HALF_EVEN)

    return upto(period.end) - upto(period.start)


# --- load ----------------------------------------------------------------------------------------


def load(source: LambdaCloudSource, period: BillingPeriod) -> LoadResult:
    """The month's invoice lines, and an estimate for the uptime no loaded invoice covers yet."""
    report = _Report()
    invoices = read_invoices(source, report)
    covered = covered_windows(invoices)
    samples = read_samples(source, period, report)
    hours = estimate_hours(billable_uptime(samples, source, report), period, covered)
    ordered = sorted(hours.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2]))  # hour, instance, price
    rows = [_estimate_row(source, period, hour, seen, micros) for (_, hour, _), (seen, micros) in ordered]
    rows += [row for line in invoices if (row := _invoice_row(source, period, line)) is not None]
    report.stats["estimate_rows"] = len(hours)
    report.stats["invoice_lines_in_month"] = len(rows) - len(hours)
    return LoadResult(
        frame=pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row"),
        quarantine=pl.DataFrame(report.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=report.files,
        source_total=_total(hours, invoices, period),
        stats={k: v for k, v in sorted(report.stats.items()) if v},
    )


def _total(
    hours: dict[tuple[str, datetime, int], tuple[Observation, int]], invoices: list[_InvoiceLine], period: BillingPeriod
) -> Decimal:
    """Invoice amounts in the month plus the estimate, from the raw lines and uptime (not the frame)."""
    estimate = sum((_estimate_cost(price, micros)[2] for (_, _, price), (_, micros) in hours.items()), Decimal(0))
    invoiced = sum((month_share(line.amount, line.start, line.end, period) for line in invoices), Decimal(0))
    return estimate + invoiced


def _base(source: LambdaCloudSource, period: BillingPeriod) -> dict[str, Any]:
    service, category, subcategory = SERVICE
    return {
        "BillingAccountId": source.billing_account_id or source.name,
        "InvoiceIssuerName": PROVIDER,
        "ProviderName": PROVIDER,
        "PublisherName": PROVIDER,
        "ServiceCategory": category,
        "ServiceName": service,
        "ServiceSubcategory": subcategory,
        "BillingPeriodStart": period.start,
        "BillingPeriodEnd": period.end,
    }


def _estimate_row(
    source: LambdaCloudSource, period: BillingPeriod, hour: datetime, seen: Observation, micros: int
) -> tuple[Any, ...]:
    quantity, price, cost = _estimate_cost(seen.price_cents_per_hour, micros)
    details = {k: v for k, v in (("x_GpuDescription", seen.gpu_description), ("x_Gpus", seen.gpus)) if v is not None}
    values = {
        **_base(source, period),
        "BillingCurrency": "USD",
        "ChargeCategory": "Usage",
        "ChargeDescription": f"Estimate: {seen.instance_type} uptime × list price (no invoice loaded yet)",
        "ChargeFrequency": "Usage-Based",
        "ConsumedUnit": "Hours",
        "InvoiceId": None,
        "PricingCategory": "Standard",
        "PricingUnit": "Hours",
        "RegionId": seen.region,
        "RegionName": seen.region_description if seen.region else None,
        "ResourceId": seen.instance_id,
        "ResourceName": seen.name,
        "ResourceType": "Instance",
        "SkuId": seen.instance_type,
        "SkuMeter": "Instance Hours",
        "SkuPriceId": f"{seen.instance_type}:{seen.price_cents_per_hour}c",
        "SkuPriceDetails": json.dumps(details, separators=(",", ":")) if details else None,
        "Tags": json.dumps(seen.tags, separators=(",", ":"), sort_keys=True) if seen.tags else None,
        "x_source_file": str(log_file(source, period)),
        "x_source_line": f"{seen.instance_id} {hour:%Y-%m-%dT%H}",
        "x_line_item_type": ESTIMATE,
        "BilledCost": cost,
        "EffectiveCost": cost,
        "ListCost": cost,
        "ContractedCost": cost,
        "ListUnitPrice": price,
        "ContractedUnitPrice": price,
        "ConsumedQuantity": quantity,
        "PricingQuantity": quantity,
        "ChargePeriodStart": hour,
        "ChargePeriodEnd": hour + HOUR,
    }
    return tuple(values[c] for c in FRAME_SCHEMA)


def _invoice_row(source: LambdaCloudSource, period: BillingPeriod, line: _InvoiceLine) -> tuple[Any, ...] | None:
    """The month's part of one invoice line, or None when the line is for another month."""
    start, end = max(line.start, period.start), min(line.end, period.end)
    if start >= end:
        return None
    amount = month_share(line.amount, line.start, line.end, period)
    usage = line.category == "Usage"
    quantity = month_share(line.quantity, line.start, line.end, period) if usage and line.quantity is not None else None
    priced = quantity is not None and line.unit_price is not None
    # unit price × hours (FOCUS ListCost/ContractedCost), not the invoice's amount rounded to cents
    list_cost = (line.unit_price * quantity).quantize(QUANTUM, ROUND_HALF_EVEN) if priced else amount
    instance_type, values = line.values.get("instance_type") or None, line.values
    sku_price_id = None
    if usage and instance_type and line.unit_price is not None:
        sku_price_id = f"{instance_type}:{_cents(line.unit_price)}c"
    values_out = {
        **_base(source, period),
        "BillingCurrency": (values.get("currency") or "USD").upper(),
        "ChargeCategory": line.category,
        "ChargeDescription": values.get("description") or None,
        "ChargeFrequency": "Usage-Based" if usage else "One-Time",
        "ConsumedUnit": "Hours" if quantity is not None else None,
        "InvoiceId": values["invoice_id"],
        "PricingCategory": "Standard" if usage else None,
        "PricingUnit": "Hours" if quantity is not None else None,
        "RegionId": None,
        "RegionName": None,
        "ResourceId": values.get("instance_id") or None,
        "ResourceName": None,
        "ResourceType": "Instance" if values.get("instance_id") else None,
        "SkuId": instance_type if usage else None,
        "SkuMeter": "Instance Hours" if usage and instance_type else None,
        "SkuPriceId": sku_price_id,
        "SkuPriceDetails": None,
        "Tags": None,
        "x_source_file": line.file,
        "x_source_line": f"line {line.line}",
        "x_line_item_type": INVOICE,
        "BilledCost": amount,
        "EffectiveCost": amount,
        "ListCost": list_cost,
        "ContractedCost": list_cost,
        "ListUnitPrice": line.unit_price if quantity is not None else None,
        "ContractedUnitPrice": line.unit_price if quantity is not None else None,
        "ConsumedQuantity": quantity,
        "PricingQuantity": quantity,
        "ChargePeriodStart": start,
        "ChargePeriodEnd": end,
    }
    return tuple(values_out[c] for c in FRAME_SCHEMA)


# --- parsing helpers -------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _boundary(text: str, *, inclusive_end: bool) -> datetime | None:
    """A date-time (UTC unless it says otherwise), or a date: its midnight, or the next midnight for an end."""
    text = text.strip()
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return midnight + timedelta(days=1) if inclusive_end else midnight
    return _datetime(text)


def _cents(dollars: Decimal) -> str:
    """A unit price in dollars as plain cents: 2.49 → ``249``, 1.10 → ``110``, 0.005 → ``0.5``."""
    return format((dollars * 100).normalize(), "f")


def _decimal(text: str | None) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text.replace(",", "").replace("$", "").strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
