"""GCP detailed billing export → FOCUS: files (JSONL, Parquet) and BigQuery over its REST API (a local server)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors import gcp_billing
from connectors.base import BillingPeriod, SourceError
from models.config import CogsConfig, GcpBillingExportSource
from models.focus import CHARGE_CATEGORIES, SERVICE_CATEGORIES, conform, null_violations

FIXTURES = Path(__file__).parent / "fixtures" / "gcp"
SEPTEMBER = FIXTURES / "gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9-202509.jsonl"
MARCH_2023 = FIXTURES / "gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9-202303.jsonl"
TABLE = "acme-billing.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"

# Hand-computed from the fixture: SUM(cost) + SUM(credits.amount) of the 13 rows whose invoice.month is 202509.
SEPTEMBER_INVOICE_TOTAL = Decimal("0.396096")
SEPTEMBER_LIST_COST = Decimal("0.593296")


def file_source(path: Path | str, **extra: Any) -> GcpBillingExportSource:
    return GcpBillingExportSource(name="gcp", type="gcp_billing_export", path=str(path), **extra)


def records(path: Path = SEPTEMBER) -> list[dict[str, Any]]:
    return [json.loads(line, parse_float=Decimal) for line in path.read_text().splitlines() if line.strip()]


def by_line(frame: pl.DataFrame, line: str, category: str | None = None) -> dict[str, Any]:
    rows = frame.filter(pl.col("x_source_line") == line)
    if category:
        rows = rows.filter(pl.col("ChargeCategory") == category)
    assert rows.height == 1, rows
    return rows.row(0, named=True)


# --- files ---------------------------------------------------------------------------------------------------


def test_month_from_jsonl_matches_the_invoice_to_the_micro() -> None:
    result = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09"))

    assert result.source_total == SEPTEMBER_INVOICE_TOTAL
    assert result.frame["BilledCost"].sum() == SEPTEMBER_INVOICE_TOTAL
    assert result.frame["EffectiveCost"].sum() == SEPTEMBER_INVOICE_TOTAL  # nothing amortized away
    assert result.frame["ListCost"].sum() == SEPTEMBER_LIST_COST
    assert result.frame.height == 14  # 13 rows of the month + 1 promotional Credit row
    assert result.quarantine.height == 0
    assert result.stats == {"rows_read": 14, "rows_other_invoice_months": 1, "credit_rows": 1}
    assert result.files == [str(SEPTEMBER)]


def test_charge_category_class_and_frequency_per_row() -> None:
    frame = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09")).frame
    got = {
        (r["x_source_line"], r["ChargeCategory"]): (r["ChargeClass"], r["ChargeFrequency"], r["x_line_item_type"])
        for r in frame.iter_rows(named=True)
    }
    assert got == {
        ("1", "Usage"): (None, "Usage-Based", "regular"),
        ("2", "Usage"): (None, "Usage-Based", "regular"),
        ("3", "Purchase"): (None, "Recurring", "regular"),  # "Commitment v1: ..." fee
        ("4", "Usage"): (None, "Usage-Based", "regular"),
        ("5", "Usage"): (None, "Usage-Based", "regular"),
        ("5", "Credit"): (None, "One-Time", "credit:PROMOTION"),
        ("6", "Tax"): (None, "One-Time", "tax"),
        ("7", "Credit"): (None, "One-Time", "adjustment"),  # SLA_VIOLATION adjustment
        ("8", "Usage"): ("Correction", "Usage-Based", "adjustment"),  # negates August usage
        ("9", "Usage"): ("Correction", "Usage-Based", "adjustment"),  # re-monetizes it
        ("10", "Adjustment"): (None, "One-Time", "rounding_error"),
        ("11", "Usage"): (None, "Usage-Based", "regular"),  # late row for the hour of line 1
        ("12", "Usage"): (None, "Usage-Based", "regular"),
        ("14", "Usage"): (None, "Usage-Based", "regular"),  # August 31 usage billed in September: not a correction
    }


def test_discount_credits_are_netted_and_promotions_become_credit_rows() -> None:
    frame = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09")).frame

    sustained = by_line(frame, "1")  # cost 0.256, SUSTAINED_USAGE_DISCOUNT -0.0512
    assert (sustained["BilledCost"], sustained["EffectiveCost"]) == (Decimal("0.2048"), Decimal("0.2048"))
    assert (sustained["ListCost"], sustained["ContractedCost"]) == (Decimal("0.256"), Decimal("0.256"))
    assert (sustained["ListUnitPrice"], sustained["ContractedUnitPrice"]) == (Decimal("0.032"), Decimal("0.032"))
    assert (sustained["PricingQuantity"], sustained["PricingUnit"]) == (Decimal(8), "Hours")
    assert (sustained["ConsumedQuantity"], sustained["ConsumedUnit"]) == (Decimal(28800), "Seconds")

    free_tier = by_line(frame, "4")  # cost 0.013, FREE_TIER -0.0052
    assert free_tier["BilledCost"] == Decimal("0.0078")

    usage = by_line(frame, "5", "Usage")  # cost 0.75 fully paid by a PROMOTION credit
    assert (usage["BilledCost"], usage["ListCost"]) == (Decimal("0.75"), Decimal("0.75"))
    # price.effective_price 0.30 is per pricing_unit_quantity 1,000,000 tokens
    assert usage["ContractedUnitPrice"] == Decimal("0.0000003")
    assert usage["ContractedUnitPrice"] * usage["PricingQuantity"] == usage["ContractedCost"]
    credit = by_line(frame, "5", "Credit")
    assert credit["ChargeDescription"] == "Free trial credit"
    for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert credit[column] == Decimal("-0.75"), column
    for column in ("PricingQuantity", "PricingUnit", "ConsumedQuantity", "ListUnitPrice", "PricingCategory"):
        assert credit[column] is None, column
    assert (credit["ServiceName"], credit["SkuId"], credit["SubAccountId"]) == (
        "Vertex AI",
        "FDAB-647C-5A22",
        "inference-prod",
    )


def test_committed_use_discount_columns() -> None:
    frame = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09")).frame

    covered = by_line(frame, "2")  # COMMITTED_USAGE_DISCOUNT credit cancels the whole cost
    assert covered["BilledCost"] == Decimal(0)
    assert covered["ListCost"] == Decimal("0.1376")
    assert {k: covered[k] for k in covered if k.startswith("CommitmentDiscount")} == {
        "CommitmentDiscountCategory": "Usage",
        "CommitmentDiscountId": "Committed Usage Discount: RAM",
        "CommitmentDiscountName": "Committed Usage Discount: RAM",
        "CommitmentDiscountStatus": "Used",
        "CommitmentDiscountType": "Committed Use Discount",
        # FOCUS 1.2 CommitmentDiscountQuantity-C-005-C: the 32 GiB-hours the CUD credit covers (all of them)
        "CommitmentDiscountQuantity": Decimal(32),
        "CommitmentDiscountUnit": "GiB-Hours",
    }
    assert covered["PricingCategory"] == "Committed"

    fee = by_line(frame, "3")
    assert (fee["ChargeCategory"], fee["BilledCost"], fee["EffectiveCost"]) == (
        "Purchase",
        Decimal("0.0832"),
        Decimal("0.0832"),
    )
    assert fee["CommitmentDiscountId"] == "f3a3b5de-8f4b-4a55-a9d1-7c4e3c0c6e21"  # subscription.instance_id
    assert (fee["CommitmentDiscountCategory"], fee["CommitmentDiscountStatus"]) == ("Usage", None)
    assert fee["ConsumedQuantity"] is None
    # the committed amount of the fee's hour, in the resource's pricing unit
    assert (fee["CommitmentDiscountQuantity"], fee["CommitmentDiscountUnit"]) == (Decimal(32), "GiB-Hours")

    plain = by_line(frame, "1")
    assert plain["CommitmentDiscountId"] is None and plain["CommitmentDiscountStatus"] is None
    assert plain["CommitmentDiscountQuantity"] is None and plain["CommitmentDiscountUnit"] is None


def test_sku_columns_account_name_and_descriptions_fill_what_focus_requires() -> None:
    """FOCUS 1.2 SkuId-C-004-C, SkuMeter-C-005-C, SkuPriceId-C-005-C, BillingAccountName-C-003-C, ChargeDescription."""
    result = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09"))
    frame = result.frame
    vm = by_line(frame, "12")
    assert (vm["SkuId"], vm["SkuMeter"], vm["SkuPriceId"]) == (
        "0D7C-5B66-9A6E", "Nvidia L4 GPU running in Americas", "01A2B3-C4D5E6-F7A8B9:0D7C-5B66-9A6E:0"
    )  # fmt: skip
    tax = by_line(frame, "6")  # the export gives tax the SKU "Tax": FOCUS wants no SKU on Tax rows
    assert (tax["ChargeCategory"], tax["SkuId"], tax["SkuMeter"], tax["SkuPriceId"]) == ("Tax", None, None, None)
    rounding = by_line(frame, "10")  # a rounding_error row has no SKU, so no description of its own
    assert rounding["ChargeDescription"] == "Rounding error for Compute Engine"
    priced = frame.filter(pl.col("ChargeCategory").is_in(["Usage", "Purchase"]))
    assert priced["SkuPriceId"].null_count() == 0
    assert frame["BillingAccountName"].unique().to_list() == ["01A2B3-C4D5E6-F7A8B9"]
    assert result.repairs == {"filled_missing:BillingAccountName": 14, "filled_missing:ChargeDescription": 1}


def test_labels_project_labels_system_labels_and_tags_become_one_flat_object() -> None:
    frame = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09")).frame
    assert json.loads(by_line(frame, "1")["Tags"]) == {
        "feature": "chat",
        "goog-k8s-cluster-name": "inference-gke",
        "canary": True,  # empty label value → true (FOCUS KeyValueFormat)
        "project-label/env": "prod",
        "project-label/team": "ml-platform",
        "compute.googleapis.com/machine_spec": "n2-standard-8",
        "compute.googleapis.com/cores": "8",
        "compute.googleapis.com/memory": "32768",
        "tag/987654321098/cost_center": "cc-42",
    }
    assert json.loads(by_line(frame, "6")["Tags"]) == {"project-label/env": "prod", "project-label/team": "ml-platform"}


def test_descriptive_columns() -> None:
    frame = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09")).frame
    vm = by_line(frame, "12")
    assert {
        k: vm[k]
        for k in (
            "BillingAccountId",
            "BillingAccountType",
            "BillingCurrency",
            "SubAccountId",
            "SubAccountName",
            "SubAccountType",
            "ServiceName",
            "ServiceCategory",
            "ServiceSubcategory",
            "SkuId",
            "RegionId",
            "RegionName",
            "AvailabilityZone",
            "ResourceId",
            "ResourceName",
            "ResourceType",
            "ProviderName",
            "PublisherName",
            "InvoiceIssuerName",
            "CapacityReservationId",
            "CapacityReservationStatus",
            "ChargeDescription",
        )
    } == {
        "BillingAccountId": "01A2B3-C4D5E6-F7A8B9",
        "BillingAccountType": "Billing Account",
        "BillingCurrency": "USD",
        "SubAccountId": "inference-prod",
        "SubAccountName": "Inference Prod",
        "SubAccountType": "Project",
        "ServiceName": "Compute Engine",
        "ServiceCategory": "Compute",
        "ServiceSubcategory": "Virtual Machines",
        "SkuId": "0D7C-5B66-9A6E",
        "RegionId": "us-central1",
        "RegionName": "Iowa",
        "AvailabilityZone": "us-central1-a",
        "ResourceId": "//compute.googleapis.com/projects/123456789012/zones/us-central1-a/instances/4815162342108",
        "ResourceName": "gke-inference-gke-pool-1-3f2a",
        "ResourceType": "compute.googleapis.com/Instance",
        "ProviderName": "Google Cloud",
        "PublisherName": "Google Cloud",
        "InvoiceIssuerName": "Google Cloud",
        "CapacityReservationId": "projects/inference-prod/reservations/l4-pool",
        "CapacityReservationStatus": "Used",
        "ChargeDescription": "Nvidia L4 GPU running in Americas",
    }
    bucket = by_line(frame, "4")
    assert (bucket["ResourceType"], bucket["RegionId"], bucket["RegionName"]) == (
        "storage.googleapis.com/Bucket",
        None,
        None,
    )
    assert vm["ChargePeriodStart"] == datetime(2025, 9, 10, 14, tzinfo=UTC)
    assert vm["ChargePeriodEnd"] == datetime(2025, 9, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("month", "start", "end"),
    [
        ("2025-09", datetime(2025, 9, 1, 7, tzinfo=UTC), datetime(2025, 10, 1, 7, tzinfo=UTC)),  # PDT
        ("2023-03", datetime(2023, 3, 1, 8, tzinfo=UTC), datetime(2023, 4, 1, 7, tzinfo=UTC)),  # PST → PDT
        ("2024-12", datetime(2024, 12, 1, 8, tzinfo=UTC), datetime(2025, 1, 1, 8, tzinfo=UTC)),
    ],
)
def test_billing_period_is_the_pacific_invoice_month(month: str, start: datetime, end: datetime) -> None:
    assert gcp_billing.invoice_month_bounds(month.replace("-", "")) == (start, end)


def test_late_rows_and_corrections_are_counted_not_deduplicated() -> None:
    frame = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09")).frame
    same_hour = frame.filter(
        (pl.col("SkuId") == "A1E8-BE35-6FF9") & (pl.col("ChargePeriodStart") == datetime(2025, 9, 10, 14, tzinfo=UTC))
    )
    # line 1 (exported 2025-09-10) and line 11 (exported 2025-09-11 for the same hour) are both on the invoice
    assert same_hour["BilledCost"].sum() == Decimal("0.2048") + Decimal("0.0128")
    correction = frame.filter(pl.col("ChargeClass") == "Correction")
    assert correction["BilledCost"].sum() == Decimal("-0.05")  # -0.20 negation + 0.15 re-monetization
    assert correction["PricingQuantity"].sum() == Decimal(-1)


def test_parquet_rows_map_exactly_like_jsonl(tmp_path: Path) -> None:
    parquet = tmp_path / "export-000000000000.parquet"
    pq.write_table(pa.Table.from_pylist([typed_row(r) for r in records()], schema=arrow_schema()), parquet)

    from_jsonl = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09"))
    from_parquet = gcp_billing.load(file_source(parquet), BillingPeriod("2025-09"))

    assert from_parquet.source_total == SEPTEMBER_INVOICE_TOTAL
    assert from_parquet.frame.drop("x_source_file").equals(from_jsonl.frame.drop("x_source_file"))


def test_folder_reads_gzipped_jsonl_and_skips_other_files(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "part-1.jsonl.gz").write_bytes(gzip.compress(SEPTEMBER.read_bytes()))
    (tmp_path / "README.txt").write_text("not an export file")
    result = gcp_billing.load(file_source(tmp_path), BillingPeriod("2025-09"))
    assert result.source_total == SEPTEMBER_INVOICE_TOTAL
    assert result.files == [str(tmp_path / "part-1.jsonl.gz")]


NEGATIVE_USAGE = "usage.amount is negative (-3600.0) on a regular row without adjustment_info"
UNKNOWN_COST_TYPE = "unknown cost_type 'refund'; expected one of regular, tax, adjustment, rounding_error"


def test_unusable_rows_are_quarantined_with_their_line_and_reason(tmp_path: Path) -> None:
    good = records()[0]
    bad_time = {**good, "usage_start_time": "yesterday"}
    negative = {**good, "usage": {**good["usage"], "amount": Decimal("-3600.0")}}
    unknown_type = {**good, "cost_type": "refund"}
    no_cost = {k: v for k, v in good.items() if k != "cost"}
    lines = [json.dumps(r, default=str) for r in (good, bad_time, negative, unknown_type, no_cost)]
    lines.insert(2, '{"billing_account_id": "01A2B3-C4D5E6-F7A8B9", "cost": ')
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")

    result = gcp_billing.load(file_source(path), BillingPeriod("2025-09"))

    assert result.frame.height == 1
    assert result.quarantine.to_dicts() == [
        {"file": str(path), "line": "2", "reason": "usage_start_time is not a timestamp: 'yesterday'"},
        {"file": str(path), "line": "3", "reason": "not valid JSON (Expecting value at column 56)"},
        {"file": str(path), "line": "4", "reason": NEGATIVE_USAGE},
        {"file": str(path), "line": "5", "reason": UNKNOWN_COST_TYPE},
        {"file": str(path), "line": "6", "reason": "cost is empty"},
    ]  # fmt: skip


def test_missing_files_and_broken_parquet_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no export files found"):
        gcp_billing.load(file_source(tmp_path / "*.jsonl"), BillingPeriod("2025-09"))

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"broken\.parquet: not a readable Parquet file"):
        gcp_billing.load(file_source(broken), BillingPeriod("2025-09"))

    drifted = tmp_path / "drifted.parquet"
    pq.write_table(pa.table({"billing_account_id": ["x"], "cost": [1.0]}), drifted)
    with pytest.raises(SourceError, match=r"drifted\.parquet: missing column\(s\) service, usage_start_time"):
        gcp_billing.load(file_source(drifted), BillingPeriod("2025-09"))


def test_rows_fit_focus_and_load_through_the_pipeline(duckdb_warehouse: Any) -> None:
    from pipelines.ingest import ingest

    result = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09"))
    assert set(result.frame["ChargeCategory"]) <= set(CHARGE_CATEGORIES)
    assert set(result.frame["ServiceCategory"]) <= set(SERVICE_CATEGORIES)
    ready = conform(result.frame.with_columns(
        x_source=pl.lit("gcp"), x_source_type=pl.lit("gcp_billing_export"), x_billing_period=pl.lit("2025-09"),
        x_batch_id=pl.lit("b"), x_charge_id=pl.lit("c"),
    ))  # fmt: skip
    assert null_violations(ready) == {}

    config = CogsConfig(sources=[file_source(SEPTEMBER)])
    summary = ingest(duckdb_warehouse, config, "gcp", "2025-09")
    assert (summary.rows, summary.quarantined) == (14, 0)
    assert summary.source_total == summary.loaded_billed_cost == SEPTEMBER_INVOICE_TOTAL


def test_list_prices_come_from_the_catalog_when_the_export_lacks_them(tmp_path: Path) -> None:
    from tests.test_gcp_catalog import FakeCatalog

    with FakeCatalog.running() as catalog:
        source = file_source(MARCH_2023, catalog_prices=True, catalog_api_endpoint=catalog.url, cache_dir=str(tmp_path))
        result = gcp_billing.load(source, BillingPeriod("2023-03"))

    frame = result.frame
    core = by_line(frame, "1")  # 4 h at the catalog's 0.031611/h; billed 0.12 at a contract price
    assert (core["ListUnitPrice"], core["ListCost"], core["BilledCost"]) == (
        Decimal("0.031611"),
        Decimal("0.126444"),
        Decimal("0.12"),
    )
    storage = by_line(frame, "2")
    assert (storage["ListUnitPrice"], storage["ListCost"]) == (Decimal("0.026"), Decimal("0.052"))
    egress = by_line(frame, "3")  # two tiers and no price.tier_start_amount: ambiguous, so derived from cost
    assert (egress["ListUnitPrice"], egress["ListCost"]) == (Decimal("0.01"), Decimal("0.03"))
    assert result.stats["list_unit_price_from_catalog"] == 2
    assert result.stats["list_cost_from_cost"] == 1
    assert result.source_total == Decimal("0.202")


# --- BigQuery ----------------------------------------------------------------------------------------------

# The detailed export's BigQuery schema as Google documents it (types per "Structure of Detailed data export").
KV = [("key", "STRING"), ("value", "STRING")]
EXPORT_SCHEMA: list[tuple[str, Any, str]] = [
    ("billing_account_id", "STRING", "NULLABLE"),
    ("service", [("id", "STRING"), ("description", "STRING")], "NULLABLE"),
    ("sku", [("id", "STRING"), ("description", "STRING")], "NULLABLE"),
    ("usage_start_time", "TIMESTAMP", "NULLABLE"),
    ("usage_end_time", "TIMESTAMP", "NULLABLE"),
    ("project", [("id", "STRING"), ("number", "STRING"), ("name", "STRING"), ("labels", KV, "REPEATED"),
                 ("ancestry_numbers", "STRING"),
                 ("ancestors", [("resource_name", "STRING"), ("display_name", "STRING")], "REPEATED")], "NULLABLE"),
    ("labels", KV, "REPEATED"),
    ("system_labels", KV, "REPEATED"),
    ("location", [("location", "STRING"), ("country", "STRING"), ("region", "STRING"), ("zone", "STRING")], "NULLABLE"),
    ("resource", [("name", "STRING"), ("global_name", "STRING")], "NULLABLE"),
    ("tags", [("key", "STRING"), ("value", "STRING"), ("inherited", "BOOLEAN"), ("namespace", "STRING")], "REPEATED"),
    ("price", [("effective_price", "NUMERIC"), ("tier_start_amount", "NUMERIC"), ("unit", "STRING"),
               ("pricing_unit_quantity", "NUMERIC"), ("list_price", "NUMERIC")], "NULLABLE"),
    ("subscription", [("instance_id", "STRING")], "NULLABLE"),
    ("transaction_type", "STRING", "NULLABLE"),
    ("seller_name", "STRING", "NULLABLE"),
    ("export_time", "TIMESTAMP", "NULLABLE"),
    ("cost", "FLOAT", "NULLABLE"),
    ("currency", "STRING", "NULLABLE"),
    ("currency_conversion_rate", "FLOAT", "NULLABLE"),
    ("usage", [("amount", "FLOAT"), ("unit", "STRING"), ("amount_in_pricing_units", "FLOAT"),
               ("pricing_unit", "STRING")], "NULLABLE"),
    ("credits", [("name", "STRING"), ("amount", "FLOAT"), ("full_name", "STRING"), ("id", "STRING"),
                 ("type", "STRING")], "REPEATED"),
    ("invoice", [("month", "STRING"), ("publisher_type", "STRING")], "NULLABLE"),
    ("cost_type", "STRING", "NULLABLE"),
    ("adjustment_info", [("id", "STRING"), ("description", "STRING"), ("mode", "STRING"), ("type", "STRING")],
     "NULLABLE"),
    ("cost_at_list", "FLOAT", "NULLABLE"),
]  # fmt: skip


def _fields(spec: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The REST API's TableSchema.fields from the compact spec."""
    out = []
    for name, kind, *mode in spec:
        field_: dict[str, Any] = {"name": name, "mode": mode[0] if mode else "NULLABLE"}
        if isinstance(kind, list):
            field_ |= {"type": "RECORD", "fields": _fields(kind)}
        else:
            field_["type"] = kind
        out.append(field_)
    return out


def _arrow_type(kind: Any, mode: str) -> pa.DataType:
    scalar = {
        "STRING": pa.string(), "FLOAT": pa.float64(), "NUMERIC": pa.decimal128(38, 9), "BOOLEAN": pa.bool_(),
        "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    }  # fmt: skip
    base = (
        pa.struct([pa.field(n, _arrow_type(k, m[0] if m else "NULLABLE")) for n, k, *m in kind])
        if isinstance(kind, list)
        else scalar[kind]
    )
    return pa.list_(base) if mode == "REPEATED" else base


def arrow_schema() -> pa.Schema:
    """How BigQuery exports the table to Parquet: FLOAT64 → double, NUMERIC → decimal(38,9), TIMESTAMP → UTC µs."""
    return pa.schema([pa.field(n, _arrow_type(k, m)) for n, k, m in EXPORT_SCHEMA])


def _typed(value: Any, kind: Any, mode: str) -> Any:
    if value is None:
        return [] if mode == "REPEATED" else None
    if mode == "REPEATED":
        return [_typed(v, kind, "NULLABLE") for v in value]
    if isinstance(kind, list):
        return {n: _typed(value.get(n), k, m[0] if m else "NULLABLE") for n, k, *m in kind}
    return {
        "TIMESTAMP": lambda v: gcp_billing.parse_timestamp(v),
        "FLOAT": float,
        "NUMERIC": Decimal,
        "BOOLEAN": bool,
        "STRING": str,
    }[kind](value)


def typed_row(record: dict[str, Any]) -> dict[str, Any]:
    return {n: _typed(record.get(n), k, m) for n, k, m in EXPORT_SCHEMA}


def _cell(value: Any, kind: Any, mode: str) -> Any:
    """A value as the REST API's ``f``/``v`` cell (timestamps as int64 µs: formatOptions.useInt64Timestamp)."""
    if value is None:
        return [] if mode == "REPEATED" else None
    if mode == "REPEATED":
        return [{"v": _cell(v, kind, "NULLABLE")} for v in value]
    if isinstance(kind, list):
        return {"f": [{"v": _cell(value.get(n), k, m[0] if m else "NULLABLE")} for n, k, *m in kind]}
    if kind == "TIMESTAMP":
        parsed = gcp_billing.parse_timestamp(value)
        assert parsed is not None
        return str((parsed - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
    if kind == "BOOLEAN":
        return "true" if value else "false"
    return str(value)


@dataclass
class StoredRow:
    partition: date  # _PARTITIONTIME
    record: dict[str, Any]

    @property
    def export_time(self) -> datetime:
        parsed = gcp_billing.parse_timestamp(self.record["export_time"])
        assert parsed is not None
        return parsed


@dataclass
class FakeBigQuery:
    """The REST endpoints google-cloud-bigquery uses for a query: jobs.query, jobs.get, jobs.getQueryResults."""

    rows: list[StoredRow]
    page_rows: int = 4
    failures: list[tuple[str, int, str]] = field(default_factory=list)  # (kind of request, status, reason)
    after_summary: Callable[[FakeBigQuery], None] | None = None
    summary_total_offset: Decimal = Decimal(0)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    jobs: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(default_factory=dict)
    project: str = ""
    url: str = ""

    @classmethod
    def with_fixture(cls, **kwargs: Any) -> FakeBigQuery:
        # _PARTITIONTIME: the day the row was exported (what real tables show: a day's partition holds exports up
        # to that evening, Pacific time)
        stored = [StoredRow(gcp_billing.parse_timestamp(r["export_time"]).date(), r) for r in records()]  # type: ignore[union-attr]
        return cls(rows=stored, **kwargs)

    @contextmanager
    def serve(self) -> Iterator[FakeBigQuery]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append(("POST", self.path, body))
                self._answer(lambda: fake.post(self.path, body))

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, None))
                self._answer(lambda: fake.get(self.path))

            def _answer(self, respond: Callable[[], tuple[int, dict[str, Any]]]) -> None:
                try:
                    self._reply(*respond())
                except AssertionError as exc:  # a request the fake does not expect: a 400 is not retried
                    self._reply(
                        400,
                        {
                            "error": {
                                "code": 400,
                                "message": f"fake BigQuery: {exc}",
                                "errors": [{"reason": "invalidQuery"}],
                            }
                        },
                    )

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_port}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    def _failure(self, kind: str) -> tuple[int, dict[str, Any]] | None:
        for i, (failing, status, reason) in enumerate(self.failures):
            if failing == kind:
                del self.failures[i]
                message = (
                    f"Access Denied: Table {TABLE}: User does not have permission" if status == 403 else "Backend error"
                )
                return status, {
                    "error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}
                }
        return None

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert re.fullmatch(r"/bigquery/v2/projects/[\w-]+/queries(\?.*)?", path), path
        failure = self._failure("query")
        if failure:
            return failure
        params = {p["name"]: p["parameterValue"]["value"] for p in body.get("queryParameters", [])}
        if "COUNT(*)" in body["query"]:
            schema, rows = self._summary(params)
            if self.after_summary:
                self.after_summary(self)
        else:
            schema, rows = self._detail(body["query"], params)
        job_id = f"job_{len(self.jobs)}"
        self.jobs[job_id] = (schema, rows)
        self.project = path.split("/")[4]  # the job runs in the project the request names
        return 200, self._page(job_id, 0, kind="bigquery#queryResponse")

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        url = urlparse(path)
        job = re.fullmatch(r"/bigquery/v2/projects/([\w-]+)/(jobs|queries)/(\w+)", url.path)
        assert job, path
        if job.group(2) == "jobs":  # jobs.get
            return 200, {"kind": "bigquery#job", "id": f"{job.group(1)}:US.{job.group(3)}", "status": {"state": "DONE"},
                         "jobReference": {"projectId": job.group(1), "jobId": job.group(3), "location": "US"},
                         "configuration": {"query": {"query": "…"}}, "statistics": {}}  # fmt: skip
        failure = self._failure("page")
        if failure:
            return failure
        query = parse_qs(url.query)
        return 200, self._page(job.group(3), int(query.get("pageToken", ["0"])[0]))

    def _page(self, job_id: str, start: int, kind: str = "bigquery#getQueryResultsResponse") -> dict[str, Any]:
        schema, rows = self.jobs[job_id]
        body = {
            "kind": kind, "jobReference": {"projectId": self.project, "jobId": job_id, "location": "US"},
            "jobComplete": True, "schema": {"fields": schema}, "totalRows": str(len(rows)),
            "rows": rows[start : start + self.page_rows],
        }  # fmt: skip
        if start + self.page_rows < len(rows):
            body["pageToken"] = str(start + self.page_rows)
        return body

    def _summary(self, params: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lo, hi = date.fromisoformat(params["scan_start"]), date.fromisoformat(params["scan_end"])
        month = [
            r for r in self.rows if lo <= r.partition <= hi and r.record["invoice"]["month"] == params["invoice_month"]
        ]
        q9 = Decimal("0.000000001")
        total = sum(
            (Decimal(str(a)).quantize(q9, ROUND_HALF_UP)
             for r in month for a in [r.record["cost"], *(c["amount"] for c in r.record.get("credits", []))]),
            Decimal(0),
        ) + self.summary_total_offset  # fmt: skip
        schema = _fields([("row_count", "INTEGER"), ("first_partition", "DATE"), ("last_partition", "DATE"),
                          ("last_export_time", "TIMESTAMP"), ("invoice_total", "NUMERIC")])  # fmt: skip
        if not month:
            return schema, [{"f": [{"v": "0"}, {"v": None}, {"v": None}, {"v": None}, {"v": None}]}]
        last_export = max(r.export_time for r in month)
        partitions = sorted(r.partition for r in month)
        cells = [str(len(month)), partitions[0].isoformat(), partitions[-1].isoformat(),
                 _cell(last_export, "TIMESTAMP", "NULLABLE"), str(total)]  # fmt: skip
        return schema, [{"f": [{"v": c} for c in cells]}]

    def _detail(self, sql: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        selected = re.search(r"SELECT (.+?)\nFROM", sql, re.S)
        assert selected, sql
        columns = [c.strip() for c in selected.group(1).split(",")]
        schema = {s[0]: s for s in EXPORT_SCHEMA}
        unknown = [c for c in columns if c not in schema]
        assert not unknown, f"Unrecognized name: {unknown}"
        spec = [schema[c] for c in columns]  # in the order selected, as BigQuery answers
        lo, hi = date.fromisoformat(params["first_partition"]), date.fromisoformat(params["last_partition"])
        as_of = gcp_billing.parse_timestamp(params["as_of"])
        assert as_of is not None
        month = params["invoice_month"]
        chosen = [
            r
            for r in self.rows
            if lo <= r.partition <= hi and r.record["invoice"]["month"] == month and r.export_time <= as_of
        ]
        rows = [{"f": [{"v": _cell(r.record.get(n), k, m)} for n, k, m in spec]} for r in chosen]
        return _fields(spec), rows


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import bigquery

    retry = bigquery.DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05).with_timeout(10.0)
    monkeypatch.setattr(gcp_billing, "RETRY", retry)


def bigquery_source(fake: FakeBigQuery) -> GcpBillingExportSource:
    return GcpBillingExportSource(
        name="gcp", type="gcp_billing_export", table=TABLE, billing_project="acme-finops", api_endpoint=fake.url
    )


def test_bigquery_month_matches_the_files_and_is_read_page_by_page(fast_retries: None) -> None:
    fake = FakeBigQuery.with_fixture()
    with fake.serve() as bq:
        result = gcp_billing.load(bigquery_source(bq), BillingPeriod("2025-09"))

    from_files = gcp_billing.load(file_source(SEPTEMBER), BillingPeriod("2025-09")).frame
    key = ["ChargePeriodStart", "SkuId", "ChargeCategory", "BilledCost"]
    same = [c for c in from_files.columns if c not in ("x_source_file", "x_source_line")]
    assert result.frame.select(same).sort(key).equals(from_files.select(same).sort(key))
    assert result.source_total == SEPTEMBER_INVOICE_TOTAL
    assert result.files == [f"bigquery:{TABLE}"]
    assert set(result.frame["x_source_line"]) == {str(n) for n in range(1, 14)}

    posts = [body for method, _, body in fake.requests if method == "POST"]
    summary, detail = posts
    assert "DATE(_PARTITIONTIME) BETWEEN @scan_start AND @scan_end" in summary["query"]
    assert "invoice.month = @invoice_month" in summary["query"]
    assert f"FROM `{TABLE}`" in summary["query"]
    params = {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in summary["queryParameters"]}
    assert params == {
        "invoice_month": ("STRING", "202509"),
        "scan_start": ("DATE", "2025-07-28"),  # 35 days before September 1
        "scan_end": ("DATE", "2025-11-05"),  # 35 days after October 1
    }
    assert "DATE(_PARTITIONTIME) BETWEEN @first_partition AND @last_partition" in detail["query"]
    assert "AND export_time <= @as_of" in detail["query"] and "SELECT *" not in detail["query"]
    params = {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in detail["queryParameters"]}
    assert params == {
        "invoice_month": ("STRING", "202509"),
        "first_partition": ("DATE", "2025-09-03"),  # the month's rows live in partitions 2025-09-03 …
        "last_partition": ("DATE", "2025-10-02"),  # … to 2025-10-02 (the rounding_error row)
        "as_of": ("TIMESTAMP", "2025-10-02 11:20:00+00:00"),
    }
    assert all(p["useLegacySql"] is False and p["parameterMode"] == "NAMED" for p in posts)
    page_tokens = [parse_qs(urlparse(path).query).get("pageToken") for method, path, _ in fake.requests
                   if method == "GET" and "/queries/" in path]  # fmt: skip
    assert page_tokens == [["4"], ["8"], ["12"]]  # 13 rows, 4 a page
    assert all(path.startswith("/bigquery/v2/projects/acme-finops/") for _, path, _ in fake.requests)


def test_bigquery_rows_appended_during_the_load_wait_for_the_next_one(fast_retries: None) -> None:
    late = {**records()[0], "export_time": "2025-10-03 09:00:00 UTC", "cost": Decimal("1.0"), "credits": []}

    def append(fake: FakeBigQuery) -> None:
        fake.rows.append(StoredRow(date(2025, 10, 2), late))

    with FakeBigQuery.with_fixture(after_summary=append).serve() as bq:
        result = gcp_billing.load(bigquery_source(bq), BillingPeriod("2025-09"))
    assert result.source_total == SEPTEMBER_INVOICE_TOTAL  # the snapshot as of the summary
    assert result.frame.height == 14


def test_bigquery_server_errors_are_retried(fast_retries: None) -> None:
    fake = FakeBigQuery.with_fixture(failures=[("query", 500, "backendError"), ("page", 503, "backendError")])
    with fake.serve() as bq:
        result = gcp_billing.load(bigquery_source(bq), BillingPeriod("2025-09"))
    assert result.source_total == SEPTEMBER_INVOICE_TOTAL
    assert fake.failures == []  # both failures were served, and retried past
    assert sum(1 for method, _, _ in fake.requests if method == "POST") == 3


def test_bigquery_access_denied_names_the_table(fast_retries: None) -> None:
    fake = FakeBigQuery.with_fixture(failures=[("query", 403, "accessDenied")])
    with fake.serve() as bq, pytest.raises(SourceError) as error:
        gcp_billing.load(bigquery_source(bq), BillingPeriod("2025-09"))
    message = str(error.value)
    assert message.startswith(f"source 'gcp': bigquery:{TABLE}: access denied (403): ")
    assert "roles/bigquery.dataViewer" in message and "roles/bigquery.jobUser on project acme-finops" in message
    assert sum(1 for method, _, _ in fake.requests if method == "POST") == 1  # a 403 is not retried


def test_bigquery_rows_that_do_not_add_up_to_the_invoice_fail_the_load(fast_retries: None) -> None:
    fake = FakeBigQuery.with_fixture(summary_total_offset=Decimal("0.01"))
    with (
        fake.serve() as bq,
        pytest.raises(
            SourceError, match=r"read 13 rows totalling 0\.396096000 .* BigQuery counts 13 rows totalling 0\.406096000"
        ),
    ):
        list(gcp_billing.load_batches(bigquery_source(bq), BillingPeriod("2025-09")))


def test_bigquery_rows_at_the_edge_of_the_partitions_searched_fail_the_load(fast_retries: None) -> None:
    fake = FakeBigQuery.with_fixture()
    fake.rows.append(StoredRow(date(2025, 7, 28), {**records()[0], "export_time": "2025-07-28 10:00:00 UTC"}))
    with (
        fake.serve() as bq,
        pytest.raises(SourceError, match=r"reach the edge of the partitions searched .* raise partition_margin_days"),
    ):
        gcp_billing.load(bigquery_source(bq), BillingPeriod("2025-09"))


def test_bigquery_empty_month_is_an_empty_load(fast_retries: None) -> None:
    with FakeBigQuery.with_fixture().serve() as bq:
        result = gcp_billing.load(bigquery_source(bq), BillingPeriod("2025-06"))
    assert (result.frame.height, result.source_total) == (0, Decimal(0))


def test_current_delivery_changes_only_when_google_appends_rows(fast_retries: None, tmp_path: Path) -> None:
    fake = FakeBigQuery.with_fixture()
    with fake.serve() as bq:
        source = bigquery_source(bq)
        before = gcp_billing.current_delivery(source, BillingPeriod("2025-09"))
        assert before == gcp_billing.current_delivery(source, BillingPeriod("2025-09"))
        late = {**records()[0], "export_time": "2025-10-03 09:00:00 UTC", "credits": []}
        fake.rows.append(StoredRow(date(2025, 10, 3), late))
        after = gcp_billing.current_delivery(source, BillingPeriod("2025-09"))
        assert gcp_billing.current_delivery(source, BillingPeriod("2025-06")) is None
    assert before is not None and after is not None
    assert before.delivery_id == "2025-10-02T11:20:00+00:00/13/0.396096000"
    assert after.delivery_id == "2025-10-03T09:00:00+00:00/14/0.652096000"
    assert before.location == f"bigquery:{TABLE}"
    assert all("COUNT(*)" in body["query"] for method, _, body in fake.requests if method == "POST")

    (tmp_path / "a.jsonl").write_text(SEPTEMBER.read_text())
    first = gcp_billing.current_delivery(file_source(tmp_path), BillingPeriod("2025-09"))
    (tmp_path / "b.jsonl").write_text(SEPTEMBER.read_text())
    second = gcp_billing.current_delivery(file_source(tmp_path), BillingPeriod("2025-09"))
    assert first is not None and second is not None and first.delivery_id != second.delivery_id
    assert gcp_billing.current_delivery(file_source(tmp_path / "none" / "*.jsonl"), BillingPeriod("2025-09")) is None
