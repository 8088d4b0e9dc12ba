"""Google Cloud Billing detailed usage cost export (``gcp_billing_export_resource_v1_*``) → FOCUS 1.2 rows.

Follows Google's Cloud Billing documentation:
- "Structure of Detailed data export" (cloud.google.com/billing/docs/how-to/export-data-bigquery-tables/detailed-usage):
  the fields read here, their types (``cost``/``credits.amount``/``usage.*`` FLOAT, ``price.*`` NUMERIC, times
  TIMESTAMP, ``labels``/``system_labels``/``project.labels``/``tags``/``credits`` repeated records), the credit
  types, ``adjustment_info`` types and modes, and "Errors and adjustments": exported rows are never changed;
  corrections arrive as *new* rows that negate (and may re-monetize) earlier ones, carrying ``adjustment_info``.
- "Example queries for Cloud Billing data export" (…/billing/docs/how-to/bq-examples): the invoice total of a
  month is ``SUM(cost) + SUM(credits.amount)`` over the rows with that ``invoice.month`` (regular, tax,
  adjustment and rounding_error rows alike); commitment fees are the rows whose SKU description starts with
  "commitment". Google queries ``invoice.month`` (not usage times) to match an invoice, and so does this module.
- "Understand the Cloud Billing data tables" (…/export-data-bigquery-tables): loads are ACID, data arrives at
  irregular intervals, "previously exported records aren't changed".

Origins:
- **BigQuery** (``table``), read with google-cloud-bigquery in two parameterized queries. A small summary query
  (``COUNT``, ``MIN``/``MAX(DATE(_PARTITIONTIME))``, ``MAX(export_time)`` and Google's exact invoice total) over
  the partitions within ``partition_margin_days`` of the invoice month finds which day partitions hold the
  month's rows; the detail query then reads exactly those partitions with ``invoice.month = @invoice_month AND
  export_time <= @as_of``, a consistent snapshot even while Google appends. The rows read must add up to the
  summary (count and total, to the NUMERIC's 9 decimals), else the load fails and nothing is replaced.
  "Incremental": each load reads only the invoice month's rows from only the partitions that hold them. Late
  rows and corrections are caught because every load re-reads the whole month: Google appends them with the
  invoice month they are billed on (a correction of August usage issued in September is in September's
  invoice), so re-running a month after its invoice closes picks up everything billed on it. Rows are never
  de-duplicated: Google documents none (rows are append-only; a correction is a new negating row, late usage
  a new row for the same hour), and de-duplicating would break the match with the invoice.
- **Files** (``path``): the same rows as BigQuery exports them (``EXPORT DATA`` / extract jobs): newline-delimited
  JSON (nested records, repeated fields as arrays, NULLs omitted, NUMERIC/INT64 possibly as strings, timestamps
  like ``2025-09-10 14:00:00 UTC``), optionally gzipped, or Parquet. Rows of other invoice months are skipped.

FOCUS choices (one export row → one FOCUS row, plus one Credit row per promotional credit):
- Credits: FOCUS 1.2 Discount Handling says discounts "SHOULD be applied to each row they pertain to and SHOULD
  NOT be negated in a separate row" and "credits that are applied after the fact MUST use a ChargeCategory of
  'Credit'". Price reductions of the row's own usage (committed-use and sustained-use discounts, free tier,
  spending-based ``DISCOUNT``, ``SUBSCRIPTION_BENEFIT``, ``RESELLER_MARGIN``, ``FEE_UTILIZATION_OFFSET``) are
  netted into BilledCost/EffectiveCost, as Google's own FOCUS view does (it nets every credit). ``PROMOTION``
  credits — free-trial and campaign credits that Google says "are considered a form of payment" — become
  separate Credit rows (BilledCost = EffectiveCost = ListCost = ContractedCost = the credit), so the usage keeps
  its real cost while the bill still adds up. Unknown credit types are netted and counted in the stats.
- ListCost = ``cost_at_list`` (else list unit price × quantity, else ``cost``); ContractedCost = ``cost``
  (contract prices included, before credits) with ContractedUnitPrice = ``price.effective_price`` per
  ``price.pricing_unit_quantity`` units; ListUnitPrice from ``price.list_price`` likewise, else the Cloud
  Billing Catalog (``catalog_prices``), else ListCost / PricingQuantity.
- ChargeCategory (FOCUS casing): ``regular`` → Usage, or Purchase for commitment fees (Recurring); ``tax`` → Tax;
  ``rounding_error`` → Adjustment; ``adjustment`` → Usage for usage/price/metadata corrections, Credit for
  goodwill and SLA credits, Adjustment otherwise. ChargeClass = Correction for corrections whose usage started
  before the invoice month, i.e. that correct a previously invoiced period.
- Committed use discounts: a row with a ``COMMITTED_USAGE_DISCOUNT[_DOLLAR_BASE]`` credit is Used commitment
  (CommitmentDiscountId = ``subscription.instance_id`` or the credit id, Category Usage/Spend, PricingCategory
  Committed). The export does not tie covered usage to the fee of a commitment instance, so fees cannot be
  amortized onto usage: a fee row keeps its cost as EffectiveCost (as in Google's FOCUS view).
- BillingPeriodStart/End: the invoice month in America/Los_Angeles (Google's invoice time zone), as UTC
  instants, End exclusive (the first instant of the next month). ChargePeriod = usage_start/end_time.
- SubAccount = the project (``project.id``/``project.name``, type "Project"); ResourceId = ``resource.global_name``,
  ResourceName = ``resource.name``, ResourceType = the asset type in the global name
  (``compute.googleapis.com/Instance``).
- Tags, one flat JSON object (FOCUS KeyValueFormat): resource ``labels`` unprefixed (the one prefix-less user
  scheme); project labels as ``project-label/<key>``; Resource Manager tags as ``tag/<namespace>/<key>``; system
  labels keep Google's own domain prefix (``compute.googleapis.com/machine_spec``). GCP label keys cannot contain
  ``/``, so no prefix can collide with a user key. A label with an empty value becomes ``true``.
- ``compute.googleapis.com/reservation_name`` / ``is_unused_reservation`` system labels fill
  CapacityReservationId/Status.
- SKU columns: SkuId = ``sku.id``, null on Tax rows (FOCUS 1.2 SkuId-C-004-C "SkuId MUST be null when
  ChargeCategory is "Tax"", and SkuMeter likewise); SkuMeter = ``sku.description``, the SKU's "human-readable
  description" of what it meters ("N2 Instance Core running in Americas"; SkuMeter-C-005-C "SHOULD NOT be
  null when SkuId is not null"); SkuPriceId on Usage and Purchase rows = ``<billing_account_id>:<sku.id>:
  <price.tier_start_amount>`` (tier 0 when absent), the three parts Google's FOCUS view template joins into
  its SkuPriceId (a price is per billing account, SKU and tier; SkuPriceId-C-005-C).
- BillingAccountName: the export has no billing account name (only ``billing_account_id``), while billing
  accounts are named in the console, so BillingAccountName-C-003-C ("MUST NOT be null when the provider
  supports assigning a display name") is met with the id, counted in ``repairs``. A row without
  ``sku.description`` (``rounding_error`` rows have no SKU) gets ChargeDescription "Rounding error for
  <service>" (ChargeDescription-C-003-O "SHOULD NOT be null"), also counted.
- CommitmentDiscountQuantity/Unit (FOCUS 1.2 CommitmentDiscountQuantity-C-005-C: not null on Usage and
  Purchase rows of a commitment): resource-based CUDs (Category Usage) in the row's pricing unit, the fee's
  PricingQuantity (the committed amount of its charge period) and, on covered usage, the PricingQuantity
  the CUD credit covers (quantity × |CUD credits| ÷ cost, at most the quantity); spend-based CUDs (Category
  Spend) in the billing currency, the fee's cost and the |CUD credits| of covered usage (as Savings Plans are
  in ``connectors.aws_cur2``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from glob import glob
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.gcp_catalog import CatalogPrices, credentials_for
from models.config import GcpBillingExportSource
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP

PROVIDER = "Google Cloud"
INVOICE_TIME_ZONE = ZoneInfo("America/Los_Angeles")
BATCH_ROWS = 10_000
QUERY_PAGE_ROWS = 10_000
Q12 = Decimal(1).scaleb(-MONEY_SCALE)
Q9 = Decimal(1).scaleb(-9)  # BigQuery NUMERIC: what the summary query's exact total is rounded to

COST_TYPES = ("regular", "tax", "adjustment", "rounding_error")
CUD_CATEGORIES = {"COMMITTED_USAGE_DISCOUNT": "Usage", "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE": "Spend"}
PAYMENT_CREDIT_TYPES = ("PROMOTION",)
NETTED_CREDIT_TYPES = (
    *CUD_CATEGORIES, "FEE_UTILIZATION_OFFSET", "SUSTAINED_USAGE_DISCOUNT", "DISCOUNT", "FREE_TIER",
    "RESELLER_MARGIN", "SUBSCRIPTION_BENEFIT",
)  # fmt: skip
CORRECTION_TYPES = ("USAGE_CORRECTION", "PRICE_CORRECTION", "METADATA_CORRECTION")
CORRECTION_MODES = ("PARTIAL_CORRECTION", "COMPLETE_NEGATION_WITH_REMONETIZATION", "COMPLETE_NEGATION")
CREDIT_ADJUSTMENT_TYPES = ("GOODWILL", "SALES_BASED_GOODWILL", "SLA_VIOLATION")
COMMITMENT_TYPE = "Committed Use Discount"
# ChargeDescription of rows without a SKU description (rounding_error rows have no SKU): "<label> for <service>".
COST_TYPE_LABELS = {"regular": "Charge", "tax": "Tax", "adjustment": "Adjustment", "rounding_error": "Rounding error"}
RESERVATION_NAME = "compute.googleapis.com/reservation_name"
RESERVATION_PROJECT = "compute.googleapis.com/reservation_project_id"
RESERVATION_UNUSED = "compute.googleapis.com/is_unused_reservation"

# The columns read from BigQuery (whole records; the detailed schema as Google documents it).
EXPORT_COLUMNS = (
    "billing_account_id", "service", "sku", "usage_start_time", "usage_end_time", "project", "labels",
    "system_labels", "location", "resource", "tags", "price", "export_time", "cost", "cost_at_list", "currency",
    "currency_conversion_rate", "usage", "credits", "invoice", "cost_type", "adjustment_info", "transaction_type",
    "seller_name", "subscription",
)  # fmt: skip
REQUIRED_COLUMNS = ("billing_account_id", "service", "usage_start_time", "usage_end_time", "cost", "currency",
                    "invoice", "cost_type")  # fmt: skip
FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz", ".parquet")

# --- ServiceCategory / ServiceSubcategory by service.description ---------------------------------------
# FOCUS 1.2 values; the names are the service descriptions the export carries. Unknown services → Other.
SERVICES: dict[str, tuple[str, str]] = {
    "Compute Engine": ("Compute", "Virtual Machines"),
    "Kubernetes Engine": ("Compute", "Containers"),
    "Cloud Run": ("Compute", "Serverless Compute"),
    "Cloud Run Functions": ("Compute", "Serverless Compute"),
    "Cloud Functions": ("Compute", "Serverless Compute"),
    "Batch": ("Compute", "Other (Compute)"),
    "App Engine": ("Web", "Application Platforms"),
    "Vertex AI": ("AI and Machine Learning", "AI Platforms"),
    "Gemini API": ("AI and Machine Learning", "Generative AI"),
    "Generative Language API": ("AI and Machine Learning", "Generative AI"),
    "Cloud TPU": ("AI and Machine Learning", "Machine Learning"),
    "Cloud Natural Language API": ("AI and Machine Learning", "Natural Language Processing"),
    "Cloud Translation API": ("AI and Machine Learning", "Natural Language Processing"),
    "Cloud Speech API": ("AI and Machine Learning", "Other (AI and Machine Learning)"),
    "Cloud Vision API": ("AI and Machine Learning", "Other (AI and Machine Learning)"),
    "Document AI": ("AI and Machine Learning", "Other (AI and Machine Learning)"),
    "Dialogflow": ("AI and Machine Learning", "Bots"),
    "Cloud Storage": ("Storage", "Object Storage"),
    "Filestore": ("Storage", "File Storage"),
    "Backup and DR Service": ("Storage", "Backup Storage"),
    "Cloud SQL": ("Databases", "Relational Databases"),
    "Cloud Spanner": ("Databases", "Relational Databases"),
    "Spanner": ("Databases", "Relational Databases"),
    "AlloyDB for PostgreSQL": ("Databases", "Relational Databases"),
    "Cloud Bigtable": ("Databases", "NoSQL Databases"),
    "Bigtable": ("Databases", "NoSQL Databases"),
    "Cloud Firestore": ("Databases", "NoSQL Databases"),
    "Firestore": ("Databases", "NoSQL Databases"),
    "Cloud Datastore": ("Databases", "NoSQL Databases"),
    "Cloud Memorystore for Redis": ("Databases", "Caching"),
    "Memorystore for Redis": ("Databases", "Caching"),
    "BigQuery": ("Databases", "Data Warehouses"),
    "BigQuery Storage API": ("Databases", "Data Warehouses"),
    "BigQuery Reservation API": ("Databases", "Data Warehouses"),
    "Dataflow": ("Analytics", "Data Processing"),
    "Cloud Dataflow": ("Analytics", "Data Processing"),
    "Dataproc": ("Analytics", "Data Processing"),
    "Cloud Dataproc": ("Analytics", "Data Processing"),
    "Cloud Data Fusion": ("Analytics", "Data Processing"),
    "Looker Studio": ("Analytics", "Business Intelligence"),
    "Looker": ("Analytics", "Business Intelligence"),
    "Networking": ("Networking", "Network Infrastructure"),
    "Cloud Load Balancing": ("Networking", "Application Networking"),
    "Cloud CDN": ("Networking", "Content Delivery"),
    "Cloud DNS": ("Networking", "Network Routing"),
    "Cloud NAT": ("Networking", "Network Connectivity"),
    "Cloud VPN": ("Networking", "Network Connectivity"),
    "Cloud Interconnect": ("Networking", "Network Connectivity"),
    "Cloud Armor": ("Networking", "Network Security"),
    "Cloud Logging": ("Management and Governance", "Observability"),
    "Cloud Monitoring": ("Management and Governance", "Observability"),
    "Cloud Trace": ("Management and Governance", "Observability"),
    "Support": ("Management and Governance", "Support"),
    "Secret Manager": ("Security", "Secret Management"),
    "Cloud Key Management Service (KMS)": ("Security", "Secret Management"),
    "Security Command Center": ("Security", "Security Posture Management"),
    "Identity Platform": ("Identity", "Identity and Access Management"),
    "Cloud Pub/Sub": ("Integration", "Messaging"),
    "Pub/Sub": ("Integration", "Messaging"),
    "Cloud Tasks": ("Integration", "Messaging"),
    "Eventarc": ("Integration", "Messaging"),
    "Cloud Scheduler": ("Integration", "Workflow Orchestration"),
    "Workflows": ("Integration", "Workflow Orchestration"),
    "Cloud Composer": ("Integration", "Workflow Orchestration"),
    "API Gateway": ("Integration", "API Management"),
    "Apigee": ("Integration", "API Management"),
    "Cloud Build": ("Developer Tools", "Continuous Integration and Deployment"),
    "Cloud Deploy": ("Developer Tools", "Continuous Integration and Deployment"),
    "Artifact Registry": ("Developer Tools", "Other (Developer Tools)"),
    "Cloud Workstations": ("Developer Tools", "Development Environments"),
}
OTHER_SERVICE = ("Other", "Other (Other)")

# Region ids → names, as in Google's FOCUS BigQuery view template (Mar 2024).
REGION_NAMES = {
    "africa-south1": "Johannesburg", "asia-east1": "Taiwan", "asia-east2": "Hong Kong", "asia-northeast1": "Tokyo",
    "asia-northeast2": "Osaka", "asia-northeast3": "Seoul", "asia-south1": "Mumbai", "asia-south2": "Delhi",
    "asia-southeast1": "Singapore", "asia-southeast2": "Jakarta", "australia-southeast1": "Sydney",
    "australia-southeast2": "Melbourne", "europe-central2": "Warsaw", "europe-north1": "Finland",
    "europe-southwest1": "Madrid", "europe-west1": "Belgium", "europe-west2": "London", "europe-west3": "Frankfurt",
    "europe-west4": "Netherlands", "europe-west6": "Zurich", "europe-west8": "Milan", "europe-west9": "Paris",
    "europe-west10": "Berlin", "europe-west12": "Turin", "me-central1": "Doha", "me-central2": "Dammam",
    "me-west1": "Tel Aviv", "northamerica-northeast1": "Montréal", "northamerica-northeast2": "Toronto",
    "southamerica-east1": "São Paulo", "southamerica-west1": "Santiago", "us-central1": "Iowa",
    "us-east1": "South Carolina", "us-east4": "Northern Virginia", "us-east5": "Columbus", "us-south1": "Dallas",
    "us-west1": "Oregon", "us-west2": "Los Angeles", "us-west3": "Salt Lake City", "us-west4": "Las Vegas",
}  # fmt: skip

# Catalog/export unit names → the FOCUS unit vocabulary (UnitFormat); others pass through unchanged.
UNITS = {
    "hour": "Hours", "hours": "Hours", "h": "Hours", "month": "Months", "second": "Seconds", "seconds": "Seconds",
    "s": "Seconds", "gibibyte": "GiB", "gibibyte month": "GiB-Months", "gibibyte hour": "GiB-Hours",
    "gibibyte second": "GiB-Seconds", "tebibyte": "TiB", "mebibyte": "MiB", "byte": "Bytes", "bytes": "Bytes",
    "byte-seconds": "Byte-Seconds", "request": "Requests", "requests": "Requests", "count": "Count",
}  # fmt: skip

FOCUS_STRING_COLUMNS = (
    "AvailabilityZone", "BillingAccountId", "BillingAccountName", "BillingAccountType", "BillingCurrency",
    "CapacityReservationId", "CapacityReservationStatus", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargeFrequency", "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
    "CommitmentDiscountStatus", "CommitmentDiscountType", "CommitmentDiscountUnit", "ConsumedUnit",
    "InvoiceIssuerName", "PricingCategory", "PricingUnit", "ProviderName", "PublisherName", "RegionId", "RegionName",
    "ResourceId", "ResourceName", "ResourceType", "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId",
    "SkuMeter", "SkuPriceId", "SubAccountId", "SubAccountName", "SubAccountType", "Tags", "x_source_file",
    "x_source_line", "x_line_item_type",
)  # fmt: skip
FOCUS_MONEY_COLUMNS = (
    "BilledCost", "CommitmentDiscountQuantity", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "ListCost", "ListUnitPrice", "PricingQuantity",
)  # fmt: skip
FOCUS_TIME_COLUMNS = ("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart")
OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in FOCUS_STRING_COLUMNS},
    **{c: MONEY for c in FOCUS_MONEY_COLUMNS},
    **{c: TIMESTAMP for c in FOCUS_TIME_COLUMNS},
}


# --- entry points -----------------------------------------------------------------------------------------


def load(source: GcpBillingExportSource, period: BillingPeriod) -> LoadResult:
    """The invoice month's rows as FOCUS rows (all batches of :func:`load_batches` together)."""
    results = list(load_batches(source, period))
    return LoadResult(
        frame=pl.concat([r.frame for r in results], how="vertical"),
        quarantine=pl.concat([r.quarantine for r in results], how="vertical"),
        files=sorted({f for r in results for f in r.files}),
        source_total=sum((r.source_total or Decimal(0) for r in results), Decimal(0)),
        repairs=dict(sum((Counter(r.repairs) for r in results), Counter())),
        stats=dict(sum((Counter(r.stats) for r in results), Counter())),
    )


def load_batches(source: GcpBillingExportSource, period: BillingPeriod) -> Iterator[LoadResult]:
    """The invoice month in batches of at most ``BATCH_ROWS`` export rows (bounded memory)."""
    invoice_month = period.key.replace("-", "")
    catalog = (
        CatalogPrices(
            source.name, Path(source.cache_dir), api_endpoint=source.catalog_api_endpoint,
            credentials_env=source.credentials_env, ttl=timedelta(hours=source.catalog_cache_hours),
        )
        if source.catalog_prices
        else None
    )  # fmt: skip
    mapper = RowMapper(invoice_month, catalog)
    origin: ExportOrigin = BigQueryExport(source) if source.table else ExportFiles(source)
    emitted = False
    for records in origin.batches(invoice_month):
        emitted = True
        yield mapper.batch(records)
    if not emitted:
        yield mapper.batch([])


@dataclass(frozen=True)
class Delivery:
    """What the export holds for a month now: ``delivery_id`` changes whenever Google appends rows to it."""

    period: str
    delivery_id: str
    location: str


def current_delivery(source: GcpBillingExportSource, period: BillingPeriod) -> Delivery | None:
    """The month's current state, for a sensor that reloads a month only when it changed (None: no rows yet).

    BigQuery: the summary query's row count, newest ``export_time`` and invoice total (a cheap scan of a few
    columns); files: the names, sizes and modification times of the export files.
    """
    invoice_month = period.key.replace("-", "")
    if source.table:
        export = BigQueryExport(source)
        summary = export.summary(invoice_month)
        if not summary.rows or summary.last_export_time is None:
            return None
        state = f"{summary.last_export_time.isoformat()}/{summary.rows}/{summary.total}"
        return Delivery(period.key, state, export.where)
    files = ExportFiles(source)
    try:
        found = files.files()
    except SourceError:
        return None
    stamps = ((f, Path(f).stat()) for f in found)
    state = "|".join(f"{f}:{st.st_size}:{st.st_mtime_ns}" for f, st in stamps)
    return Delivery(period.key, hashlib.sha256(state.encode()).hexdigest()[:16], files.path)


# --- one export row ----------------------------------------------------------------------------------------


class RowProblem(ValueError):
    """An export row that can't be mapped; the message is the quarantine reason."""


@dataclass(frozen=True)
class Credit:
    name: str | None
    amount: Decimal
    full_name: str | None
    id: str | None
    type: str | None


@dataclass(frozen=True)
class ExportRow:
    """The fields of one detailed-export row that the mapping uses, parsed to exact types."""

    billing_account_id: str
    invoice_month: str
    cost_type: str
    service_id: str | None
    service_description: str
    sku_id: str | None
    sku_description: str | None
    usage_start: datetime
    usage_end: datetime
    cost: Decimal
    currency: str
    cost_at_list: Decimal | None
    usage_amount: Decimal | None
    usage_unit: str | None
    pricing_amount: Decimal | None
    pricing_unit: str | None
    effective_price: Decimal | None
    list_price: Decimal | None
    tier_start: Decimal | None
    pricing_unit_quantity: Decimal | None
    credits: tuple[Credit, ...]
    project_id: str | None
    project_name: str | None
    labels: tuple[tuple[str, str | None], ...]
    project_labels: tuple[tuple[str, str | None], ...]
    system_labels: tuple[tuple[str, str | None], ...]
    tags: tuple[tuple[str, str | None, str | None], ...]
    region: str | None
    zone: str | None
    resource_name: str | None
    resource_global_name: str | None
    adjustment_type: str | None
    adjustment_mode: str | None
    has_adjustment: bool
    transaction_type: str | None
    seller_name: str | None
    subscription_id: str | None


def parse_row(record: Mapping[str, Any]) -> ExportRow:
    """One export row (a JSON object, a Parquet row or a BigQuery row as nested dicts); RowProblem if unusable."""
    row = Fields(record, "")
    service, sku, project, usage, price = (row.record(n) for n in ("service", "sku", "project", "usage", "price"))
    location, resource, adjustment = row.record("location"), row.record("resource"), row.record("adjustment_info")
    cost_type = row.required_text("cost_type").lower()
    if cost_type not in COST_TYPES:
        raise RowProblem(f"unknown cost_type {cost_type!r}; expected one of {', '.join(COST_TYPES)}")
    has_adjustment = any(adjustment.values.get(k) for k in ("id", "description", "mode", "type"))
    usage_amount = usage.decimal("amount")
    if usage_amount is not None and usage_amount < 0 and not has_adjustment and cost_type == "regular":
        raise RowProblem(f"usage.amount is negative ({usage_amount}) on a regular row without adjustment_info")
    invoice_month = row.record("invoice").required_text("month")
    if not re.fullmatch(r"\d{6}", invoice_month):
        raise RowProblem(f"invoice.month {invoice_month!r} is not YYYYMM")
    cost = row.decimal("cost")
    if cost is None:
        raise RowProblem("cost is empty")
    return ExportRow(
        billing_account_id=row.required_text("billing_account_id"),
        invoice_month=invoice_month,
        cost_type=cost_type,
        service_id=service.text("id"),
        service_description=service.required_text("description"),
        sku_id=sku.text("id"),
        sku_description=sku.text("description"),
        usage_start=row.required_time("usage_start_time"),
        usage_end=row.required_time("usage_end_time"),
        cost=cost,
        currency=row.required_text("currency"),
        cost_at_list=row.decimal("cost_at_list"),
        usage_amount=usage_amount,
        usage_unit=usage.text("unit"),
        pricing_amount=usage.decimal("amount_in_pricing_units"),
        pricing_unit=usage.text("pricing_unit"),
        effective_price=price.decimal("effective_price"),
        list_price=price.decimal("list_price"),
        tier_start=price.decimal("tier_start_amount"),
        pricing_unit_quantity=price.decimal("pricing_unit_quantity"),
        credits=tuple(_credits(row)),
        project_id=project.text("id"),
        project_name=project.text("name"),
        labels=_key_values(row, "labels"),
        project_labels=_key_values(project, "labels"),
        system_labels=_key_values(row, "system_labels"),
        tags=tuple(
            (tag.text("key") or "", tag.verbatim("value"), tag.text("namespace"))
            for tag in row.repeated("tags")
            if tag.text("key")
        ),
        region=location.text("region"),
        zone=location.text("zone"),
        resource_name=resource.text("name"),
        resource_global_name=resource.text("global_name"),
        adjustment_type=adjustment.text("type"),
        adjustment_mode=adjustment.text("mode"),
        has_adjustment=has_adjustment,
        transaction_type=row.text("transaction_type"),
        seller_name=row.text("seller_name"),
        subscription_id=row.record("subscription").text("instance_id"),
    )


def invoice_total(record: Mapping[str, Any], quantum: Decimal = Q12, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """What the row adds to Google's invoice: ``cost + SUM(credits.amount)``, each rounded to ``quantum``."""
    row = Fields(record, "")
    amounts = [row.decimal("cost") or Decimal(0), *(c.decimal("amount") or Decimal(0) for c in row.repeated("credits"))]
    return sum((a.quantize(quantum, rounding=rounding) for a in amounts), Decimal(0))


class Fields:
    """A record of an export row (or a nested one), read field by field; ``where`` names it in messages."""

    __slots__ = ("values", "where")

    def __init__(self, value: Any, where: str) -> None:
        if value is not None and not isinstance(value, dict):
            raise RowProblem(f"{where} is not a record")
        self.values: dict[str, Any] = value or {}
        self.where = where

    def name(self, field: str) -> str:
        return f"{self.where}.{field}" if self.where else field

    def record(self, field: str) -> Fields:
        return Fields(self.values.get(field), self.name(field))

    def repeated(self, field: str) -> list[Fields]:
        value = self.values.get(field)
        if value is None:
            return []
        if not isinstance(value, list):
            raise RowProblem(f"{self.name(field)} is not a list of records")
        return [Fields(v, self.name(field)) for v in value]

    def text(self, field: str) -> str | None:
        value = self.values.get(field)
        if value is None:
            return None
        text = value.strip() if isinstance(value, str) else str(value)
        return text or None

    def verbatim(self, field: str) -> str | None:
        """A value kept exactly as written (label and tag values: FOCUS forbids altering them)."""
        value = self.values.get(field)
        return None if value is None else str(value)

    def required_text(self, field: str) -> str:
        text = self.text(field)
        if text is None:
            raise RowProblem(f"{self.name(field)} is empty")
        return text

    def decimal(self, field: str) -> Decimal | None:
        """FLOAT (a JSON number read as Decimal, or a float via its shortest repr), NUMERIC (Decimal or string)."""
        value = self.values.get(field)
        if value is None or value == "":
            return None
        if type(value) is Decimal:
            number = value
        elif isinstance(value, bool):
            raise RowProblem(f"{self.name(field)} is not a number: {value!r}")
        else:
            try:
                number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
            except InvalidOperation:
                raise RowProblem(f"{self.name(field)} is not a number: {value!r}") from None
        if not number.is_finite():
            raise RowProblem(f"{self.name(field)} is not a finite number: {value!r}")
        return number

    def required_time(self, field: str) -> datetime:
        value = self.values.get(field)
        if value is None or value == "":
            raise RowProblem(f"{self.name(field)} is empty")
        parsed = parse_timestamp(value)
        if parsed is None:
            raise RowProblem(f"{self.name(field)} is not a timestamp: {value!r}")
        return parsed


def parse_timestamp(value: Any) -> datetime | None:
    """BigQuery TIMESTAMP as exported: a datetime, microseconds since the epoch, or text like
    ``2025-09-10 14:00:00 UTC`` / ``2025-09-10T14:00:00Z`` / ISO 8601 with an offset. Always UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = str(value).strip()
    if re.fullmatch(r"-?\d{1,19}", text):
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(text))
    text = re.sub(r"\s*UTC$", "", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _key_values(record: Fields, field: str) -> tuple[tuple[str, str | None], ...]:
    return tuple((key, e.verbatim("value")) for e in record.repeated(field) if (key := e.text("key")))


def _credits(row: Fields) -> Iterator[Credit]:
    for entry in row.repeated("credits"):
        amount = entry.decimal("amount")
        if amount is None:
            raise RowProblem("credits.amount is empty")
        yield Credit(
            name=entry.text("name"), amount=amount, full_name=entry.text("full_name"),
            id=entry.text("id"), type=entry.text("type"),
        )  # fmt: skip


# --- export row → FOCUS rows ---------------------------------------------------------------------------------


def invoice_month_bounds(invoice_month: str) -> tuple[datetime, datetime]:
    """The invoice month ``[start, end)`` in America/Los_Angeles, as UTC instants."""
    year, month = int(invoice_month[:4]), int(invoice_month[4:])
    start = datetime(year, month, 1, tzinfo=INVOICE_TIME_ZONE)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=INVOICE_TIME_ZONE)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass
class RowMapper:
    """Maps export rows of one invoice month to FOCUS rows, with optional Catalog list prices."""

    invoice_month: str
    catalog: CatalogPrices | None = None
    period_start: datetime = field(init=False)
    period_end: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.period_start, self.period_end = invoice_month_bounds(self.invoice_month)

    def batch(self, records: Iterable[RawRecord]) -> LoadResult:
        """A batch of raw records → LoadResult (FOCUS frame, quarantine, raw invoice total, stats)."""
        rows: list[dict[str, Any]] = []
        problems: list[dict[str, str]] = []
        files: set[str] = set()
        stats: Counter[str] = Counter()
        repairs: Counter[str] = Counter()
        total = Decimal(0)
        for raw in records:
            files.add(raw.file)
            stats["rows_read"] += 1
            if raw.error is not None:
                problems.append({"file": raw.file, "line": raw.line, "reason": raw.error})
                continue
            assert raw.record is not None
            try:
                row = parse_row(raw.record)
                if row.invoice_month == self.invoice_month:
                    total += invoice_total(raw.record)
            except RowProblem as exc:
                problems.append({"file": raw.file, "line": raw.line, "reason": str(exc)})
                continue
            if row.invoice_month != self.invoice_month:
                stats["rows_other_invoice_months"] += 1
                continue
            rows.extend(self.focus_rows(row, raw.file, raw.line, stats, repairs))
        return LoadResult(
            frame=pl.DataFrame({c: [r.get(c) for r in rows] for c in OUTPUT_SCHEMA}, schema=OUTPUT_SCHEMA),
            quarantine=pl.DataFrame(problems, schema=QUARANTINE_SCHEMA),
            files=sorted(files),
            source_total=total,
            repairs={k: v for k, v in repairs.items() if v},
            stats={k: v for k, v in stats.items() if v},
        )

    def focus_rows(
        self, row: ExportRow, file: str, line: str, stats: Counter[str], repairs: Counter[str] | None = None
    ) -> list[dict[str, Any]]:
        """The FOCUS row of an export row, plus a Credit row per promotional credit."""
        repairs = Counter() if repairs is None else repairs
        category = charge_category(row)
        charge_class = "Correction" if self._corrects_earlier_period(row) else None
        netted = [c for c in row.credits if c.type not in PAYMENT_CREDIT_TYPES]
        stats["unknown_credit_types"] += sum(1 for c in netted if c.type not in NETTED_CREDIT_TYPES)
        billed = row.cost + sum((c.amount for c in netted), Decimal(0))
        common = self._descriptive(row, file, line)
        description = row.sku_description
        if description is None:
            description = f"{COST_TYPE_LABELS[row.cost_type]} for {row.service_description}"
            repairs["filled_missing:ChargeDescription"] += 1
        main = {
            **common,
            "ChargeCategory": category,
            "ChargeClass": charge_class,
            "ChargeFrequency": {"Usage": "Usage-Based", "Purchase": "Recurring"}.get(category, "One-Time"),
            "ChargeDescription": description,
            "BilledCost": _q(billed),
            "EffectiveCost": _q(billed),
            "x_line_item_type": row.cost_type,
            **(self._priced(row, stats) if category in ("Usage", "Purchase") else _unpriced(billed)),
            **_commitment(row, category),
            **_capacity_reservation(row, category),
        }
        if category == "Tax":  # FOCUS 1.2 SkuId-C-004-C: SkuId MUST be null when ChargeCategory is "Tax"
            main["SkuId"] = main["SkuMeter"] = None
        if category == "Usage":
            main["ConsumedQuantity"] = _q(row.usage_amount)
            main["ConsumedUnit"] = _unit(row.usage_unit) if row.usage_amount is not None else None
        main.update(_commitment_quantity(row, main))
        credit_rows = [
            {
                **common,
                **_unpriced(c.amount),
                "ChargeCategory": "Credit",
                "ChargeClass": charge_class,
                "ChargeFrequency": "One-Time",
                "ChargeDescription": c.full_name or c.name,
                "BilledCost": _q(c.amount),
                "EffectiveCost": _q(c.amount),
                "x_line_item_type": f"credit:{c.type}",
            }
            for c in row.credits
            if c.type in PAYMENT_CREDIT_TYPES
        ]
        stats["credit_rows"] += len(credit_rows)
        repairs["filled_missing:BillingAccountName"] += 1 + len(credit_rows)  # the export carries no name
        return [main, *credit_rows]

    def _corrects_earlier_period(self, row: ExportRow) -> bool:
        correction = row.adjustment_type in CORRECTION_TYPES or row.adjustment_mode in CORRECTION_MODES
        return correction and row.usage_start < self.period_start

    def _descriptive(self, row: ExportRow, file: str, line: str) -> dict[str, Any]:
        category, subcategory = SERVICES.get(row.service_description, OTHER_SERVICE)
        publisher = PROVIDER if row.transaction_type in (None, "GOOGLE") else (row.seller_name or PROVIDER)
        return {
            "AvailabilityZone": row.zone,
            "BillingAccountId": row.billing_account_id,
            "BillingAccountName": row.billing_account_id,  # the export has no name (see the module doc)
            "BillingAccountType": "Billing Account",
            "BillingCurrency": row.currency,
            "BillingPeriodStart": self.period_start,
            "BillingPeriodEnd": self.period_end,
            "ChargePeriodStart": row.usage_start,
            "ChargePeriodEnd": row.usage_end,
            "InvoiceIssuerName": PROVIDER,
            "ProviderName": PROVIDER,
            "PublisherName": publisher,
            "RegionId": row.region,
            "RegionName": REGION_NAMES.get(row.region) if row.region else None,
            "ResourceId": row.resource_global_name,
            "ResourceName": row.resource_name,
            "ResourceType": resource_type(row.resource_global_name),
            "ServiceCategory": category,
            "ServiceName": row.service_description,
            "ServiceSubcategory": subcategory,
            "SkuId": row.sku_id,
            "SkuMeter": row.sku_description if row.sku_id else None,
            "SubAccountId": row.project_id,
            "SubAccountName": row.project_name if row.project_id else None,
            "SubAccountType": "Project" if row.project_id else None,
            "Tags": focus_tags(row),
            "x_source_file": file,
            "x_source_line": line,
        }

    def _priced(self, row: ExportRow, stats: Counter[str]) -> dict[str, Any]:
        """Quantities, unit prices, list and contracted cost of a Usage or Purchase row."""
        quantity, unit = row.pricing_amount, row.pricing_unit
        if quantity is None:  # pricing units missing: the base usage is the best quantity there is
            quantity, unit = row.usage_amount, row.usage_unit
        list_unit_price = _per_unit(row.list_price, row.pricing_unit_quantity)
        if list_unit_price is None and self.catalog is not None and row.service_id and row.sku_id:
            list_unit_price = self.catalog.unit_price(
                row.service_id, row.sku_id, row.currency, row.pricing_unit, row.tier_start
            )
            stats["list_unit_price_from_catalog"] += list_unit_price is not None
        list_cost = row.cost_at_list
        if list_cost is None and list_unit_price is not None and quantity is not None:
            list_cost = list_unit_price * quantity
            stats["list_cost_from_unit_price"] += 1
        if list_cost is None:
            list_cost = row.cost  # FOCUS needs a ListCost; nothing better is known
            stats["list_cost_from_cost"] += 1
        if list_unit_price is None:
            list_unit_price = _derived_price(list_cost, quantity)
            stats["list_unit_price_derived"] += list_unit_price is not None
        contracted_unit_price = _per_unit(row.effective_price, row.pricing_unit_quantity)
        if contracted_unit_price is None:
            contracted_unit_price = _derived_price(row.cost, quantity)
        return {
            "ListCost": _q(list_cost),
            "ListUnitPrice": _q(list_unit_price),
            "ContractedCost": _q(row.cost),
            "ContractedUnitPrice": _q(contracted_unit_price),
            "PricingQuantity": _q(quantity),
            "PricingUnit": _unit(unit) if quantity is not None else None,
            "PricingCategory": pricing_category(row),
            "SkuPriceId": sku_price_id(row),
        }


def _unpriced(amount: Decimal) -> dict[str, Any]:
    """Tax, Credit and Adjustment rows: no quantities or unit prices; every cost is what was billed."""
    return {"ListCost": _q(amount), "ContractedCost": _q(amount)}


def charge_category(row: ExportRow) -> str:
    if row.cost_type == "tax":
        return "Tax"
    if row.cost_type == "rounding_error":
        return "Adjustment"
    if row.cost_type == "adjustment":
        if row.adjustment_type in CREDIT_ADJUSTMENT_TYPES:
            return "Credit"
        return "Usage" if row.adjustment_type in CORRECTION_TYPES else "Adjustment"
    return "Purchase" if is_commitment_fee(row) else "Usage"


def is_commitment_fee(row: ExportRow) -> bool:
    """Google's documented test for commitment fees: the SKU description starts with "commitment"."""
    return (row.sku_description or "").lower().startswith("commitment")


def _cud_credit(row: ExportRow) -> Credit | None:
    return next((c for c in row.credits if c.type in CUD_CATEGORIES), None)


def _commitment(row: ExportRow, category: str) -> dict[str, Any]:
    if category == "Purchase" and row.subscription_id:
        spend = "dollar" in (row.sku_description or "").lower()
        return {
            "CommitmentDiscountId": row.subscription_id,
            "CommitmentDiscountName": row.sku_description,
            "CommitmentDiscountCategory": "Spend" if spend else "Usage",
            "CommitmentDiscountType": COMMITMENT_TYPE,
        }
    credit = _cud_credit(row)
    if category != "Usage" or credit is None:
        return {}
    return {
        "CommitmentDiscountId": row.subscription_id or credit.id or credit.name,
        "CommitmentDiscountName": credit.full_name or credit.name,
        "CommitmentDiscountCategory": CUD_CATEGORIES[credit.type or ""],
        "CommitmentDiscountType": COMMITMENT_TYPE,
        "CommitmentDiscountStatus": "Used",
    }


def sku_price_id(row: ExportRow) -> str | None:
    """``<billing_account_id>:<sku.id>:<price.tier_start_amount>``: the price point (see the module doc)."""
    if row.sku_id is None:
        return None
    tier = format((row.tier_start or Decimal(0)).normalize(), "f")
    return f"{row.billing_account_id}:{row.sku_id}:{tier}"


def _commitment_quantity(row: ExportRow, focus: dict[str, Any]) -> dict[str, Any]:
    """CommitmentDiscountQuantity/Unit of a commitment's Usage or Purchase row (see the module doc)."""
    category = focus.get("CommitmentDiscountCategory")
    if focus.get("CommitmentDiscountId") is None or focus["ChargeCategory"] not in ("Usage", "Purchase"):
        return {}
    purchase = focus["ChargeCategory"] == "Purchase"
    covered = abs(sum((c.amount for c in row.credits if c.type in CUD_CATEGORIES), Decimal(0)))
    if category == "Spend":
        return {
            "CommitmentDiscountQuantity": _q(row.cost if purchase else covered),
            "CommitmentDiscountUnit": row.currency,
        }
    quantity = focus.get("PricingQuantity")
    if quantity is None:
        return {}
    if not purchase and row.cost > 0:
        quantity = quantity * min(Decimal(1), covered / row.cost)
    return {"CommitmentDiscountQuantity": _q(quantity), "CommitmentDiscountUnit": focus.get("PricingUnit")}


def _capacity_reservation(row: ExportRow, category: str) -> dict[str, Any]:
    labels = dict(row.system_labels)
    name = labels.get(RESERVATION_NAME)
    if category != "Usage" or not name:
        return {}
    project = labels.get(RESERVATION_PROJECT)
    unused = (labels.get(RESERVATION_UNUSED) or "").lower() == "true"
    return {
        "CapacityReservationId": f"projects/{project}/reservations/{name}" if project else name,
        "CapacityReservationStatus": "Unused" if unused else "Used",
    }


def pricing_category(row: ExportRow) -> str:
    if is_commitment_fee(row):
        return "Standard"
    if _cud_credit(row) is not None:
        return "Committed"
    description = (row.sku_description or "").lower()
    return "Dynamic" if "preemptible" in description or "spot" in description else "Standard"


def focus_tags(row: ExportRow) -> str | None:
    """The row's labels, project labels, system labels and tags as one flat JSON object (see module doc)."""
    tags: dict[str, Any] = {}
    for key, value in row.labels:
        tags[key] = value or True
    for key, value in row.project_labels:
        tags[f"project-label/{key}"] = value or True
    for key, value in row.system_labels:
        tags[key if "/" in key else f"system-label/{key}"] = value or True
    for key, value, namespace in row.tags:
        tags[f"tag/{namespace}/{key}" if namespace else f"tag/{key}"] = value or True
    return json.dumps(tags, sort_keys=True, ensure_ascii=False) if tags else None


def resource_type(global_name: str | None) -> str | None:
    """``//compute.googleapis.com/projects/1/zones/z/instances/2`` → ``compute.googleapis.com/Instance``."""
    match = re.fullmatch(r"//([a-z0-9-]+(?:\.[a-z0-9-]+)*\.googleapis\.com)/(.+)", global_name or "")
    if not match:
        return None
    parts = [p for p in match.group(2).split("/") if p != "global"]
    collections = [parts[i] for i in range(0, len(parts) - 1, 2)]
    kinds = [c for c in collections if c not in ("projects", "locations", "regions", "zones")]
    if not kinds:
        return None
    kind = kinds[-1]
    singular = kind[:-3] + "y" if kind.endswith("ies") else kind[:-1] if kind.endswith("s") else kind
    return f"{match.group(1)}/{singular[:1].upper()}{singular[1:]}"


def _per_unit(price: Decimal | None, unit_quantity: Decimal | None) -> Decimal | None:
    """A price stated per ``pricing_unit_quantity`` units (e.g. per 1,000,000 requests) → per one unit."""
    if price is None:
        return None
    return price / unit_quantity if unit_quantity and unit_quantity > 0 else price


def _derived_price(cost: Decimal | None, quantity: Decimal | None) -> Decimal | None:
    if cost is None or not quantity:
        return None
    price = cost / quantity
    return price if price >= 0 else None  # FOCUS unit prices are non-negative


def _q(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(Q12, rounding=ROUND_HALF_EVEN)


def _unit(unit: str | None) -> str | None:
    return None if unit is None else UNITS.get(unit.strip().lower(), unit)


# --- origins ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRecord:
    """One export row as read: its file (or table), 1-based line/row, and the parsed record or the read error."""

    file: str
    line: str
    record: Mapping[str, Any] | None
    error: str | None = None


class ExportOrigin:
    def batches(self, invoice_month: str) -> Iterator[list[RawRecord]]:
        raise NotImplementedError


class ExportFiles(ExportOrigin):
    """JSONL (optionally gzipped) and Parquet files of export rows, from a folder or a glob."""

    def __init__(self, source: GcpBillingExportSource) -> None:
        self.source = source.name
        self.path = str(source.path)

    def files(self) -> list[str]:
        root = Path(self.path)
        if root.is_dir():
            found = [str(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name.endswith(FILE_SUFFIXES)]
        else:
            found = [p for p in sorted(glob(self.path, recursive=True)) if p.endswith(FILE_SUFFIXES)]
        if not found:
            raise SourceError(
                self.source, self.path, "no export files found",
                f"path must be a folder or glob of {', '.join(FILE_SUFFIXES)} files of the detailed export",
            )  # fmt: skip
        return found

    def batches(self, invoice_month: str) -> Iterator[list[RawRecord]]:
        batch: list[RawRecord] = []
        for file in self.files():
            reader = self._parquet(file) if file.endswith(".parquet") else self._jsonl(file)
            for raw in reader:
                batch.append(raw)
                if len(batch) >= BATCH_ROWS:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _jsonl(self, file: str) -> Iterator[RawRecord]:
        try:
            handle = gzip.open(file, "rt", encoding="utf-8") if file.endswith(".gz") else open(file, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise SourceError(self.source, file, f"cannot read: {exc}") from None
        with handle:
            try:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield _json_record(file, number, line.rstrip("\r\n"))
            except (OSError, UnicodeDecodeError, EOFError) as exc:
                raise SourceError(self.source, file, f"not a readable text file ({exc})") from None

    def _parquet(self, file: str) -> Iterator[RawRecord]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(self.source, file, f"not a readable Parquet file ({exc})") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise SourceError(
                self.source, file, f"missing column(s) {', '.join(missing)} of the detailed export",
                "export the table's rows unchanged (SELECT * or the documented columns)",
            )  # fmt: skip
        number = 0
        try:
            for chunk in parquet.iter_batches(batch_size=BATCH_ROWS):
                for record in chunk.to_pylist():
                    number += 1
                    yield RawRecord(file, str(number), record)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(self.source, file, f"Parquet data can't be read after row {number} ({exc})") from None


def _json_record(file: str, number: int, line: str) -> RawRecord:
    try:
        record = json.loads(line, parse_float=Decimal)  # exact: 0.1 stays 0.1
    except json.JSONDecodeError as exc:
        return RawRecord(file, str(number), None, f"not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(record, dict):
        return RawRecord(file, str(number), None, "line is not a JSON object")
    return RawRecord(file, str(number), record)


# --- BigQuery ------------------------------------------------------------------------------------------------

_TABLE = re.compile(r"^`?(?P<project>[a-z][a-z0-9.:-]*[a-z0-9])\.(?P<dataset>\w+)\.(?P<table>\w+)`?$")

SUMMARY_SQL = """
SELECT
  COUNT(*) AS row_count,
  MIN(DATE(_PARTITIONTIME)) AS first_partition,
  MAX(DATE(_PARTITIONTIME)) AS last_partition,
  MAX(export_time) AS last_export_time,
  SUM(CAST(cost AS NUMERIC))
    + SUM(IFNULL((SELECT SUM(CAST(c.amount AS NUMERIC)) FROM UNNEST(credits) AS c), 0)) AS invoice_total
FROM `{table}`
WHERE DATE(_PARTITIONTIME) BETWEEN @scan_start AND @scan_end
  AND invoice.month = @invoice_month
"""

DETAIL_SQL = """
SELECT {columns}
FROM `{table}`
WHERE DATE(_PARTITIONTIME) BETWEEN @first_partition AND @last_partition
  AND invoice.month = @invoice_month
  AND export_time <= @as_of
"""


RETRY: Any = None  # None: the client's DEFAULT_RETRY (5xx, rate limits, connection errors; 10 min deadline)


@dataclass(frozen=True)
class MonthSummary:
    rows: int
    first_partition: date | None
    last_partition: date | None
    last_export_time: datetime | None
    total: Decimal


class BigQueryExport(ExportOrigin):
    """The detailed export table in BigQuery, read for one invoice month (see the module doc)."""

    def __init__(self, source: GcpBillingExportSource) -> None:
        match = _TABLE.match(str(source.table).strip())
        if not match:
            raise SourceError(
                source.name, "table", f"{source.table!r} is not project.dataset.table",
                "e.g. my-project.billing.gcp_billing_export_resource_v1_012345_6789AB_CDEF01",
            )  # fmt: skip
        self.source = source
        self.table = f"{match['project']}.{match['dataset']}.{match['table']}"
        self.where = f"bigquery:{self.table}"
        self.project = source.billing_project or match["project"]
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from google.auth import exceptions as auth_exceptions
            from google.cloud import bigquery

            endpoint = self.source.api_endpoint
            credentials = credentials_for(self.source.name, endpoint, self.source.credentials_env)
            try:
                self._client = bigquery.Client(
                    project=self.project,
                    credentials=credentials,
                    client_options={"api_endpoint": endpoint} if endpoint else None,
                )
            except auth_exceptions.DefaultCredentialsError as exc:
                raise SourceError(
                    self.source.name, self.source.credentials_env, f"no Google credentials found ({exc})",
                    f"set {self.source.credentials_env} to a service-account key file, or configure Application "
                    "Default Credentials",
                ) from None  # fmt: skip
        return self._client

    def batches(self, invoice_month: str) -> Iterator[list[RawRecord]]:
        summary = self.summary(invoice_month)
        if summary.rows == 0:
            return
        rows_read, total = 0, Decimal(0)
        batch: list[RawRecord] = []
        for page in self._detail_pages(invoice_month, summary):
            for record in page:
                rows_read += 1
                total += invoice_total(record, Q9, ROUND_HALF_UP)
                batch.append(RawRecord(self.where, str(rows_read), record))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch
        if rows_read != summary.rows or total != summary.total:
            raise SourceError(
                self.source.name, self.where,
                f"read {rows_read} rows totalling {total} for invoice month {invoice_month}, but BigQuery counts "
                f"{summary.rows} rows totalling {summary.total}",
                "rows changed while reading; run the load again (the warehouse keeps the previous load)",
            )  # fmt: skip

    def summary(self, invoice_month: str) -> MonthSummary:
        """Row count, partition range, newest export_time and Google's exact invoice total of the month."""
        from google.cloud import bigquery

        start, end = invoice_month_bounds(invoice_month)
        margin = timedelta(days=self.source.partition_margin_days)
        scan_start, scan_end = start.date() - margin, end.date() + margin
        parameters = [
            bigquery.ScalarQueryParameter("invoice_month", "STRING", invoice_month),
            bigquery.ScalarQueryParameter("scan_start", "DATE", scan_start),
            bigquery.ScalarQueryParameter("scan_end", "DATE", scan_end),
        ]
        rows = list(self._query(SUMMARY_SQL.format(table=self.table), parameters))
        row = rows[0] if rows else {}
        summary = MonthSummary(
            rows=int(row.get("row_count") or 0),
            first_partition=row.get("first_partition"),
            last_partition=row.get("last_partition"),
            last_export_time=row.get("last_export_time"),
            total=Decimal(row.get("invoice_total") or 0).quantize(Q9),
        )
        if summary.rows and (summary.first_partition == scan_start or summary.last_partition == scan_end):
            raise SourceError(
                self.source.name, self.where,
                f"rows of invoice month {invoice_month} reach the edge of the partitions searched "
                f"({scan_start} to {scan_end}); some may lie beyond it",
                "raise partition_margin_days",
            )  # fmt: skip
        return summary

    def _detail_pages(self, invoice_month: str, summary: MonthSummary) -> Iterator[list[Mapping[str, Any]]]:
        from google.cloud import bigquery

        parameters = [
            bigquery.ScalarQueryParameter("invoice_month", "STRING", invoice_month),
            bigquery.ScalarQueryParameter("first_partition", "DATE", summary.first_partition),
            bigquery.ScalarQueryParameter("last_partition", "DATE", summary.last_partition),
            bigquery.ScalarQueryParameter("as_of", "TIMESTAMP", summary.last_export_time),
        ]
        sql = DETAIL_SQL.format(columns=", ".join(EXPORT_COLUMNS), table=self.table)
        yield from self._query_pages(sql, parameters)

    def _query(self, sql: str, parameters: list[Any]) -> Iterator[Mapping[str, Any]]:
        for page in self._query_pages(sql, parameters):
            yield from page

    def _query_pages(self, sql: str, parameters: list[Any]) -> Iterator[list[Mapping[str, Any]]]:
        from google.api_core import exceptions as google_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=parameters)
        try:
            rows = self.client().query_and_wait(
                sql, job_config=config, page_size=QUERY_PAGE_ROWS, retry=RETRY or bigquery.DEFAULT_RETRY
            )
            for page in rows.pages:
                yield [dict(row.items()) for row in page]
        except google_exceptions.Forbidden as exc:
            raise SourceError(
                self.source.name, self.where, f"access denied (403): {exc.message}",
                f"the credentials need roles/bigquery.dataViewer on {self.table} and roles/bigquery.jobUser "
                f"on project {self.project}",
            ) from None  # fmt: skip
        except google_exceptions.NotFound as exc:
            raise SourceError(
                self.source.name, self.where, f"not found (404): {exc.message}",
                "check table (project.dataset.gcp_billing_export_resource_v1_<BILLING_ACCOUNT_ID>)",
            ) from None  # fmt: skip
        except google_exceptions.GoogleAPICallError as exc:
            raise SourceError(self.source.name, self.where, f"BigQuery error {exc.code}: {exc.message}") from None
        except (google_exceptions.RetryError, auth_exceptions.GoogleAuthError) as exc:
            raise SourceError(
                self.source.name, self.where, f"BigQuery unreachable ({type(exc).__name__}: {exc})"
            ) from None
