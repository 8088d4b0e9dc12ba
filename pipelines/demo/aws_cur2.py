"""Demo AWS bill: one month of the demo company's AWS Data Exports delivery of CUR 2.0 in Parquet
(``write_delivery(..., file_format="csv.gz")`` writes the gzipped-CSV flavour for tests).

Layout and naming follow the AWS Data Exports User Guide, "Understanding export delivery"
(docs.aws.amazon.com/cur/latest/userguide/dataexports-export-delivery.html):
``<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/<export-name>-00001.snappy.parquet`` (overwrite
mode; "create new" mode adds a ``<timestamp>-<execution-id>/`` folder) and
``<prefix>/<export-name>/metadata/BILLING_PERIOD=YYYY-MM/<export-name>-Manifest.json``, written last.
Columns and types follow the CUR 2.0 table dictionary (``table-dictionary-cur2*``): costs and usage
amounts are ``double``, rates are ``string``, ``product``/``resource_tags``/``cost_category`` are
maps, blanks in string columns are empty strings. Tag keys in ``resource_tags`` are normalized the
way CUR does it (``user_`` + lower snake case for user tags, ``aws_`` for AWS-generated ones).

What is billed (all from ``pipelines.demo.company``), in us-east-1:
- the EKS cluster's p4d.24xlarge nodes, hour by hour (``aws_cluster_instances``): a 3-year no-upfront
  Compute Savings Plan of ``SP_HOURLY_COMMITMENT`` per hour covers node-hours at ``P4D_SP_RATE`` until
  the hour's commitment is used (``SavingsPlanCoveredUsage`` + ``SavingsPlanNegation`` lines); the
  rest of a node-hour is plain ``Usage`` at on-demand. The plan's ``SavingsPlanRecurringFee`` line
  carries the commitment and how much of it was used.
- a g5.12xlarge running all month for doc_summaries (on-demand), the EKS control plane ($0.10/h),
  S3 storage, data transfer out and CloudWatch (daily lines), and one sales-tax line per service.

Amounts are exact decimals of at most 10 places written as doubles, as CUR does, so that over the
month sum(BilledCost) == sum(EffectiveCost) to the last digit (no-upfront plan: the fee is billed
and amortized in the same hour).
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.aws_cur2 import CUR2_COLUMNS, DOUBLE, MAP, STRING, TIMESTAMP_TYPE
from pipelines.demo.company import (
    AWS_CLUSTER,
    AWS_PAYER_ACCOUNT,
    AWS_USAGE_ACCOUNT,
    G5_ON_DEMAND,
    P4D_ON_DEMAND,
    P4D_SP_RATE,
    SP_HOURLY_COMMITMENT,
    DemoMonth,
    aws_cluster_instances,
)

EXPORT_BUCKET = "lumen-assist-billing"
EXPORT_PREFIX = "data-exports"
EXPORT_NAME = "lumen-cur2"
REGION = "us-east-1"
REGION_NAME = "US East (N. Virginia)"
PAYER_ACCOUNT_NAME = "lumen-assist-management"
USAGE_ACCOUNT_NAME = "lumen-inference-prod"
AWS_ENTITY = "Amazon Web Services, Inc."
SP_ARN = f"arn:aws:savingsplans::{AWS_PAYER_ACCOUNT}:savingsplan/6b1f9d3e-2c47-4a8e-9f0d-5e7c1a2b3c4d"
CLUSTER_ARN = f"arn:aws:eks:{REGION}:{AWS_USAGE_ACCOUNT}:cluster/{AWS_CLUSTER}"
ARTIFACTS_BUCKET = "lumen-assist-model-artifacts"

EKS_HOURLY = Decimal("0.10")
S3_STANDARD_GB_MONTH = Decimal("0.023")
DATA_TRANSFER_OUT_GB = Decimal("0.09")
CW_METRIC_MONTH = Decimal("0.30")
CW_LOGS_INGESTED_GB = Decimal("0.50")
CW_CUSTOM_METRICS = 1_850
SALES_TAX_RATE = Decimal("0.0625")
CUR_QUANTUM = Decimal("1E-10")  # CUR amounts carry at most 10 decimal places
CENT = Decimal("0.01")

# The nodes carry the cluster tag the allocation pool matches; the EKS control plane only AWS's own
# cluster-name tag (it has no GPUs: counting it as a pool resource would inflate provisioned capacity).
NODE_TAGS = {
    "user_cluster": AWS_CLUSTER,
    "user_team": "ml-platform",
    "user_name": f"{AWS_CLUSTER}-p4d",
    "aws_eks_cluster_name": AWS_CLUSTER,
}
CONTROL_PLANE_TAGS = {"user_team": "ml-platform", "aws_eks_cluster_name": AWS_CLUSTER}
G5_TAGS = {"user_feature": "doc_summaries", "user_name": "doc-summaries-g5"}
BUCKET_TAGS = {"user_team": "ml-platform"}


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    family: str
    sku: str
    rate_code: str
    servicecode: str
    usage_type: str
    operation: str
    pricing_unit: str
    instance_type: str = ""


P4D = Product("AmazonEC2", "Amazon Elastic Compute Cloud", "Compute Instance", "8SV5ZJ3DDWXK2NRD",
              "8SV5ZJ3DDWXK2NRD.JRTCKXETXF.6YS6EN2CT7", "AmazonEC2", "USE1-BoxUsage:p4d.24xlarge",
              "RunInstances", "Hrs", "p4d.24xlarge")  # fmt: skip
G5 = Product("AmazonEC2", "Amazon Elastic Compute Cloud", "Compute Instance", "QNFGJ7K5B6TYRVX3",
             "QNFGJ7K5B6TYRVX3.JRTCKXETXF.6YS6EN2CT7", "AmazonEC2", "USE1-BoxUsage:g5.12xlarge",
             "RunInstances", "Hrs", "g5.12xlarge")  # fmt: skip
EKS = Product("AmazonEKS", "Amazon Elastic Container Service for Kubernetes", "Compute", "4QN2BXDG8ZY2HCSZ",
              "4QN2BXDG8ZY2HCSZ.JRTCKXETXF.6YS6EN2CT7", "AmazonEKS", "USE1-AmazonEKS-Hours:perCluster",
              "CreateOperation", "Hours")  # fmt: skip
S3 = Product("AmazonS3", "Amazon Simple Storage Service", "Storage", "WP9ANXZGBYYSGJEA",
             "WP9ANXZGBYYSGJEA.JRTCKXETXF.PGHJ3S3EYE", "AmazonS3", "TimedStorage-ByteHrs", "StandardStorage",
             "GB-Mo")  # fmt: skip
TRANSFER = Product("AWSDataTransfer", "AWS Data Transfer", "Data Transfer", "AQK8MRHCRBR3ZMYQ",
                   "AQK8MRHCRBR3ZMYQ.JRTCKXETXF.8EEUB22XNJ", "AWSDataTransfer", "USE1-DataTransfer-Out-Bytes",
                   "", "GB")  # fmt: skip
CW_METRICS = Product("AmazonCloudWatch", "AmazonCloudWatch", "Metric", "9Y6TN2YCBHB9EMXN",
                     "9Y6TN2YCBHB9EMXN.JRTCKXETXF.6SBQZCNF2X", "AmazonCloudWatch", "USE1-CW:MetricMonitorUsage",
                     "MetricStorage", "Metrics")  # fmt: skip
CW_LOGS = Product("AmazonCloudWatch", "AmazonCloudWatch", "Data Payload", "XBHTQ3NZC5B3H2CN",
                  "XBHTQ3NZC5B3H2CN.JRTCKXETXF.7H5TVFJH6X", "AmazonCloudWatch", "USE1-DataProcessing-Bytes",
                  "PutLogEvents", "GB")  # fmt: skip
SAVINGS_PLAN = Product("ComputeSavingsPlans", "Savings Plans for AWS Compute usage", "Savings Plan",
                       "DNKGYQQSY3QXA4HY", "DNKGYQQSY3QXA4HY.SP.ND4YZ5QPR5", "ComputeSavingsPlans",
                       "ComputeSP:3yrNoUpfront", "", "Hrs")  # fmt: skip
PRODUCTS_BY_CODE = {p.code: p for p in (P4D, EKS, S3, TRANSFER, CW_METRICS, SAVINGS_PLAN)}

# The CUR 2.0 table (export query "SELECT ... FROM COST_AND_USAGE_REPORT", INCLUDE_RESOURCES=TRUE):
# every column, in the dictionary's order, with its Data Exports type (shared with the connector).
_ARROW_TYPES: dict[str, pa.DataType] = {
    STRING: pa.string(),
    DOUBLE: pa.float64(),
    TIMESTAMP_TYPE: pa.timestamp("ms", tz="UTC"),
    MAP: pa.map_(pa.string(), pa.string()),
}
_DOUBLE_MAPS = {"discount"}  # map<string, double>; the others are map<string, string>


def cur2_schema(columns: Iterable[tuple[str, str]] = CUR2_COLUMNS) -> pa.Schema:
    return pa.schema(
        (name, pa.map_(pa.string(), pa.float64()) if name in _DOUBLE_MAPS else _ARROW_TYPES[kind])
        for name, kind in columns
    )


LineItem = dict[str, Any]


def write(month: DemoMonth, out_dir: Path, seed: int) -> Path:
    """Write the month's CUR 2.0 delivery and return the export folder (``…/<export-name>``)."""
    root = export_root(out_dir)
    write_delivery(line_items(month, seed), root, month.month, execution_id=execution_id(seed, month.month))
    return root


def export_root(out_dir: Path) -> Path:
    return out_dir / "aws" / EXPORT_BUCKET / EXPORT_PREFIX / EXPORT_NAME


def execution_id(seed: int, billing_period: str, attempt: int = 1) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cur2/{EXPORT_NAME}/{billing_period}/{seed}/{attempt}"))


def line_items(month: DemoMonth, seed: int) -> list[LineItem]:
    """Every line of the month: hourly compute, daily storage/transfer/monitoring, then tax."""
    rng = random.Random(seed)
    fleet = Fleet.build(month, rng)
    rows = hourly_line_items(month, seed, month.hours(), fleet)
    for day in month.days():
        rows.extend(_daily_lines(month, seed, day, rng))
    rows.extend(_tax_lines(month, seed, rows))
    return rows


def hourly_line_items(
    month: DemoMonth, seed: int, hours: Sequence[datetime], fleet: Fleet | None = None
) -> list[LineItem]:
    """The hourly lines (cluster nodes and Savings Plan, g5, EKS) of some hours of the month."""
    fleet = fleet or Fleet.build(month, random.Random(seed))
    rows: list[LineItem] = []
    for hour in hours:
        rows.extend(_cluster_hour(month, seed, hour, fleet))
        rows.append(_on_demand(month, seed, hour, G5, fleet.g5, G5_ON_DEMAND, G5_TAGS, "us-east-1a"))
        rows.append(_on_demand(month, seed, hour, EKS, CLUSTER_ARN, EKS_HOURLY, CONTROL_PLANE_TAGS, ""))
    return rows


@dataclass(frozen=True)
class Fleet:
    """Instance ids: two long-lived cluster nodes, a third one launched each weekday, the g5."""

    nodes: tuple[str, str]
    daily_nodes: dict[date, str]
    g5: str

    @classmethod
    def build(cls, month: DemoMonth, rng: random.Random) -> Fleet:
        def instance_id() -> str:
            return "i-0" + "".join(rng.choice("0123456789abcdef") for _ in range(16))

        nodes = (instance_id(), instance_id())
        g5 = instance_id()
        return cls(nodes, {day: instance_id() for day in month.days()}, g5)

    def cluster_nodes(self, hour: datetime) -> list[tuple[str, str]]:
        """(instance id, availability zone) of the nodes running in an hour."""
        running = [(self.nodes[0], "us-east-1a"), (self.nodes[1], "us-east-1b")]
        if aws_cluster_instances(hour) > 2:
            running.append((self.daily_nodes[hour.date()], "us-east-1c"))
        return running[: aws_cluster_instances(hour)]


def _cluster_hour(month: DemoMonth, seed: int, hour: datetime, fleet: Fleet) -> list[LineItem]:
    """Node-hours drawn against the hour's Savings Plan commitment, then the plan's recurring fee."""
    rows: list[LineItem] = []
    remaining = SP_HOURLY_COMMITMENT
    for instance, zone in fleet.cluster_nodes(hour):
        sp_cost = min(P4D_SP_RATE, remaining)  # the part of the commitment this node-hour uses
        remaining -= sp_cost
        covered = Decimal(1) if sp_cost == P4D_SP_RATE else (sp_cost / P4D_SP_RATE).quantize(CUR_QUANTUM)
        covered_cost = (covered * P4D_ON_DEMAND).quantize(CUR_QUANTUM)
        if covered > 0:
            rows.append(_covered(month, seed, hour, instance, zone, covered, covered_cost, sp_cost))
            rows.append(_negation(month, seed, hour, instance, zone, covered, covered_cost))
        if covered < 1:
            rest = _on_demand(month, seed, hour, P4D, instance, P4D_ON_DEMAND, NODE_TAGS, zone, 1 - covered)
            rest["line_item_unblended_cost"] = rest["line_item_blended_cost"] = P4D_ON_DEMAND - covered_cost
            rest["pricing_public_on_demand_cost"] = P4D_ON_DEMAND - covered_cost
            rows.append(rest)
    rows.append(_recurring_fee(month, seed, hour, used=SP_HOURLY_COMMITMENT - remaining))
    return rows


def _line(
    month: DemoMonth, seed: int, kind: str, product: Product, start: datetime, end: datetime, resource: str
) -> LineItem:
    """A line with the bill, identity, product and pricing columns every line of this export has."""
    row: LineItem = dict.fromkeys(name for name, _ in CUR2_COLUMNS)
    row.update(
        bill_bill_type="Anniversary",
        bill_billing_entity="AWS",
        bill_billing_period_start_date=month.start,
        bill_billing_period_end_date=month.end,
        bill_invoice_id=_invoice_id(seed, month),
        bill_invoicing_entity=AWS_ENTITY,
        bill_payer_account_id=AWS_PAYER_ACCOUNT,
        bill_payer_account_name=PAYER_ACCOUNT_NAME,
        cost_category={},
        discount={},
        identity_line_item_id=_line_item_id(seed, kind, product.usage_type, resource, start),
        identity_time_interval=f"{_iso(start)}/{_iso(end)}",
        line_item_availability_zone="",
        line_item_currency_code="USD",
        line_item_legal_entity=AWS_ENTITY,
        line_item_line_item_type=kind,
        line_item_operation=product.operation,
        line_item_product_code=product.code,
        line_item_resource_id=resource,
        line_item_tax_type="",
        line_item_usage_account_id=AWS_USAGE_ACCOUNT,
        line_item_usage_account_name=USAGE_ACCOUNT_NAME,
        line_item_usage_start_date=start,
        line_item_usage_end_date=end,
        line_item_usage_type=product.usage_type,
        pricing_currency="USD",
        pricing_rate_code=product.rate_code,
        pricing_term="OnDemand",
        pricing_unit=product.pricing_unit,
        product=_product_map(product),
        product_instance_type=product.instance_type,
        product_instance_family="GPU instance" if product.instance_type else "",
        product_location=REGION_NAME,
        product_location_type="AWS Region",
        product_operation=product.operation,
        product_product_family=product.family,
        product_region_code=REGION,
        product_servicecode=product.servicecode,
        product_sku=product.sku,
        product_usagetype=product.usage_type,
        resource_tags={},
    )
    return row


def _on_demand(
    month: DemoMonth,
    seed: int,
    start: datetime,
    product: Product,
    resource: str,
    rate: Decimal,
    tags: dict[str, str],
    zone: str,
    amount: Decimal = Decimal(1),
    hours: int = 1,
) -> LineItem:
    row = _line(month, seed, "Usage", product, start, start + timedelta(hours=hours), resource)
    cost = (amount * rate).quantize(CUR_QUANTUM)
    row.update(
        line_item_availability_zone=zone,
        line_item_line_item_description=f"${_rate(rate)} per {product.usage_type} {product.pricing_unit}",
        line_item_usage_amount=amount,
        line_item_unblended_rate=_rate(rate),
        line_item_unblended_cost=cost,
        line_item_blended_rate=_rate(rate),
        line_item_blended_cost=cost,
        pricing_public_on_demand_rate=_rate(rate),
        pricing_public_on_demand_cost=cost,
        resource_tags=dict(tags),
    )
    return row


def _covered(
    month: DemoMonth,
    seed: int,
    hour: datetime,
    instance: str,
    zone: str,
    amount: Decimal,
    cost: Decimal,
    sp_cost: Decimal,
) -> LineItem:
    row = _on_demand(month, seed, hour, P4D, instance, P4D_ON_DEMAND, NODE_TAGS, zone, amount)
    row.update(
        identity_line_item_id=_line_item_id(seed, "SavingsPlanCoveredUsage", P4D.usage_type, instance, hour),
        line_item_line_item_type="SavingsPlanCoveredUsage",
        line_item_line_item_description=(f"USD {_rate(P4D_ON_DEMAND)} per On Demand Linux p4d.24xlarge Instance Hour"),
        line_item_unblended_cost=cost,
        line_item_blended_cost=cost,
        pricing_public_on_demand_cost=cost,
        **_savings_plan_columns(),
        savings_plan_savings_plan_rate=P4D_SP_RATE,
        savings_plan_savings_plan_effective_cost=sp_cost,
    )
    return row


def _negation(
    month: DemoMonth, seed: int, hour: datetime, instance: str, zone: str, amount: Decimal, cost: Decimal
) -> LineItem:
    row = _line(month, seed, "SavingsPlanNegation", P4D, hour, hour + timedelta(hours=1), instance)
    row.update(
        line_item_availability_zone=zone,
        line_item_line_item_description=(
            f"SavingsPlanNegation used by AccountId : {AWS_USAGE_ACCOUNT} and UsageSku : {P4D.sku}"
        ),
        line_item_usage_amount=amount,
        line_item_unblended_rate=_rate(-P4D_ON_DEMAND),
        line_item_unblended_cost=-cost,
        line_item_blended_rate=_rate(-P4D_ON_DEMAND),
        line_item_blended_cost=-cost,
        pricing_public_on_demand_cost=Decimal(0),
        resource_tags=dict(NODE_TAGS),
        **_savings_plan_columns(),
    )
    return row


def _recurring_fee(month: DemoMonth, seed: int, hour: datetime, used: Decimal) -> LineItem:
    row = _line(month, seed, "SavingsPlanRecurringFee", SAVINGS_PLAN, hour, hour + timedelta(hours=1), SP_ARN)
    month_hours = len(month.hours())
    row.update(
        line_item_line_item_description="3 year No Upfront Compute Savings Plan",
        line_item_usage_account_id=AWS_PAYER_ACCOUNT,
        line_item_usage_account_name=PAYER_ACCOUNT_NAME,
        line_item_usage_amount=Decimal(1),
        line_item_unblended_rate=_rate(SP_HOURLY_COMMITMENT),
        line_item_unblended_cost=SP_HOURLY_COMMITMENT,
        line_item_blended_rate=_rate(SP_HOURLY_COMMITMENT),
        line_item_blended_cost=SP_HOURLY_COMMITMENT,
        pricing_term="Savings Plan",
        product_location="",
        product_location_type="",
        product_region_code="",
        **_savings_plan_columns(),
        savings_plan_amortized_upfront_commitment_for_billing_period=Decimal(0),
        savings_plan_recurring_commitment_for_billing_period=SP_HOURLY_COMMITMENT * month_hours,
        savings_plan_total_commitment_to_date=SP_HOURLY_COMMITMENT,
        savings_plan_used_commitment=used,
    )
    return row


def _savings_plan_columns() -> dict[str, Any]:
    return {
        "savings_plan_savings_plan_a_r_n": SP_ARN,
        "savings_plan_offering_type": "ComputeSavingsPlans",
        "savings_plan_payment_option": "No Upfront",
        "savings_plan_purchase_term": "3yr",
        "savings_plan_start_time": "2024-07-01T00:00:00.000Z",
        "savings_plan_end_time": "2027-06-30T23:59:59.000Z",
    }


def _daily_lines(month: DemoMonth, seed: int, day: date, rng: random.Random) -> list[LineItem]:
    """S3 storage of model artifacts (growing), data transfer out, CloudWatch metrics and logs."""
    start = datetime(day.year, day.month, day.day, tzinfo=month.start.tzinfo)
    month_hours = Decimal(len(month.hours()))
    stored_gb = Decimal(18_400 + 35 * (day.day - 1))
    storage = (stored_gb * 24 / month_hours).quantize(CUR_QUANTUM)  # GB-Mo used in one day
    transfer_gb = Decimal(rng.randint(180_000_000, 420_000_000)).scaleb(-6)
    logs_gb = Decimal(rng.randint(40_000_000, 70_000_000)).scaleb(-6)
    metrics = (CW_CUSTOM_METRICS * 24 / month_hours).quantize(CUR_QUANTUM)
    return [
        _on_demand(month, seed, start, S3, ARTIFACTS_BUCKET, S3_STANDARD_GB_MONTH, BUCKET_TAGS, "", storage, 24),
        _on_demand(month, seed, start, TRANSFER, "", DATA_TRANSFER_OUT_GB, {}, "", transfer_gb, 24),
        _on_demand(month, seed, start, CW_METRICS, "", CW_METRIC_MONTH, {}, "", metrics, 24),
        _on_demand(month, seed, start, CW_LOGS, "", CW_LOGS_INGESTED_GB, {}, "", logs_gb, 24),
    ]


def _tax_lines(month: DemoMonth, seed: int, rows: Iterable[LineItem]) -> list[LineItem]:
    """One US sales-tax line per service (and account) for the month, on what that service billed."""
    billed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        billed[(row["line_item_product_code"], row["line_item_usage_account_id"])] += row["line_item_unblended_cost"]
    taxes = []
    for (code, account), total in sorted(billed.items()):
        tax = (total * SALES_TAX_RATE).quantize(CENT, rounding=ROUND_HALF_UP)
        if tax == 0:
            continue
        product = PRODUCTS_BY_CODE[code]
        row = _line(month, seed, "Tax", product, month.start, month.end, "")
        row.update(
            identity_line_item_id=_line_item_id(seed, "Tax", code, account, month.start),
            line_item_line_item_description=f"Tax for product code {code}",
            line_item_operation="",
            line_item_tax_type="Sales Tax",
            line_item_usage_account_id=account,
            line_item_usage_account_name=PAYER_ACCOUNT_NAME if account == AWS_PAYER_ACCOUNT else USAGE_ACCOUNT_NAME,
            line_item_usage_type="",
            line_item_unblended_cost=tax,
            line_item_blended_cost=tax,
            pricing_rate_code="",
            pricing_term="",
            pricing_unit="",
            product_sku="",
            product_usagetype="",
            product_operation="",
            product_instance_type="",
            product_instance_family="",
            product_location="",
            product_location_type="",
            product_region_code="",
        )
        taxes.append(row)
    return taxes


def write_delivery(
    rows: Sequence[LineItem],
    root: Path,
    billing_period: str,
    *,
    execution_id: str,
    exported_at: datetime | None = None,
    create_new: bool = False,
    rows_per_chunk: int | None = None,
    columns: Sequence[tuple[str, str]] = CUR2_COLUMNS,
    file_format: Literal["parquet", "csv.gz"] = "parquet",
) -> list[Path]:
    """Write one execution of the export for a billing period: data chunks first, then the manifest.

    ``create_new`` puts the chunks in a ``<timestamp>-<execution-id>/`` folder and writes the manifest
    both there and in the partition's metadata folder (AWS's "create new" mode); otherwise chunks are
    overwritten in place. ``columns`` lets tests leave a column out, as a narrower export query does.
    ``file_format`` ``csv.gz`` writes what an export with Format TEXT_OR_CSV and Compression GZIP delivers.
    """
    exported_at = exported_at or _default_export_time(billing_period)
    partition = f"BILLING_PERIOD={billing_period}"
    execution = f"{exported_at.strftime('%Y%m%dT%H%M%SZ')}-{execution_id}"
    data_dir = root / "data" / partition / (execution if create_new else "")
    data_dir.mkdir(parents=True, exist_ok=True)
    size = rows_per_chunk or max(len(rows), 1)
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)] or [[]]
    schema = cur2_schema(columns)
    paths = []
    for number, chunk in enumerate(chunks, start=1):
        if file_format == "csv.gz":
            path = data_dir / f"{root.name}-{number:05d}.csv.gz"
            _write_csv_gz(path, chunk, [name for name, _ in columns])
        else:
            path = data_dir / f"{root.name}-{number:05d}.snappy.parquet"
            table = pa.Table.from_pylist([_arrow_row(row, schema) for row in chunk], schema=schema)
            pq.write_table(table, path, compression="snappy")
        paths.append(path)
    manifest = _manifest(root, billing_period, execution_id, exported_at, paths, columns)
    metadata_dir = root / "metadata" / partition
    targets = [metadata_dir] + ([metadata_dir / execution] if create_new else [])
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{root.name}-Manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return paths


def _manifest(
    root: Path,
    billing_period: str,
    execution: str,
    exported_at: datetime,
    paths: Sequence[Path],
    columns: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The delivery's Manifest.json: columns, the data files as s3:// URLs, the period covered."""
    base = f"s3://{EXPORT_BUCKET}/{EXPORT_PREFIX}/{root.name}"
    start = datetime.strptime(billing_period + "-01", "%Y-%m-%d")
    end = (start + timedelta(days=32)).replace(day=1)
    return {
        "exportArn": f"arn:aws:bcm-data-exports:us-east-1:{AWS_PAYER_ACCOUNT}:export/{root.name}-{execution[:8]}",
        "exportName": root.name,
        "executionId": execution,
        "exportTime": _iso(exported_at, millis=True),
        "billingPeriod": {
            "start": start.strftime("%Y-%m-%dT00:00:00.000Z"),
            "end": end.strftime("%Y-%m-%dT00:00:00.000Z"),
        },
        "bucket": EXPORT_BUCKET,
        "prefix": EXPORT_PREFIX,
        "columns": [{"name": name, "type": kind} for name, kind in columns],
        "dataFiles": [f"{base}/{p.relative_to(root).as_posix()}" for p in paths],
    }


def _arrow_row(row: LineItem, schema: pa.Schema) -> dict[str, Any]:
    """Decimals become doubles (CUR's type for amounts); columns not in the schema are dropped."""
    return {name: float(v) if isinstance(v := row.get(name), Decimal) else v for name in schema.names}


def _write_csv_gz(path: Path, rows: Sequence[LineItem], names: Sequence[str]) -> None:
    """CUR 2.0 as CSV: a header row, every value as text, maps as JSON objects, blanks for no value."""
    with gzip.open(path, "wt", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(names)
        writer.writerows([_csv_value(row.get(name)) for name in names] for row in rows)


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _product_map(product: Product) -> dict[str, str]:
    attributes = {"product_name": product.name, "servicename": product.name, "region": REGION}
    if product.instance_type:
        attributes.update(operating_system="Linux", tenancy="Shared", pre_installed_sw="NA")
    return attributes


def _default_export_time(billing_period: str) -> datetime:
    start = datetime.strptime(billing_period + "-01", "%Y-%m-%d")
    return (start + timedelta(days=32)).replace(day=3, hour=3, minute=15, second=12)


def _invoice_id(seed: int, month: DemoMonth) -> str:
    digest = hashlib.sha256(f"invoice/{seed}/{month.month}".encode()).hexdigest()
    return "20" + str(int(digest[:12], 16))[:8]


def _line_item_id(seed: int, *key: object) -> str:
    """52 lowercase base32 characters, the shape of CUR's identity_line_item_id."""
    digest = hashlib.sha256("|".join(map(str, (seed, *key))).encode()).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=")[:52]


def _rate(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _iso(moment: datetime, millis: bool = False) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (".000Z" if millis else "Z")
