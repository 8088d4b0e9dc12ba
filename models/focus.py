"""FOCUS 1.2 Cost and Usage columns, their types, and our ``x_`` columns.

Source: FOCUS_Spec tag v1.2, ``specification/columns/*.md`` (57 columns); the
constraint table of each column gives the data type, feature level and nullability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

FocusType = Literal["String", "Decimal", "Date/Time", "JSON"]
FeatureLevel = Literal["M", "C", "R", "O"]

MONEY_SCALE = 12
"""Decimal places kept for every FOCUS Decimal column (real exports carry 11: the FOCUS sample data)."""

MONEY = pl.Decimal(38, MONEY_SCALE)
TIMESTAMP = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class FocusColumn:
    name: str
    focus_type: FocusType
    nullable: bool
    level: FeatureLevel

    @property
    def polars_type(self) -> pl.DataType:
        return {"String": pl.String(), "Decimal": MONEY, "Date/Time": TIMESTAMP, "JSON": pl.String()}[self.focus_type]

    @property
    def sql_type(self) -> str:
        return {
            "String": "VARCHAR",
            "Decimal": f"DECIMAL(38, {MONEY_SCALE})",
            "Date/Time": "TIMESTAMPTZ",
            "JSON": "JSON",
        }[self.focus_type]

    @property
    def required(self) -> bool:
        """Mandatory and not nullable: must be present and filled on every row."""
        return self.level == "M" and not self.nullable


# (name, FOCUS data type, allows nulls, feature level) — FOCUS 1.2, alphabetical as in the spec index.
FOCUS_COLUMNS: tuple[FocusColumn, ...] = tuple(
    FocusColumn(*c)  # type: ignore[arg-type]
    for c in (
        ("AvailabilityZone", "String", True, "R"),
        ("BilledCost", "Decimal", False, "M"),
        ("BillingAccountId", "String", False, "M"),
        ("BillingAccountName", "String", True, "M"),
        ("BillingAccountType", "String", False, "C"),
        ("BillingCurrency", "String", False, "M"),
        ("BillingPeriodEnd", "Date/Time", False, "M"),
        ("BillingPeriodStart", "Date/Time", False, "M"),
        ("CapacityReservationId", "String", True, "C"),
        ("CapacityReservationStatus", "String", True, "C"),
        ("ChargeCategory", "String", False, "M"),
        ("ChargeClass", "String", True, "M"),
        ("ChargeDescription", "String", True, "M"),
        ("ChargeFrequency", "String", False, "R"),
        ("ChargePeriodEnd", "Date/Time", False, "M"),
        ("ChargePeriodStart", "Date/Time", False, "M"),
        ("CommitmentDiscountCategory", "String", True, "C"),
        ("CommitmentDiscountId", "String", True, "C"),
        ("CommitmentDiscountName", "String", True, "C"),
        ("CommitmentDiscountQuantity", "Decimal", True, "C"),
        ("CommitmentDiscountStatus", "String", True, "C"),
        ("CommitmentDiscountType", "String", True, "C"),
        ("CommitmentDiscountUnit", "String", True, "C"),
        ("ConsumedQuantity", "Decimal", True, "C"),
        ("ConsumedUnit", "String", True, "C"),
        ("ContractedCost", "Decimal", False, "M"),
        ("ContractedUnitPrice", "Decimal", True, "C"),
        ("EffectiveCost", "Decimal", False, "M"),
        ("InvoiceId", "String", True, "R"),
        ("InvoiceIssuerName", "String", False, "M"),
        ("ListCost", "Decimal", False, "M"),
        ("ListUnitPrice", "Decimal", True, "C"),
        ("PricingCategory", "String", True, "C"),
        ("PricingCurrency", "String", True, "C"),
        ("PricingCurrencyContractedUnitPrice", "Decimal", True, "C"),
        ("PricingCurrencyEffectiveCost", "Decimal", True, "C"),
        ("PricingCurrencyListUnitPrice", "Decimal", True, "C"),
        ("PricingQuantity", "Decimal", True, "M"),
        ("PricingUnit", "String", True, "M"),
        ("ProviderName", "String", False, "M"),
        ("PublisherName", "String", False, "M"),
        ("RegionId", "String", True, "C"),
        ("RegionName", "String", True, "C"),
        ("ResourceId", "String", True, "C"),
        ("ResourceName", "String", True, "C"),
        ("ResourceType", "String", True, "C"),
        ("ServiceCategory", "String", False, "M"),
        ("ServiceName", "String", False, "M"),
        ("ServiceSubcategory", "String", False, "R"),
        ("SkuId", "String", True, "C"),
        ("SkuMeter", "String", True, "C"),
        ("SkuPriceDetails", "JSON", True, "C"),
        ("SkuPriceId", "String", True, "C"),
        ("SubAccountId", "String", True, "C"),
        ("SubAccountName", "String", True, "C"),
        ("SubAccountType", "String", True, "C"),
        ("Tags", "JSON", True, "C"),
    )
)

# Our columns on focus_costs. ``x_charge_id`` identifies a charge row for allocation;
# ``(x_source, x_billing_period)`` is the partition replaced atomically on each load.
X_COLUMNS: tuple[FocusColumn, ...] = (
    FocusColumn("x_source", "String", False, "M"),
    FocusColumn("x_source_type", "String", False, "M"),
    FocusColumn("x_billing_period", "String", False, "M"),
    FocusColumn("x_batch_id", "String", False, "M"),
    FocusColumn("x_charge_id", "String", False, "M"),
    FocusColumn("x_source_file", "String", True, "O"),
    FocusColumn("x_source_line", "String", True, "O"),
    FocusColumn("x_line_item_type", "String", True, "O"),
)

FOCUS_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in FOCUS_COLUMNS)
FOCUS_COSTS_COLUMNS: tuple[FocusColumn, ...] = FOCUS_COLUMNS + X_COLUMNS
FOCUS_COSTS_SCHEMA: dict[str, pl.DataType] = {c.name: c.polars_type for c in FOCUS_COSTS_COLUMNS}
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in FOCUS_COLUMNS if c.required)
DECIMAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in FOCUS_COLUMNS if c.focus_type == "Decimal")

CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
CHARGE_FREQUENCIES = ("One-Time", "Recurring", "Usage-Based")
SERVICE_CATEGORIES = (
    "AI and Machine Learning",
    "Analytics",
    "Business Applications",
    "Compute",
    "Databases",
    "Developer Tools",
    "Multicloud",
    "Identity",
    "Integration",
    "Internet of Things",
    "Management and Governance",
    "Media",
    "Migration",
    "Mobile",
    "Networking",
    "Security",
    "Storage",
    "Web",
    "Other",
)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Select the focus_costs columns in order, adding absent ones as NULL and casting types.

    Raises ``ValueError`` naming the columns when a Mandatory, non-nullable column is missing; columns
    that older FOCUS versions lack (BillingAccountType, ServiceSubcategory, ...) may be absent.
    """
    missing = [c.name for c in FOCUS_COSTS_COLUMNS if c.name not in frame.columns and c.required]
    if missing:
        raise ValueError(f"missing required FOCUS column(s): {', '.join(missing)}")
    rows = frame.select(
        (pl.col(c.name) if c.name in frame.columns else pl.lit(None)).cast(c.polars_type).alias(c.name)
        for c in FOCUS_COSTS_COLUMNS
    )
    return _price_in_billing_currency(rows)


def _price_in_billing_currency(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows priced in their billing currency carry it in the PricingCurrency columns too.

    FOCUS 1.2 (PricingCurrency, PricingCurrency*): once present in a dataset they must be filled; a provider
    that prices and bills in one currency leaves them empty, so they take the billing-currency values.
    """
    same = pl.col("PricingCurrency").is_null()
    return rows.with_columns(
        pl.when(same).then(pl.col(billing)).otherwise(pl.col(pricing)).alias(pricing)
        for pricing, billing in (
            ("PricingCurrency", "BillingCurrency"),
            ("PricingCurrencyEffectiveCost", "EffectiveCost"),
            ("PricingCurrencyListUnitPrice", "ListUnitPrice"),
            ("PricingCurrencyContractedUnitPrice", "ContractedUnitPrice"),
        )
    )


def null_violations(frame: pl.DataFrame) -> dict[str, int]:
    """Count NULLs in columns that FOCUS (or we) declare NOT NULL; only non-zero counts are returned."""
    cols = [c.name for c in FOCUS_COSTS_COLUMNS if not c.nullable and c.level == "M" and c.name in frame.columns]
    counts = frame.select(pl.col(cols).null_count()).row(0, named=True) if cols else {}
    return {k: v for k, v in counts.items() if v}


def empty_focus_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=FOCUS_COSTS_SCHEMA)
