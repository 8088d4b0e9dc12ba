"""Azure Cost Management exports: actual + amortized cost details (EA, MCA, pay-as-you-go) and the FOCUS export."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from connectors import azure_cost_details as azure
from connectors.base import BillingPeriod, SourceError
from models.config import AzureCostDetailsSource, parse_config
from models.focus import conform, null_violations
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
EA_ACTUAL = FIXTURES / "ea_actual"  # EA cost details 2024-08-01, "All charges (usage and purchases)"
EA_AMORTIZED = FIXTURES / "ea_amortized"  # the same month's "Amortized charges"
MCA = FIXTURES / "mca_actual.csv"  # MCA cost details 2023-12-01-preview (camelCase), EUR billing, USD pricing
PAYG = FIXTURES / "payg_usage.csv"  # pay-as-you-go "usage only" 2019-11-01
FOCUS_EXPORT = FIXTURES / "focus_export"  # FocusCost 1.0 export, two runs with their manifest.json
JUNE = BillingPeriod("2025-06")
OURS = {c: pl.lit("test") for c in ("x_source", "x_source_type", "x_billing_period", "x_batch_id", "x_charge_id")}
RI = (
    "/providers/Microsoft.Capacity/reservationOrders/4b7d2f3e-61aa-4e0c-9d6b-2f8e1c5a7b90"
    "/reservations/a3f1c2d4-77b8-4e9a-b0c1-d2e3f4a5b6c7"
)
SP = (
    "/providers/Microsoft.BillingBenefits/savingsPlanOrders/9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4"
    "/savingsPlans/0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9"
)


def source(path: Path, amortized: Path | None = None) -> AzureCostDetailsSource:
    return AzureCostDetailsSource(
        name="azure", type="azure_cost_details", path=str(path), amortized_path=str(amortized) if amortized else None
    )


def storable(frame: pl.DataFrame) -> dict[str, int]:
    return null_violations(conform(frame.with_columns(**OURS)))


def by_line_type(frame: pl.DataFrame, columns: list[str]) -> list[tuple[object, ...]]:
    return frame.sort("x_line_item_type", "x_source_line").select("x_line_item_type", *columns).rows()


# --- cost details: actual + amortized ----------------------------------------------------------------


def test_ea_actual_and_amortized_join_row_by_row() -> None:
    result = azure.load(source(EA_ACTUAL, EA_AMORTIZED), JUNE)
    frame = result.frame
    # 7 actual rows of June (one May row is outside), plus the 2 unused-commitment rows only amortized data has.
    assert frame.height == 9 and result.quarantine.height == 0
    # BilledCost is the actual file to the cent; EffectiveCost is the amortized file to the cent.
    assert result.source_total == frame["BilledCost"].sum() == Decimal("1931.28425")
    assert frame["EffectiveCost"].sum() == Decimal("435.88425")
    assert result.stats == {"files": 2, "rows": 9, "rows_outside_period": 1}
    assert result.repairs == {
        "tags_outer_braces_added": 4,
        "filled_missing:SkuId": 2,  # the Marketplace purchase and the unused savings plan
        "filled_missing:SkuMeter": 3,  # the two purchases and the unused savings plan have no meter
        "filled_missing:ListUnitPrice": 1,  # the reservation's fee has no PayGPrice
    }
    assert by_line_type(frame, ["ChargeCategory", "BilledCost", "EffectiveCost", "CommitmentDiscountStatus"]) == [
        ("Purchase", "Purchase", Decimal("1606"), Decimal(0), None),  # the reservation's monthly fee
        ("Purchase", "Purchase", Decimal("199"), Decimal("199"), None),  # a Marketplace plan: not a commitment
        ("UnusedReservation", "Usage", Decimal(0), Decimal("52.8"), "Unused"),
        ("UnusedSavingsPlan", "Usage", Decimal(0), Decimal("1.544"), "Unused"),
        ("Usage", "Usage", Decimal("88.152"), Decimal("88.152"), None),
        ("Usage", "Usage", Decimal(0), Decimal("52.8"), "Used"),  # covered by the reservation
        ("Usage", "Usage", Decimal("38.08625"), Decimal("38.08625"), None),
        ("Usage", "Usage", Decimal("0.046"), Decimal("0.046"), None),
        ("Usage", "Usage", Decimal(0), Decimal("3.456"), "Used"),  # covered by the savings plan
    ]
    commitments = frame.filter(pl.col("CommitmentDiscountId").is_not_null())
    kinds = commitments.select("CommitmentDiscountType", "CommitmentDiscountCategory").unique()
    assert sorted(kinds.rows()) == [("Reservation", "Usage"), ("Savings Plan", "Spend")]
    purchase = frame.filter(pl.col("CommitmentDiscountId") == RI, pl.col("ChargeCategory") == "Purchase").row(
        0, named=True
    )
    assert (purchase["ChargeFrequency"], purchase["PricingCategory"], purchase["ListCost"]) == (
        "Recurring",
        "Standard",
        Decimal(1606),
    )
    assert storable(frame) == {}


def test_ea_usage_row_in_full() -> None:
    frame = azure.load(source(EA_ACTUAL, EA_AMORTIZED), JUNE).frame
    row = frame.filter(pl.col("x_source_line") == "line 3", pl.col("x_line_item_type") == "Usage").row(0, named=True)
    assert {k: v for k, v in row.items() if v is not None} == {
        "BilledCost": Decimal(0),
        "EffectiveCost": Decimal("52.8"),
        "ListCost": Decimal("88.152"),
        "ContractedCost": Decimal("88.152"),
        "ListUnitPrice": Decimal("3.673"),
        "ContractedUnitPrice": Decimal("3.673"),
        "PricingQuantity": Decimal(24),
        "PricingUnit": "Hours",
        "PricingCurrency": "USD",  # EA prices in the billing currency
        "PricingCurrencyEffectiveCost": Decimal("52.8"),
        "PricingCurrencyListUnitPrice": Decimal("3.673"),
        "PricingCurrencyContractedUnitPrice": Decimal("3.673"),
        "ConsumedQuantity": Decimal(24),
        "ConsumedUnit": "Hours",
        "BillingAccountId": "87654321",
        "BillingAccountName": "Lumen Assist, Inc.",
        "BillingAccountType": "Billing Account",
        "BillingCurrency": "USD",
        "BillingPeriodStart": datetime(2025, 6, 1, tzinfo=UTC),
        "BillingPeriodEnd": datetime(2025, 7, 1, tzinfo=UTC),
        "ChargePeriodStart": datetime(2025, 6, 2, tzinfo=UTC),
        "ChargePeriodEnd": datetime(2025, 6, 3, tzinfo=UTC),
        "ChargeCategory": "Usage",
        "ChargeDescription": "Virtual Machines NCads A100 v4 Series - Standard_NC24ads_A100_v4 - US East",
        "ChargeFrequency": "Usage-Based",
        "PricingCategory": "Committed",
        "CommitmentDiscountId": RI,
        "CommitmentDiscountName": "A100 1y eastus",
        "CommitmentDiscountStatus": "Used",
        "CommitmentDiscountType": "Reservation",
        "CommitmentDiscountCategory": "Usage",
        "CommitmentDiscountQuantity": Decimal(24),  # hours × RINormalizationRatio (none: 1)
        "CommitmentDiscountUnit": "Hours",
        "ProviderName": "Microsoft",
        "PublisherName": "Microsoft",
        "InvoiceIssuerName": "Microsoft",
        "RegionId": "eastus",
        "RegionName": "East US",
        "ResourceId": "/subscriptions/8f2c1d4e-5b6a-4c3d-9e8f-1a2b3c4d5e6f/resourceGroups/rg-inference/providers/"
        "Microsoft.Compute/virtualMachines/gpu-a100-01",
        "ResourceName": "gpu-a100-01",
        "ResourceType": "microsoft.compute/virtualmachines",
        "ServiceName": "Virtual Machines",
        "ServiceCategory": "Compute",
        "ServiceSubcategory": "Virtual Machines",
        "SkuId": "AAH-12345",
        "SkuMeter": "NC24ads A100 v4",
        "SkuPriceId": "AAH-12345:b2f5f4c2-8f2d-4c9e-a1b0-3e4d5c6b7a81:Reservation:12",  # product:meter:model:term
        "SubAccountId": "8f2c1d4e-5b6a-4c3d-9e8f-1a2b3c4d5e6f",
        "SubAccountName": "lumen-inference-prod",
        "SubAccountType": "Subscription",
        "Tags": '{"feature": "chat","env": "prod"}',  # written without braces by Cost Management
        "x_line_item_type": "Usage",
        "x_source_file": str(EA_ACTUAL / "part_0_0001.csv"),
        "x_source_line": "line 3",
    }
    assert json.loads(row["Tags"]) == {"feature": "chat", "env": "prod"}


def test_purchases_and_unused_commitment_get_what_focus_requires_on_usage_and_purchase_rows() -> None:
    """FOCUS 1.2 SkuId/SkuPriceId/ListUnitPrice/ContractedUnitPrice-C-00x, SkuMeter-C-005-C and
    CommitmentDiscountQuantity-C-005-C on the rows cost details leave them empty on."""
    frame = azure.load(source(EA_ACTUAL, EA_AMORTIZED), JUNE).frame
    columns = ["SkuId", "SkuMeter", "SkuPriceId", "ListUnitPrice", "ContractedUnitPrice", "ListCost",
               "CommitmentDiscountQuantity", "CommitmentDiscountUnit"]  # fmt: skip
    row = {t: frame.filter(pl.col("x_line_item_type") == t) for t in ("Purchase", "UnusedSavingsPlan")}
    reservation_fee, marketplace = sorted(row["Purchase"].select(columns).rows(), key=lambda r: r[0])
    assert reservation_fee == (
        "AAH-RI-0001", "Reserved VM Instance, Standard_NC24ads_A100_v4, US East, 1 Year", "AAH-RI-0001:Reservation:12",
        Decimal(1606), Decimal(1606), Decimal(1606),
        Decimal(720), "Hours",  # a Recurring fee buys 1 instance for the 720 hours of June
    )  # fmt: skip
    assert marketplace == (
        "Contoso Eval Suite - Team plan", "Contoso Eval Suite - Team plan", "Contoso Eval Suite - Team plan:OnDemand",
        Decimal(199), Decimal(199), Decimal(199), None, None,
    )  # fmt: skip
    assert row["UnusedSavingsPlan"].select(columns).row(0) == (
        SP, "Savings plan for compute, 1 year", f"{SP}:SavingsPlan",
        Decimal(0), Decimal(0), Decimal(0),  # its cost is the savings plan's: priced at 0, as written
        Decimal("1.544"), "USD",
    )  # fmt: skip
    priced = frame.filter(pl.col("ChargeCategory").is_in(["Usage", "Purchase"]))
    for column in ("SkuId", "SkuPriceId", "ListUnitPrice", "ContractedUnitPrice", "PricingCurrencyListUnitPrice"):
        assert priced[column].null_count() == 0, column


def test_units_and_services_come_from_the_finops_toolkit_tables() -> None:
    frame = azure.load(source(EA_ACTUAL, EA_AMORTIZED), JUNE).frame
    openai = frame.filter(pl.col("SkuMeter") == "gpt-4o-0806-Inp-glbl Tokens").row(0, named=True)
    # UnitOfMeasure "1K": blocks of 1,000 units; Quantity counts tokens.
    assert (openai["ConsumedQuantity"], openai["PricingQuantity"], openai["PricingUnit"]) == (
        Decimal(15234500),
        Decimal("15234.5"),
        "Units",
    )
    assert (openai["ServiceName"], openai["ServiceCategory"], openai["ServiceSubcategory"]) == (
        "Azure AI Services", "AI and Machine Learning", "AI Platforms"
    )  # fmt: skip
    storage = frame.filter(pl.col("ServiceName") == "Storage Accounts").row(0, named=True)
    assert (storage["PricingQuantity"], storage["PricingUnit"], storage["ListCost"]) == (
        Decimal("0.25"), "GB/Month", Decimal("0.052")
    )  # fmt: skip
    # Purchases have no meter category; the consumed service names them, in category Other.
    assert frame.filter(pl.col("ChargeCategory") == "Purchase").select("ServiceName", "ServiceCategory").rows() == [
        ("Microsoft.Capacity", "Other"),
        ("Contoso Eval Suite - Team plan", "Other"),
    ]
    assert azure.arm_resource_type(
        "/subscriptions/s/resourceGroups/r/providers/Microsoft.Sql/servers/a/databases/b"
    ) == ("microsoft.sql/servers/databases")
    assert azure.arm_resource_type("not-an-arm-id") is None


def test_actual_file_alone_cannot_amortize_commitments() -> None:
    result = azure.load(source(EA_ACTUAL), JUNE)
    frame = result.frame
    assert frame.height == 7 and result.source_total == frame["BilledCost"].sum() == Decimal("1931.28425")
    # EffectiveCost = BilledCost, except the reservation purchase (0, as FOCUS requires); the reservation's and the
    # savings plan's cost is then missing from EffectiveCost, and the rows that lack it are counted.
    assert frame["EffectiveCost"].sum() == Decimal("325.28425")
    assert result.stats == {"effective_cost_not_amortized_rows": 3, "files": 1, "rows": 7, "rows_outside_period": 1}
    assert storable(frame) == {}


def test_a_record_split_differently_in_the_two_files_keeps_both_totals(tmp_path: Path) -> None:
    """Cost Management may split a record into rows that differ only in quantity and cost (FinOps toolkit)."""
    text = (EA_AMORTIZED / "part_0_0001.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header, first = rows[0], rows[1]
    half = dict(zip(header, first, strict=True)) | {"Quantity": "12", "CostInBillingCurrency": "44.076"}
    (tmp_path / "amortized").mkdir()
    with (tmp_path / "amortized" / "part_0_0001.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([header, [half[c] for c in header], [half[c] for c in header], *rows[2:]])
    result = azure.load(source(EA_ACTUAL, tmp_path / "amortized"), JUNE)
    assert result.frame["BilledCost"].sum() == Decimal("1931.28425")
    assert result.frame["EffectiveCost"].sum() == Decimal("435.88425")
    assert result.stats["actual_rows_without_amortized_row"] == 1
    assert result.stats["amortized_rows_without_actual_row"] == 2


def test_mca_cost_details_in_billing_currency() -> None:
    result = azure.load(source(MCA), JUNE)
    frame = result.frame
    assert result.source_total == frame["BilledCost"].sum() == Decimal("-444.6096")
    rows = frame.select("ChargeCategory", "ChargeClass", "BilledCost", "EffectiveCost", "ListUnitPrice", "ListCost")
    assert rows.rows() == [
        ("Usage", None, Decimal("33.7916"), Decimal("33.7916"), Decimal("3.37916"), Decimal("33.7916")),
        ("Adjustment", None, Decimal("-0.0012"), Decimal("-0.0012"), None, Decimal("-0.0012")),  # RoundingAdjustment
        ("Purchase", "Correction", Decimal("-478.40"), Decimal(0), None, Decimal("-478.40")),  # reservation refund
    ]
    first = frame.row(0, named=True)
    # MCA: the billing profile is the billing account; prices are USD, costs EUR at exchangeRatePricingToBilling.
    assert (first["BillingAccountId"], first["BillingAccountType"], first["BillingCurrency"]) == (
        "AB12-CD34-EF5-GH6", "Billing Profile", "EUR"
    )  # fmt: skip
    assert (first["PricingCurrency"], first["InvoiceId"], first["RegionName"], first["SkuId"]) == (
        "USD", "G012345678", "EU West", "DZH318Z0BQ4L"
    )  # fmt: skip
    assert result.stats == {"effective_cost_not_amortized_rows": 1, "files": 1, "rows": 3}
    assert storable(frame) == {}


def test_pay_as_you_go_usage_file() -> None:
    result = azure.load(source(PAYG), JUNE)
    frame = result.frame
    assert frame.height == 2 and result.stats == {"files": 1, "rows": 2, "rows_outside_period": 1}
    assert result.source_total == frame["BilledCost"].sum() == Decimal("5.6955")
    # No ChargeType column (usage only) and no billing account: the subscription is the billing profile.
    assert frame.select("ChargeCategory", "BillingAccountId", "BillingAccountType").unique().rows() == [
        ("Usage", "1c9e7a55-0b3d-4f2e-8a61-93d2c7e4b018", "Subscription")
    ]
    assert frame["PricingUnit"].to_list() == ["Hours", "GB"]
    assert storable(frame) == {}


# --- the FOCUS export --------------------------------------------------------------------------------


def test_focus_export_reads_the_latest_run_and_fixes_microsoft_1_0() -> None:
    result = azure.load(source(FOCUS_EXPORT), JUNE)
    frame = result.frame
    run = FOCUS_EXPORT / "lumen-focus-daily" / "20250601-20250630" / "9f3d5e2a-new" / "part_0_0001.csv"
    assert result.files == [str(run)] and frame.height == 4
    assert result.source_total == frame["BilledCost"].sum() == Decimal("1642.73")
    # The reservation's purchase carried EffectiveCost (a Microsoft 1.0 bug the FinOps toolkit fixes): now 0.
    assert frame["EffectiveCost"].to_list() == [Decimal("36.73"), Decimal("52.8"), Decimal("13.2"), Decimal(0)]
    assert frame["PricingCategory"].to_list() == ["Standard", "Committed", "Committed", "Standard"]
    assert frame["InvoiceId"].to_list() == [None, None, None, "G012345678"]  # from x_InvoiceId
    assert frame["SkuMeter"][0] == "NC24ads A100 v4"  # from x_SkuMeterName
    assert frame["ChargeFrequency"][3] == "Recurring"
    assert result.repairs == {
        "charge_frequency_of_commitment_purchase": 1,
        "datetime_not_iso8601_utc": 16,  # 1.0 (before 1.0r2) writes 2025-06-01T00:00Z
        "effective_cost_zeroed_on_commitment_purchase": 1,
        "filled_as_other:ServiceSubcategory": 4,  # 1.0 has no ServiceSubcategory
        "filled_in_pricing_currency:PricingCurrencyContractedUnitPrice": 2,
        "filled_in_pricing_currency:PricingCurrencyEffectiveCost": 4,
        "filled_in_pricing_currency:PricingCurrencyListUnitPrice": 2,
        "pricing_category_of_commitment_usage": 1,
        "renamed_column:x_InvoiceId->InvoiceId": 1,
        "renamed_column:x_PricingCurrency->PricingCurrency": 1,
        "renamed_column:x_SkuMeterName->SkuMeter": 1,
        "value_renamed:PricingCategory": 1,  # "On-Demand" on the unused reservation row
    }
    not_stored = [k for k in result.stats if k.startswith("x_column_not_stored:")]
    assert len(not_stored) == 49 and "x_column_not_stored:x_ResourceGroupName" in not_stored
    assert result.stats["files_of_older_runs_skipped"] == 1
    assert storable(frame) == {}


def test_focus_export_with_amortized_path_is_refused() -> None:
    with pytest.raises(SourceError, match=r"amortized_path is set but path holds a FOCUS export"):
        azure.load(source(FOCUS_EXPORT, EA_AMORTIZED), JUNE)


def test_a_manifest_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(FOCUS_EXPORT, copy)
    run = copy / "lumen-focus-daily" / "20250601-20250630" / "9f3d5e2a-new"
    (run / "part_0_0001.csv").unlink()
    with pytest.raises(SourceError) as err:
        azure.load(source(copy), JUNE)
    assert str(err.value) == (
        f"source 'azure': {run / 'manifest.json'}: names data file "
        "'exports/lumen-focus-daily/20250601-20250630/9f3d5e2a-new/part_0_0001.csv', "
        f"which is not at {run / 'part_0_0001.csv'}"
    )


# --- bad input ---------------------------------------------------------------------------------------


def edited_copy(tmp_path: Path, edits: dict[int, dict[str, str]]) -> Path:
    """The EA actual file with some cells changed (``edits``: data row index → column → value)."""
    rows = list(csv.reader(io.StringIO((EA_ACTUAL / "part_0_0001.csv").read_text(encoding="utf-8-sig"))))
    header = rows[0]
    for index, change in edits.items():
        for column, value in change.items():
            rows[index + 1][header.index(column)] = value
    path = tmp_path / "actual.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_bad_rows_are_quarantined_with_file_line_and_reason(tmp_path: Path) -> None:
    path = edited_copy(
        tmp_path,
        {
            0: {"CostInBillingCurrency": "88,152"},
            3: {"Tags": "feature=search"},
            4: {"ChargeType": "Credit"},
            5: {"Date": "2025-06-31"},
        },
    )
    result = azure.load(source(path), JUNE)
    assert result.quarantine.rows() == [
        (str(path), "7", "date: '2025-06-31' is not a date"),
        (str(path), "2", "cost: '88,152' is not a decimal number"),
        (str(path), "5", "Tags: not a JSON object"),
        (str(path), "6", "ChargeType: 'Credit' is not a documented value"),
    ]
    assert result.frame.height == 3
    assert result.source_total == Decimal("1843.13225")  # every June cost that is a number, as written


def test_a_cost_details_file_without_a_cost_column_is_an_error(tmp_path: Path) -> None:
    rows = list(csv.reader(io.StringIO(PAYG.read_text(encoding="utf-8-sig"))))
    keep = [i for i, c in enumerate(rows[0]) if c not in ("PreTaxCost", "Currency")]
    path = tmp_path / "usage.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([[r[i] for i in keep] for r in rows])
    with pytest.raises(SourceError) as err:
        azure.load(source(path), JUNE)
    assert "is neither a FOCUS export (BilledCost, ChargePeriodStart) nor cost details" in str(err.value)
    rows[0][rows[0].index("Currency")] = "CurrencyName"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(SourceError) as err:
        azure.load(source(path), JUNE)
    assert str(err.value) == (
        f"source 'azure': {path}: missing cost details column(s): currency (billingcurrencycode or billingcurrency "
        "or currency). did the export schema change?"
    )


# --- through the pipeline ------------------------------------------------------------------------------


def test_ingest_reconciles_to_the_actual_file(duckdb_warehouse: Warehouse) -> None:
    config = parse_config(
        f"sources: [{{name: azure, type: azure_cost_details, path: '{EA_ACTUAL}', amortized_path: '{EA_AMORTIZED}'}}]"
    )
    summary = ingest(duckdb_warehouse, config, "azure", "2025-06")
    assert (summary.rows, summary.quarantined, summary.files) == (9, 0, 2)
    assert summary.source_total == summary.loaded_billed_cost == Decimal("1931.28425")
    effective = duckdb_warehouse.read('SELECT SUM("EffectiveCost") AS e FROM focus_costs')["e"][0]
    assert effective == Decimal("435.88425")
