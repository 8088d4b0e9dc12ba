"""AWS Data Exports — Cost and Usage Report 2.0 (Parquet or gzipped CSV) → FOCUS 1.2 rows, streamed.

Follows the AWS Data Exports User Guide:
- [DEL] "Understanding export delivery" (docs.aws.amazon.com/cur/latest/userguide/dataexports-export-delivery.html):
  data in ``<export>/data/BILLING_PERIOD=YYYY-MM/[<timestamp>-<execution-id>/]<export-name>-NNNNN.<ext>``,
  the manifest in ``<export>/metadata/BILLING_PERIOD=YYYY-MM/<export-name>-Manifest.json`` (the page's
  summary also names it plain ``Manifest.json``; both are accepted). The manifest in the partition folder
  always describes the latest refresh, is written after its data files, and "we recommend identifying
  which files to ingest by programmatically reading this list": only its ``dataFiles`` are read, so
  chunks of an older delivery (kept in "create new" mode, or left over in "overwrite" mode) never are.
  Its ``executionId`` names the delivery (``current_delivery``; the sensor watches it).
- S3OutputConfigurations (Data Exports API): ``Format`` TEXT_OR_CSV with ``Compression`` GZIP, or
  PARQUET; ``.csv.gz`` (and plain ``.csv``) data files are read like Parquet ones. In CSV every value
  is text and the map columns are JSON objects (``{"user_team":"ml"}``); the data dictionary types them
  ``map<string, string>`` and does not describe their CSV spelling (an open doubt, see the report).
- [DICT] The CUR 2.0 table dictionary (``table-dictionary-cur2-*``): amounts ``double``, rates ``string``,
  ``product``/``resource_tags``/``cost_category`` maps, blank strings mean "no value"; the ``*_net_*``
  columns carry amounts after discounts; [DC] "Discount columns" (``table-dictionary-cur2-discount``):
  with "manual discount compatibility" discounts are separate line items instead of the ``discount`` map.
- [LI] "Line item details" (``Lineitem-columns``): the meaning of each ``line_item_line_item_type``.
- [SP] "Understanding Savings Plans" (``cur-sp``); [RI] "Reservation details" (``reservation-columns``,
  ``table-dictionary-cur2-reservation``).
- [FOCUS] FOCUS 1.2: Discount Handling, EffectiveCost (C-010, C-012), CommitmentDiscountQuantity/Unit,
  PricingQuantity/Category nullability; and reference/focus_mappings.md, which lists where the
  focus_converters rules ([FC]) are stale.

Line item type → FOCUS. n‖g ("net ‖ gross") = the ``*_net_*`` column when the delivery carries it,
else its gross twin; Billed n‖g is ``line_item_net_unblended_cost`` ‖ ``line_item_unblended_cost``.
Cat / Freq = ChargeCategory / ChargeFrequency (U-B = Usage-Based); CD = CommitmentDiscountStatus;
CommitmentDiscountQuantity (Savings Plans in the billing currency, RIs in their pricing unit). The src
column names the sources above (F = [FOCUS]).

| line item type          | Cat / Freq           | Billed | EffectiveCost                | CD                 | src   |
|-------------------------|----------------------|--------|------------------------------|--------------------|-------|
| Usage                   | Usage / U-B          | n‖g    | = BilledCost                 | —                  | LI    |
| SavingsPlanCoveredUsage | Usage / U-B          | 0      | SP effective cost n‖g        | Used; SP eff. $    | SP F  |
| SavingsPlanNegation     | folded (not emitted) | —      | —                            | —                  | SP    |
| SavingsPlanRecurringFee | Purchase / Recurring | n‖g    | 0                            | —; commitment      | SP F  |
| … its unused part       | Usage / U-B          | 0      | (total−used) × net/gross     | Unused; total−used | SP F  |
| SavingsPlanUpfrontFee   | Purchase / One-Time  | n‖g    | 0                            | —; the fee         | SP F  |
| DiscountedUsage         | Usage / U-B          | n‖g    | RI effective cost n‖g        | Used; usage        | RI LI |
| RIFee                   | Purchase / Recurring | n‖g    | 0                            | —; reserved units  | RI LI |
| … its unused part       | Usage / U-B          | 0      | unused upfront+recurring n‖g | Unused; unused qty | RI F  |
| Fee + reservation ARN   | Purchase / One-Time  | n‖g    | 0 (RI upfront fee)           | —; reserved units  | LI FC |
| Fee (other)             | Purchase / One-Time¹ | n‖g    | = BilledCost                 | —                  | LI    |
| Credit                  | Credit / One-Time    | n‖g    | = BilledCost                 | —                  | LI F  |
| Refund                  | what it refunds²     | n‖g    | = BilledCost                 | —                  | LI FC |
| Tax                     | Tax / One-Time       | n‖g    | = BilledCost                 | —                  | LI    |
| discounts³              | Usage / U-B          | n‖g    | = BilledCost                 | —                  | DC FC |

¹ Recurring on Anniversary bills. ² Tax when it has a tax type, Purchase when it names a commitment,
else Usage; ChargeClass ``Correction`` when it refunds an earlier period (FOCUS 1.0 changelog: Usage,
Purchase and Tax "include refunds"). ³ EdpDiscount, PrivateRateDiscount, BundledDiscount, Discount,
SppDiscount, DistributorDiscount, RiVolumeDiscount. Covered usage and unused rows are PricingCategory
``Committed``; spot usage ``Dynamic``; other usage, offsets and purchases ``Standard``; Tax/Credit NULL.

Why each choice:
- BilledCost sums to the invoice: net unblended is "the actual after-discount cost" [DICT]; when net
  columns exist the discount line items' net is 0 (their amount already lowers the usage lines' net
  cost), otherwise their negative unblended cost is what lowers the bill.
- SavingsPlanCoveredUsage is billed at on-demand and offset by SavingsPlanNegation lines, which AWS
  groups per hour, plan, operation, usage type and zone ("one SavingsPlanNegation line item might
  correspond to multiple SavingsPlanCoveredUsage line items", [SP]). FOCUS says a fully covered row has
  BilledCost 0, so the covered row gets 0 and the negation is folded into it (not emitted): both sum to
  0 by construction, and ``source_total`` (summed from every raw line) shows any difference.
- EffectiveCost amortizes: commitment fees are Purchases with EffectiveCost 0 ([FOCUS] EffectiveCost-C-005);
  covered usage carries the plan's/RI's effective cost; the unused part of a recurring fee becomes a
  Usage row with CommitmentDiscountStatus ``Unused`` from the same CUR line, so per commitment
  sum(EffectiveCost of Usage) = sum(BilledCost of Purchase) ([FOCUS] EffectiveCost-C-012).
  CUR has no net unused-commitment column for Savings Plans: the unused part is scaled by the plan's
  net/gross commitment for the billing period when both are present (a derivation, not a documented value).
- ContractedUnitPrice excludes commitment discounts [FOCUS]: net ‖ gross unblended rate, but on
  DiscountedUsage (rate 0) the public on-demand rate. ContractedCost and ListCost are unit price ×
  PricingQuantity when the price is known; else fees list at their gross (pre-discount) amount and
  credits and tax at BilledCost ([FOCUS] ListCost-C-008); discount lines have ListCost 0.
- CommitmentDiscountQuantity/Unit: Savings Plans are spend commitments measured in the billing
  currency (as the FOCUS 1.2 examples do); RIs in their pricing unit (``Hrs`` → ``Hours``).
- ChargeFrequency: usage and its offsets Usage-Based, recurring fees Recurring, the rest One-Time
  (FOCUS: a Purchase is never Usage-Based).
- Tags: ``resource_tags`` keys ``user_<key>`` (user-defined cost allocation tags, as CUR normalizes them:
  lower snake case, e.g. ``CostCenter`` → ``user_cost_center``; legacy ``user:<key>`` too) become plain
  ``<key>``, so allocation rules name the normalized key. AWS-generated keys keep their ``aws_``
  provider prefix; cost categories are added as ``costCategory/<name>``. A tag with an empty value
  becomes ``true`` (FOCUS key-value format). ``ResourceName`` is the ``Name`` tag, else the ARN's name.

Bad input: a missing required column is a SourceError naming the file and the column (line-type
columns only when lines of that type exist); an unknown column is counted in the stats; an unreadable
Parquet/CSV file or a file named in the manifest that is missing is a SourceError naming the file; a
line with an unknown type, an empty required value, another billing period or a negative usage amount
on a usage line is quarantined with its reason (credits, refunds and negations are negative by nature).

Provider quirks handled:
- ``dataFiles`` are absolute ``s3://`` URLs of the bucket AWS delivered to; they are resolved under the
  configured export folder from their ``data/BILLING_PERIOD=…`` part, so a replicated bucket or a local
  copy of the export reads the same files.
- Amounts are doubles: each is read as the decimal it was written from (its shortest representation),
  rounded half-even to ``MONEY_SCALE`` places, so ``22.9408`` is exactly ``Decimal("22.9408")``.
- ``savings_plan_savings_plan_a_r_n`` / ``reservation_reservation_a_r_n`` are CUR 2.0's spellings of the ARNs.

Streaming: ``load_batches`` yields one ``LoadResult`` per ``batch_rows`` rows of a data file (a Parquet
slice of that many rows; CSV blocks cut to size), each with its own ``source_total``;
only the needed columns are read and S3 objects are spooled to a temporary file, so memory stays bounded
whatever the delivery's size. ``x_source_file`` is the data file's path or URL, ``x_source_line`` the
1-based row number (Parquet) or the record's line number (CSV: header = line 1; a value spanning lines
counts as one).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from connectors.s3 import S3Reader, is_s3_url, join_s3_url
from models.config import AwsCur2Source
from models.focus import MONEY, TIMESTAMP

PROVIDER = "AWS"
DEFAULT_ENTITY = "Amazon Web Services, Inc."
# Rows per streamed batch: the batches in flight are most of a load's memory beyond imports and DuckDB. Peak of
# a 1M-row load (benchmarks/README.md, CUR section): 25k ~170 MiB below 50k for about the same CPU; 10k ~60 MiB
# less again for ~45 % more CPU (polars' fixed cost per expression and batch).
BATCH_ROWS = 25_000
_PARSE_SCALE = 18  # read decimals wider than MONEY, then round half-even to MONEY_SCALE
_CSV_BLOCK_BYTES = 16 << 20
_EXACT_FLOAT_BOUND = 1000.0  # see _float_as_decimal
_DATA_PARTITION = re.compile(r"(?:^|/)(data/BILLING_PERIOD=(\d{4}-\d{2})/.+)$")

# --- line item types -------------------------------------------------------------------------------
CONSUMPTION = ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage")
OFFSETS = (
    "Discount", "BundledDiscount", "EdpDiscount", "PrivateRateDiscount", "SppDiscount", "DistributorDiscount",
    "RiVolumeDiscount",
)  # fmt: skip
# Region code → name, as ``product_location`` spells them (AWS General Reference, "Regions and Zones").
AWS_REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)", "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)", "af-south-1": "Africa (Cape Town)", "ap-east-1": "Asia Pacific (Hong Kong)",
    "ap-south-1": "Asia Pacific (Mumbai)", "ap-south-2": "Asia Pacific (Hyderabad)",
    "ap-southeast-1": "Asia Pacific (Singapore)", "ap-southeast-2": "Asia Pacific (Sydney)",
    "ap-southeast-3": "Asia Pacific (Jakarta)", "ap-southeast-4": "Asia Pacific (Melbourne)",
    "ap-northeast-1": "Asia Pacific (Tokyo)", "ap-northeast-2": "Asia Pacific (Seoul)",
    "ap-northeast-3": "Asia Pacific (Osaka)", "ca-central-1": "Canada (Central)", "ca-west-1": "Canada West (Calgary)",
    "eu-central-1": "EU (Frankfurt)", "eu-central-2": "EU (Zurich)", "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)", "eu-west-3": "EU (Paris)", "eu-north-1": "EU (Stockholm)", "eu-south-1": "EU (Milan)",
    "eu-south-2": "EU (Spain)", "il-central-1": "Israel (Tel Aviv)", "me-south-1": "Middle East (Bahrain)",
    "me-central-1": "Middle East (UAE)", "sa-east-1": "South America (Sao Paulo)",
    "us-gov-east-1": "AWS GovCloud (US-East)", "us-gov-west-1": "AWS GovCloud (US-West)",
}  # fmt: skip
PURCHASES = ("SavingsPlanRecurringFee", "SavingsPlanUpfrontFee", "RIFee", "Fee")
NEGATION = "SavingsPlanNegation"
KNOWN_LINE_ITEM_TYPES = (*CONSUMPTION, NEGATION, *OFFSETS, *PURCHASES, "Tax", "Credit", "Refund")
SAVINGS_PLAN_TYPES = ("SavingsPlanCoveredUsage", NEGATION, "SavingsPlanRecurringFee", "SavingsPlanUpfrontFee")
RESERVATION_TYPES = ("DiscountedUsage", "RIFee")
COMMITMENT_FEES = ("SavingsPlanRecurringFee", "RIFee")
COVERED = ("SavingsPlanCoveredUsage", "DiscountedUsage")

# --- the CUR 2.0 table (data dictionary order) with its Data Exports types -------------------------------
STRING, DOUBLE, TIMESTAMP_TYPE, MAP = "string", "double", "timestamp", "map"
CUR2_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bill_bill_type", STRING), ("bill_billing_entity", STRING), ("bill_billing_period_end_date", TIMESTAMP_TYPE),
    ("bill_billing_period_start_date", TIMESTAMP_TYPE), ("bill_invoice_id", STRING),
    ("bill_invoicing_entity", STRING), ("bill_payer_account_id", STRING), ("bill_payer_account_name", STRING),
    ("cost_category", MAP), ("discount", MAP), ("discount_bundled_discount", DOUBLE),
    ("discount_total_discount", DOUBLE), ("identity_line_item_id", STRING), ("identity_time_interval", STRING),
    ("line_item_availability_zone", STRING), ("line_item_blended_cost", DOUBLE),
    ("line_item_blended_rate", STRING), ("line_item_currency_code", STRING), ("line_item_legal_entity", STRING),
    ("line_item_line_item_description", STRING), ("line_item_line_item_type", STRING),
    ("line_item_net_unblended_cost", DOUBLE), ("line_item_net_unblended_rate", STRING),
    ("line_item_normalization_factor", DOUBLE), ("line_item_normalized_usage_amount", DOUBLE),
    ("line_item_operation", STRING), ("line_item_product_code", STRING), ("line_item_resource_id", STRING),
    ("line_item_tax_type", STRING), ("line_item_unblended_cost", DOUBLE), ("line_item_unblended_rate", STRING),
    ("line_item_usage_account_id", STRING), ("line_item_usage_account_name", STRING),
    ("line_item_usage_amount", DOUBLE), ("line_item_usage_end_date", TIMESTAMP_TYPE),
    ("line_item_usage_start_date", TIMESTAMP_TYPE), ("line_item_usage_type", STRING),
    ("pricing_currency", STRING), ("pricing_lease_contract_length", STRING), ("pricing_offering_class", STRING),
    ("pricing_public_on_demand_cost", DOUBLE), ("pricing_public_on_demand_rate", STRING),
    ("pricing_purchase_option", STRING), ("pricing_rate_code", STRING), ("pricing_rate_id", STRING),
    ("pricing_term", STRING), ("pricing_unit", STRING), ("product", MAP), ("product_comment", STRING),
    ("product_fee_code", STRING), ("product_fee_description", STRING), ("product_from_location", STRING),
    ("product_from_location_type", STRING), ("product_from_region_code", STRING),
    ("product_instance_family", STRING), ("product_instance_type", STRING), ("product_instancesku", STRING),
    ("product_location", STRING), ("product_location_type", STRING), ("product_operation", STRING),
    ("product_pricing_unit", STRING), ("product_product_family", STRING), ("product_region_code", STRING),
    ("product_servicecode", STRING), ("product_sku", STRING), ("product_to_location", STRING),
    ("product_to_location_type", STRING), ("product_to_region_code", STRING), ("product_usagetype", STRING),
    ("reservation_amortized_upfront_cost_for_usage", DOUBLE),
    ("reservation_amortized_upfront_fee_for_billing_period", DOUBLE), ("reservation_availability_zone", STRING),
    ("reservation_effective_cost", DOUBLE), ("reservation_end_time", STRING),
    ("reservation_modification_status", STRING), ("reservation_net_amortized_upfront_cost_for_usage", DOUBLE),
    ("reservation_net_amortized_upfront_fee_for_billing_period", DOUBLE),
    ("reservation_net_effective_cost", DOUBLE), ("reservation_net_recurring_fee_for_usage", DOUBLE),
    ("reservation_net_unused_amortized_upfront_fee_for_billing_period", DOUBLE),
    ("reservation_net_unused_recurring_fee", DOUBLE), ("reservation_net_upfront_value", DOUBLE),
    ("reservation_normalized_units_per_reservation", STRING), ("reservation_number_of_reservations", STRING),
    ("reservation_recurring_fee_for_usage", DOUBLE), ("reservation_reservation_a_r_n", STRING),
    ("reservation_start_time", STRING), ("reservation_subscription_id", STRING),
    ("reservation_total_reserved_normalized_units", STRING), ("reservation_total_reserved_units", STRING),
    ("reservation_units_per_reservation", STRING),
    ("reservation_unused_amortized_upfront_fee_for_billing_period", DOUBLE),
    ("reservation_unused_normalized_unit_quantity", DOUBLE), ("reservation_unused_quantity", DOUBLE),
    ("reservation_unused_recurring_fee", DOUBLE), ("reservation_upfront_value", DOUBLE), ("resource_tags", MAP),
    ("savings_plan_amortized_upfront_commitment_for_billing_period", DOUBLE), ("savings_plan_end_time", STRING),
    ("savings_plan_instance_type_family", STRING),
    ("savings_plan_net_amortized_upfront_commitment_for_billing_period", DOUBLE),
    ("savings_plan_net_recurring_commitment_for_billing_period", DOUBLE),
    ("savings_plan_net_savings_plan_effective_cost", DOUBLE), ("savings_plan_offering_type", STRING),
    ("savings_plan_payment_option", STRING), ("savings_plan_purchase_term", STRING),
    ("savings_plan_recurring_commitment_for_billing_period", DOUBLE), ("savings_plan_region", STRING),
    ("savings_plan_savings_plan_a_r_n", STRING), ("savings_plan_savings_plan_effective_cost", DOUBLE),
    ("savings_plan_savings_plan_rate", DOUBLE), ("savings_plan_start_time", STRING),
    ("savings_plan_total_commitment_to_date", DOUBLE), ("savings_plan_used_commitment", DOUBLE),
)  # fmt: skip
KNOWN_COLUMNS = frozenset(name for name, _ in CUR2_COLUMNS)

# --- the columns the mapping reads ---------------------------------------------------------------------
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
    ("SavingsPlanUpfrontFee", "savings_plan_savings_plan_a_r_n"),
    ("DiscountedUsage", "reservation_effective_cost"),
    ("DiscountedUsage", "reservation_reservation_a_r_n"),
    ("RIFee", "reservation_unused_amortized_upfront_fee_for_billing_period"),
    ("RIFee", "reservation_unused_recurring_fee"),
    ("RIFee", "reservation_reservation_a_r_n"),
)
# Values that must be present on a line of the type, else the line is quarantined.
VALUES_BY_LINE_TYPE = (
    ("SavingsPlanCoveredUsage", "savings_plan_savings_plan_effective_cost"),
    ("SavingsPlanCoveredUsage", "savings_plan_savings_plan_a_r_n"),
    ("SavingsPlanRecurringFee", "savings_plan_total_commitment_to_date"),
    ("SavingsPlanRecurringFee", "savings_plan_used_commitment"),
    ("DiscountedUsage", "reservation_effective_cost"),
    ("DiscountedUsage", "reservation_reservation_a_r_n"),
)
DECIMAL_COLUMNS = (
    "line_item_unblended_cost", "line_item_net_unblended_cost", "line_item_usage_amount",
    "line_item_unblended_rate", "line_item_net_unblended_rate", "pricing_public_on_demand_cost",
    "pricing_public_on_demand_rate", "savings_plan_savings_plan_effective_cost",
    "savings_plan_net_savings_plan_effective_cost", "savings_plan_total_commitment_to_date",
    "savings_plan_used_commitment", "savings_plan_amortized_upfront_commitment_for_billing_period",
    "savings_plan_recurring_commitment_for_billing_period",
    "savings_plan_net_amortized_upfront_commitment_for_billing_period",
    "savings_plan_net_recurring_commitment_for_billing_period", "reservation_effective_cost",
    "reservation_net_effective_cost", "reservation_unused_amortized_upfront_fee_for_billing_period",
    "reservation_net_unused_amortized_upfront_fee_for_billing_period", "reservation_unused_recurring_fee",
    "reservation_net_unused_recurring_fee", "reservation_unused_quantity", "reservation_total_reserved_units",
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
    "product_region", "product_region_code", "product_sku", "reservation_reservation_a_r_n",
    "savings_plan_savings_plan_a_r_n",
)  # fmt: skip
USED_COLUMNS = frozenset((*STRING_COLUMNS, *DECIMAL_COLUMNS, *TIMESTAMP_COLUMNS, *MAP_COLUMNS))
USER_TAG_PREFIXES = ("user_", "user:")  # CUR 2.0 writes user_<normalized key>; legacy spelling user:<key>
KEY_VALUE = pl.List(pl.Struct({"key": pl.String(), "value": pl.String()}))
# One "key": value pair of a JSON object written as text (CUR 2.0 CSV map columns).
_JSON_PAIR = r'"((?:[^"\\]|\\.)*)"\s*:\s*("(?:[^"\\]|\\.)*"|null)'

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
    "AWSCloudShell": ("Developer Tools", "Development Environments"),
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
    "AWSMigrationHubRefactorSpaces": ("Migration", "Resource Migration"),
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
    "AWSIoT": ("Internet of Things", "IoT Platforms"),
    "AmazonAthena": ("Analytics", "Data Processing"),
    "AWSGlue": ("Analytics", "Data Processing"),
    "AmazonKinesis": ("Analytics", "Streaming Analytics"),
    "AmazonES": ("Analytics", "Search"),
    "AmazonCognito": ("Identity", "Identity and Access Management"),
}
OTHER_SERVICE = ("Other", "Other (Other)")

# CUR pricing units → the FOCUS unit vocabulary (UnitFormat); others pass through unchanged. ``Obj-Month``
# (AWS Glue Data Catalog storage, objects stored per month) is a compound unit: FOCUS 1.2 UnitFormat
# "<singular-base-unit>-<plural-time-units>" with a capitalized count noun → ``Object-Months``.
UNITS = {
    "Hrs": "Hours", "hours": "Hours", "GB-Mo": "GB-Months", "GB-Month": "GB-Months", "Hours": "Hours",
    "Obj-Month": "Object-Months",
}  # fmt: skip

# Resource id prefixes of common EC2 resources → ResourceType.
_ID_PREFIX_TYPES = {"i-": "Instance", "vol-": "Volume", "snap-": "Snapshot", "nat-": "NAT Gateway",
                    "eipalloc-": "Elastic IP", "eni-": "Network Interface", "ami-": "Image"}  # fmt: skip


# --- public entry points ------------------------------------------------------------------------------


def load(source: AwsCur2Source, period: BillingPeriod) -> LoadResult:
    """The period's latest CUR 2.0 delivery as FOCUS rows, its BilledCost total and quarantined lines."""
    return concat_results(load_batches(source, period))


def load_batches(source: AwsCur2Source, period: BillingPeriod, batch_rows: int = BATCH_ROWS) -> Iterator[LoadResult]:
    """The same delivery, one ``LoadResult`` per ``batch_rows`` rows of each data file (bounded memory)."""
    export = Export.open(source)
    manifest_at, manifest = export.manifest(period)
    tags = TagSets()  # one per load: the month's files share their tag sets
    for location in export.data_files(manifest_at, manifest, period):
        with export.store.local_copy(location, missing=_MISSING_DATA_FILE) as path:
            yield from map_file(source.name, location, path, period, batch_rows=batch_rows, tags=tags)


def load_file_batches(
    path: str | Path, period: BillingPeriod, source_name: str = "aws_cur2", batch_rows: int = BATCH_ROWS
) -> Iterator[LoadResult]:
    """One local CUR 2.0 data file (Parquet or CSV), streamed: for benchmarks and one-off checks."""
    return map_file(source_name, str(path), Path(path), period, batch_rows=batch_rows)


@dataclass(frozen=True)
class Delivery:
    """The delivery a manifest describes: ``delivery_id`` changes whenever AWS refreshes the period."""

    period: str
    delivery_id: str
    manifest: str


def current_delivery(source: AwsCur2Source, period: BillingPeriod) -> Delivery | None:
    """The period's current delivery (its manifest's ``executionId``), or None before the first one."""
    export = Export.open(source)
    try:
        location, manifest = export.manifest(period)
    except NoManifestError:
        return None
    execution = manifest.get("executionId")
    delivery_id = execution if isinstance(execution, str) and execution else export.store.fingerprint(location)
    return Delivery(period.key, delivery_id, location)


def concat_results(results: Iterable[LoadResult]) -> LoadResult:
    """Batches → one result (what ``load`` returns): frames and quarantines stacked, totals and stats summed."""
    frames, quarantines, files, stats, repairs = [], [], [], Counter[str](), Counter[str]()
    total: Decimal | None = Decimal(0)
    for result in results:
        frames.append(result.frame)
        quarantines.append(result.quarantine)
        files += result.files
        stats.update(result.stats)
        repairs.update(result.repairs)
        total = None if total is None or result.source_total is None else total + result.source_total
    return LoadResult(
        frame=pl.concat(frames, how="vertical") if frames else _empty_focus("", BillingPeriod("1970-01"), str),
        quarantine=pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *quarantines], how="vertical"),
        files=files,
        source_total=total,
        repairs=dict(repairs),
        stats=dict(stats),
    )


# --- where files live ------------------------------------------------------------------------------------

_MISSING_DATA_FILE = (
    "data file named in the manifest is missing",
    "the delivery is incomplete or files were removed; re-run after AWS's next refresh",
)


@dataclass
class Store:
    """A folder tree, local or ``s3://``: read small files, spool big ones, tell versions apart."""

    source: str
    root: str
    s3: S3Reader | None

    @classmethod
    def open(cls, source: str, path: str, endpoint_url: str | None = None, region: str | None = None) -> Store:
        root = path.rstrip("/")
        s3 = S3Reader(endpoint_url=endpoint_url, region=region) if is_s3_url(root) else None
        return cls(source, root, s3)

    def location(self, relative: str) -> str:
        return join_s3_url(self.root, relative) if self.s3 else str(Path(self.root) / relative)

    def read(self, location: str) -> bytes:
        """Bytes of a file or object; FileNotFoundError when absent, SourceError when unreadable."""
        try:
            return self.s3.read_bytes(location) if self.s3 else Path(location).read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._unreadable(location, exc) from None

    def read_first(self, locations: list[str]) -> tuple[str, bytes] | None:
        """The first of ``locations`` that exists, with its bytes (manifests have alternative names)."""
        for location in locations:
            try:
                return location, self.read(location)
            except FileNotFoundError:
                continue
        return None

    @contextlib.contextmanager
    def local_copy(self, location: str, missing: tuple[str, str]) -> Iterator[Path]:
        """A local path for the file: itself, or the S3 object spooled to a temporary file."""
        if not self.s3:
            if not Path(location).is_file():
                raise SourceError(self.source, location, *missing)
            yield Path(location)
            return
        with tempfile.TemporaryDirectory(prefix="cogs-cur-") as folder:
            path = Path(folder) / location.rsplit("/", 1)[-1]
            try:
                with path.open("wb") as target:
                    self.s3.download(location, target)
            except FileNotFoundError:
                raise SourceError(self.source, location, *missing) from None
            except OSError as exc:
                raise self._unreadable(location, exc) from None
            yield path

    def list(self, relative: str = "") -> list[str]:
        """Every file under a folder (recursively), sorted; empty when the folder does not exist."""
        base = self.location(relative) if relative else self.root
        try:
            if self.s3:
                return self.s3.list_urls(base.rstrip("/") + "/")
            return sorted(str(p) for p in Path(base).rglob("*") if p.is_file())
        except OSError as exc:
            raise self._unreadable(base, exc) from None

    def fingerprint(self, location: str) -> str:
        """A version id when the manifest has none: the object's ETag, or a local file's mtime and size."""
        try:
            if self.s3:
                info = self.s3.stat(location)
                return info.etag or info.last_modified.isoformat()
            stat = os.stat(location)
        except OSError as exc:
            raise self._unreadable(location, exc) from None
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def _unreadable(self, location: str, exc: OSError) -> SourceError:
        return SourceError(
            self.source, location, f"cannot read: {exc}",
            "S3 credentials come from the standard AWS environment variables or boto3's chain",
        )  # fmt: skip


class NoManifestError(SourceError):
    """The billing period has no manifest (yet)."""


# --- the CUR 2.0 export layout ---------------------------------------------------------------------------


@dataclass
class Export:
    """An export folder (local or ``s3://``) laid out as Data Exports delivers CUR 2.0."""

    source: str
    store: Store

    @classmethod
    def open(cls, source: AwsCur2Source) -> Export:
        return cls(source.name, Store.open(source.name, source.path, source.endpoint_url, source.region))

    @property
    def name(self) -> str:
        return self.store.root.rsplit("/", 1)[-1]

    def manifest(self, period: BillingPeriod) -> tuple[str, dict[str, Any]]:
        """The partition's current manifest (``<export-name>-Manifest.json``, else ``Manifest.json``)."""
        folder = f"metadata/BILLING_PERIOD={period.key}"
        candidates = [self.store.location(f"{folder}/{self.name}-Manifest.json"),
                      self.store.location(f"{folder}/Manifest.json")]  # fmt: skip
        if found := self.store.read_first(candidates):
            return found[0], self._parse_manifest(*found, period)
        raise NoManifestError(
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
        start = (manifest.get("billingPeriod") or {}).get("start")
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
            files.append(self.store.location(match.group(1)))
        return files


# --- reading a data file in batches ------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How a file's columns become CUR 2.0 columns: CUR 2.0 itself, or legacy CUR (``aws_cur_legacy``)."""

    name: str = "CUR 2.0"
    wanted: Callable[[str], bool] = field(default=USED_COLUMNS.__contains__)
    known: Callable[[str], bool] = field(default=KNOWN_COLUMNS.__contains__)
    # the file's columns (as read) → CUR 2.0 names and types; gets the file's header
    prepare: Callable[[pl.DataFrame, list[str]], pl.DataFrame] = field(default=lambda frame, header: frame)
    # a CUR 2.0 column → how this dialect spells it (for messages); gets the file's header
    spelling: Callable[[str, list[str]], str] = field(default=lambda column, header: column)
    # columns of the file (by their spelling in it) that hold a CUR 2.0 column
    present: Callable[[list[str]], set[str]] = field(default=lambda header: set(header))


CUR2 = Dialect()


@dataclass
class DataFile:
    """One data file opened for reading: its header, and its rows as frames of about ``batch_rows``."""

    location: str
    header: list[str]
    batches: Iterator[pl.DataFrame]
    first_line: int  # the x_source_line of its first row


def open_data_file(source: str, location: str, path: Path, dialect: Dialect, batch_rows: int) -> DataFile:
    """A Parquet or CSV(.gz/.zip) file → its header and a lazy iterator over the wanted columns."""
    name = location.lower().split("?", 1)[0]
    if name.endswith(".parquet"):
        return _parquet_file(source, location, path, dialect, batch_rows)
    if name.endswith((".csv", ".csv.gz", ".csv.zip", ".gz", ".zip")):
        return _csv_file(source, location, path, dialect, batch_rows)
    raise SourceError(source, location, "not a Parquet or CSV(.gz) data file", "expected .parquet, .csv or .csv.gz")


def _parquet_file(source: str, location: str, path: Path, dialect: Dialect, batch_rows: int) -> DataFile:
    unreadable = (pl.exceptions.PolarsError, pa.ArrowException, OSError, ValueError)
    try:
        metadata = pq.read_metadata(path)
    except unreadable as exc:
        raise SourceError(source, location, f"not a readable Parquet file ({exc})") from None
    header = list(metadata.schema.to_arrow_schema().names)
    columns = [c for c in header if dialect.wanted(c)]

    def batches() -> Iterator[pl.DataFrame]:
        try:
            # One slice per batch, not whole row groups cut to size: polars decodes only the pages a slice
            # needs, so a batch never holds a whole row group (which can be many batches: the benchmark's are 4).
            for start in range(0, metadata.num_rows, batch_rows):
                yield pl.scan_parquet(path).select(columns).slice(start, batch_rows).collect()
        except unreadable as exc:
            raise SourceError(source, location, f"not a readable Parquet file ({exc})") from None

    return DataFile(location, header, batches(), first_line=1)


def _csv_file(source: str, location: str, path: Path, dialect: Dialect, batch_rows: int) -> DataFile:
    try:
        with _decompressed(location, path) as stream:
            first = stream.readline().decode("utf-8-sig")
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise SourceError(source, location, f"not a readable CSV file ({exc})") from None
    header = next(csv.reader([first]), [])
    columns = [c for c in header if dialect.wanted(c)]

    def batches() -> Iterator[pl.DataFrame]:
        read = pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=_CSV_BLOCK_BYTES)
        parse = pacsv.ParseOptions(newlines_in_values=True)
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.string()), include_columns=columns,
            strings_can_be_null=False, quoted_strings_can_be_null=False,
        )  # fmt: skip
        pending: pa.Table | None = None
        try:
            with _decompressed(location, path, native=True) as stream:
                for block in pacsv.open_csv(stream, read, parse, convert):
                    table = pa.Table.from_batches([block])
                    pending = table if pending is None else pa.concat_tables([pending, table])
                    while pending.num_rows >= batch_rows:  # blocks are bytes, not rows: cut them to size
                        yield pl.from_arrow(pending.slice(0, batch_rows))  # type: ignore[misc]
                        pending = pending.slice(batch_rows)
        except (pa.ArrowException, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise SourceError(source, location, f"not a readable CSV file ({exc})") from None
        if pending is not None and pending.num_rows:
            yield pl.from_arrow(pending)  # type: ignore[misc]

    return DataFile(location, header, batches(), first_line=2)


@contextlib.contextmanager
def _decompressed(location: str, path: Path, native: bool = False) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped or unzipped (first member) as its name says. ``native`` gives pyarrow's
    own (faster) gzip stream for the CSV reader; Python's has ``readline`` for the header."""
    name = location.lower()
    if name.endswith(".gz") and native:
        with pa.input_stream(str(path), compression="gzip") as stream:
            yield stream  # type: ignore[misc]
    elif name.endswith(".gz"):
        with gzip.open(path, "rb") as stream:
            yield stream
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as member:
            yield member
    else:
        with path.open("rb") as raw:
            yield raw


# --- one file → FOCUS batches ------------------------------------------------------------------------------


def map_file(
    source: str,
    location: str,
    path: Path,
    period: BillingPeriod,
    *,
    dialect: Dialect = CUR2,
    batch_rows: int = BATCH_ROWS,
    only_period: bool = False,
    tags: TagSets | None = None,
) -> Iterator[LoadResult]:
    """Stream one data file through the mapping. ``only_period`` keeps the period's lines and skips the
    others (files that hold several months); otherwise lines of another period are quarantined. ``tags``
    shares the built Tags across the files of one load."""
    data = open_data_file(source, location, path, dialect, batch_rows)
    present = dialect.present(data.header)
    spell = _Speller(dialect, data.header)
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise _missing_columns(source, location, dialect, [spell(c) for c in missing])
    unknown = sorted(c for c in data.header if not dialect.known(c))
    first_stats = {"files": 1, **({"unknown_columns": len(unknown)} if unknown else {})}
    first_stats |= {f"unknown_column:{c}": 1 for c in unknown}
    line, first = data.first_line, True
    tags = TagSets() if tags is None else tags
    for raw in data.batches:
        table = dialect.prepare(raw, data.header)
        _check_line_type_columns(source, location, dialect, table, present, spell)
        result = map_batch(table, location, line, period, spell, only_period=only_period, tags=tags)
        line += raw.height
        if first:
            result.files, result.stats = [location], first_stats | result.stats
            first = False
        yield result
    if first:  # an empty file still counts as read
        yield LoadResult(frame=_empty_focus(location, period, spell), files=[location], source_total=Decimal(0),
                         stats=first_stats | {"rows": 0, "quarantined": 0})  # fmt: skip


class _Speller:
    """A CUR 2.0 column name as the file spells it (messages name the file's own column)."""

    def __init__(self, dialect: Dialect, header: list[str]) -> None:
        self.dialect, self.header = dialect, header

    def __call__(self, column: str) -> str:
        return self.dialect.spelling(column, self.header)


def _missing_columns(source: str, location: str, dialect: Dialect, names: list[str]) -> SourceError:
    more = f" (and {', '.join(map(repr, names[1:]))})" if len(names) > 1 else ""
    hint = (
        "add it to the export's QueryStatement (SELECT ... FROM COST_AND_USAGE_REPORT)"
        if dialect is CUR2
        else "the report definition must include it; legacy CUR adds columns as services start billing"
    )
    return SourceError(source, location, f"missing required {dialect.name} column {names[0]!r}{more}", hint)


def _check_line_type_columns(
    source: str, location: str, dialect: Dialect, table: pl.DataFrame, present: set[str], spell: _Speller
) -> None:
    """A column needed by a line item type must exist when lines of that type do."""
    needed = {c for _, c in COLUMNS_BY_LINE_TYPE if c not in present}
    if not needed or "line_item_line_item_type" not in table.columns:
        return
    kinds = set(table.get_column("line_item_line_item_type").drop_nulls().unique().to_list())
    missing = list(dict.fromkeys(c for kind, c in COLUMNS_BY_LINE_TYPE if kind in kinds and c in needed))
    if missing:
        raise _missing_columns(source, location, dialect, [spell(c) for c in missing])


def map_batch(
    table: pl.DataFrame,
    location: str,
    first_line: int,
    period: BillingPeriod,
    spell: Callable[[str], str] = str,
    *,
    only_period: bool = False,
    tags: TagSets | None = None,
) -> LoadResult:
    """Raw CUR 2.0 columns of some rows → FOCUS rows, quarantine, the provider total and stats."""
    raw = normalize(table, location, first_line)
    skipped = 0
    if only_period:
        in_period = pl.col("bill_billing_period_start_date") == pl.lit(period.start, dtype=TIMESTAMP)
        kept = raw.filter(in_period.fill_null(True))  # a line without a period is quarantined, not skipped
        skipped, raw = raw.height - kept.height, kept
    frame, quarantine, folded = to_focus(raw, period, spell, tags)
    stats = {"rows": raw.height, "quarantined": quarantine.height}
    stats |= {"savings_plan_negations_folded": folded} if folded else {}
    stats |= {"rows_of_other_periods": skipped} if skipped else {}
    return LoadResult(frame=frame, quarantine=quarantine, source_total=provider_total(raw), stats=stats)


def provider_total(raw: pl.DataFrame) -> Decimal:
    """The provider's own BilledCost total of normalized lines: net unblended, else unblended, summed.

    Computed from the raw amounts alone (not from the FOCUS rows), so reconciliation compares two
    independent computations and shows what the quarantine or a folded negation left out.
    """
    total = raw.select(pl.coalesce("line_item_net_unblended_cost", "line_item_unblended_cost").sum()).item()
    return Decimal(total) if total is not None else Decimal(0)


def _empty_focus(location: str, period: BillingPeriod, spell: Callable[[str], str]) -> pl.DataFrame:
    frame, _, _ = to_focus(normalize(pl.DataFrame(), location, 1), period, spell)
    return frame


# --- raw lines → one type per column -------------------------------------------------------------------


def normalize(table: pl.DataFrame, location: str, first_line: int) -> pl.DataFrame:
    """Bring every used column to one type (absent ones as NULL), add the line's file and number."""
    columns = [
        *(_as_string(table, c) for c in STRING_COLUMNS),
        *(_as_decimal(table, c) for c in DECIMAL_COLUMNS),
        *(_as_timestamp(table, c) for c in TIMESTAMP_COLUMNS),
        *(_as_key_values(table, c) for c in MAP_COLUMNS),
    ]
    height = table.height
    return (pl.DataFrame({"_": pl.Series([None] * height, dtype=pl.Null)}) if not table.columns else table).select(
        *columns,
        pl.lit(location).alias("x_source_file"),
        (pl.int_range(pl.len()) + first_line).cast(pl.String).alias("x_source_line"),
    )


def _as_string(table: pl.DataFrame, name: str) -> pl.Expr:
    if name not in table.columns:
        return pl.lit(None, dtype=pl.String).alias(name)
    text = pl.col(name).cast(pl.String)
    return pl.when(text.str.len_bytes() == 0).then(None).otherwise(text).alias(name)


def _as_decimal(table: pl.DataFrame, name: str) -> pl.Expr:
    """Doubles via their shortest decimal string, strings as written, rounded half-even to MONEY."""
    if name not in table.columns:
        return pl.lit(None, dtype=MONEY).alias(name)
    dtype = table.schema[name]
    if dtype.is_decimal() or dtype.is_integer():
        return pl.col(name).cast(MONEY).alias(name)
    if dtype.is_float():
        return _float_as_decimal(pl.col(name)).alias(name)
    text = pl.col(name).cast(pl.String).str.strip_chars()
    return text.str.to_decimal(scale=_PARSE_SCALE).cast(MONEY).alias(name)


def _float_as_decimal(value: pl.Expr) -> pl.Expr:
    """A double as the decimal it was written from.

    Below ``_EXACT_FLOAT_BOUND`` the direct cast (nearest multiple of 10⁻¹²) is that decimal for any value
    written with up to 12 places: the double's error and the scaling's error stay below half a unit of
    the 12th place. Larger values go through their shortest decimal string, which is exact at any size.
    """
    small = value.abs() < _EXACT_FLOAT_BOUND
    exact = pl.when(~small).then(value).cast(pl.String).str.to_decimal(scale=_PARSE_SCALE).cast(MONEY)
    return pl.when(small).then(value.cast(MONEY)).otherwise(exact)


def _as_timestamp(table: pl.DataFrame, name: str) -> pl.Expr:
    """CUR timestamps are UTC; naive values are taken as UTC, strings parsed as ISO 8601."""
    if name not in table.columns:
        return pl.lit(None, dtype=TIMESTAMP).alias(name)
    dtype = table.schema[name]
    if dtype == pl.String:
        text = pl.col(name).str.strip_chars()
        return text.str.to_datetime(time_zone="UTC", time_unit="us", strict=False).alias(name)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.col(name).dt.replace_time_zone("UTC").cast(TIMESTAMP).alias(name)
    return pl.col(name).dt.convert_time_zone("UTC").cast(TIMESTAMP).alias(name)


def _as_key_values(table: pl.DataFrame, name: str) -> pl.Expr:
    """Any map column (Map, list of key/value, struct, JSON text) as List(Struct(key, value)) of strings."""
    if name not in table.columns:
        return pl.lit([], dtype=KEY_VALUE).alias(name)
    dtype = table.schema[name]
    column = pl.col(name)
    if isinstance(dtype, pl.Map):
        column = column.to_physical().cast(KEY_VALUE)
    elif isinstance(dtype, pl.List):
        column = column.cast(KEY_VALUE)
    elif isinstance(dtype, pl.Struct):  # a struct's fields are the keys
        entries = [
            pl.struct(key=pl.lit(f.name), value=column.struct.field(f.name).cast(pl.String)) for f in dtype.fields
        ]
        column = pl.concat_list(entries).list.eval(
            pl.element().filter(pl.element().struct.field("value").is_not_null())
        )
    elif dtype == pl.Null:
        column = pl.lit([], dtype=KEY_VALUE)
    else:
        column = _json_object_entries(column.cast(pl.String))
    return column.fill_null(pl.lit([], dtype=KEY_VALUE)).alias(name)


def _json_object_entries(text: pl.Expr) -> pl.Expr:
    """A flat JSON object of strings written as text (``{"k":"v"}``) → its entries, keys and values unescaped."""
    pair = pl.element()
    return text.str.extract_all(_JSON_PAIR).list.eval(
        pl.struct(
            key=(pl.lit('"') + pair.str.extract(_JSON_PAIR, 1) + pl.lit('"')).str.json_decode(pl.String),
            value=pair.str.extract(_JSON_PAIR, 2).str.json_decode(pl.String),
        )
    )


# --- CUR 2.0 lines → FOCUS 1.2 rows ---------------------------------------------------------------------


def to_focus(
    raw: pl.DataFrame, period: BillingPeriod, spell: Callable[[str], str] = str, tags: TagSets | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Map normalized lines to FOCUS rows. Returns the rows, the quarantined lines (with their reason),
    and how many Savings Plan negations were folded into their covered usage."""
    checks = _checks(period, spell)
    bad_line = pl.any_horizontal(c for c, _ in checks)
    quarantine = pl.DataFrame(schema=QUARANTINE_SCHEMA)
    good = raw
    if raw.select(bad_line.any()).item():  # usually not: then the two filters would copy every column for nothing
        flagged = raw.with_columns(bad_line.alias("_bad"))
        reason = pl.when(checks[0][0]).then(checks[0][1])
        for condition, text in checks[1:]:
            reason = reason.when(condition).then(text)
        bad = flagged.filter(pl.col("_bad"))  # reasons are text: built for the few bad lines only
        quarantine = bad.select(
            pl.col("x_source_file").alias("file"), pl.col("x_source_line").alias("line"), reason.alias("reason")
        ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
        good = flagged.filter(~pl.col("_bad")).drop("_bad")
    # Known types only from here: an enum makes the many type tests integer comparisons.
    good = good.with_columns(pl.col("line_item_line_item_type").cast(pl.Enum(KNOWN_LINE_ITEM_TYPES)))
    negation = pl.col("line_item_line_item_type") == NEGATION
    folded = int(good.select(negation.sum()).item() or 0)
    return _focus_rows(good.filter(~negation) if folded else good, tags), quarantine, folded


def _checks(period: BillingPeriod, spell: Callable[[str], str]) -> list[tuple[pl.Expr, pl.Expr]]:
    """(condition, reason) pairs, in order: a line is quarantined with the reason of its first true condition.
    Reasons name the column as the file spells it."""
    kind = pl.col("line_item_line_item_type")
    amount = pl.col("line_item_usage_amount")
    start = pl.col("bill_billing_period_start_date")
    empty = [
        ("line_item_unblended_cost", "is empty or not a number"),
        ("line_item_usage_start_date", "is empty or invalid"),
        ("line_item_usage_end_date", "is empty or invalid"),
        ("bill_payer_account_id", "is empty"),
        ("line_item_product_code", "is empty"),
        ("line_item_currency_code", "is empty"),
    ]
    return [
        (kind.is_null(), pl.lit(f"{spell('line_item_line_item_type')} is empty")),
        (~kind.is_in(KNOWN_LINE_ITEM_TYPES), pl.format(f"unknown {spell('line_item_line_item_type')} '{{}}'", kind)),
        *((pl.col(column).is_null(), pl.lit(f"{spell(column)} {what}")) for column, what in empty),
        (
            start.is_null() | (start != pl.lit(period.start, dtype=TIMESTAMP)),
            pl.format(
                f"{spell('bill_billing_period_start_date')} {{}} is not the start of billing period {period.key}",
                start.cast(pl.String).fill_null("(empty)"),
            ),
        ),
        (
            kind.is_in(CONSUMPTION) & (amount < 0).fill_null(False),
            pl.format(f"{spell('line_item_usage_amount')} is negative ({{}}) on a {{}} line", amount, kind),
        ),
        *(
            ((kind == line_type) & pl.col(column).is_null(), pl.lit(f"{spell(column)} is empty on a {line_type} line"))
            for line_type, column in VALUES_BY_LINE_TYPE
        ),
    ]


def _focus_rows(lines: pl.DataFrame, tags: TagSets | None = None) -> pl.DataFrame:
    frame = (TagSets() if tags is None else tags).add_to(_with_costs_and_quantities(lines))
    focus = frame.select(
        *_focus_columns(), _unused_effective_cost().alias("_unused"), _unused_quantity().alias("_unused_qty")
    )
    rows = pl.concat([focus, _unused_rows(focus)]).drop("_unused", "_unused_qty")
    return rows.with_columns(
        ListUnitPrice=_price_from_cost("ListUnitPrice", "ListCost"),
        ContractedUnitPrice=_price_from_cost("ContractedUnitPrice", "ContractedCost"),
    )


def _price_from_cost(price: str, cost: str) -> pl.Expr:
    """A Usage/Purchase row's missing unit price as cost ÷ PricingQuantity (12 places).

    FOCUS 1.2 ListUnitPrice-C-005-C / ContractedUnitPrice-C-006-C: the price MUST NOT be null on Usage and
    Purchase rows (not corrections), and price × PricingQuantity MUST match the cost (ListCost-C-009-C).
    Commitment fees carry no public rate in the CUR, so the fee's own rate is used; unused-commitment rows
    list and contract at 0 (their cost is on the purchase), so their price is 0. Left null when the
    quantity is 0: no price makes 0 × price equal a non-zero cost.
    """
    quantity = pl.col("PricingQuantity")
    missing = (
        pl.col(price).is_null()
        & pl.col("ChargeCategory").is_in(["Usage", "Purchase"])
        & pl.col(cost).is_not_null()
        & (quantity != 0).fill_null(False)
    )
    nonzero = pl.when(quantity != 0).then(quantity)  # polars evaluates every branch: never divide by 0
    return pl.when(missing).then((pl.col(cost) / nonzero).cast(MONEY)).otherwise(pl.col(price)).cast(MONEY)


def _with_costs_and_quantities(lines: pl.DataFrame) -> pl.DataFrame:
    kind = pl.col("line_item_line_item_type")
    frame = lines.with_columns(
        pl.coalesce("line_item_net_unblended_cost", "line_item_unblended_cost").alias("_billed"),
        _commitment_id().alias("CommitmentDiscountId"),
        _charge_category().alias("ChargeCategory"),
    )
    frame = frame.with_columns(
        pl.when(kind == "SavingsPlanCoveredUsage").then(_zero()).otherwise(pl.col("_billed")).alias("BilledCost"),
        _pricing_quantity().alias("PricingQuantity"),
        pl.when(kind.is_in(CONSUMPTION))
        .then(pl.col("line_item_usage_amount").fill_null(0))
        .when(kind.is_in(OFFSETS))
        .then(_zero())
        .alias("ConsumedQuantity"),
        _contracted_unit_price().alias("ContractedUnitPrice"),
        pl.when(kind.is_in(CONSUMPTION)).then(pl.col("pricing_public_on_demand_rate")).alias("ListUnitPrice"),
    )
    frame = frame.with_columns(
        _effective_cost().alias("EffectiveCost"),
        _priced("ContractedUnitPrice", pl.col("_billed")).alias("ContractedCost"),
        _unit("PricingQuantity").alias("PricingUnit"),
        _unit("ConsumedQuantity").alias("ConsumedUnit"),
        _commitment_status().alias("CommitmentDiscountStatus"),
        _commitment_quantity().alias("CommitmentDiscountQuantity"),
    )
    return frame.with_columns(_list_cost().alias("ListCost"), _commitment_unit().alias("CommitmentDiscountUnit"))


def _focus_columns() -> list[pl.Expr]:
    """The FOCUS 1.2 columns (and ours) from a line with its costs and quantities computed."""
    kind = pl.col("line_item_line_item_type")
    code = pl.col("line_item_product_code")
    category = code.replace_strict(
        {c: v for c, (v, _) in SERVICES.items()}, default=OTHER_SERVICE[0], return_dtype=pl.String
    )
    subcategory = code.replace_strict(
        {c: v for c, (_, v) in SERVICES.items()}, default=OTHER_SERVICE[1], return_dtype=pl.String
    )
    sp = kind.is_in(SAVINGS_PLAN_TYPES)
    has_commitment = pl.col("CommitmentDiscountId").is_not_null()
    region = pl.coalesce("product_region_code", _product_attribute("region"), "product_region")
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
        pl.when(has_commitment).then(pl.when(sp).then(pl.lit("Spend")).otherwise(pl.lit("Usage"))).alias("CommitmentDiscountCategory"),
        pl.col("CommitmentDiscountId"),
        pl.col("CommitmentDiscountQuantity"),
        pl.col("CommitmentDiscountStatus"),
        pl.when(has_commitment)
        .then(pl.when(sp).then(pl.lit("Savings Plan")).otherwise(pl.lit("Reserved Instance")))
        .alias("CommitmentDiscountType"),
        pl.col("CommitmentDiscountUnit"),
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
        region.alias("RegionId"),
        _region_name(region).alias("RegionName"),
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
        pl.when(pl.col("line_item_usage_account_id").is_not_null())
        .then(pl.col("line_item_usage_account_name"))
        .alias("SubAccountName"),
        _sub_account_type().alias("SubAccountType"),
        pl.col("Tags"),
        pl.col("x_source_file"),
        pl.col("x_source_line"),
        kind.cast(pl.String).alias("x_line_item_type"),
    ]  # fmt: skip


def _region_name(region: pl.Expr) -> pl.Expr:
    """The line's ``product_location`` for an AWS Region, else the region code's published name.

    FOCUS 1.2 RegionName-C-005-C: RegionName MUST NOT be null when RegionId is not null. Fee, tax and
    Savings Plan lines carry ``product_region_code`` without ``product_location``; the name then comes
    from AWS's region table (an unknown code keeps its code, as AWS's own FOCUS export names ``global``).
    """
    located = pl.when(pl.col("product_location_type") == "AWS Region").then(pl.col("product_location"))
    known = region.replace_strict(AWS_REGION_NAMES, default=region, return_dtype=pl.String)
    return pl.when(region.is_not_null()).then(pl.coalesce(located, known))


def _zero() -> pl.Expr:
    return pl.lit(Decimal(0), dtype=MONEY)


def _net_or_gross(net: str, gross: str) -> pl.Expr:
    return pl.coalesce(net, gross)


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
        .when(kind.is_in(COMMITMENT_FEES))
        .then(pl.lit("Recurring"))
        .when((kind == "Fee") & (pl.col("bill_bill_type") == "Anniversary") & pl.col("CommitmentDiscountId").is_null())
        .then(pl.lit("Recurring"))
        .otherwise(pl.lit("One-Time"))
    )


def _effective_cost() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    sp_effective = _net_or_gross(
        "savings_plan_net_savings_plan_effective_cost", "savings_plan_savings_plan_effective_cost"
    )
    ri_effective = _net_or_gross("reservation_net_effective_cost", "reservation_effective_cost")
    return (
        pl.when(kind == "SavingsPlanCoveredUsage")
        .then(sp_effective)
        .when(kind == "DiscountedUsage")
        .then(ri_effective)
        .when(kind.is_in(COMMITMENT_FEES) | (kind == "SavingsPlanUpfrontFee"))
        .then(_zero())
        .when((kind == "Fee") & pl.col("CommitmentDiscountId").is_not_null())
        .then(_zero())
        .otherwise(pl.col("BilledCost"))
        .cast(MONEY)
    )


def _unused_effective_cost() -> pl.Expr:
    """The part of a recurring commitment fee that no usage drew on (NULL on other lines)."""
    kind = pl.col("line_item_line_item_type")
    unused_plan = pl.col("savings_plan_total_commitment_to_date") - pl.col("savings_plan_used_commitment")
    gross = pl.col("savings_plan_amortized_upfront_commitment_for_billing_period").fill_null(0) + pl.col(
        "savings_plan_recurring_commitment_for_billing_period"
    ).fill_null(0)
    net = pl.col("savings_plan_net_amortized_upfront_commitment_for_billing_period").fill_null(0) + pl.col(
        "savings_plan_net_recurring_commitment_for_billing_period"
    ).fill_null(0)
    has_net = (
        pl.col("savings_plan_net_amortized_upfront_commitment_for_billing_period").is_not_null()
        | pl.col("savings_plan_net_recurring_commitment_for_billing_period").is_not_null()
    ) & (gross != 0)
    # Decimal arithmetic keeps it exact: unused × net / gross, rounded half-even by the cast to MONEY.
    unused_plan_net = pl.when(has_net).then((unused_plan * net / gross).cast(MONEY)).otherwise(unused_plan)
    upfront = _net_or_gross(
        "reservation_net_unused_amortized_upfront_fee_for_billing_period",
        "reservation_unused_amortized_upfront_fee_for_billing_period",
    ).fill_null(0)
    recurring = _net_or_gross("reservation_net_unused_recurring_fee", "reservation_unused_recurring_fee").fill_null(0)
    return (
        pl.when(kind == "SavingsPlanRecurringFee")
        .then(unused_plan_net)
        .when(kind == "RIFee")
        .then(upfront + recurring)
        .cast(MONEY)
    )


def _unused_quantity() -> pl.Expr:
    """The unused commitment in its own units: dollars of a Savings Plan, reserved units of an RI."""
    kind = pl.col("line_item_line_item_type")
    return (
        pl.when(kind == "SavingsPlanRecurringFee")
        .then(pl.col("savings_plan_total_commitment_to_date") - pl.col("savings_plan_used_commitment"))
        .when(kind == "RIFee")
        .then(pl.col("reservation_unused_quantity"))
        .cast(MONEY)
    )


def _unused_rows(focus: pl.DataFrame) -> pl.DataFrame:
    """Unused commitment as FOCUS wants it: a Usage row, status Unused, that amortizes but bills nothing."""
    return focus.filter(pl.col("_unused") > 0).with_columns(
        ChargeCategory=pl.lit("Usage"),
        ChargeFrequency=pl.lit("Usage-Based"),
        CommitmentDiscountStatus=pl.lit("Unused"),
        CommitmentDiscountQuantity=pl.col("_unused_qty"),
        CommitmentDiscountUnit=pl.when(pl.col("_unused_qty").is_not_null()).then(pl.col("CommitmentDiscountUnit")),
        BilledCost=_zero(),
        ContractedCost=_zero(),
        ContractedUnitPrice=pl.lit(None, dtype=MONEY),
        ListCost=_zero(),
        EffectiveCost=pl.col("_unused"),
        ConsumedQuantity=pl.lit(None, dtype=MONEY),
        ConsumedUnit=pl.lit(None, dtype=pl.String),
        PricingCategory=pl.lit("Committed"),
    )


def _pricing_quantity() -> pl.Expr:
    """Usage and Purchase rows always have one (FOCUS); Tax and Credit rows none."""
    kind = pl.col("line_item_line_item_type")
    amount = pl.col("line_item_usage_amount").fill_null(0)
    refund_of_usage = (kind == "Refund") & (pl.col("ChargeCategory") != "Tax")
    return (
        pl.when(kind.is_in(OFFSETS))
        .then(_zero())
        .when(kind == "RIFee")
        .then(pl.coalesce("reservation_total_reserved_units", "line_item_usage_amount").fill_null(0))
        .when(kind.is_in(CONSUMPTION) | kind.is_in(PURCHASES) | refund_of_usage)
        .then(amount)
        .cast(MONEY)
    )


def _contracted_unit_price() -> pl.Expr:
    """The negotiated rate before commitment discounts: on RI-covered lines (rate 0) the on-demand rate."""
    kind = pl.col("line_item_line_item_type")
    rate = pl.when(pl.col("line_item_net_unblended_cost").is_not_null()).then(pl.col("line_item_net_unblended_rate"))
    return (
        pl.when(kind == "DiscountedUsage")
        .then(pl.col("pricing_public_on_demand_rate"))
        .when(kind.is_in(CONSUMPTION))
        .then(pl.coalesce(rate, "line_item_unblended_rate"))
    )


def _priced(unit_price: str, otherwise: pl.Expr) -> pl.Expr:
    """Unit price × PricingQuantity (FOCUS: they must match) when the price is known."""
    return pl.coalesce((pl.col(unit_price) * pl.col("PricingQuantity")).cast(MONEY), otherwise).cast(MONEY)


def _list_cost() -> pl.Expr:
    """On-demand list price × quantity for usage; 0 for discounts; gross for fees; billed otherwise."""
    kind = pl.col("line_item_line_item_type")
    consumption = _priced("ListUnitPrice", pl.coalesce("pricing_public_on_demand_cost", "ContractedCost"))
    return (
        pl.when(kind.is_in(CONSUMPTION))
        .then(consumption)
        .when(kind.is_in(OFFSETS))
        .then(_zero())
        .when(kind.is_in(PURCHASES))
        .then(pl.col("line_item_unblended_cost"))
        .otherwise(pl.col("BilledCost"))
        .cast(MONEY)
    )


def _unit(quantity: str) -> pl.Expr:
    unit = pl.col("pricing_unit").replace(UNITS)
    return pl.when(pl.col(quantity).is_not_null()).then(unit)


def _commitment_status() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    return pl.when(pl.col("CommitmentDiscountId").is_not_null() & kind.is_in(COVERED)).then(pl.lit("Used"))


def _commitment_quantity() -> pl.Expr:
    """Spend (dollars) for Savings Plans, units for RIs; only on Usage and Purchase rows of a commitment."""
    kind = pl.col("line_item_line_item_type")
    return (
        pl.when(pl.col("CommitmentDiscountId").is_null())
        .then(None)
        .when(kind == "SavingsPlanCoveredUsage")
        .then(pl.col("savings_plan_savings_plan_effective_cost"))
        .when(kind == "SavingsPlanRecurringFee")
        .then(pl.col("savings_plan_total_commitment_to_date"))
        .when(kind == "SavingsPlanUpfrontFee")
        .then(pl.col("line_item_unblended_cost"))
        .when(kind == "DiscountedUsage")
        .then(pl.col("line_item_usage_amount"))
        .when(kind == "RIFee")
        .then(pl.col("PricingQuantity"))
        .when(kind == "Fee")
        .then(pl.coalesce("reservation_total_reserved_units", "line_item_usage_amount"))
        .cast(MONEY)
    )


def _commitment_unit() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    units = pl.col("pricing_unit").replace(UNITS).fill_null("Hours")
    return (
        pl.when(pl.col("CommitmentDiscountQuantity").is_null())
        .then(None)
        .when(kind.is_in(SAVINGS_PLAN_TYPES))
        .then(pl.col("line_item_currency_code"))
        .otherwise(units)
    )


def _pricing_category() -> pl.Expr:
    kind = pl.col("line_item_line_item_type")
    spot = pl.col("line_item_usage_type").str.contains("SpotUsage") | (pl.col("pricing_term") == "Spot")
    usage_or_purchase = pl.col("ChargeCategory").is_in(("Usage", "Purchase"))
    return (
        pl.when(kind.is_in(COVERED))
        .then(pl.lit("Committed"))
        .when((kind == "Usage") & spot.fill_null(False))
        .then(pl.lit("Dynamic"))
        .when(kind.is_in(CONSUMPTION) | kind.is_in(OFFSETS) | kind.is_in(PURCHASES) | usage_or_purchase)
        .then(pl.lit("Standard"))
    )


def _product_attribute(key: str) -> pl.Expr:
    """One key of the ``product`` map (CUR 2.0 keeps non-static product attributes there)."""
    entry = pl.element()
    values = pl.col("product").list.eval(entry.filter(entry.struct.field("key") == key).struct.field("value"))
    return values.list.first()


def _service_name() -> pl.Expr:
    return pl.coalesce(
        _product_attribute("product_name").str.strip_chars().replace("", None),
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


# --- Tags: a flat JSON object per line, built column-wise --------------------------------------------------


def _json_string(text: pl.Expr) -> pl.Expr:
    """``text`` as a JSON string literal (quotes and escapes), via the struct JSON encoder."""
    return pl.struct(s=text).struct.json_encode().str.slice(5).str.head(-1)


def _focus_tag_key(key: pl.Expr) -> pl.Expr:
    user = key.str.starts_with(USER_TAG_PREFIXES[0]) | key.str.starts_with(USER_TAG_PREFIXES[1])
    return pl.when(user).then(key.str.slice(5)).otherwise(key)


def _tag_entries(column: str, prefix: str | None) -> pl.Expr:
    """(FOCUS key, ``"key":value`` JSON text) of each tag with a value; an empty value becomes ``true``."""
    key, value = pl.element().struct.field("key"), pl.element().struct.field("value")
    focus_key = pl.lit(prefix) + key if prefix else _focus_tag_key(key)
    value_json = pl.when(value == "").then(pl.lit("true")).otherwise(_json_string(value))
    return pl.col(column).list.eval(
        pl.struct(k=focus_key, pair=_json_string(focus_key) + pl.lit(":") + value_json).filter(
            key.is_not_null() & value.is_not_null()
        )
    )


_TAG_COLUMNS = ["resource_tags", "cost_category"]


class TagSets:
    """``Tags`` and the ``Name`` tag of each distinct (``resource_tags``, ``cost_category``) pair seen so far.

    Lines repeat their resource's tags every hour of the month, so one load builds each set's JSON once
    instead of once per batch. Sets are matched on their entries themselves (exact, no hash).
    """

    max_sets = 1_000_000  # then start over: memory stays bounded whatever the number of distinct sets

    def __init__(self) -> None:
        schema = {"_tag_name": pl.String, "Tags": pl.String, "_known": pl.Boolean}
        self.known = pl.DataFrame(schema={"resource_tags": KEY_VALUE, "cost_category": KEY_VALUE, **schema})

    def add_to(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with ``Tags`` and ``_tag_name`` joined on its tag sets (building the new ones)."""
        sets = frame.select(_TAG_COLUMNS)
        found = self._lookup(sets)
        unknown = found.get_column("_known").is_null()
        if unknown.any():  # most batches after the first few only repeat known sets: one join, no unique
            new = sets.filter(unknown).unique()
            if self.known.height + new.height > self.max_sets:
                self.known = self.known.clear()
                new = sets.unique()
            built = new.with_columns(_name_tag().alias("_tag_name"), Tags=_tags_json(new), _known=pl.lit(True))
            self.known = pl.concat([self.known, built], rechunk=True)
            found = self._lookup(sets)
        return frame.with_columns(found.get_column("_tag_name"), found.get_column("Tags"))

    def _lookup(self, sets: pl.DataFrame) -> pl.DataFrame:
        return sets.join(self.known, on=_TAG_COLUMNS, how="left", maintain_order="left", nulls_equal=True)


def _tags_json(sets: pl.DataFrame) -> pl.Series:
    """``resource_tags`` and ``cost_category`` as one JSON object with unique, sorted keys (or NULL), row-wise."""
    rows = sets.select(
        pl.int_range(pl.len()).alias("_row"),
        pl.concat_list(_tag_entries("resource_tags", None), _tag_entries("cost_category", "costCategory/")).alias("_e"),
    )
    pairs = rows.explode("_e").unnest("_e").filter(pl.col("k").is_not_null())
    joined = (
        pairs.unique(["_row", "k"], keep="last", maintain_order=True)
        .sort("_row", "k")
        .group_by("_row", maintain_order=True)
        .agg(pl.col("pair").str.join(","))
    )
    tags = rows.select("_row").join(joined, on="_row", how="left", maintain_order="left")
    return tags.select(
        pl.when(pl.col("pair").is_not_null()).then(pl.lit("{") + pl.col("pair") + pl.lit("}"))
    ).to_series()


def _name_tag() -> pl.Expr:
    """The resource's ``Name`` tag (CUR 2.0 key ``user_name``, legacy ``user:Name``), if it has a value."""
    entry = pl.element()
    key, value = entry.struct.field("key"), entry.struct.field("value")
    named = _focus_tag_key(key).str.to_lowercase() == "name"
    return pl.col("resource_tags").list.eval(value.filter(named & (value.str.len_bytes() > 0))).list.last()
