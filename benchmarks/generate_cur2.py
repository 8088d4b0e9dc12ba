"""Realistic AWS CUR 2.0 (Data Exports) Parquet for benchmarks: one month of a large organization, hourly.

Layout, manifest, columns and column types are the demo delivery's (``pipelines.demo.aws_cur2``: the AWS
Data Exports User Guide, "Understanding export delivery", and the CUR 2.0 table dictionary):
``<export>/data/BILLING_PERIOD=YYYY-MM/<export>-NNNNN.snappy.parquet`` plus
``<export>/metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json`` written last. What differs is the scale:

- hundreds of linked accounts (default 300) under one payer, each with its cost categories;
- ~60 usage types of ~30 services (some unknown to the connector's service map, as real bills have) in
  12 regions; tens of thousands of resources (default 50,000) with realistic resource ids and ARNs;
- ``resource_tags`` maps with up to 11 keys (user tags and AWS-generated ones) and thousands of values;
- line item types in the proportions of a company with commitments: mostly ``Usage``, Savings Plan covered
  usage with its ``SavingsPlanNegation``, ``SavingsPlanRecurringFee`` every hour for each plan,
  ``DiscountedUsage`` with monthly ``RIFee`` lines, ``Tax`` per account and service, ``Credit`` and some
  ``Refund`` lines (of tax, of a commitment, of an earlier period).

Every (resource, hour) pair is used at most once (an affine permutation of the slots), every line has its own
``identity_line_item_id``, amounts are drawn per line: no row is repeated. Generation is vectorized (numpy,
pyarrow ``take``) and streamed: each row group is built, written and dropped, so memory stays bounded at any
``--rows``. Deterministic for a seed: row group ``k`` draws from ``numpy.random.default_rng([seed, k])``.

Usage: ``python benchmarks/generate_cur2.py --rows 1000000 --out benchmarks/out/cur2-1m``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from pipelines.demo.aws_cur2 import CUR2_COLUMNS, cur2_schema  # (after the path tweak)

EXPORT_NAME = "bench-cur2"
EXPORT_BUCKET = "bench-billing"
EXPORT_PREFIX = "data-exports"
PAYER_ACCOUNT = "110000000001"
PAYER_NAME = "bench-org-management"
AWS_ENTITY = "Amazon Web Services, Inc."
SCHEMA = cur2_schema(CUR2_COLUMNS)
ID_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", dtype=np.uint8)
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

# --- the catalog --------------------------------------------------------------------------------------------
# (code, product name, product family, [(usage type, operation, unit, on-demand rate, amount kind, resource
#  kind, weight, commitment)]). Amount kinds: "hour" (1 or a part of an hour), "storage" (GB-Mo used in
# one hour), "gb", "requests", "count". Commitment: "sp" (Compute Savings Plans cover it), "ri" (reserved).
UsageType = tuple[str, str, str, float, str, str, float, str]
CATALOG: tuple[tuple[str, str, str, tuple[UsageType, ...]], ...] = (
    ("AmazonEC2", "Amazon Elastic Compute Cloud", "Compute Instance", (
        ("BoxUsage:m5.xlarge", "RunInstances", "Hrs", 0.192, "hour", "instance", 9.0, "sp"),
        ("BoxUsage:m5.2xlarge", "RunInstances", "Hrs", 0.384, "hour", "instance", 6.0, "sp"),
        ("BoxUsage:c5.4xlarge", "RunInstances", "Hrs", 0.68, "hour", "instance", 4.0, "sp"),
        ("BoxUsage:r5.2xlarge", "RunInstances", "Hrs", 0.504, "hour", "instance", 3.0, "ri"),
        ("BoxUsage:g5.12xlarge", "RunInstances", "Hrs", 5.672, "hour", "instance", 1.0, "sp"),
        ("BoxUsage:g4dn.xlarge", "RunInstances", "Hrs", 0.526, "hour", "instance", 1.5, "sp"),
        ("BoxUsage:p4d.24xlarge", "RunInstances", "Hrs", 32.7726, "hour", "instance", 0.3, "sp"),
        ("SpotUsage:c5.2xlarge", "RunInstances:SV001", "Hrs", 0.1345, "hour", "instance", 2.0, ""),
        ("EBS:VolumeUsage.gp3", "CreateVolume-Gp3", "GB-Mo", 0.08, "storage", "volume", 12.0, ""),
        ("EBS:SnapshotUsage", "CreateSnapshot", "GB-Mo", 0.05, "storage", "snapshot", 5.0, ""),
        ("NatGateway-Hours", "NatGateway", "Hrs", 0.045, "hour", "nat", 0.5, ""),
        ("NatGateway-Bytes", "NatGateway", "GB", 0.045, "gb", "nat", 0.5, ""),
    )),
    ("AmazonEKS", "Amazon Elastic Container Service for Kubernetes", "Compute", (
        ("AmazonEKS-Hours:perCluster", "CreateOperation", "Hours", 0.10, "hour", "eks", 0.4, ""),
    )),
    ("AmazonECS", "Amazon Elastic Container Service", "Compute", (
        ("Fargate-vCPU-Hours:perCPU", "FargateTask", "hours", 0.04048, "hour", "task", 2.0, "sp"),
        ("Fargate-GB-Hours", "FargateTask", "hours", 0.004445, "hour", "task", 2.0, "sp"),
    )),
    ("AWSLambda", "AWS Lambda", "Serverless", (
        ("Lambda-GB-Second", "Invoke", "Lambda-GB-Second", 0.0000166667, "requests", "function", 4.0, "sp"),
        ("Request", "Invoke", "Requests", 0.0000002, "requests", "function", 3.0, ""),
    )),
    ("AmazonS3", "Amazon Simple Storage Service", "Storage", (
        ("TimedStorage-ByteHrs", "StandardStorage", "GB-Mo", 0.023, "storage", "bucket", 4.0, ""),
        ("Requests-Tier1", "PutObject", "Requests", 0.000005, "requests", "bucket", 2.0, ""),
        ("Requests-Tier2", "GetObject", "Requests", 0.0000004, "requests", "bucket", 2.0, ""),
    )),
    ("AWSDataTransfer", "AWS Data Transfer", "Data Transfer", (
        ("DataTransfer-Out-Bytes", "", "GB", 0.09, "gb", "instance", 3.0, ""),
        ("DataTransfer-Regional-Bytes", "InterZone-Out", "GB", 0.01, "gb", "instance", 3.0, ""),
    )),
    ("AmazonRDS", "Amazon Relational Database Service", "Database Instance", (
        ("InstanceUsage:db.r5.large", "CreateDBInstance:0002", "Hrs", 0.25, "hour", "rds", 2.0, "ri"),
        ("Multi-AZUsage:db.r6g.xlarge", "CreateDBInstance:0014", "Hrs", 0.898, "hour", "rds", 1.0, "ri"),
        ("RDS:GP2-Storage", "CreateDBInstance:0002", "GB-Mo", 0.115, "storage", "rds", 2.0, ""),
    )),
    ("AmazonDynamoDB", "Amazon DynamoDB", "Database Storage", (
        ("TimedStorage-ByteHrs", "PayPerRequestThroughput", "GB-Mo", 0.25, "storage", "table", 1.5, ""),
        ("ReadRequestUnits", "PayPerRequestThroughput", "ReadRequestUnits", 0.00000025, "requests", "table",
         1.5, ""),
        ("WriteRequestUnits", "PayPerRequestThroughput", "WriteRequestUnits", 0.00000125, "requests", "table",
         1.5, ""),
    )),
    ("AmazonElastiCache", "Amazon ElastiCache", "Cache Instance", (
        ("NodeUsage:cache.r6g.large", "CreateCacheCluster:0002", "Hrs", 0.206, "hour", "cache", 1.0, "ri"),
    )),
    ("AmazonRedshift", "Amazon Redshift", "Compute Instance", (
        ("Node:ra3.4xlarge", "RunComputeNode:0001", "Hrs", 3.26, "hour", "redshift", 0.3, "ri"),
    )),
    ("AmazonSageMaker", "Amazon SageMaker", "ML Instance", (
        ("Hosting:ml.g5.2xlarge", "RunInstance", "Hrs", 1.515, "hour", "endpoint", 1.0, ""),
        ("Train:ml.p4d.24xlarge", "CreateTrainingJob", "Hrs", 37.688, "hour", "training", 0.2, ""),
        ("Notebk:ml.t3.medium", "RunInstance", "Hrs", 0.05, "hour", "notebook", 0.8, ""),
    )),
    ("AmazonBedrock", "Amazon Bedrock", "Amazon Bedrock", (
        ("Claude3.5Sonnet-input-tokens", "InvokeModelInference", "1K tokens", 0.003, "requests", "model", 0.8, ""),
        ("Claude3.5Sonnet-output-tokens", "InvokeModelInference", "1K tokens", 0.015, "requests", "model",
         0.8, ""),
    )),
    ("AmazonCloudWatch", "AmazonCloudWatch", "Metric", (
        ("CW:MetricMonitorUsage", "MetricStorage", "Metrics", 0.30, "count", "none", 1.5, ""),
        ("DataProcessing-Bytes", "PutLogEvents", "GB", 0.50, "gb", "loggroup", 2.0, ""),
        ("TimedStorage-ByteHrs", "HourlyStorageMetering", "GB-Mo", 0.03, "storage", "loggroup", 1.5, ""),
    )),
    ("AWSELB", "Elastic Load Balancing", "Load Balancer-Application", (
        ("LoadBalancerUsage", "LoadBalancing:Application", "Hrs", 0.0225, "hour", "elb", 1.0, ""),
        ("LCUUsage", "LoadBalancing:Application", "LCU-Hrs", 0.008, "gb", "elb", 1.0, ""),
    )),
    ("AmazonCloudFront", "Amazon CloudFront", "Data Transfer", (
        ("DataTransfer-Out-Bytes", "GET", "GB", 0.085, "gb", "distribution", 0.8, ""),
    )),
    ("AmazonRoute53", "Amazon Route 53", "DNS Query", (
        ("DNS-Queries", "", "Queries", 0.0000004, "requests", "zone", 0.6, ""),
    )),
    ("awskms", "AWS Key Management Service", "Encryption Key", (
        ("KMS-Requests", "", "Requests", 0.000003, "requests", "key", 0.8, ""),
        ("KMS-Keys", "CreateKey", "Keys", 1.0, "count", "key", 0.8, ""),
    )),
    ("AWSSecretsManager", "AWS Secrets Manager", "Secret", (
        ("AWSSecretsManager-Secrets", "StorageSecret", "Secrets", 0.40, "count", "secret", 0.8, ""),
    )),
    ("AWSQueueService", "Amazon Simple Queue Service", "API Request", (
        ("Requests-RBP", "", "Requests", 0.0000004, "requests", "queue", 1.0, ""),
    )),
    ("AmazonSNS", "Amazon Simple Notification Service", "API Request", (
        ("Requests-Tier1", "", "Requests", 0.0000005, "requests", "topic", 0.5, ""),
    )),
    ("AmazonKinesis", "Amazon Kinesis", "Kinesis Streams", (
        ("Storage-ShardHour", "shardHourStorage", "ShardHour", 0.015, "hour", "stream", 0.6, ""),
    )),
    ("AmazonAthena", "Amazon Athena", "Athena Queries", (
        ("DataScannedInTB", "RunQuery", "Terabytes", 5.0, "gb", "workgroup", 0.4, ""),
    )),
    ("AWSGlue", "AWS Glue", "AWS Glue", (
        ("ETL-DPU-Hour", "Jobrun", "DPU-Hour", 0.44, "hour", "gluejob", 0.5, ""),
    )),
    ("AmazonES", "Amazon OpenSearch Service", "Amazon OpenSearch Service Instance", (
        ("ESInstance:r6g.large", "ESDomain", "Hrs", 0.167, "hour", "domain", 0.6, "ri"),
    )),
    ("AmazonEFS", "Amazon Elastic File System", "Storage", (
        ("TimedStorage-ByteHrs", "", "GB-Mo", 0.30, "storage", "filesystem", 0.8, ""),
    )),
    ("AmazonVPC", "Amazon Virtual Private Cloud", "VpcEndpoint", (
        ("VpcEndpoint-Hours", "VpcEndpoint", "Hrs", 0.01, "hour", "vpce", 1.0, ""),
    )),
    ("AmazonGuardDuty", "Amazon GuardDuty", "Security Services", (
        ("PaidEventsAnalyzed", "", "Events", 0.000004, "requests", "none", 0.4, ""),
    )),
    ("AWSConfig", "AWS Config", "Management Tools - AWS Config", (
        ("ConfigurationItemRecorded", "", "ConfigurationItemRecorded", 0.003, "requests", "none", 0.4, ""),
    )),
    ("AmazonECR", "Amazon EC2 Container Registry (ECR)", "EC2 Container Registry", (
        ("TimedStorage-ByteHrs", "", "GB-Mo", 0.10, "storage", "repository", 0.5, ""),
    )),
    ("AmazonMSK", "Amazon Managed Streaming for Apache Kafka", "Managed Streaming for Apache Kafka (MSK)", (
        ("Kafka.m5.large", "RunBroker", "Hrs", 0.21, "hour", "kafka", 0.4, ""),
    )),
    ("AmazonStates", "AWS Step Functions", "AWS Step Functions", (
        ("StateTransition", "", "StateTransitions", 0.000025, "requests", "statemachine", 0.4, ""),
    )),
)  # fmt: skip

# (region code, usage type prefix, location name, weight)
REGIONS: tuple[tuple[str, str, str, float], ...] = (
    ("us-east-1", "USE1", "US East (N. Virginia)", 30.0),
    ("us-east-2", "USE2", "US East (Ohio)", 10.0),
    ("us-west-2", "USW2", "US West (Oregon)", 15.0),
    ("eu-west-1", "EU", "EU (Ireland)", 10.0),
    ("eu-central-1", "EUC1", "EU (Frankfurt)", 8.0),
    ("eu-west-2", "EUW2", "EU (London)", 4.0),
    ("ap-northeast-1", "APN1", "Asia Pacific (Tokyo)", 6.0),
    ("ap-southeast-1", "APS1", "Asia Pacific (Singapore)", 4.0),
    ("ap-southeast-2", "APS2", "Asia Pacific (Sydney)", 3.0),
    ("ap-south-1", "APS3", "Asia Pacific (Mumbai)", 4.0),
    ("ca-central-1", "CAN1", "Canada (Central)", 3.0),
    ("sa-east-1", "SAE1", "South America (Sao Paulo)", 3.0),
)
ZONED = {"instance", "volume", "nat", "rds", "cache"}  # resource kinds that live in an availability zone

# Resource id templates; {r}=region {a}=account {n}=name {h}=hex id {u}=uuid.
RESOURCE_IDS = {
    "instance": "i-0{h16}", "volume": "vol-0{h16}", "snapshot": "snap-0{h16}", "nat": "nat-0{h16}",
    "eks": "arn:aws:eks:{r}:{a}:cluster/{n}", "task": "arn:aws:ecs:{r}:{a}:task/{n}/{h32}",
    "function": "arn:aws:lambda:{r}:{a}:function:{n}", "bucket": "{n}-{a}",
    "rds": "arn:aws:rds:{r}:{a}:db:{n}", "table": "arn:aws:dynamodb:{r}:{a}:table/{n}",
    "cache": "arn:aws:elasticache:{r}:{a}:cluster:{n}", "redshift": "arn:aws:redshift:{r}:{a}:cluster:{n}",
    "endpoint": "arn:aws:sagemaker:{r}:{a}:endpoint/{n}", "training": "arn:aws:sagemaker:{r}:{a}:training-job/{n}",
    "notebook": "arn:aws:sagemaker:{r}:{a}:notebook-instance/{n}",
    "model": "arn:aws:bedrock:{r}::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0",
    "none": "", "loggroup": "arn:aws:logs:{r}:{a}:log-group:/aws/{n}",
    "elb": "arn:aws:elasticloadbalancing:{r}:{a}:loadbalancer/app/{n}/{h16}",
    "distribution": "arn:aws:cloudfront::{a}:distribution/E{H13}", "zone": "arn:aws:route53:::hostedzone/Z{H13}",
    "key": "arn:aws:kms:{r}:{a}:key/{u}", "secret": "arn:aws:secretsmanager:{r}:{a}:secret:{n}-{h6}",
    "queue": "arn:aws:sqs:{r}:{a}:{n}", "topic": "arn:aws:sns:{r}:{a}:{n}",
    "stream": "arn:aws:kinesis:{r}:{a}:stream/{n}", "workgroup": "arn:aws:athena:{r}:{a}:workgroup/{n}",
    "gluejob": "arn:aws:glue:{r}:{a}:job/{n}", "domain": "arn:aws:es:{r}:{a}:domain/{n}",
    "filesystem": "arn:aws:elasticfilesystem:{r}:{a}:file-system/fs-0{h16}",
    "vpce": "vpce-0{h16}", "repository": "arn:aws:ecr:{r}:{a}:repository/{n}",
    "kafka": "arn:aws:kafka:{r}:{a}:cluster/{n}/{u}", "statemachine": "arn:aws:states:{r}:{a}:stateMachine:{n}",
}  # fmt: skip

WORDS = (
    "atlas", "beacon", "cobalt", "delta", "ember", "falcon", "granite", "harbor", "iris", "juniper", "kepler",
    "lumen", "meridian", "nova", "orbit", "pulse", "quartz", "raven", "sierra", "tundra", "umbra", "vertex",
    "willow", "xenon", "yukon", "zephyr", "search", "ranker", "embed", "chat", "ingest", "billing", "checkout",
    "catalog", "inference", "training", "feature-store", "etl", "gateway", "auth", "notify", "reports",
)  # fmt: skip
ENVS = ("prod", "staging", "dev", "qa", "sandbox")
BUSINESS_UNITS = ("platform", "ml", "consumer", "enterprise", "data", "security", "growth", "corp-it")
# user tag key, pool size of its values, share of resources tagged with it
TAG_KEYS: tuple[tuple[str, int, float], ...] = (
    ("user_team", 45, 0.85), ("user_env", 5, 0.9), ("user_feature", 60, 0.5), ("user_cost_center", 120, 0.6),
    ("user_owner", 600, 0.4), ("user_application", 80, 0.5), ("user_project", 150, 0.3),
    ("aws_created_by", 200, 0.5), ("aws_eks_cluster_name", 20, 0.15), ("aws_cloudformation_stack_name", 300, 0.25),
)  # fmt: skip

# Share of rows by kind (of the consumption rows, the commitment-eligible share that is covered).
SP_COVERED_SHARE = 0.55  # of "sp"-eligible usage: covered by a Savings Plan (plus its negation line)
RI_COVERED_SHARE = 0.6  # of "ri"-eligible usage: DiscountedUsage
CREDIT_SHARE = 0.002
REFUND_SHARE = 0.0003
SAVINGS_PLANS = 12
HOURS_BEFORE = 31 * 24  # refunds may correct usage of the previous month
RESERVATIONS_PER_SKU = 4


# --- the organization ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Month:
    key: str  # YYYY-MM
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, key: str) -> Month:
        start = datetime.strptime(key + "-01", "%Y-%m-%d").replace(tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1)
        return cls(key, start, end)

    @property
    def hours(self) -> int:
        return int((self.end - self.start).total_seconds() // 3600)

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)


@dataclass(frozen=True)
class Skus:
    """One row per (usage type, region): what every line of that usage type in that region shares."""

    code: pa.Array
    usage_type: pa.Array
    operation: pa.Array
    unit: pa.Array
    rate: np.ndarray
    rate_text: pa.Array
    amount_kind: np.ndarray  # index into AMOUNT_KINDS
    commitment: np.ndarray  # 0 none, 1 sp, 2 ri
    resource_kind: list[str]
    weight: np.ndarray
    family: pa.Array
    sku: pa.Array
    rate_code: pa.Array
    rate_id: pa.Array
    region: pa.Array
    location: pa.Array
    instance_type: pa.Array
    instance_family: pa.Array
    description: pa.Array
    product: pa.Array  # map<string, string>

    def __len__(self) -> int:
        return len(self.rate)


AMOUNT_KINDS = ("hour", "storage", "gb", "requests", "count")


def _code(seed: int, *key: object, length: int = 16, alphabet: str = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789") -> str:
    digest = hashlib.sha256("|".join(map(str, (seed, *key))).encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def _rate_text(rate: float) -> str:
    return format(rate, ".10f").rstrip("0").rstrip(".") or "0"


def build_skus(seed: int) -> Skus:
    rows: list[dict[str, object]] = []
    for code, name, family, usage_types in CATALOG:
        for usage, operation, unit, rate, kind, resource, weight, commitment in usage_types:
            for region, prefix, location, region_weight in REGIONS:
                instance = usage.split(":", 1)[1] if usage.startswith(("BoxUsage:", "SpotUsage:")) else ""
                sku = _code(seed, code, usage, region)
                usage_type = f"{prefix}-{usage}"
                product = {"product_name": name, "servicename": name, "region": region, "usagetype": usage_type}
                if instance:
                    product |= {"instance_type": instance, "operating_system": "Linux", "tenancy": "Shared"}
                rows.append(
                    {
                        "code": code, "usage_type": usage_type, "operation": operation, "unit": unit, "rate": rate,
                        "kind": AMOUNT_KINDS.index(kind), "commitment": ("", "sp", "ri").index(commitment),
                        "resource": resource, "weight": weight * region_weight, "name": name, "family": family,
                        "sku": sku, "rate_code": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                        "rate_id": str(int(hashlib.sha256(sku.encode()).hexdigest()[:10], 16)),
                        "region": region, "location": location,
                        "instance_type": instance, "instance_family": "General purpose" if instance else "",
                        "description": (
                            f"${_rate_text(rate)} per On Demand Linux {instance} Instance Hour"
                            if instance else f"${_rate_text(rate)} per {unit} for {usage_type} in {location}"
                        ),
                        "product": list(product.items()),
                    }
                )  # fmt: skip

    def strings(key: str) -> pa.Array:
        return pa.array([r[key] for r in rows], pa.string())

    return Skus(
        code=strings("code"),
        usage_type=strings("usage_type"),
        operation=strings("operation"),
        unit=strings("unit"),
        rate=np.array([r["rate"] for r in rows], dtype=np.float64),
        rate_text=pa.array([_rate_text(float(r["rate"])) for r in rows], pa.string()),  # type: ignore[arg-type]
        amount_kind=np.array([r["kind"] for r in rows], dtype=np.int8),
        commitment=np.array([r["commitment"] for r in rows], dtype=np.int8),
        resource_kind=[str(r["resource"]) for r in rows],
        weight=np.array([r["weight"] for r in rows], dtype=np.float64),
        family=strings("family"),
        sku=strings("sku"),
        rate_code=strings("rate_code"),
        rate_id=strings("rate_id"),
        region=strings("region"),
        location=strings("location"),
        instance_type=strings("instance_type"),
        instance_family=strings("instance_family"),
        description=strings("description"),
        product=pa.array([r["product"] for r in rows], pa.map_(pa.string(), pa.string())),
    )


@dataclass(frozen=True)
class Organization:
    """Accounts, resources, Savings Plans and reservations of the benchmark company."""

    account_id: pa.Array
    account_name: pa.Array
    cost_category: pa.Array  # map per account
    skus: Skus
    resource_sku: np.ndarray
    resource_account: np.ndarray
    resource_id: pa.Array
    resource_zone: pa.Array
    resource_tags: pa.Array  # map per resource
    plan_arn: pa.Array
    plan_commitment: np.ndarray  # $ per hour
    plan_payment: list[str]
    reservation_arn: pa.Array
    reservation_sku: np.ndarray
    reservation_account: np.ndarray
    reservation_units: np.ndarray
    sku_reservations: np.ndarray  # first reservation index of each sku (-1: none)

    @property
    def accounts(self) -> int:
        return len(self.account_id)

    @property
    def resources(self) -> int:
        return len(self.resource_sku)


def build_organization(seed: int, accounts: int, resources: int) -> Organization:
    rng = np.random.default_rng([seed, 1_000_000])
    skus = build_skus(seed)
    account_ids = [PAYER_ACCOUNT] + [f"{(seed * 7919 + 3) % 900 + 100}{i:09d}" for i in range(1, accounts)]
    account_names = [PAYER_NAME] + [
        f"{WORDS[rng.integers(len(WORDS))]}-{ENVS[rng.integers(len(ENVS))]}-{i:03d}" for i in range(1, accounts)
    ]
    categories = [
        []
        if rng.random() < 0.1
        else [("business_unit", BUSINESS_UNITS[rng.integers(len(BUSINESS_UNITS))]), ("environment", name.split("-")[1])]
        for name in account_names
    ]
    resource_sku = rng.choice(len(skus), size=resources, p=skus.weight / skus.weight.sum())
    resource_account = rng.zipf(1.6, size=resources) % accounts  # a few big accounts, a long tail
    names = [_resource_name(rng, i) for i in range(resources)]
    regions = skus.region.to_pylist()
    ids = [
        _resource_id(rng, skus.resource_kind[s], regions[s], account_ids[a], n)
        for s, a, n in zip(resource_sku, resource_account, names, strict=True)
    ]
    zones = [f"{regions[s]}{'abc'[rng.integers(3)]}" if skus.resource_kind[s] in ZONED else "" for s in resource_sku]
    tag_pools = {key: _tag_values(seed, key, size) for key, size, _ in TAG_KEYS}
    tags = [_resource_tags(rng, tag_pools, n) for n in names]
    plan_arn, plan_commitment, plan_payment = _savings_plans(rng)
    reservations = _reservations(rng, skus, account_ids)
    return Organization(
        account_id=pa.array(account_ids, pa.string()),
        account_name=pa.array(account_names, pa.string()),
        cost_category=pa.array(categories, pa.map_(pa.string(), pa.string())),
        skus=skus,
        resource_sku=resource_sku,
        resource_account=resource_account,
        resource_id=pa.array(ids, pa.string()),
        resource_zone=pa.array(zones, pa.string()),
        resource_tags=pa.array(tags, pa.map_(pa.string(), pa.string())),
        plan_arn=plan_arn,
        plan_commitment=plan_commitment,
        plan_payment=plan_payment,
        **reservations,
    )


def _resource_name(rng: np.random.Generator, index: int) -> str:
    return f"{WORDS[rng.integers(len(WORDS))]}-{WORDS[rng.integers(len(WORDS))]}-{ENVS[rng.integers(5)]}-{index}"


def _hex(rng: np.random.Generator, length: int) -> str:
    return HEX[rng.integers(0, 16, size=length)].tobytes().decode()


def _resource_id(rng: np.random.Generator, kind: str, region: str, account: str, name: str) -> str:
    template = RESOURCE_IDS[kind]
    if not template:
        return ""
    return template.format(
        r=region, a=account, n=name, h16=_hex(rng, 16), h32=_hex(rng, 32), h6=_hex(rng, 6),
        H13=_hex(rng, 13).upper(), u=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
    )  # fmt: skip


def _tag_values(seed: int, key: str, size: int) -> list[str]:
    if key == "user_env":
        return list(ENVS)
    stem = key.removeprefix("user_").removeprefix("aws_").replace("_", "-")
    return [f"{stem}-{WORDS[i % len(WORDS)]}-{_code(seed, key, i, length=4).lower()}" for i in range(size)]


def _resource_tags(rng: np.random.Generator, pools: dict[str, list[str]], name: str) -> list[tuple[str, str]]:
    if rng.random() < 0.12:  # untagged resources
        return []
    tags = [(key, pools[key][rng.integers(len(pools[key]))]) for key, _, share in TAG_KEYS if rng.random() < share]
    if rng.random() < 0.7:
        tags.append(("user_name", name))
    if tags and rng.random() < 0.01:  # a tag set without a value: FOCUS wants ``true``
        tags[-1] = (tags[-1][0], "")
    return tags


def _savings_plans(rng: np.random.Generator) -> tuple[pa.Array, np.ndarray, list[str]]:
    arns = [f"arn:aws:savingsplans::{PAYER_ACCOUNT}:savingsplan/{uuid.UUID(bytes=rng.bytes(16), version=4)}"
            for _ in range(SAVINGS_PLANS)]  # fmt: skip
    commitment = np.round(rng.lognormal(math.log(40), 1.0, size=SAVINGS_PLANS), 2)
    payments = [("No Upfront", "Partial Upfront", "All Upfront")[i % 3] for i in range(SAVINGS_PLANS)]
    return pa.array(arns, pa.string()), commitment, payments


def _reservations(rng: np.random.Generator, skus: Skus, accounts: list[str]) -> dict[str, object]:
    eligible = np.flatnonzero(skus.commitment == 2)
    reservation_sku = np.repeat(eligible, RESERVATIONS_PER_SKU)
    reservation_account = rng.integers(0, len(accounts), size=len(reservation_sku))
    first = np.full(len(skus), -1, dtype=np.int64)
    first[eligible] = np.arange(len(eligible)) * RESERVATIONS_PER_SKU
    codes, regions = skus.code.to_pylist(), skus.region.to_pylist()
    services = {"AmazonRDS": "rds", "AmazonElastiCache": "elasticache", "AmazonRedshift": "redshift", "AmazonES": "es"}
    arns = [
        f"arn:aws:{services.get(codes[s], 'ec2')}:{regions[s]}:{accounts[a]}:reserved-instances/"
        f"{uuid.UUID(bytes=rng.bytes(16))}"
        for s, a in zip(reservation_sku, reservation_account, strict=True)
    ]
    return {
        "reservation_arn": pa.array(arns, pa.string()),
        "reservation_sku": reservation_sku,
        "reservation_account": reservation_account,
        "reservation_units": rng.integers(1, 20, size=len(reservation_sku)),
        "sku_reservations": first,
    }


# --- lines --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How many lines of each kind the delivery has, and which of them row group ``k`` writes."""

    rows: int
    month: Month
    resources: int
    accounts: int
    plan_fees: int  # SavingsPlanRecurringFee lines: plans x hours
    ri_fees: int
    taxes: int
    credits: int
    refunds: int

    @classmethod
    def make(cls, rows: int, month: Month, org: Organization) -> Plan:
        def capped(natural: int, share: float) -> int:
            return min(natural, int(rows * share))

        return cls(
            rows=rows,
            month=month,
            resources=org.resources,
            accounts=org.accounts,
            plan_fees=capped(SAVINGS_PLANS * month.hours, 0.01),
            ri_fees=capped(len(org.reservation_sku), 0.001),
            taxes=capped(org.accounts * len(CATALOG), 0.01),
            credits=int(rows * CREDIT_SHARE),
            refunds=int(rows * REFUND_SHARE),
        )

    @property
    def slots(self) -> int:
        return self.resources * self.month.hours

    def share(self, total: int, natural: int, first_row: int, last_row: int) -> np.ndarray:
        """Which of ``total`` items, spread evenly over a sequence of ``natural`` ones, rows [first, last) hold."""
        lo, hi = total * first_row // self.rows, total * last_row // self.rows
        return np.arange(lo, hi, dtype=np.int64) * natural // max(total, 1)


def _slot_stride(slots: int) -> int:
    """A stride coprime with ``slots``: (stride * j) mod slots visits every (resource, hour) once."""
    stride = int(slots * 0.6180339887) | 1
    while math.gcd(stride, slots) != 1:
        stride += 2
    return stride


Value = pa.Array | np.ndarray | str | float | dict[str, str]


@dataclass
class Columns:
    """The arrays of one group of lines; columns not set are written as nulls of the schema's type."""

    size: int
    arrays: dict[str, pa.Array]

    def set(self, **arrays: Value) -> None:
        for name, value in arrays.items():
            self.arrays[name] = _array(value, self.size, SCHEMA.field(name).type)

    def table(self) -> pa.Table:
        columns = [self.arrays.get(f.name, pa.nulls(self.size, f.type)) for f in SCHEMA]
        return pa.Table.from_arrays(columns, schema=SCHEMA)


def _array(value: Value, size: int, dtype: pa.DataType) -> pa.Array:
    if isinstance(value, pa.Array):
        return value if value.type == dtype else value.cast(dtype)
    if isinstance(value, np.ndarray):
        if pa.types.is_timestamp(dtype):
            return pa.array(value.astype(np.int64), pa.int64()).view(dtype)
        return pa.array(value, dtype)
    if pa.types.is_map(dtype):
        return pa.array([list(value.items()) if isinstance(value, dict) else []], dtype).take(np.zeros(size, np.int32))
    return pa.repeat(pa.scalar(value, dtype), size)


def _line_item_ids(rng: np.random.Generator, size: int) -> pa.Array:
    """52 random lowercase base32 characters per line, the shape of ``identity_line_item_id``."""
    data = ID_ALPHABET[rng.integers(0, 32, size=size * 52, dtype=np.uint8)]
    offsets = np.arange(0, (size + 1) * 52, 52, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), size, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


class Generator:
    """Builds the delivery's row groups one at a time."""

    def __init__(self, seed: int, rows: int, month: Month, accounts: int, resources: int) -> None:
        self.seed = seed
        self.month = month
        self.org = build_organization(seed, accounts, resources)
        self.plan = Plan.make(rows, month, self.org)
        if rows > self.plan.slots:
            raise ValueError(f"--rows {rows} exceeds resources x hours ({self.plan.slots}); raise --resources")
        self.stride = _slot_stride(self.plan.slots)
        self.cursor = 0  # next consumption slot number
        invoice = _code(seed, "invoice", month.key, length=10, alphabet="0123456789")
        self.invoice_id = "2" + invoice[1:]
        moments = [month.start + timedelta(hours=h) for h in range(-HOURS_BEFORE, month.hours + 1)]
        self.hour_text = pa.array([m.strftime("%Y-%m-%dT%H:%M:%SZ") for m in moments], pa.string())

    def row_groups(self, size: int) -> Iterator[pa.Table]:
        for index, first in enumerate(range(0, self.plan.rows, size)):
            last = min(first + size, self.plan.rows)
            yield self.row_group(index, first, last)

    def row_group(self, index: int, first: int, last: int) -> pa.Table:
        rng = np.random.default_rng([self.seed, index])
        plan = self.plan
        groups = [
            self._plan_fees(rng, plan.share(plan.plan_fees, SAVINGS_PLANS * self.month.hours, first, last)),
            self._ri_fees(rng, plan.share(plan.ri_fees, len(self.org.reservation_sku), first, last)),
            self._taxes(rng, plan.share(plan.taxes, self.org.accounts * len(CATALOG), first, last)),
            self._credits(rng, plan.share(plan.credits, plan.credits, first, last).size),
            self._refunds(rng, plan.share(plan.refunds, plan.refunds, first, last).size),
        ]
        special = sum(g.num_rows for g in groups)
        groups = self._consumption(rng, last - first - special) + groups
        return pa.concat_tables([g for g in groups if g.num_rows]).combine_chunks()

    # --- common columns -----------------------------------------------------------------------------

    def _base(self, size: int, kind: str, hour: np.ndarray, hours: int | np.ndarray = 1) -> Columns:
        start_ms = self.month.start_ms + hour.astype(np.int64) * 3_600_000
        columns = Columns(size, {})
        end_hour = hour + hours
        columns.set(
            bill_bill_type="Anniversary", bill_billing_entity="AWS",
            bill_billing_period_start_date=np.full(size, self.month.start_ms),
            bill_billing_period_end_date=np.full(size, int(self.month.end.timestamp() * 1000)),
            bill_invoice_id=self.invoice_id, bill_invoicing_entity=AWS_ENTITY, bill_payer_account_id=PAYER_ACCOUNT,
            bill_payer_account_name=PAYER_NAME, discount={},
            identity_time_interval=pc.binary_join_element_wise(
                self.hour_text.take(hour + HOURS_BEFORE), self.hour_text.take(end_hour + HOURS_BEFORE), "/"
            ),
            line_item_currency_code="USD", line_item_legal_entity=AWS_ENTITY, line_item_line_item_type=kind,
            line_item_tax_type="", line_item_usage_start_date=start_ms,
            line_item_usage_end_date=start_ms + np.asarray(hours, dtype=np.int64) * 3_600_000,
            pricing_currency="USD", cost_category={}, resource_tags={}, product={},
        )  # fmt: skip
        return columns

    def _with_account(self, columns: Columns, account: np.ndarray) -> None:
        columns.set(
            line_item_usage_account_id=self.org.account_id.take(account),
            line_item_usage_account_name=self.org.account_name.take(account),
            cost_category=self.org.cost_category.take(account),
        )

    def _with_sku(self, columns: Columns, sku: np.ndarray) -> None:
        s = self.org.skus
        columns.set(
            line_item_product_code=s.code.take(sku), line_item_usage_type=s.usage_type.take(sku),
            line_item_operation=s.operation.take(sku), pricing_unit=s.unit.take(sku),
            pricing_rate_code=s.rate_code.take(sku), pricing_rate_id=s.rate_id.take(sku),
            pricing_public_on_demand_rate=s.rate_text.take(sku), product=s.product.take(sku),
            product_product_family=s.family.take(sku),
            product_servicecode=s.code.take(sku), product_sku=s.sku.take(sku), product_usagetype=s.usage_type.take(sku),
            product_operation=s.operation.take(sku), product_region_code=s.region.take(sku),
            product_location=s.location.take(sku), product_location_type="AWS Region",
            product_instance_type=s.instance_type.take(sku), product_instance_family=s.instance_family.take(sku),
        )  # fmt: skip

    # --- usage and commitments ---------------------------------------------------------------------

    def _consumption(self, rng: np.random.Generator, rows: int) -> list[pa.Table]:
        """Usage, SavingsPlanCoveredUsage + SavingsPlanNegation, DiscountedUsage: exactly ``rows`` lines."""
        if rows <= 0:
            return []
        org, plan = self.org, self.plan
        slot = (np.arange(self.cursor, self.cursor + rows, dtype=np.int64) * self.stride) % plan.slots
        resource, hour = slot % plan.resources, slot // plan.resources
        sku = org.resource_sku[resource]
        commitment = org.skus.commitment[sku]
        draw = rng.random(rows)
        covered = (commitment == 1) & (draw < SP_COVERED_SHARE)
        discounted = (commitment == 2) & (draw < RI_COVERED_SHARE)
        lines = 1 + covered  # a covered line brings its negation
        taken = int(np.searchsorted(np.cumsum(lines), rows, side="right"))
        if int(lines[:taken].sum()) < rows:  # one line short: the next one is plain usage
            covered[taken] = discounted[taken] = False
            taken += 1
        self.cursor += taken
        resource, hour, sku, covered, discounted = (a[:taken] for a in (resource, hour, sku, covered, discounted))
        amount = self._amounts(rng, sku)
        cost = np.round(amount * org.skus.rate[sku], 10)
        tables = []
        for kind, mask in (
            ("Usage", ~covered & ~discounted),
            ("SavingsPlanCoveredUsage", covered),
            ("SavingsPlanNegation", covered),
            ("DiscountedUsage", discounted),
        ):
            i = np.flatnonzero(mask)
            tables.append(self._usage_lines(rng, kind, resource[i], hour[i], sku[i], amount[i], cost[i]))
        return tables

    def _amounts(self, rng: np.random.Generator, sku: np.ndarray) -> np.ndarray:
        kind = self.org.skus.amount_kind[sku]
        size = len(sku)
        partial = rng.random(size) < 0.15
        hour = np.where(partial, np.round(rng.uniform(0.02, 1.0, size), 10), 1.0)
        storage = np.round(rng.lognormal(math.log(300), 1.6, size) / self.month.hours, 10)
        gb = np.round(rng.lognormal(math.log(4), 2.0, size), 10)
        requests = np.round(rng.lognormal(math.log(20_000), 2.0, size))
        count = np.round(rng.integers(1, 400, size) / self.month.hours, 10)
        return np.choose(kind, [hour, storage, gb, requests, count])

    def _usage_lines(
        self,
        rng: np.random.Generator,
        kind: str,
        resource: np.ndarray,
        hour: np.ndarray,
        sku: np.ndarray,
        amount: np.ndarray,
        cost: np.ndarray,
    ) -> pa.Table:
        org = self.org
        size = len(resource)
        columns = self._base(size, kind, hour)
        account = org.resource_account[resource]
        self._with_account(columns, account)
        self._with_sku(columns, sku)
        rate = org.skus.rate_text.take(sku)
        columns.set(
            identity_line_item_id=_line_item_ids(rng, size),
            line_item_availability_zone=org.resource_zone.take(resource),
            line_item_resource_id=org.resource_id.take(resource),
            resource_tags=org.resource_tags.take(resource),
            line_item_usage_amount=amount,
            line_item_unblended_rate=rate, line_item_blended_rate=rate,
            line_item_unblended_cost=cost, line_item_blended_cost=cost,
            line_item_line_item_description=org.skus.description.take(sku),
            pricing_public_on_demand_cost=cost, pricing_term="OnDemand",
        )  # fmt: skip
        if kind == "Usage":  # spot capacity is billed as Usage at the spot price
            spot = pc.match_substring(org.skus.usage_type.take(sku), "SpotUsage")
            columns.set(pricing_term=pc.if_else(spot, "Spot", "OnDemand"))
        if kind in ("SavingsPlanCoveredUsage", "SavingsPlanNegation"):
            self._savings_plan_usage(rng, columns, kind, resource, sku, cost, account)
        elif kind == "DiscountedUsage":
            self._reserved_usage(rng, columns, resource, sku, cost)
        return columns.table()

    def _savings_plan_usage(
        self,
        rng: np.random.Generator,
        columns: Columns,
        kind: str,
        resource: np.ndarray,
        sku: np.ndarray,
        cost: np.ndarray,
        account: np.ndarray,
    ) -> None:
        org = self.org
        plan = resource % SAVINGS_PLANS
        discount = 0.28 + (resource % 17) / 100  # the plan's discount differs per instance family
        sp_rate = np.round(org.skus.rate[sku] * (1 - discount), 10)
        columns.set(
            savings_plan_savings_plan_a_r_n=org.plan_arn.take(plan),
            savings_plan_offering_type="ComputeSavingsPlans", savings_plan_purchase_term="3yr",
            savings_plan_payment_option=pa.array(org.plan_payment).take(plan),
            savings_plan_start_time="2024-07-01T00:00:00.000Z", savings_plan_end_time="2027-06-30T23:59:59.000Z",
            savings_plan_savings_plan_rate=sp_rate,
        )  # fmt: skip
        if kind == "SavingsPlanCoveredUsage":
            columns.set(
                savings_plan_savings_plan_effective_cost=np.round(cost * (1 - discount), 10),
                line_item_line_item_description=pc.binary_join_element_wise(
                    "USD ", org.skus.rate_text.take(sku), " per On Demand ", org.skus.usage_type.take(sku), ""
                ),
            )
            return
        negative_rate = pc.binary_join_element_wise("-", org.skus.rate_text.take(sku), "")
        columns.set(
            line_item_unblended_cost=-cost, line_item_blended_cost=-cost, pricing_public_on_demand_cost=0.0,
            line_item_unblended_rate=negative_rate, line_item_blended_rate=negative_rate,
            line_item_line_item_description=pc.binary_join_element_wise(
                "SavingsPlanNegation used by AccountId : ", org.account_id.take(account),
                " and UsageSku : ", org.skus.sku.take(sku), "",
            ),
            identity_line_item_id=_line_item_ids(rng, len(resource)),
        )  # fmt: skip

    def _reserved_usage(
        self, rng: np.random.Generator, columns: Columns, resource: np.ndarray, sku: np.ndarray, cost: np.ndarray
    ) -> None:
        org = self.org
        reservation = org.sku_reservations[sku] + resource % RESERVATIONS_PER_SKU
        effective = np.round(cost * 0.62, 10)
        upfront = np.round(effective * 0.4, 10)
        columns.set(
            line_item_unblended_cost=0.0, line_item_blended_cost=0.0,
            line_item_unblended_rate="0.0", line_item_blended_rate="0.0", pricing_term="Reserved",
            reservation_reservation_a_r_n=org.reservation_arn.take(reservation),
            reservation_effective_cost=effective, reservation_amortized_upfront_cost_for_usage=upfront,
            reservation_recurring_fee_for_usage=np.round(effective - upfront, 10),
            reservation_start_time="2024-11-01T00:00:00.000Z", reservation_end_time="2027-10-31T23:59:59.000Z",
            line_item_line_item_description=pc.binary_join_element_wise(
                "USD 0.0 hourly fee per ", org.skus.usage_type.take(sku), " reserved instance", ""
            ),
        )  # fmt: skip

    def _plan_fees(self, rng: np.random.Generator, items: np.ndarray) -> pa.Table:
        """SavingsPlanRecurringFee: every plan, every hour, with how much of its commitment was used."""
        org, size = self.org, len(items)
        plan, hour = items % SAVINGS_PLANS, items // SAVINGS_PLANS
        commitment = org.plan_commitment[plan]
        used = np.round(commitment * rng.uniform(0.82, 1.0, size), 10)
        columns = self._base(size, "SavingsPlanRecurringFee", hour)
        self._with_account(columns, np.zeros(size, dtype=np.int64))
        columns.set(
            identity_line_item_id=_line_item_ids(rng, size), line_item_product_code="ComputeSavingsPlans",
            product_servicecode="ComputeSavingsPlans", product={"product_name": "Savings Plans for AWS Compute usage"},
            line_item_usage_type="ComputeSP:3yrNoUpfront", pricing_unit="Hrs", pricing_term="Savings Plan",
            line_item_resource_id=org.plan_arn.take(plan), line_item_usage_amount=np.ones(size),
            line_item_unblended_cost=commitment, line_item_blended_cost=commitment,
            line_item_unblended_rate=pa.array(commitment.astype(str)), line_item_line_item_description=(
                "3 year No Upfront Compute Savings Plan"),
            savings_plan_savings_plan_a_r_n=org.plan_arn.take(plan), savings_plan_offering_type="ComputeSavingsPlans",
            savings_plan_payment_option=pa.array(org.plan_payment).take(plan), savings_plan_purchase_term="3yr",
            savings_plan_total_commitment_to_date=commitment, savings_plan_used_commitment=used,
            savings_plan_recurring_commitment_for_billing_period=commitment * self.month.hours,
            savings_plan_amortized_upfront_commitment_for_billing_period=np.zeros(size),
        )  # fmt: skip
        return columns.table()

    def _ri_fees(self, rng: np.random.Generator, items: np.ndarray) -> pa.Table:
        """RIFee: one line a month per reservation, with its unused amortized upfront and recurring fee."""
        org, size = self.org, len(items)
        sku = org.reservation_sku[items]
        units = org.reservation_units[items]
        hours = self.month.hours
        fee = np.round(org.skus.rate[sku] * 0.37 * units * hours, 10)
        unused_share = rng.uniform(0.0, 0.15, size)
        columns = self._base(size, "RIFee", np.zeros(size, dtype=np.int64), hours)
        self._with_account(columns, org.reservation_account[items])
        self._with_sku(columns, sku)
        columns.set(
            identity_line_item_id=_line_item_ids(rng, size), pricing_term="Reserved",
            line_item_resource_id=org.reservation_arn.take(items), line_item_usage_amount=(units * hours).astype(float),
            line_item_unblended_cost=fee, line_item_blended_cost=fee, pricing_public_on_demand_cost=0.0,
            line_item_line_item_description=pc.binary_join_element_wise(
                "USD ", pa.array(np.round(fee / (units * hours), 6).astype(str)), " hourly fee per ",
                org.skus.usage_type.take(sku), "",
            ),
            reservation_reservation_a_r_n=org.reservation_arn.take(items),
            reservation_total_reserved_units=pa.array(units.astype(str)),
            reservation_number_of_reservations=pa.array(units.astype(str)),
            reservation_unused_amortized_upfront_fee_for_billing_period=np.round(fee * 0.6 * unused_share, 10),
            reservation_unused_recurring_fee=np.round(fee * unused_share, 10),
            reservation_amortized_upfront_fee_for_billing_period=np.round(fee * 0.6, 10),
            reservation_unused_quantity=np.round(units * hours * unused_share, 10),
        )  # fmt: skip
        return columns.table()

    def _taxes(self, rng: np.random.Generator, items: np.ndarray) -> pa.Table:
        """Tax: one line a month per (account, service)."""
        size = len(items)
        account, service = items % self.org.accounts, items // self.org.accounts % len(CATALOG)
        codes = pa.array([code for code, *_ in CATALOG], pa.string())
        tax = np.round(rng.lognormal(math.log(40), 1.8, size), 2)
        columns = self._base(size, "Tax", np.zeros(size, dtype=np.int64), self.month.hours)
        self._with_account(columns, account)
        columns.set(
            identity_line_item_id=_line_item_ids(rng, size), line_item_product_code=codes.take(service),
            line_item_tax_type=pa.array(np.where(rng.random(size) < 0.8, "Sales Tax", "VAT")),
            line_item_unblended_cost=tax, line_item_blended_cost=tax, line_item_usage_type="",
            line_item_line_item_description=pc.binary_join_element_wise(
                "Tax for product code ", codes.take(service), ""
            ),
            product_servicecode=codes.take(service),
        )  # fmt: skip
        return columns.table()

    def _credits(self, rng: np.random.Generator, size: int) -> pa.Table:
        """Credit: promotional and service credits on hourly usage of some accounts."""
        org = self.org
        account = rng.integers(0, org.accounts, size)
        sku = rng.integers(0, len(org.skus), size)
        amount = -np.round(rng.lognormal(math.log(2), 1.5, size), 10)
        columns = self._base(size, "Credit", rng.integers(0, self.month.hours, size))
        self._with_account(columns, account)
        self._with_sku(columns, sku)
        columns.set(
            identity_line_item_id=_line_item_ids(rng, size), line_item_usage_amount=np.zeros(size),
            line_item_unblended_cost=amount, line_item_blended_cost=amount, line_item_unblended_rate="",
            line_item_line_item_description=pa.array(
                np.where(rng.random(size) < 0.7, "AWS Activate Credits", "AWS Service Credit")
            ),
        )  # fmt: skip
        return columns.table()

    def _refunds(self, rng: np.random.Generator, size: int) -> pa.Table:
        """Refund: of tax, of a commitment, of usage in this or (as a correction) the previous month."""
        org = self.org
        account = rng.integers(0, org.accounts, size)
        sku = rng.integers(0, len(org.skus), size)
        what = rng.random(size)
        amount = -np.round(rng.lognormal(math.log(15), 1.5, size), 10)
        hour = np.where(what > 0.7, -rng.integers(1, 24 * 28, size), rng.integers(0, self.month.hours, size))
        columns = self._base(size, "Refund", hour)
        self._with_account(columns, account)
        self._with_sku(columns, sku)
        plan = rng.integers(0, SAVINGS_PLANS, size)
        columns.set(
            identity_line_item_id=_line_item_ids(rng, size), line_item_usage_amount=np.zeros(size),
            line_item_unblended_cost=amount, line_item_blended_cost=amount,
            line_item_tax_type=pa.array(np.where(what < 0.3, "Sales Tax", "")),
            savings_plan_savings_plan_a_r_n=pc.if_else(
                pa.array((what >= 0.3) & (what < 0.5)), org.plan_arn.take(plan), pa.scalar("", pa.string())
            ),
            line_item_line_item_description=pa.array(
                np.where(what < 0.3, "Refund of sales tax", "Refund for service issue")
            ),
        )  # fmt: skip
        return columns.table()


# --- the delivery -------------------------------------------------------------------------------------------


def write_export(
    out_dir: Path,
    rows: int,
    seed: int = 7,
    month: str = "2025-01",
    accounts: int = 300,
    resources: int = 50_000,
    rows_per_file: int = 500_000,
    row_group_size: int = 100_000,
) -> Path:
    """Write the delivery (data files, then the manifest) under ``out_dir`` and return the export folder."""
    period = Month.parse(month)
    generator = Generator(seed, rows, period, accounts, resources)
    root = out_dir / EXPORT_NAME
    data_dir = root / "data" / f"BILLING_PERIOD={period.key}"
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob("*.parquet"):
        stale.unlink()
    paths: list[Path] = []
    writer: pq.ParquetWriter | None = None
    written = 0
    for table in generator.row_groups(row_group_size):
        if writer is None or written >= rows_per_file:
            if writer is not None:
                writer.close()
            paths.append(data_dir / f"{EXPORT_NAME}-{len(paths) + 1:05d}.snappy.parquet")
            writer, written = pq.ParquetWriter(paths[-1], SCHEMA, compression="snappy"), 0
        writer.write_table(table, row_group_size=table.num_rows)
        written += table.num_rows
    if writer is not None:
        writer.close()
    _write_manifest(root, period, seed, paths)
    return root


def _write_manifest(root: Path, period: Month, seed: int, paths: Sequence[Path]) -> None:
    """``<export>-Manifest.json`` as Data Exports writes it, after the data files."""
    execution = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{EXPORT_NAME}/{period.key}/{seed}"))
    base = f"s3://{EXPORT_BUCKET}/{EXPORT_PREFIX}/{EXPORT_NAME}"
    manifest = {
        "exportArn": f"arn:aws:bcm-data-exports:us-east-1:{PAYER_ACCOUNT}:export/{EXPORT_NAME}-{execution[:8]}",
        "exportName": EXPORT_NAME,
        "executionId": execution,
        "exportTime": (period.end + timedelta(days=2, hours=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "billingPeriod": {
            "start": period.start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "end": period.end.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        },
        "bucket": EXPORT_BUCKET,
        "prefix": EXPORT_PREFIX,
        "columns": [{"name": name, "type": kind} for name, kind in CUR2_COLUMNS],
        "dataFiles": [f"{base}/{p.relative_to(root).as_posix()}" for p in paths],
    }
    folder = root / "metadata" / f"BILLING_PERIOD={period.key}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{EXPORT_NAME}-Manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "cur2")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--month", default="2025-01")
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--resources", type=int, default=50_000)
    parser.add_argument("--rows-per-file", type=int, default=500_000, help="a new file starts once one holds this many")
    parser.add_argument("--row-group-size", type=int, default=100_000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    root = write_export(
        args.out, args.rows, args.seed, args.month, args.accounts, args.resources, args.rows_per_file,
        args.row_group_size,
    )  # fmt: skip
    size = sum(p.stat().st_size for p in root.rglob("*.parquet"))
    print(f"{args.rows:,} rows in {size / 2**20:,.0f} MiB under {root} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
