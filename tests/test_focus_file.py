"""FOCUS file connector: FOCUS 1.0–1.3 exports of AWS, Microsoft, Oracle, Nebius and the spec's own examples,
upgraded to 1.2 with every repair counted; schema drift, corrupt files and bad rows."""

from __future__ import annotations

import csv
import gzip
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from connectors import focus_file
from connectors.base import BillingPeriod, LoadResult, SourceError
from models.config import FocusFileSource, parse_config
from models.focus import FOCUS_COLUMN_NAMES, MONEY, REQUIRED_COLUMNS, conform, null_violations
from pipelines.demo import gpu_cloud
from pipelines.demo.company import GPU_CLOUD_H100_HOURLY, DemoMonth
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

FIXTURES = Path(__file__).parent / "fixtures" / "focus"
SAMPLE = FIXTURES / "focus_sample_1000.csv"  # FinOps Foundation FOCUS-Sample-Data 1.0, CC BY 4.0
AWS = FIXTURES / "aws_focus_1_2"  # shaped like AWS Data Exports "FOCUS 1.2 with AWS columns" (Parquet)
NEBIUS = FIXTURES / "nebius_focus_1_2.csv"  # shaped like Nebius' hourly FOCUS 1.2 CSV
ORACLE = FIXTURES / "oracle_focus_1_0"  # shaped like an OCI FOCUS 1.0 cost report (gzip CSV, oci_ columns)
SPEC = FIXTURES / "spec_v1_2_examples"  # FOCUS_Spec v1.2 examples, CC BY 4.0
OURS = {c: pl.lit("test") for c in ("x_source", "x_source_type", "x_billing_period", "x_batch_id", "x_charge_id")}


def source(path: Path | str) -> FocusFileSource:
    return FocusFileSource(name="focus", type="focus_file", path=str(path))


def storable(frame: pl.DataFrame) -> dict[str, int]:
    """NULLs left in NOT NULL columns once the pipeline conforms the frame ({} = the warehouse accepts it)."""
    return null_violations(conform(frame.with_columns(**OURS)))


# --- real exports ------------------------------------------------------------------------------------


def test_official_sample_september() -> None:
    result = focus_file.load(source(SAMPLE), BillingPeriod("2024-09"))
    frame = result.frame
    # 1,000 rows: 999 bill September, one Oracle row bills October.
    assert frame.height == 999 and result.quarantine.height == 0
    # The provider total is exact, and so is the warehouse's: 7 BilledCost values carry an 11th decimal.
    assert result.source_total == Decimal("20.28022672899")
    assert frame["BilledCost"].sum() == Decimal("20.28022672899")
    assert frame["EffectiveCost"].sum() == Decimal("14.97651418586")
    # Oracle writes NULL ContractedCost without a unit price: it becomes BilledCost (ContractedCost-C-008-C).
    assert frame["ContractedCost"].null_count() == 0
    assert frame["ContractedCost"].sum() == Decimal("15.27333431799")
    assert result.repairs == {
        "cost_from_billed_cost:ContractedCost": 6,
        "datetime_not_iso8601_utc": 3996,  # 999 rows × 4 "YYYY-MM-DD HH:MM:SS" columns
        "decimal_rounded_to_12_places:ConsumedQuantity": 7,
        "empty_string_as_null": 48,
        "filled_as_other:ServiceSubcategory": 999,  # 1.1 added it; "Other (<ServiceCategory>)"
        "filled_from_billing_currency:PricingCurrency": 999,  # 1.0 prices are in the billing currency
        "filled_in_pricing_currency:PricingCurrencyContractedUnitPrice": 993,
        "filled_in_pricing_currency:PricingCurrencyEffectiveCost": 999,
        "filled_in_pricing_currency:PricingCurrencyListUnitPrice": 998,
        "null_literal": 8968,
        "nulled_on_non_consumption_row:ConsumedQuantity": 2,  # Oracle's two Adjustment rows
        "nulled_on_non_consumption_row:ConsumedUnit": 2,
        "value_casing:ChargeFrequency": 6,  # Oracle's "Usage-based"
    }
    # 12 Microsoft rows reverse earlier usage: negative quantity and negative cost, kept.
    assert result.stats == {
        "files": 1,
        "rows": 999,
        "rows_outside_period": 1,
        "unknown_column:Id": 1,
        "usage_reversal_rows": 12,
    }
    assert "Id" not in frame.columns
    assert sorted(frame["ChargeFrequency"].unique().to_list()) == ["One-Time", "Usage-Based"]
    first = frame.row(0, named=True)
    assert first["ChargePeriodStart"] == datetime(2024, 9, 18, 22, tzinfo=UTC)
    assert first["BillingPeriodStart"] == datetime(2024, 9, 1, tzinfo=UTC)
    assert first["BilledCost"] == Decimal("0.0000008") and first["AvailabilityZone"] is None
    assert (first["x_source_file"], first["x_source_line"]) == (str(SAMPLE), "line 2")
    assert frame.schema["BilledCost"] == MONEY
    assert storable(frame) == {}


def test_official_sample_october_has_the_one_oracle_row() -> None:
    result = focus_file.load(source(SAMPLE), BillingPeriod("2024-10"))
    assert result.frame.height == 1 and result.source_total == Decimal("0.24")
    assert result.frame["x_source_line"].to_list() == ["line 946"]
    assert result.frame["ProviderName"].to_list() == ["Oracle"]


def test_official_sample_ingests_and_reconciles(duckdb_warehouse: Warehouse) -> None:
    config = parse_config(f"sources: [{{name: sample, type: focus_file, path: '{SAMPLE}'}}]")
    summary = ingest(duckdb_warehouse, config, "sample", "2024-09")
    assert (summary.rows, summary.quarantined) == (999, 0)
    assert summary.source_total == summary.loaded_billed_cost == Decimal("20.28022672899")


def test_aws_focus_1_2_parquet_streams_by_row_group() -> None:
    batches = list(focus_file.load_batches(source(AWS), BillingPeriod("2025-06")))
    assert [b.frame.height for b in batches] == [4, 3]  # the file has two row groups
    assert [b.files for b in batches] == [[str(next(AWS.rglob("*.parquet")))], []]
    result = focus_file.load(source(AWS), BillingPeriod("2025-06"))
    frame = result.frame
    assert frame.height == 7 and result.quarantine.height == 0
    # Costs are doubles in AWS's table: read through their shortest decimal text, so 98.32 stays 98.32.
    assert result.source_total == frame["BilledCost"].sum() == Decimal("208.801498")
    assert frame["EffectiveCost"].sum() == Decimal("208.6444231")
    assert frame["BilledCost"].to_list() == [Decimal(v) for v in ("98.32", "0", "100", "0", "3.141498", "12.34", "-5")]
    # The Savings Plan keeps its amortization: covered usage 55.5 + unused 44.5 = the 100 recurring fee.
    sp = frame.filter(pl.col("CommitmentDiscountId").is_not_null())
    assert sp.select("ChargeCategory", "CommitmentDiscountStatus", "BilledCost", "EffectiveCost").rows() == [
        ("Usage", "Used", Decimal(0), Decimal("55.5")),
        ("Purchase", None, Decimal(100), Decimal(0)),
        ("Usage", "Unused", Decimal(0), Decimal("44.5")),
    ]
    # AWS documents NULL InvoiceIssuerName/PublisherName as conformance gaps (here on the Tax row).
    assert result.repairs == {
        "filled_from_provider_name:InvoiceIssuerName": 1,
        "filled_from_provider_name:PublisherName": 1,
        "filled_in_pricing_currency:PricingCurrencyContractedUnitPrice": 3,  # USD prices, USD bill
        "filled_in_pricing_currency:PricingCurrencyEffectiveCost": 7,
        "filled_in_pricing_currency:PricingCurrencyListUnitPrice": 3,
    }
    assert frame.filter(pl.col("ChargeCategory") == "Tax")["InvoiceIssuerName"].to_list() == ["AWS"]
    # The x_ columns are counted once per file, not per row group.
    assert result.stats == {
        "files": 1,
        "rows": 7,
        "x_column_not_stored:x_Discounts": 1,
        "x_column_not_stored:x_Operation": 1,
        "x_column_not_stored:x_ServiceCode": 1,
    }
    assert frame["Tags"][0] == '{"feature":"chat","env":"prod","costCategory/team":"ml"}'
    assert frame["Tags"][2] == "{}"
    assert frame["x_source_line"].to_list() == [f"row {n}" for n in range(1, 8)]
    assert frame["ChargePeriodStart"][0] == datetime(2025, 6, 2, 10, tzinfo=UTC)
    assert storable(frame) == {}


def test_nebius_focus_1_2_csv() -> None:
    result = focus_file.load(source(NEBIUS), BillingPeriod("2025-06"))
    frame = result.frame
    assert frame.height == 4 and result.repairs == {} and result.stats == {"files": 1, "rows": 4}
    assert result.source_total == frame["BilledCost"].sum() == Decimal("40.1562614")
    # Nebius shows a commitment as an Adjustment row (docs.nebius.com "FOCUS conformance").
    assert frame.filter(pl.col("ChargeCategory") == "Adjustment")["BilledCost"].to_list() == [Decimal("-7.08")]
    assert frame["Tags"].null_count() == frame["SubAccountId"].null_count() == 4
    assert storable(frame) == {}


def test_oracle_focus_1_0_gzip_with_its_oci_columns() -> None:
    result = focus_file.load(source(ORACLE), BillingPeriod("2025-06"))
    frame = result.frame
    assert frame.height == 3 and result.quarantine.height == 0
    assert result.source_total == frame["BilledCost"].sum() == Decimal("32.2175")
    assert frame["ContractedCost"].to_list() == [Decimal("32"), Decimal("0.0255"), Decimal("0.192")]
    assert result.repairs == {
        "cost_from_billed_cost:ContractedCost": 3,
        "datetime_not_iso8601_utc": 12,  # 2025-06-01T00:00Z: no seconds
        "decimal_rounded_to_12_places:ConsumedQuantity": 1,  # 1.0000000000000002
        "filled_as_other:ServiceSubcategory": 3,
        "filled_from_billing_currency:PricingCurrency": 3,
        "filled_in_pricing_currency:PricingCurrencyEffectiveCost": 3,
        "filled_in_pricing_currency:PricingCurrencyListUnitPrice": 3,
        "null_literal": 8,
        "nulled_on_non_consumption_row:ConsumedQuantity": 1,
        "nulled_on_non_consumption_row:ConsumedUnit": 1,
        "value_casing:ChargeFrequency": 3,
    }
    oci = [k for k in result.stats if k.startswith("unknown_column:oci_")]
    assert len(oci) == 10 and result.stats["unknown_column:oci_CompartmentName"] == 1
    assert frame["ChargePeriodStart"][0] == datetime(2025, 6, 3, 10, tzinfo=UTC)
    assert storable(frame) == {}


def test_nebius_demo_export_round_trips_exactly(tmp_path: Path) -> None:
    month = DemoMonth("2025-06")
    path = gpu_cloud.write(month, tmp_path, seed=7)
    assert path.read_text().splitlines()[0].split(",") == list(FOCUS_COLUMN_NAMES)
    result = focus_file.load(source(path.parent), BillingPeriod("2025-06"))
    frame = result.frame
    # One VM × 720 hours, plus its boot disk and the bucket once a day.
    assert frame.height == 720 + 30 + 30 and result.quarantine.height == 0 and result.repairs == {}
    assert result.source_total == frame["BilledCost"].sum() == Decimal("17184.3234437040")
    vm = frame.filter(pl.col("ResourceId") == gpu_cloud.vm_resource_ids()[0])
    assert vm.height == 720 and vm["BilledCost"].unique().to_list() == [8 * GPU_CLOUD_H100_HOURLY]
    assert vm["ResourceId"][0].startswith("computeinstance-e00")
    assert (frame["ListUnitPrice"] * frame["PricingQuantity"] == frame["ListCost"]).all()
    assert frame["Tags"].null_count() == frame["SubAccountId"].null_count() == frame.height
    assert sorted(frame["ServiceName"].unique().to_list()) == ["Compute", "Object Storage"]
    assert storable(frame) == {}
    assert gpu_cloud.write(month, tmp_path / "again", seed=7).read_bytes() == path.read_bytes()


# --- the FOCUS spec's own examples ---------------------------------------------------------------------

SCENARIO_COLUMNS = ("BilledCost", "EffectiveCost", "BillingPeriodStart")  # the examples show only the columns at stake


def spec_example(name: str) -> tuple[LoadResult, pl.DataFrame]:
    path = next(SPEC.rglob(f"{name}.csv"))
    result = focus_file.combine(focus_file.read_batches("spec", [path], BillingPeriod("2023-01"), SCENARIO_COLUMNS))
    return result, pl.read_csv(path, infer_schema=False).filter(pl.col("BilledCost").is_not_null())


@pytest.mark.parametrize(
    "name",
    [
        "commitment_discount_purchase_scenario_1",
        "commitment_discount_usage_scenario_1",
        "commitment_discount_usage_scenario_2",
        "commitment_discount_usage_scenario_3",
        "commitment_discount_usage_scenario_4",
        "one_hundred_percent_utilization_with_commitment_discount_flexibility_with_1_resource",
        "one_hundred_percent_utilization_with_commitment_discount_flexibility_with_2_resources",
        "one_hundred_percent_utilization_without_commitment_discount_flexibility",
        "zero_percent_utilization_without_commitment_discount_flexibility",
    ],
)
def test_spec_scenarios_keep_every_billed_and_effective_cost(name: str) -> None:
    result, raw = spec_example(name)
    assert result.quarantine.height == 0 and result.frame.height == raw.height
    for column in ("BilledCost", "EffectiveCost"):
        assert result.frame[column].to_list() == [Decimal(v) for v in raw[column].to_list()], column
    assert result.source_total == sum((Decimal(v) for v in raw["BilledCost"].to_list()), Decimal(0))
    # FOCUS: per commitment, the Usage rows' EffectiveCost adds up to the Purchase rows' BilledCost.
    frame = result.frame.filter(pl.col("CommitmentDiscountId").is_not_null())
    purchases, usage = (frame.filter(pl.col("ChargeCategory") == c) for c in ("Purchase", "Usage"))
    if purchases.height and usage.height:  # the flexibility examples hold both sides of a commitment
        assert usage["EffectiveCost"].sum() == purchases["BilledCost"].sum()


def test_spec_flexibility_example_repairs_and_lines() -> None:
    result, _ = spec_example("zero_percent_utilization_without_commitment_discount_flexibility")
    frame = result.frame
    assert frame["x_source_line"].to_list() == ["line 2", "line 4", "line 6"]  # blank lines between records
    assert frame["CommitmentDiscountStatus"].to_list() == [None, "Unused", None]
    assert frame["ConsumedQuantity"].to_list() == [
        None,
        None,
        Decimal(1),
    ]  # NULL on the unused row (ConsumedQuantity-C-004)
    assert frame["SkuPriceId"][0] == "VM_LARGE_COMMITTED_PURCHASE_NO_UPFRONT"
    assert result.repairs == {
        "column_name_casing:SkuPriceid": 1,
        "null_literal": 8,
        "nulled_on_non_consumption_row:ConsumedQuantity": 1,
        "nulled_on_non_consumption_row:ConsumedUnit": 1,
    }
    assert result.stats == {"files": 1, "rows": 3, "x_column_not_stored:x_CommitmentDiscountUnitPrice": 1}


def test_spec_example_with_an_impossible_hour_quarantines_that_row() -> None:
    result, _ = spec_example("commitment_discount_purchase_scenario_3")
    path = next(SPEC.rglob("commitment_discount_purchase_scenario_3.csv"))
    assert result.quarantine.rows() == [(str(path), "5", "ChargePeriodEnd: '2023-02-01T30:00:00Z' is not a date/time")]
    assert result.source_total == Decimal("4381.50")
    assert result.frame["BilledCost"].sum() == Decimal("4381.00")
    assert result.frame["EffectiveCost"].sum() == Decimal(0)


# --- drift, versions, repairs ------------------------------------------------------------------------

BASE = {
    "BilledCost": "1.00",
    "EffectiveCost": "1.00",
    "ListCost": "1.00",
    "ContractedCost": "1.00",
    "BillingAccountId": "acct-1",
    "BillingCurrency": "USD",
    "BillingPeriodStart": "2025-06-01T00:00:00Z",
    "BillingPeriodEnd": "2025-07-01T00:00:00Z",
    "ChargePeriodStart": "2025-06-01T00:00:00Z",
    "ChargePeriodEnd": "2025-06-01T01:00:00Z",
    "ChargeCategory": "Usage",
    "InvoiceIssuerName": "GPU Cloud Inc.",
    "ProviderName": "GPU Cloud",
    "PublisherName": "GPU Cloud",
    "ServiceCategory": "Compute",
    "ServiceName": "GPU Instances",
    "ServiceSubcategory": "Virtual Machines",
    "PricingCurrency": "USD",
    "PricingCurrencyEffectiveCost": "1.00",
}


def write_focus(path: Path, rows: list[dict[str, str]], drop: tuple[str, ...] = ()) -> Path:
    """A FOCUS CSV: every mandatory column (less ``drop``), overridden and extended by each row's values."""
    records = [BASE | row for row in rows]
    header = [c for c in dict.fromkeys(c for r in records for c in r) if c not in drop]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([r.get(c, "") for c in header] for r in records)
    return path


def test_bad_values_are_quarantined_with_physical_line_and_reason(tmp_path: Path) -> None:
    path = write_focus(
        tmp_path / "export.csv",
        [
            {"BilledCost": "1.25", "ChargeDescription": "GPU hours,\nsecond line of a note", "ChargeCategory": "usage"},
            {"BilledCost": "1,5", "ChargeDescription": "comma decimal", "ChargePeriodStart": "2025-06-02T00:00:00Z"},
            {"BilledCost": "2.00", "ChargeDescription": "bad date, good cost", "ChargePeriodStart": "yesterday"},
            {"BilledCost": "9.99", "ChargeDescription": "no billing period", "BillingPeriodStart": "NULL"},
            {"BilledCost": "100", "ChargeDescription": "last month", "BillingPeriodStart": "2025-05-01T00:00:00Z"},
            {"BilledCost": "0", "ChargeDescription": "zero stays", "BillingPeriodStart": "2025-06-01 00:00:00",
             "ChargePeriodStart": "2025-06-04T00:00:00+02:00"},
        ],
    )  # fmt: skip
    result = focus_file.load(source(tmp_path), BillingPeriod("2025-06"))
    assert result.quarantine.rows() == [
        (str(path), "6", "BillingPeriodStart: NULL is not a date/time"),
        (str(path), "4", "BilledCost: '1,5' is not a decimal number"),
        (str(path), "5", "ChargePeriodStart: 'yesterday' is not a date/time"),
    ]
    assert result.frame["ChargeDescription"].to_list() == ["GPU hours,\nsecond line of a note", "zero stays"]
    assert result.frame["x_source_line"].to_list() == ["line 2", "line 8"]  # line 1 is the header
    assert result.frame["ChargeCategory"].to_list() == ["Usage", "Usage"]
    assert result.frame["ChargePeriodStart"][1] == datetime(2025, 6, 3, 22, tzinfo=UTC)
    # The file's own total counts every parseable June cost, quarantined-for-date rows included.
    assert result.source_total == Decimal("3.25")
    assert result.frame["BilledCost"].sum() == Decimal("1.25")
    assert result.repairs == {"datetime_not_iso8601_utc": 2, "value_casing:ChargeCategory": 1}
    assert result.stats == {"files": 1, "rows": 2, "rows_outside_period": 1}


def test_versions_1_0_to_1_3_are_upgraded_to_1_2_names(tmp_path: Path) -> None:
    row = {
        "billingperiodstart": "2025-06-01T00:00:00Z",  # casing
        "AmortizedCost": "0.90",  # pre-1.0 names
        "UsageQuantity": "3",
        "UsageUnit": "Hours",
        "Region": "eu-north1",
        "ServiceProviderName": "Nebius",  # 1.3
        "HostProviderName": "Nebius",
        "AllocatedTags": "{}",
        "x_InvoiceId": "INV-7",  # Microsoft's 1.0 name, adopted by 1.2
        "x_Team": "ml",
        "ChargeSubcategory": "On-Demand",  # removed in 1.0
        "PricingCategory": "On-Demand",  # a 1.0-preview value
    }
    base = {k: v for k, v in BASE.items() if k not in ("BillingPeriodStart", "EffectiveCost", "ProviderName")}
    path = tmp_path / "old.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*base, *row])
        writer.writerow([*base.values(), *row.values()])
    result = focus_file.load(source(tmp_path / "*.csv"), BillingPeriod("2025-06"))
    first = result.frame.row(0, named=True)
    upgraded = ("EffectiveCost", "ConsumedQuantity", "ConsumedUnit", "RegionId", "ProviderName", "InvoiceId")
    assert [first[k] for k in upgraded] == [Decimal("0.9"), Decimal(3), "Hours", "eu-north1", "Nebius", "INV-7"]
    assert first["PricingCategory"] == "Standard"
    assert not [c for c in result.frame.columns if c.startswith("x_") and c not in ("x_source_file", "x_source_line")]
    assert result.repairs == {
        "column_name_casing:billingperiodstart": 1,
        "renamed_column:AmortizedCost->EffectiveCost": 1,
        "renamed_column:Region->RegionId": 1,
        "renamed_column:ServiceProviderName->ProviderName": 1,
        "renamed_column:UsageQuantity->ConsumedQuantity": 1,
        "renamed_column:UsageUnit->ConsumedUnit": 1,
        "renamed_column:x_InvoiceId->InvoiceId": 1,
        "value_renamed:PricingCategory": 1,
    }
    assert result.stats == {
        "files": 1,
        "focus_1_3_column_not_stored:AllocatedTags": 1,
        "focus_1_3_column_not_stored:HostProviderName": 1,
        "rows": 1,
        "unknown_column:ChargeSubcategory": 1,
        "x_column_not_stored:x_Team": 1,
    }


def test_a_missing_mandatory_column_names_the_file_and_column(tmp_path: Path) -> None:
    path = write_focus(tmp_path / "drift.csv", [{}], drop=("ServiceName",))
    with pytest.raises(SourceError) as err:
        focus_file.load(source(path), BillingPeriod("2025-06"))
    assert str(err.value) == (
        f"source 'focus': {path}: missing mandatory FOCUS column(s) ServiceName. the export's schema changed or it is "
        "not a FOCUS 1.0-1.3 export; the warehouse keeps the previous load"
    )
    # A CoreWeave-style usage-only FOCUS 1.2 CSV (quantities, no costs) says which money columns it lacks.
    usage_only = write_focus(tmp_path / "coreweave.csv", [{"ConsumedQuantity": "8", "ConsumedUnit": "GPU-Hours"}],
                             drop=("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"))  # fmt: skip
    with pytest.raises(SourceError, match=r"missing mandatory FOCUS column\(s\) BilledCost, ContractedCost, "
                                          r"EffectiveCost, ListCost\."):  # fmt: skip
        focus_file.load(source(usage_only), BillingPeriod("2025-06"))
    assert len(REQUIRED_COLUMNS) == 16


def test_a_new_unknown_column_is_counted_not_stored(tmp_path: Path) -> None:
    write_focus(tmp_path / "new.csv", [{"GpuModel": "H100", "x_GpuModel": "H100"}])
    result = focus_file.load(source(tmp_path), BillingPeriod("2025-06"))
    assert result.frame.height == 1 and "GpuModel" not in result.frame.columns
    assert result.stats == {"files": 1, "rows": 1, "unknown_column:GpuModel": 1, "x_column_not_stored:x_GpuModel": 1}


def test_row_repairs_follow_focus_1_2_rules(tmp_path: Path) -> None:
    write_focus(
        tmp_path / "rules.csv",
        [
            # Microsoft 1.0: a commitment purchase with EffectiveCost and a Usage-Based frequency
            {"ChargeCategory": "Purchase", "CommitmentDiscountId": "ri-1", "BilledCost": "730", "EffectiveCost": "730",
             "ChargeFrequency": "Usage-Based", "ListCost": "", "ContractedCost": "NULL", "ContractedUnitPrice": "",
             "PricingQuantity": "1"},
            # covered usage priced On-Demand; NULL costs with unit prices
            {"CommitmentDiscountId": "ri-1", "CommitmentDiscountStatus": "Used", "PricingCategory": "On-Demand",
             "BilledCost": "0", "EffectiveCost": "1", "ListCost": "NULL", "ListUnitPrice": "2.5",
             "ContractedCost": "NULL", "ContractedUnitPrice": "2", "PricingQuantity": "4",
             "ChargeFrequency": "Usage-Based"},
            # Tags without their outer braces (Azure), and a Tax row with a quantity
            {"Tags": '"team": "ml","env": "prod"', "ChargeCategory": "Tax", "ConsumedQuantity": "1",
             "ConsumedUnit": "Units", "ChargeFrequency": "One-Time", "PricingQuantity": ""},
        ],
    )  # fmt: skip
    result = focus_file.load(source(tmp_path), BillingPeriod("2025-06"))
    frame = result.frame
    assert frame.select("EffectiveCost", "ChargeFrequency", "ListCost", "ContractedCost", "PricingCategory").rows() == [
        (Decimal(0), "Recurring", Decimal(730), Decimal(730), None),
        (Decimal(1), "Usage-Based", Decimal(10), Decimal(8), "Committed"),
        (Decimal(1), "One-Time", Decimal(1), Decimal(1), None),
    ]
    assert frame["Tags"][2] == '{"team": "ml","env": "prod"}'
    assert frame["ConsumedQuantity"][2] is None
    assert result.repairs == {
        "charge_frequency_of_commitment_purchase": 1,
        "cost_from_billed_cost:ContractedCost": 1,
        "cost_from_billed_cost:ListCost": 1,
        "cost_from_unit_price:ContractedCost": 1,
        "cost_from_unit_price:ListCost": 1,
        "effective_cost_zeroed_on_commitment_purchase": 1,
        "filled_in_pricing_currency:PricingCurrencyContractedUnitPrice": 1,
        "filled_in_pricing_currency:PricingCurrencyListUnitPrice": 1,
        "null_literal": 3,
        "nulled_on_non_consumption_row:ConsumedQuantity": 1,
        "nulled_on_non_consumption_row:ConsumedUnit": 1,
        "pricing_category_of_commitment_usage": 1,
        "tags_outer_braces_added": 1,
        "value_renamed:PricingCategory": 1,
    }


# --- bad input ---------------------------------------------------------------------------------------


def test_a_corrupt_parquet_file_is_an_error_naming_it(tmp_path: Path) -> None:
    good = next(AWS.rglob("*.parquet"))
    truncated = tmp_path / "part-00001.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SourceError) as err:
        focus_file.load(source(truncated), BillingPeriod("2025-06"))
    assert str(err.value).startswith(f"source 'focus': {truncated}: cannot be read as Parquet: ")
    (tmp_path / "part-00001.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match=r"part-00001\.parquet: cannot be read as Parquet: .*is the file complete\?"):
        focus_file.load(source(tmp_path), BillingPeriod("2025-06"))


def test_a_non_decimal_cost_quarantines_that_line(tmp_path: Path) -> None:
    lines = NEBIUS.read_text(encoding="utf-8-sig").splitlines()
    lines[2] = lines[2].replace(",23.60,", ",USD 23.60,", 1)  # the second GPU hour's BilledCost
    path = tmp_path / "nebius.csv"
    path.write_text("\n".join(lines) + "\n")
    result = focus_file.load(source(path), BillingPeriod("2025-06"))
    assert result.quarantine.rows() == [(str(path), "3", "BilledCost: 'USD 23.60' is not a decimal number")]
    assert result.frame.height == 3
    assert result.source_total == result.frame["BilledCost"].sum() == Decimal("16.5562614")


def test_negative_usage_quantity_is_quarantined_unless_it_reverses_usage(tmp_path: Path) -> None:
    path = write_focus(
        tmp_path / "negative.csv",
        [
            {"ConsumedQuantity": "-3", "ConsumedUnit": "GPU-Hours", "BilledCost": "8.85", "EffectiveCost": "8.85"},
            {"ConsumedQuantity": "-3", "ConsumedUnit": "GPU-Hours", "BilledCost": "-8.85", "EffectiveCost": "-8.85"},
            {"ConsumedQuantity": "-3", "ConsumedUnit": "GPU-Hours", "ChargeClass": "Correction"},
        ],
    )
    result = focus_file.load(source(path), BillingPeriod("2025-06"))
    assert result.quarantine.rows() == [
        (str(path), "2", "ConsumedQuantity: -3.000000000000 is negative on a Usage row with a positive cost")
    ]
    assert result.frame["x_source_line"].to_list() == ["line 3", "line 4"]
    assert result.stats["usage_reversal_rows"] == 1


def test_tags_that_are_not_a_json_object_are_quarantined(tmp_path: Path) -> None:
    path = write_focus(tmp_path / "tags.csv", [{"Tags": "team=ml"}, {"Tags": '["a"]'}, {"Tags": '{"team": "ml"}'}])
    result = focus_file.load(source(path), BillingPeriod("2025-06"))
    assert result.quarantine.rows() == [
        (str(path), "2", "Tags: not a JSON object"),
        (str(path), "3", "Tags: not a JSON object"),
    ]
    assert result.frame["Tags"].to_list() == ['{"team": "ml"}']


def test_no_files_and_non_focus_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no \.csv, \.csv\.gz, \.parquet files found"):
        focus_file.load(source(tmp_path / "missing"), BillingPeriod("2025-06"))
    bad_gzip = tmp_path / "x.csv.gz"
    bad_gzip.write_bytes(b"not gzip")
    with pytest.raises(SourceError, match=r"x\.csv\.gz: cannot be read as CSV"):
        focus_file.load(source(bad_gzip), BillingPeriod("2025-06"))


def test_gzip_csv_and_parquet_read_the_same_rows_exactly(tmp_path: Path) -> None:
    with NEBIUS.open("rb") as raw, gzip.open(tmp_path / "part-0.csv.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    typed = focus_file.load(source(NEBIUS), BillingPeriod("2025-06")).frame.drop("x_source_file", "x_source_line")
    typed.write_parquet(tmp_path / "part-1.parquet")
    result = focus_file.load(source(tmp_path), BillingPeriod("2025-06"))
    from_parquet = pl.col("x_source_file").str.ends_with(".parquet")
    csv_rows, parquet_rows = result.frame.filter(~from_parquet), result.frame.filter(from_parquet)
    drop = ("x_source_file", "x_source_line")
    assert csv_rows.drop(drop).equals(parquet_rows.drop(drop).select(csv_rows.drop(drop).columns))
    assert result.source_total == 2 * Decimal("40.1562614") and result.stats["files"] == 2
