"""AWS Data Exports — Cost and Usage Report 2.0 (Parquet) → FOCUS 1.2 rows.

Follows the AWS Data Exports User Guide:
- "Understanding export delivery" (docs.aws.amazon.com/cur/latest/userguide/dataexports-export-delivery.html):
  data in ``<export>/data/BILLING_PERIOD=YYYY-MM/[<timestamp>-<execution-id>/]<export-name>-NNNNN.snappy.parquet``,
  the manifest in ``<export>/metadata/BILLING_PERIOD=YYYY-MM/<export-name>-Manifest.json`` (the page's
  summary also names it plain ``Manifest.json``; both are accepted). The manifest in the partition folder
  always describes the latest refresh, is written after its data files, and "we recommend identifying
  which files to ingest by programmatically reading this list": only its ``dataFiles`` are read, so
  chunks of an older delivery (kept in "create new" mode, or left over in "overwrite" mode) never are.
- The CUR 2.0 table dictionary (``table-dictionary-cur2-*``): amounts ``double``, rates ``string``,
  ``product``/``resource_tags``/``cost_category``/``discount`` are maps (polars reads them as ``Map`` or
  ``List(Struct(key, value))``; both are handled), blank strings mean "no value".
- The FOCUS 1.2 column definitions, and the CUR → FOCUS rules of finopsfoundation/focus_converters
  (``conversion_configs/aws``) corrected to FOCUS 1.2 as noted in reference/focus_mappings.md.

Provider quirks handled:
- ``dataFiles`` are absolute ``s3://`` URLs of the bucket AWS delivered to; they are resolved under the
  configured export folder from their ``data/BILLING_PERIOD=…`` part, so a replicated bucket or a local
  copy of the export reads the same files.
- Amounts are doubles: each is read through its shortest decimal representation and rounded half-even
  to ``MONEY_SCALE`` places, so ``22.9408`` is exactly ``Decimal("22.9408")``.
- ``savings_plan_savings_plan_a_r_n`` / ``reservation_reservation_a_r_n`` are CUR 2.0's spellings of the ARNs.

FOCUS choices (one CUR line → one FOCUS row, except the unused part of a commitment fee, below):
- BilledCost = ``line_item_net_unblended_cost`` when present, else ``line_item_unblended_cost``.
- EffectiveCost amortizes commitments: SavingsPlanCoveredUsage → ``savings_plan_savings_plan_effective_cost``;
  DiscountedUsage → ``reservation_effective_cost``; SavingsPlanNegation, SavingsPlanUpfrontFee and RI
  upfront ``Fee`` lines → 0; else BilledCost.
- A SavingsPlanRecurringFee / RIFee line becomes a Purchase row (BilledCost = the fee, EffectiveCost 0)
  and, when part of the commitment went unused, a second row from the same line: ChargeCategory Usage,
  CommitmentDiscountStatus ``Unused``, BilledCost 0, EffectiveCost = the unused part
  (``total_commitment_to_date − used_commitment``; for RIs the unused amortized upfront + unused
  recurring fee). That is FOCUS's discount handling (unused commitment is a Usage row with status
  Unused) and keeps, per commitment, sum(EffectiveCost of Usage) = sum(BilledCost of Purchase).
- ChargeCategory: usage and its offsets (negations, discounts) → Usage; fees → Purchase; Tax → Tax;
  Credit → Credit; Refund → the category of what it refunds (Tax when it carries a tax type, Purchase
  when it names a commitment, else Usage), ChargeClass ``Correction`` when it refunds an earlier period.
- Negation and discount lines move money but consume nothing: their Pricing/ConsumedQuantity and
  ListCost are 0 (the covered line already carries the quantity and the on-demand list cost).
- CommitmentDiscountStatus: ``Used`` on covered usage and its negation, ``Unused`` on unused-commitment
  rows, NULL on the Purchase rows.
- Tags: ``resource_tags`` keys ``user_<key>`` (user-defined cost allocation tags, as CUR normalizes them:
  lower snake case, e.g. ``CostCenter`` → ``user_cost_center``; ``user:<key>`` is accepted too) become
  plain ``<key>`` (``user_feature`` → ``feature``), so allocation rules name the normalized key.
  AWS-generated keys keep their ``aws_`` provider prefix; cost categories are added as
  ``costCategory/<name>`` (a second scheme, so prefixed). A tag with an empty value becomes ``true``
  (FOCUS key-value format).
- Line item types this connector does not know are quarantined, never guessed. ``x_source_file`` is
  the data file's path or URL, ``x_source_line`` the 1-based row number in it.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.s3 import S3Reader, is_s3_url, join_s3_url
from models.config import AwsCur2Source
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP

PROVIDER = "AWS"
DEFAULT_ENTITY = "Amazon Web Services, Inc."
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
_PARSE_SCALE = 18  # read decimals wider than MONEY, then round half-even to MONEY_SCALE
_DATA_PARTITION = re.compile(r"(?:^|/)(data/BILLING_PERIOD=(\d{4}-\d{2})/.+)$")

# --- line item types -------------------------------------------------------------------------------
CONSUMPTION = ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage")
OFFSETS = ("SavingsPlanNegation", "Discount", "BundledDiscount", "EdpDiscount", "PrivateRateDiscount", "SppDiscount")
PURCHASES = ("SavingsPlanRecurringFee", "SavingsPlanUpfrontFee", "RIFee", "Fee")
KNOWN_LINE_ITEM_TYPES = (*CONSUMPTION, *OFFSETS, *PURCHASES, "Tax", "Credit", "Refund")
SAVINGS_PLAN_TYPES = (
    "SavingsPlanCoveredUsage",
    "SavingsPlanNegation",
    "SavingsPlanRecurringFee",
    "SavingsPlanUpfrontFee",
)
RESERVATION_TYPES = ("DiscountedUsage", "RIFee")
COMMITMENT_FEES = ("SavingsPlanRecurringFee", "RIFee")

# --- columns ---------------------------------------------------------------------------------------
REQUIRED_COLUMNS = (
    "bill_billing_period_start_date", "bill_billing_period_end_date", "bill_payer_account_id",
    "line_item_line_item_type", "line_item_usage_start_date", "line_item_usage_end_date",
    "line_item_unblended_cost", "line_item_currency_code", "line_item_product_code",
)  # fmt: skip
# Needed only when the delivery has lines of the type: (line item type, column)
COLUMNS_BY_LINE_TYPE = (
    ("SavingsPlanCoveredUsage", "savings_plan_savings_plan_effective_cost"),
    ("SavingsPlanCoveredUsage", "savings_plan_savings_plan_a_r_n"),
    ("SavingsPlanNegation", "savings_plan_savings_plan_a_r_n"),
    ("SavingsPlanRecurringFee", "savings_plan_total_commitment_to_date"),
    ("SavingsPlanRecurringFee", "savings_plan_used_commitment"),
    ("SavingsPlanRecurringFee", "savings_plan_savings_plan_a_r_n"),
    ("DiscountedUsage", "reservation_effective_cost"),
    ("DiscountedUsage", "reservation_reservation_a_r_n"),
    ("RIFee", "reservation_unused_amortized_upfront_fee_for_billing_period"),
    ("RIFee", "reservation_unused_recurring_fee"),
    ("RIFee", "reservation_reservation_a_r_n"),
)
# Values that must be present on a line of the type, else the line is quarantined.
VALUES_BY_LINE_TYPE = (
    ("SavingsPlanCoveredUsage", "savings_plan_savings_plan_effective_cost"),
    ("SavingsPlanRecurringFee", "savings_plan_total_commitment_to_date"),
    ("SavingsPlanRecurringFee", "savings_plan_used_commitment"),
    ("DiscountedUsage", "reservation_effective_cost"),
)
DECIMAL_COLUMNS = (
    "line_item_unblended_cost", "line_item_net_unblended_cost", "line_item_usage_amount",
    "line_item_unblended_rate", "line_item_net_unblended_rate", "pricing_public_on_demand_cost",
    "pricing_public_on_demand_rate", "savings_plan_savings_plan_effective_cost",
    "savings_plan_total_commitment_to_date", "savings_plan_used_commitment", "reservation_effective_cost",
    "reservation_unused_amortized_upfront_fee_for_billing_period", "reservation_unused_recurring_fee",
    "reservation_total_reserved_units",
)  # fmt: skip
TIMESTAMP_COLUMNS = (
    "bill_billing_period_start_date", "bill_billing_period_end_date",
    "line_item_usage_start_date", "line_item_usage_end_date",
)  # fmt: skip
MAP_COLUMNS = ("product", "resource_tags", "cost_category")
STRING_COLUMNS = (
    "bill_bill_type", "bill_invoice_id", "bill_invoicing_entity", "bill_payer_account_id",
    "bill_payer_account_name", "line_item_availability_zone", "line_item_currency_code",
    "line_item_legal_entity", "line_item_line_item_description", "line_item_line_item_type",
    "line_item_product_code", "line_item_resource_id", "line_item_tax_type", "line_item_usage_account_id",
    "line_item_usage_account_name", "line_item_usage_type", "pricing_rate_code", "pricing_rate_id",
    "pricing_term", "pricing_unit", "product_location", "product_location_type", "product_product_name",
    "product_region_code", "product_sku", "reservation_reservation_a_r_n", "savings_plan_savings_plan_a_r_n",
)  # fmt: skip
USER_TAG_PREFIXES = ("user_", "user:")  # CUR 2.0 writes user_<normalized key>; legacy spelling user:<key>
_KEY_VALUE = pl.List(pl.Struct({"key": pl.String(), "value": pl.String()}))

# --- ServiceCategory / ServiceSubcategory by product code --------------------------------------------
# Categories follow focus_converters' aws_category_mapping.csv (MIT), emitted as FOCUS 1.2 values;
# subcategories are the FOCUS 1.2 ServiceSubcategory values that fit the service. Two deliberate
# departures, because the CSV predates FOCUS 1.1's lists: AmazonCognito is Identity (not Security)
# and AmazonApiGateway is Integration / API Management (not Networking). Unknown codes → Other.
SERVICES: dict[str, tuple[str, str]] = {
    "AmazonEC2": ("Compute", "Virtual Machines"),
    "AmazonEKS": ("Compute", "Containers"),
    "AmazonECS": ("Compute", "Containers"),
    "AmazonECR": ("Compute", "Containers"),
    "AWSLambda": ("Compute", "Serverless Compute"),
    "AWSFargate": ("Compute", "Containers"),
    "AmazonLightsail": ("Compute", "Virtual Machines"),
    "ComputeSavingsPlans": ("Compute", "Other (Compute)"),
    "AmazonSageMaker": ("AI and Machine Learning", "Machine Learning"),
    "AmazonBedrock": ("AI and Machine Learning", "Generative AI"),
    "AmazonRekognition": ("AI and Machine Learning", "Other (AI and Machine Learning)"),
    "comprehend": ("AI and Machine Learning", "Natural Language Processing"),
    "AmazonS3": ("Storage", "Object Storage"),
    "AmazonS3GlacierDeepArchive": ("Storage", "Backup Storage"),
    "AmazonEFS": ("Storage", "File Storage"),
    "AmazonFSx": ("Storage", "File Storage"),
    "AWSBackup": ("Storage", "Backup Storage"),
    "AmazonRDS": ("Databases", "Relational Databases"),
    "AmazonDynamoDB": ("Databases", "NoSQL Databases"),
    "AmazonElastiCache": ("Databases", "Caching"),
    "AmazonRedshift": ("Databases", "Data Warehouses"),
    "AWSDataTransfer": ("Networking", "Network Connectivity"),
    "AmazonVPC": ("Networking", "Network Infrastructure"),
    "AWSELB": ("Networking", "Application Networking"),
    "AmazonCloudFront": ("Networking", "Content Delivery"),
    "AmazonRoute53": ("Networking", "Network Routing"),
    "AWSDirectConnect": ("Networking", "Network Connectivity"),
    "AWSGlobalAccelerator": ("Networking", "Network Infrastructure"),
    "AmazonCloudWatch": ("Management and Governance", "Observability"),
    "AWSCloudTrail": ("Management and Governance", "Compliance"),
    "AWSConfig": ("Management and Governance", "Compliance"),
    "AWSCostExplorer": ("Management and Governance", "Cost Management"),
    "AWSSupportBusiness": ("Management and Governance", "Support"),
    "AWSSupportEnterprise": ("Management and Governance", "Support"),
    "AWSSecretsManager": ("Security", "Secret Management"),
    "awskms": ("Security", "Secret Management"),
    "AmazonGuardDuty": ("Security", "Threat Detection and Response"),
    "AWSSecurityHub": ("Security", "Security Posture Management"),
    "AWSQueueService": ("Integration", "Messaging"),
    "AmazonSNS": ("Integration", "Messaging"),
    "AmazonStates": ("Integration", "Workflow Orchestration"),
    "AmazonApiGateway": ("Integration", "API Management"),
    "AmazonAthena": ("Analytics", "Data Processing"),
    "AWSGlue": ("Analytics", "Data Processing"),
    "AmazonKinesis": ("Analytics", "Streaming Analytics"),
    "AmazonES": ("Analytics", "Search"),
    "AmazonCognito": ("Identity", "Identity and Access Management"),
}
OTHER_SERVICE = ("Other", "Other (Other)")

# CUR pricing units → the FOCUS unit vocabulary (UnitFormat); others pass through unchanged.
UNITS = {"Hrs": "Hours", "hours": "Hours", "GB-Mo": "GB-Months", "GB-Month": "GB-Months", "Hours": "Hours"}

# Resource id prefixes of common EC2 resources → ResourceType.
_ID_PREFIX_TYPES = {"i-": "Instance", "vol-": "Volume", "snap-": "Snapshot", "nat-": "NAT Gateway",
                    "eipalloc-": "Elastic IP", "eni-": "Network Interface", "ami-": "Image"}  # fmt: skip


def load(source: AwsCur2Source, period: BillingPeriod) -> LoadResult:
    """The period's latest CUR 2.0 delivery as FOCUS rows, its BilledCost total and quarantined lines."""
    export = Export.open(source)
    manifest_at, manifest = export.manifest(period)
    files = export.data_files(manifest_at, manifest, period)
    tables = [(location, export.read_parquet(location)) for location in files]
    raw = _concat([_normalize(source.name, location, table) for location, table in tables])
    frame, quarantine = to_focus(raw, period)
    return LoadResult(
        frame=frame,
        quarantine=quarantine,
        files=list(files),
        source_total=sum((raw_billed_total(table) for _, table in tables), Decimal(0)),
        stats={"files": len(files), "rows": raw.height, "quarantined": quarantine.height},
    )


# --- the delivery -----------------------------------------------------------------------------------


@dataclass
class Export:
    """An export folder (local or ``s3://``) laid out as Data Exports delivers CUR 2.0."""

    source: str
    root: str
    s3: S3Reader | None

    @classmethod
    def open(cls, source: AwsCur2Source) -> Export:
        root = source.path.rstrip("/")
        s3 = S3Reader(endpoint_url=source.endpoint_url, region=source.region) if is_s3_url(root) else None
        return cls(source.name, root, s3)

    @property
    def name(self) -> str:
        return self.root.rsplit("/", 1)[-1]

    def location(self, relative: str) -> str:
        return join_s3_url(self.root, relative) if self.s3 else str(Path(self.root) / relative)

    def read(self, location: str) -> bytes:
        """Bytes of a file or object; FileNotFoundError when absent, SourceError when unreadable."""
        try:
            return self.s3.read_bytes(location) if self.s3 else Path(location).read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SourceError(
                self.source, location, f"cannot read: {exc}",
                "S3 credentials come from the standard AWS environment variables or boto3's chain",
            ) from None  # fmt: skip

    def manifest(self, period: BillingPeriod) -> tuple[str, dict[str, Any]]:
        """The partition's current manifest (``<export-name>-Manifest.json``, else ``Manifest.json``)."""
        folder = f"metadata/BILLING_PERIOD={period.key}"
        candidates = [self.location(f"{folder}/{self.name}-Manifest.json"), self.location(f"{folder}/Manifest.json")]
        for location in candidates:
            try:
                content = self.read(location)
            except FileNotFoundError:
                continue
            return location, self._parse_manifest(location, content, period)
        raise SourceError(
            self.source, candidates[0], f"no CUR 2.0 manifest for billing period {period.key}",
            f"path must be the export folder (s3://bucket/prefix/export-name) holding "
            f"metadata/BILLING_PERIOD={period.key}/{self.name}-Manifest.json; AWS writes it once the "
            "period's first delivery is complete",
        )  # fmt: skip

    def _parse_manifest(self, location: str, content: bytes, period: BillingPeriod) -> dict[str, Any]:
        try:
            manifest = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(self.source, location, f"manifest is not valid JSON ({exc})") from None
        files = manifest.get("dataFiles") if isinstance(manifest, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise SourceError(self.source, location, "manifest field 'dataFiles' must be a list of file URLs")
        start = (manifest.get("billingPeriod") or {}).get("start") if isinstance(manifest, dict) else None
        if isinstance(start, str) and not start.startswith(period.key):
            raise SourceError(self.source, location, f"manifest billingPeriod.start is {start}, expected {period.key}")
        return manifest

    def data_files(self, manifest_at: str, manifest: dict[str, Any], period: BillingPeriod) -> list[str]:
        """The manifest's data files, located under this export folder."""
        files = []
        for url in manifest["dataFiles"]:
            match = _DATA_PARTITION.search(url)
            if not match or match.group(2) != period.key:
                raise SourceError(
                    self.source, manifest_at,
                    f"manifest dataFiles entry {url!r} is not under data/BILLING_PERIOD={period.key}/",
                )  # fmt: skip
            files.append(self.location(match.group(1)))
        return files

    def read_parquet(self, location: str) -> pl.DataFrame:
        try:
            content = self.read(location)
        except FileNotFoundError:
            raise SourceError(
                self.source, location, "data file named in the manifest is missing",
                "the delivery is incomplete or files were removed; re-run after AWS's next refresh",
            ) from None  # fmt: skip
        try:
            return pl.read_parquet(io.BytesIO(content))
        except Exception as exc:  # polars raises several error types for corrupt input
            raise SourceError(self.source, location, f"not a readable Parquet file ({exc})") from None


# --- raw lines --------------------------------------------------------------------------------------


def _normalize(source: str, location: str, table: pl.DataFrame) -> pl.DataFrame:
    """Check the columns, bring every used column to one type, add the line's file and row number."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if not missing and "line_item_line_item_type" in table.columns:
        present = set(table.get_column("line_item_line_item_type").drop_nulls().unique().to_list())
        needed = dict.fromkeys(c for kind, c in COLUMNS_BY_LINE_TYPE if kind in present)
        missing = [c for c in needed if c not in table.columns]
    if missing:
        raise SourceError(
            source, location, f"missing required CUR 2.0 column {missing[0]!r}"
            + (f" (and {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""),
            "add it to the export's QueryStatement (SELECT ... FROM COST_AND_USAGE_REPORT)",
        )  # fmt: skip
    columns = [
        *(_as_string(table, c) for c in STRING_COLUMNS),
        *(_as_decimal(table, c) for c in DECIMAL_COLUMNS),
        *(_as_timestamp(table, c) for c in TIMESTAMP_COLUMNS),
        *(_as_key_values(table, c) for c in MAP_COLUMNS),
    ]
    return table.select(columns).with_columns(
        pl.lit(location).alias("x_source_file"),
        (pl.int_range(pl.len()) + 1).cast(pl.String).alias("x_source_line"),
    )


def _as_string(table: pl.DataFrame, name: str) -> pl.Expr:
    if name not in table.columns:
        return pl.lit(None, dtype=pl.String).alias(name)
    text = pl.col(name).cast(pl.String).str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text).alias(name)


def _as_decimal(table: pl.DataFrame, name: str) -> pl.Expr:
    """Doubles via their shortest decimal string, strings as written, rounded half-even to MONEY."""
    if name not in table.columns:
        return pl.lit(None, dtype=MONEY).alias(name)
    dtype = table.schema[name]
    if dtype.is_decimal() or dtype.is_integer():
        return pl.col(name).cast(MONEY).alias(name)
    text = pl.col(name).cast(pl.String).str.strip_chars()
    text = pl.when(text == "").then(None).otherwise(text)
    return text.str.to_decimal(scale=_PARSE_SCALE).cast(MONEY).alias(name)


def _as_timestamp(table: pl.DataFrame, name: str) -> pl.Expr:
    """CUR timestamps are UTC; naive values are taken as UTC, strings parsed as ISO 8601."""
    if name not in table.columns:
        return pl.lit(None, dtype=TIMESTAMP).alias(name)
    dtype = table.schema[name]
    if dtype == pl.String:
        return pl.col(name).str.to_datetime(time_zone="UTC", time_unit="us", strict=False).alias(name)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.col(name).dt.replace_time_zone("UTC").cast(TIMESTAMP).alias(name)
    return pl.col(name).dt.convert_time_zone("UTC").cast(TIMESTAMP).alias(name)


def _as_key_values(table: pl.DataFrame, name: str) -> pl.Expr:
    """Any map column as List(Struct(key, value)) of strings."""
    if name not in table.columns:
        return pl.lit(None, dtype=_KEY_VALUE).alias(name)
    dtype = table.schema[name]
    if isinstance(dtype, (pl.Map, pl.List)):
        column = pl.col(name).to_physical() if isinstance(dtype, pl.Map) else pl.col(name)
        return column.cast(_KEY_VALUE).alias(name)
    if isinstance(dtype, pl.Struct):  # a struct's fields are the keys
        return pl.col(name).map_elements(_struct_entries, return_dtype=_KEY_VALUE).alias(name)
    return pl.col(name).cast(pl.String).map_elements(_json_entries, return_dtype=_KEY_VALUE).alias(name)


def _struct_entries(value: dict[str, Any] | None) -> list[dict[str, str]]:
    return [{"key": k, "value": None if v is None else str(v)} for k, v in (value or {}).items()]


def _json_entries(text: str | None) -> list[dict[str, str]]:
    value = json.loads(text) if text else {}
    return _struct_entries(value if isinstance(value, dict) else {})


def _concat(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    if not frames:
        return _normalize("", "", pl.DataFrame(schema={c: pl.String() for c in REQUIRED_COLUMNS})).clear()
    return pl.concat(frames, how="vertical")


def raw_billed_total(table: pl.DataFrame) -> Decimal:
    """The provider's own BilledCost total, straight from the raw values (not from the mapping)."""
    unblended = table.get_column("line_item_unblended_cost").to_list()
    net = (
        table.get_column("line_item_net_unblended_cost").to_list()
        if "line_item_net_unblended_cost" in table.columns
        else [None] * len(unblended)
    )
    return sum((_exact(n if n is not None else u) for n, u in zip(net, unblended, strict=True)), Decimal(0))


def _exact(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value)).quantize(MONEY_QUANTUM)
    except InvalidOperation:
        return Decimal(0)  # a line that can't be read is quarantined; the total still shows the gap


# --- CUR 2.0 → FOCUS 1.2 ----------------------------------------------------------------------------


def to_focus(raw: pl.DataFrame, period: BillingPeriod) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Map normalized CUR lines to FOCUS rows; lines that can't be mapped go to the quarantine."""
    checked = raw.with_columns(_problem(period).alias("_problem"))
    bad = checked.filter(pl.col("_problem").is_not_null())
    quarantine = bad.select(
        pl.col("x_source_file").alias("file"), pl.col("x_source_line").alias("line"), pl.col("_problem").alias("reason")
    ).cast(QUARANTINE_SCHEMA)
    good = checked.filter(pl.col("_problem").is_null()).drop("_problem")
    return _focus_rows(good), quarantine


def _problem(period: BillingPeriod) -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    checks: list[tuple[pl.Expr, pl.Expr]] = [
        (kind.is_null(), pl.lit("line_item_line_item_type is empty")),
        (~kind.is_in(KNOWN_LINE_ITEM_TYPES), pl.format("unknown line_item_line_item_type '{}'", kind)),
        (pl.col("line_item_unblended_cost").is_null(), pl.lit("line_item_unblended_cost is empty or not a number")),
        (pl.col("line_item_usage_start_date").is_null(), pl.lit("line_item_usage_start_date is empty or invalid")),
        (pl.col("line_item_usage_end_date").is_null(), pl.lit("line_item_usage_end_date is empty or invalid")),
        (pl.col("bill_payer_account_id").is_null(), pl.lit("bill_payer_account_id is empty")),
        (pl.col("line_item_product_code").is_null(), pl.lit("line_item_product_code is empty")),
        (
            pl.col("bill_billing_period_start_date").is_null()
            | (pl.col("bill_billing_period_start_date") != pl.lit(period.start, dtype=TIMESTAMP)),
            pl.format(
                "bill_billing_period_start_date {} is not the start of billing period " + period.key,
                pl.col("bill_billing_period_start_date").cast(pl.String).fill_null("(empty)"),
            ),
        ),
    ]
    checks += [
        (
            (kind == line_type) & pl.col(column).is_null(),
            pl.lit(f"{column} is empty on a {line_type} line"),
        )
        for line_type, column in VALUES_BY_LINE_TYPE
    ]
    expr = pl.when(checks[0][0]).then(checks[0][1])
    for condition, reason in checks[1:]:
        expr = expr.when(condition).then(reason)
    return expr.otherwise(None)


def _focus_rows(lines: pl.DataFrame) -> pl.DataFrame:
    frame = _with_costs_and_quantities(lines)
    tags, names = _tags_and_names(frame)
    focus = frame.with_columns(tags.alias("Tags"), names.alias("_tag_name")).select(
        *_focus_columns(), _unused_commitment().alias("_unused")
    )
    return pl.concat([focus, _unused_rows(focus)]).drop("_unused")


def _with_costs_and_quantities(lines: pl.DataFrame) -> pl.DataFrame:
    kind = pl.col("line_item_line_item_type")
    frame = lines.with_columns(
        pl.coalesce("line_item_net_unblended_cost", "line_item_unblended_cost").alias("BilledCost"),
        _commitment_id().alias("CommitmentDiscountId"),
        _charge_category().alias("ChargeCategory"),
    )
    frame = frame.with_columns(
        _effective_cost().alias("EffectiveCost"),
        pl.when(kind == "SavingsPlanNegation").then(_zero()).otherwise(pl.col("BilledCost")).alias("ContractedCost"),
        _pricing_quantity().alias("PricingQuantity"),
        pl.when(kind.is_in(CONSUMPTION))
        .then(pl.col("line_item_usage_amount"))
        .when(kind.is_in(OFFSETS))
        .then(_zero())
        .alias("ConsumedQuantity"),
        pl.when(kind.is_in(CONSUMPTION))
        .then(
            pl.when(pl.col("line_item_net_unblended_cost").is_not_null())
            .then(pl.col("line_item_net_unblended_rate"))
            .otherwise(pl.col("line_item_unblended_rate"))
        )
        .alias("ContractedUnitPrice"),
        pl.when(kind.is_in(CONSUMPTION)).then(pl.col("pricing_public_on_demand_rate")).alias("ListUnitPrice"),
    )
    return frame.with_columns(
        _list_cost().alias("ListCost"),
        _unit("PricingQuantity").alias("PricingUnit"),
        _unit("ConsumedQuantity").alias("ConsumedUnit"),
        _commitment_status().alias("CommitmentDiscountStatus"),
    )


def _focus_columns() -> list[pl.Expr]:
    """The FOCUS 1.2 columns (and ours) from a line with its costs and quantities computed."""
    kind = pl.col("line_item_line_item_type")
    category = pl.col("line_item_product_code").replace_strict(
        {code: c for code, (c, _) in SERVICES.items()}, default=OTHER_SERVICE[0], return_dtype=pl.String
    )
    subcategory = pl.col("line_item_product_code").replace_strict(
        {code: s for code, (_, s) in SERVICES.items()}, default=OTHER_SERVICE[1], return_dtype=pl.String
    )
    sp = kind.is_in(SAVINGS_PLAN_TYPES)
    has_commitment = pl.col("CommitmentDiscountId").is_not_null()
    return [
        pl.col("line_item_availability_zone").alias("AvailabilityZone"),
        pl.col("BilledCost"),
        pl.col("bill_payer_account_id").alias("BillingAccountId"),
        pl.col("bill_payer_account_name").alias("BillingAccountName"),
        pl.lit("Payer Account").alias("BillingAccountType"),
        pl.col("line_item_currency_code").alias("BillingCurrency"),
        pl.col("bill_billing_period_end_date").alias("BillingPeriodEnd"),
        pl.col("bill_billing_period_start_date").alias("BillingPeriodStart"),
        pl.col("ChargeCategory"),
        _charge_class().alias("ChargeClass"),
        pl.col("line_item_line_item_description").alias("ChargeDescription"),
        _charge_frequency().alias("ChargeFrequency"),
        pl.col("line_item_usage_end_date").alias("ChargePeriodEnd"),
        pl.col("line_item_usage_start_date").alias("ChargePeriodStart"),
        pl.when(has_commitment)
        .then(pl.when(sp).then(pl.lit("Spend")).otherwise(pl.lit("Usage")))
        .alias("CommitmentDiscountCategory"),
        pl.col("CommitmentDiscountId"),
        pl.col("CommitmentDiscountStatus"),
        pl.when(has_commitment)
        .then(pl.when(sp).then(pl.lit("Savings Plan")).otherwise(pl.lit("Reserved Instance")))
        .alias("CommitmentDiscountType"),
        pl.col("ConsumedQuantity"),
        pl.col("ConsumedUnit"),
        pl.col("ContractedCost"),
        pl.col("ContractedUnitPrice"),
        pl.col("EffectiveCost"),
        pl.col("bill_invoice_id").alias("InvoiceId"),
        pl.col("bill_invoicing_entity").fill_null(DEFAULT_ENTITY).alias("InvoiceIssuerName"),
        pl.col("ListCost"),
        pl.col("ListUnitPrice"),
        _pricing_category().alias("PricingCategory"),
        pl.col("PricingQuantity"),
        pl.col("PricingUnit"),
        pl.lit(PROVIDER).alias("ProviderName"),
        pl.col("line_item_legal_entity").fill_null(DEFAULT_ENTITY).alias("PublisherName"),
        pl.col("product_region_code").alias("RegionId"),
        pl.when(pl.col("product_region_code").is_not_null() & (pl.col("product_location_type") == "AWS Region"))
        .then(pl.col("product_location"))
        .alias("RegionName"),
        pl.col("line_item_resource_id").alias("ResourceId"),
        pl.coalesce("_tag_name", _arn_name()).alias("ResourceName"),
        _resource_type().alias("ResourceType"),
        category.alias("ServiceCategory"),
        _service_name().alias("ServiceName"),
        subcategory.alias("ServiceSubcategory"),
        pl.col("product_sku").alias("SkuId"),
        pl.when(pl.col("product_sku").is_not_null()).then(pl.col("line_item_usage_type")).alias("SkuMeter"),
        pl.when(pl.col("product_sku").is_not_null())
        .then(pl.coalesce("pricing_rate_code", "pricing_rate_id"))
        .alias("SkuPriceId"),
        pl.col("line_item_usage_account_id").alias("SubAccountId"),
        pl.col("line_item_usage_account_name").alias("SubAccountName"),
        _sub_account_type().alias("SubAccountType"),
        pl.col("Tags"),
        pl.col("x_source_file"),
        pl.col("x_source_line"),
        pl.col("line_item_line_item_type").alias("x_line_item_type"),
    ]


def _sub_account_type() -> pl.Expr:
    """Consolidated billing's terms: the payer's own lines, or a linked account's."""
    account = pl.col("line_item_usage_account_id")
    return (
        pl.when(account.is_null())
        .then(None)
        .when(account == pl.col("bill_payer_account_id"))
        .then(pl.lit("Payer Account"))
        .otherwise(pl.lit("Linked Account"))
        .cast(pl.String)
    )


def _zero() -> pl.Expr:
    return pl.lit(Decimal(0), dtype=MONEY)


def _commitment_id() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    return (
        pl.when(kind.is_in(SAVINGS_PLAN_TYPES))
        .then(pl.col("savings_plan_savings_plan_a_r_n"))
        .when(kind.is_in(RESERVATION_TYPES) | ((kind == "Fee") & pl.col("reservation_reservation_a_r_n").is_not_null()))
        .then(pl.col("reservation_reservation_a_r_n"))
    )


def _charge_category() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    refund_of = (
        pl.when(pl.col("line_item_tax_type").is_not_null())
        .then(pl.lit("Tax"))
        .when(
            pl.col("savings_plan_savings_plan_a_r_n").is_not_null()
            | pl.col("reservation_reservation_a_r_n").is_not_null()
        )
        .then(pl.lit("Purchase"))
        .otherwise(pl.lit("Usage"))
    )
    return (
        pl.when(kind.is_in(CONSUMPTION) | kind.is_in(OFFSETS))
        .then(pl.lit("Usage"))
        .when(kind.is_in(PURCHASES))
        .then(pl.lit("Purchase"))
        .when(kind == "Tax")
        .then(pl.lit("Tax"))
        .when(kind == "Credit")
        .then(pl.lit("Credit"))
        .otherwise(refund_of)
    )


def _charge_class() -> pl.Expr:
    """A refund of charges from before this billing period corrects an invoiced period."""
    earlier = pl.col("line_item_usage_start_date") < pl.col("bill_billing_period_start_date")
    return pl.when((pl.col("line_item_line_item_type") == "Refund") & earlier).then(pl.lit("Correction"))


def _charge_frequency() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    return (
        pl.when(kind.is_in(CONSUMPTION) | kind.is_in(OFFSETS))
        .then(pl.lit("Usage-Based"))
        .when(kind.is_in(("SavingsPlanRecurringFee", "RIFee")))
        .then(pl.lit("Recurring"))
        .when((kind == "Fee") & (pl.col("bill_bill_type") == "Anniversary") & pl.col("CommitmentDiscountId").is_null())
        .then(pl.lit("Recurring"))
        .otherwise(pl.lit("One-Time"))
    )


def _effective_cost() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    return (
        pl.when(kind == "SavingsPlanCoveredUsage")
        .then(pl.col("savings_plan_savings_plan_effective_cost"))
        .when(kind == "DiscountedUsage")
        .then(pl.col("reservation_effective_cost"))
        .when(kind.is_in(COMMITMENT_FEES) | kind.is_in(("SavingsPlanNegation", "SavingsPlanUpfrontFee")))
        .then(_zero())
        .when((kind == "Fee") & pl.col("CommitmentDiscountId").is_not_null())
        .then(_zero())
        .otherwise(pl.col("BilledCost"))
        .cast(MONEY)
    )


def _unused_commitment() -> pl.Expr:
    """The part of a recurring commitment fee that no usage drew on (NULL on other lines)."""
    kind = pl.col("line_item_line_item_type")
    unused_plan = pl.col("savings_plan_total_commitment_to_date") - pl.col("savings_plan_used_commitment")
    unused_upfront = pl.col("reservation_unused_amortized_upfront_fee_for_billing_period").fill_null(0)
    unused_reservation = unused_upfront + pl.col("reservation_unused_recurring_fee").fill_null(0)
    return (
        pl.when(kind == "SavingsPlanRecurringFee")
        .then(unused_plan)
        .when(kind == "RIFee")
        .then(unused_reservation)
        .cast(MONEY)
    )


def _unused_rows(focus: pl.DataFrame) -> pl.DataFrame:
    """Unused commitment as FOCUS wants it: a Usage row, status Unused, that amortizes but bills nothing."""
    return focus.filter(pl.col("_unused") > 0).with_columns(
        ChargeCategory=pl.lit("Usage"),
        ChargeFrequency=pl.lit("Usage-Based"),
        CommitmentDiscountStatus=pl.lit("Unused"),
        BilledCost=_zero(),
        ContractedCost=_zero(),
        ListCost=_zero(),
        EffectiveCost=pl.col("_unused"),
        ConsumedQuantity=pl.lit(None, dtype=MONEY),
        ConsumedUnit=pl.lit(None, dtype=pl.String),
        PricingCategory=pl.lit("Committed"),
    )


def _pricing_quantity() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    return (
        pl.when(kind.is_in(OFFSETS))
        .then(_zero())
        .when(kind == "RIFee")
        .then(pl.coalesce("reservation_total_reserved_units", "line_item_usage_amount"))
        .when(kind.is_in(CONSUMPTION) | kind.is_in(PURCHASES))
        .then(pl.col("line_item_usage_amount"))
    )


def _list_cost() -> pl.Expr:
    """On-demand list price × quantity for consumption; 0 for offsets; what was billed otherwise."""
    kind = pl.col("line_item_line_item_type")
    priced = (pl.col("ListUnitPrice") * pl.col("PricingQuantity")).cast(MONEY)
    consumption = pl.coalesce(priced, "pricing_public_on_demand_cost", "ContractedCost")
    return (
        pl.when(kind.is_in(CONSUMPTION))
        .then(consumption)
        .when(kind.is_in(OFFSETS))
        .then(_zero())
        .otherwise(pl.col("BilledCost"))
        .cast(MONEY)
    )


def _unit(quantity: str) -> pl.Expr:
    unit = pl.col("pricing_unit").replace(UNITS)
    return pl.when(pl.col(quantity).is_not_null()).then(unit)


def _commitment_status() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    return (
        pl.when(pl.col("CommitmentDiscountId").is_null())
        .then(None)
        .when(kind.is_in(("SavingsPlanCoveredUsage", "SavingsPlanNegation", "DiscountedUsage")))
        .then(pl.lit("Used"))
        .cast(pl.String)
    )


def _pricing_category() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    spot = pl.col("line_item_usage_type").str.contains("SpotUsage") | (pl.col("pricing_term") == "Spot")
    return (
        pl.when(kind.is_in(("SavingsPlanCoveredUsage", "SavingsPlanNegation", "DiscountedUsage")))
        .then(pl.lit("Committed"))
        .when((kind == "Usage") & spot.fill_null(False))
        .then(pl.lit("Dynamic"))
        .when(kind.is_in(CONSUMPTION) | kind.is_in(OFFSETS) | kind.is_in(PURCHASES))
        .then(pl.lit("Standard"))
    )


def _service_name() -> pl.Expr:
    product_name = pl.col("product").list.eval(
        pl.element().filter(pl.element().struct.field("key") == "product_name").struct.field("value")
    )
    return pl.coalesce(
        product_name.list.first().str.strip_chars().replace("", None),
        "product_product_name",
        "line_item_product_code",
    )


def _arn_name() -> pl.Expr:
    """The resource part of an ARN after its type: ``…:cluster/inference-prod`` → ``inference-prod``."""
    resource = pl.col("line_item_resource_id")
    tail = resource.str.split(":").list.slice(5).list.join(":")
    return pl.when(resource.str.starts_with("arn:")).then(tail.str.split("/").list.last())


def _resource_type() -> pl.Expr:
    resource = pl.col("line_item_resource_id")
    arn_type = resource.str.split(":").list.get(5, null_on_oob=True).str.split("/").list.first()
    by_prefix = pl.lit(None, dtype=pl.String)
    for prefix, name in reversed(_ID_PREFIX_TYPES.items()):
        by_prefix = pl.when(resource.str.starts_with(prefix)).then(pl.lit(name)).otherwise(by_prefix)
    return (
        pl.when(resource.is_null())
        .then(None)
        .when(resource.str.starts_with("arn:"))
        .then(arn_type)
        .when(pl.col("line_item_product_code") == "AmazonS3")
        .then(pl.lit("Bucket"))
        .otherwise(by_prefix)
        .cast(pl.String)
    )


def _tags_and_names(frame: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """Tags as a flat JSON object per line, and the ``Name`` tag (CUR key ``user_name``) if any."""
    tags, names = [], []
    for resource_tags, categories in zip(
        frame.get_column("resource_tags").to_list(), frame.get_column("cost_category").to_list(), strict=True
    ):
        merged = _focus_tags(resource_tags or [], categories or [])
        tags.append(json.dumps(merged, sort_keys=True, ensure_ascii=False) if merged else None)
        name = merged.get("name")
        names.append(name if isinstance(name, str) else None)
    return pl.Series(tags, dtype=pl.String), pl.Series(names, dtype=pl.String)


def _focus_tags(resource_tags: Iterable[dict[str, str]], cost_categories: Iterable[dict[str, str]]) -> dict[str, Any]:
    """CUR 2.0 ``resource_tags`` and ``cost_category`` entries → FOCUS key-value pairs (see module doc)."""
    tags: dict[str, Any] = {}
    entries: list[tuple[str, str | None]] = [(e["key"], e["value"]) for e in resource_tags]
    entries += [(f"costCategory/{e['key']}", e["value"]) for e in cost_categories]
    for key, value in entries:
        if key is None or value is None:
            continue
        focus_key = key[5:] if key.startswith(USER_TAG_PREFIXES) else key
        tags[focus_key] = value if value != "" else True
    return tags
