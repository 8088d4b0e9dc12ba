"""Azure Cost Management exports → FOCUS 1.2 rows: the FOCUS export, or the actual and amortized cost details.

Two kinds of export, told apart by their header (every file under ``path`` must be of one kind):

**FOCUS export** ("FOCUS cost and usage details file schema", learn.microsoft.com, versions 1.0, 1.0r2 and
1.2-preview; CSV(.gz) or Parquet). Read by ``connectors.focus_file``, which upgrades Microsoft's 1.0 columns
(``x_InvoiceId``/``x_PricingCurrency``/``x_SkuMeterName`` → ``InvoiceId``/``PricingCurrency``/``SkuMeter``),
fixes the known bugs the FinOps toolkit fixes, and counts the other ``x_`` columns (``x_ResourceGroupName``,
``x_SkuMeterCategory``, ...) in ``stats``: the warehouse stores FOCUS columns only. One file holds both
BilledCost and EffectiveCost, so ``amortized_path`` must not be set.

**Cost details** ("Enterprise Agreement / Microsoft Customer Agreement / Pay-as-you-go cost and usage details
file schema", learn.microsoft.com dataset-schema pages: EA 2024-08-01 and older, MCA 2023-12-01-preview and
older, PAYG 2019-11-01 usage only). Column names differ by agreement and version (``CostInBillingCurrency``,
MCA's ``costInBillingCurrency``, older ``Cost``, PAYG's ``PreTaxCost``; ``BillingCurrencyCode``/
``billingCurrency``/``Currency``; ``Date``/``UsageDateTime``; ``SubscriptionId``/``SubscriptionGuid``; ...):
names are matched case-insensitively against the aliases in ``COLUMNS``. The agreement is MCA when the file
has ``pricingCurrency``/``exchangeRatePricingToBilling`` (MCA-only columns), PAYG when it has neither
``ChargeType`` nor ``BillingAccountId``, else EA. Dates are ``MM/DD/YYYY`` (or ISO). ``path`` holds the
**actual** cost export and ``amortized_path`` the **amortized** one ("Get EA and MCA reservation costs and
usage": actual cost has commitment purchases and refunds and zero-cost covered usage; amortized cost has the
covered usage at its amortized cost and the ``UnusedReservation``/``UnusedSavingsPlan`` rows, and no
commitment purchases).

- BilledCost comes only from the actual file and EffectiveCost only from the amortized file: their rows are
  joined on the fields Microsoft documents as building a cost record's unique ID ("Understand the terms in
  your Azure usage and charges file", footnote 1: AccountOwnerId, BillingAccountId, BillingProfileId,
  CostCenter, Date, InvoiceSectionId, MeterId, OfferId, PartNumber, ProductId, ResourceId, SubscriptionId,
  Tags) plus ChargeType, PricingModel, Frequency, the benefit/reservation ID and Quantity, and the row's
  occurrence among equal keys (the FinOps toolkit notes Cost Management may split a record into rows that
  differ only in quantity and cost). An actual row without an amortized twin keeps EffectiveCost 0 (expected
  for commitment purchases and refunds; others are counted in ``stats``); an amortized row without an actual
  twin has BilledCost 0 (expected for unused commitment; others counted). So sum(BilledCost) is the actual
  file's total and sum(EffectiveCost) the amortized file's, exactly.
- With the actual file alone, EffectiveCost = BilledCost except on commitment purchases and refunds (0, FOCUS
  ``EffectiveCost-C-005-C``): the amortized commitment cost is then missing from EffectiveCost (covered usage
  costs 0 in the actual file), which ``stats["effective_cost_not_amortized_rows"]`` counts. Configure
  ``amortized_path`` for COGS.

Mapping (FinOps toolkit "Convert Cost Management data to FOCUS", ``docs/_docs/focus/convert.md``, updated to
FOCUS 1.2): ChargeType Usage/Purchase/Tax keep their name, UnusedReservation/UnusedSavingsPlan → Usage with
CommitmentDiscountStatus Unused, Refund → Purchase with ChargeClass Correction, RoundingAdjustment →
Adjustment; unknown ChargeTypes are quarantined. Frequency → ChargeFrequency; PricingModel OnDemand → Standard,
Spot → Dynamic, Reservation/SavingsPlan → Committed (Standard on purchases). The commitment is ``benefitId``
(else ``ReservationId``): ``/microsoft.capacity/`` → Reservation (category Usage), ``/microsoft.billingbenefits/``
→ Savings Plan (Spend). BillingAccountId is the billing profile for MCA, the billing account for EA and the
subscription for PAYG (its billing profile, per the schema pages). ServiceName/Category/Subcategory come from
the toolkit's Services table keyed by ConsumedService and the Azure Resource Manager resource type (from
``ResourceType`` or parsed from ``ResourceId``); UnitOfMeasure → PricingUnit/ConsumedUnit and the pricing
block size (PricingQuantity = Quantity / block) from its PricingUnits table (both MIT, in ``connectors/data``).
Unit prices are PayGPrice (list) and UnitPrice (contracted), times ``exchangeRatePricingToBilling`` for MCA (a
price of 0 on a row that costs something means "not available", toolkit known issue 1); ListCost/ContractedCost
= unit price × PricingQuantity, else the row's cost. PricingCurrency is MCA's ``pricingCurrency``, else the
billing currency (EA and pay-as-you-go price in it); PricingCurrencyEffectiveCost is EffectiveCost in that
currency (MCA: ``costInPricingCurrency``). CommitmentDiscountQuantity of used/unused commitment follows the
toolkit: a reservation's hours × ``RINormalizationRatio`` (AdditionalInfo), a savings plan's cost. Tags, "often
written without their outer braces" (toolkit data dictionary), are wrapped; text that still isn't a JSON object is
quarantined.
``x_line_item_type`` is the ChargeType as written.

What cost details lack and FOCUS 1.2 requires on Usage and Purchase rows (not corrections), filled as follows
(fills of a missing value are counted in ``repairs``):
- SkuPriceId: cost details carry no price id (the toolkit's convert.md: SkuPriceId "Not available"). A price in
  the EA/MCA price sheet is selected by the product (ProductId / PartNumber), the meter (MeterId), the pricing
  model and, for commitments, the term, so SkuPriceId = those values joined by ``:`` (e.g.
  ``AAH-12345:b2f5f4c2-…:OnDemand``, ``AAH-RI-0001:Reservation:12``) (SkuPriceId-C-005-C).
- SkuId: a Marketplace purchase has no ProductId/PartNumber: its ProductName (the offer and plan) is the SKU;
  an UnusedSavingsPlan row has no product at all: the savings plan (``benefitId``) is the SKU it leaves unused
  (SkuId-C-005-C). SkuId is null on Tax rows (SkuId-C-004-C). SkuMeter is MeterName, else (purchases have no
  meter) the ProductName (SkuMeter-C-005-C "SHOULD NOT be null when SkuId is not null").
- Unit prices: unused commitment rows are written with UnitPrice/PayGPrice 0 and that 0 is their price (their
  cost is the commitment's, as AWS's unused rows), not "not available"; a commitment purchase has no PayGPrice,
  so its ListUnitPrice (and PricingCurrencyListUnitPrice) is the fee's own UnitPrice (ListUnitPrice-C-005-C).
- CommitmentDiscountQuantity of a commitment purchase (CommitmentDiscountQuantity-C-005-C), in the unit of its
  usage rows: a reservation's Quantity × the hours it buys (a Recurring fee: the billing period's hours; a
  one-time fee: ``Term`` months from the purchase date); a savings plan's cost in the pricing currency.

``source_total`` is the sum of the actual file's billing-currency cost column for the period, as written.
Rows are kept when their billing period (``BillingPeriodStartDate``, else the month of ``Date``) is the
period. A cost, quantity or price that isn't a decimal, or a date that isn't one, quarantines the row with
the file and line that hold the value.

Export folders: Cost Management writes each run under ``<export>/<YYYYMMDD-YYYYMMDD>/<run id>/`` with a
``manifest.json`` listing its ``blobs`` (``manifestVersion`` 2024-04-01; ``runInfo.submittedTime``). When
manifests are present, only the files of the latest run of each export and date range are read, so runs kept
side by side ("create new" instead of "overwrite") are not double counted; a manifest naming a file that
isn't there is an error.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib.resources import files as package_files
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from connectors import focus_file
from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from models.config import AzureCostDetailsSource
from models.focus import MONEY, TIMESTAMP

PROVIDER = "Microsoft"
LINE = focus_file.LINE
FILE = "__file"

# Our name → the spellings used across agreements and schema versions (lower case).
COLUMNS: dict[str, tuple[str, ...]] = {
    "cost": ("costinbillingcurrency", "cost", "pretaxcost"),
    "currency": ("billingcurrencycode", "billingcurrency", "currency"),
    "date": ("date", "usagedatetime", "usagedate"),
    "billing_period_start": ("billingperiodstartdate",),
    "billing_period_end": ("billingperiodenddate",),
    "quantity": ("quantity", "usagequantity"),
    "unit_of_measure": ("unitofmeasure",),
    "unit_price": ("unitprice", "resourcerate"),
    "payg_price": ("paygprice",),
    "exchange_rate": ("exchangeratepricingtobilling",),
    "cost_in_pricing_currency": ("costinpricingcurrency",),
    "pricing_currency": ("pricingcurrency",),
    "charge_type": ("chargetype",),
    "frequency": ("frequency",),
    "pricing_model": ("pricingmodel",),
    "reservation_id": ("reservationid",),
    "reservation_name": ("reservationname",),
    "benefit_id": ("benefitid",),
    "benefit_name": ("benefitname",),
    "billing_account_id": ("billingaccountid",),
    "billing_account_name": ("billingaccountname",),
    "billing_profile_id": ("billingprofileid",),
    "billing_profile_name": ("billingprofilename",),
    "subscription_id": ("subscriptionid", "subscriptionguid"),
    "subscription_name": ("subscriptionname",),
    "resource_id": ("resourceid", "instanceid"),
    "resource_name": ("resourcename",),
    "resource_type": ("resourcetype",),
    "location": ("resourcelocation",),
    "location_name": ("resourcelocationnormalized", "location"),
    "availability_zone": ("availabilityzone",),
    "meter_category": ("metercategory",),
    "meter_name": ("metername",),
    "meter_id": ("meterid",),
    "product_name": ("productname", "product"),
    "product_id": ("productid",),
    "product_order_id": ("productorderid",),
    "term": ("term",),
    "consumed_service": ("consumedservice",),
    "tags": ("tags",),
    "publisher_name": ("publishername",),
    "invoice_id": ("invoiceid",),
    "partner_name": ("partnername",),
    "additional_info": ("additionalinfo",),
    "account_owner_id": ("accountownerid",),
    "cost_center": ("costcenter",),
    "invoice_section_id": ("invoicesectionid",),
    "offer_id": ("offerid",),
    "part_number": ("partnumber",),
}
REQUIRED = ("cost", "currency", "date")
# Fields Microsoft documents as building a unique ID for a cost record, plus what tells commitment rows apart.
ROW_KEY = (
    "account_owner_id", "billing_account_id", "billing_profile_id", "cost_center", "date", "invoice_section_id",
    "meter_id", "offer_id", "part_number", "product_id", "resource_id", "subscription_id", "tags",
    "charge_type", "pricing_model", "frequency", "benefit_id", "reservation_id", "product_order_id", "quantity",
)  # fmt: skip
DECIMALS = ("cost", "quantity", "unit_price", "payg_price", "exchange_rate", "cost_in_pricing_currency")

CHARGE_TYPES = {  # ChargeType (lower case) → (ChargeCategory, ChargeClass)
    "usage": ("Usage", None),
    "purchase": ("Purchase", None),
    "tax": ("Tax", None),
    "unusedreservation": ("Usage", None),
    "unusedsavingsplan": ("Usage", None),
    "refund": ("Purchase", "Correction"),
    "roundingadjustment": ("Adjustment", None),
}
UNUSED = ("unusedreservation", "unusedsavingsplan")
FILLED = ("SkuId", "SkuMeter", "ListUnitPrice")  # FOCUS columns the cost details leave empty (see above)
FREQUENCIES = {"onetime": "One-Time", "recurring": "Recurring", "usagebased": "Usage-Based"}
PRICING_MODELS = {"ondemand": "Standard", "spot": "Dynamic", "reservation": "Committed", "savingsplan": "Committed"}
_ARM_TYPE = re.compile(r"/providers/([^/]+)/([^/]+)/[^/]+((?:/[^/]+/[^/]+)*)", re.IGNORECASE)


def load(source: AzureCostDetailsSource, period: BillingPeriod) -> LoadResult:
    """All rows of ``period`` from the export(s) under ``source.path`` (and ``source.amortized_path``)."""
    return focus_file.combine(load_batches(source, period))


def load_batches(source: AzureCostDetailsSource, period: BillingPeriod) -> Iterator[LoadResult]:
    """A FOCUS export streams file by file; cost details come as one batch (the join needs both files)."""
    actual, skipped = export_files(source.name, source.path)
    kind = _kind(source.name, actual)
    if kind == "focus":
        if source.amortized_path:
            raise SourceError(
                source.name,
                source.amortized_path,
                "amortized_path is set but path holds a FOCUS export",
                "a FOCUS export already has BilledCost and EffectiveCost; remove amortized_path",
            )
        for number, result in enumerate(focus_file.read_batches(source.name, actual, period)):
            if number == 0 and skipped:
                result.stats = {**result.stats, "files_of_older_runs_skipped": skipped}
            yield result
        return
    amortized: list[Path] = []
    if source.amortized_path:
        amortized, more = export_files(source.name, source.amortized_path)
        skipped += more
        if _kind(source.name, amortized) != "cost_details":
            raise SourceError(source.name, source.amortized_path, "is not a cost details export like path")
    result = _cost_details(source.name, actual, amortized, period)
    if skipped:
        result.stats = {**result.stats, "files_of_older_runs_skipped": skipped}
    yield result


# --- files ---------------------------------------------------------------------------------------


def export_files(source: str, path: str) -> tuple[list[Path], int]:
    """The files to read under ``path`` (the latest run per export and date range when manifests exist),
    and how many data files of older runs were left out."""
    root = Path(path).expanduser()
    manifests = sorted(root.rglob("manifest.json")) if root.is_dir() else []
    if not manifests:
        return focus_file.find_files(source, path), 0
    latest: dict[tuple[str, str], tuple[str, Path, dict[str, object]]] = {}
    for manifest in manifests:
        content = _read_manifest(source, manifest)
        config, run = content.get("exportConfig") or {}, content.get("runInfo") or {}
        key = (str(config.get("exportName", "")), str(run.get("startDate", "")))  # type: ignore[union-attr]
        submitted = str(run.get("submittedTime", ""))  # type: ignore[union-attr]
        if key not in latest or submitted > latest[key][0]:
            latest[key] = (submitted, manifest, content)
    chosen = sorted(file for _, manifest, content in latest.values() for file in _blobs(source, manifest, content))
    found = {p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(focus_file.SUFFIXES)}
    return chosen, len(found - set(chosen))


def _read_manifest(source: str, manifest: Path) -> dict[str, object]:
    try:
        content = json.loads(manifest.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise SourceError(source, str(manifest), f"is not a readable export manifest: {exc}") from None
    if not isinstance(content, dict) or not isinstance(content.get("blobs"), list):
        raise SourceError(source, str(manifest), "has no 'blobs' list", "is this a Cost Management export manifest?")
    return content


def _blobs(source: str, manifest: Path, content: dict[str, object]) -> list[Path]:
    """The manifest's data files, found beside it (``blobName`` holds the storage path, which may differ)."""
    paths = []
    for blob in content["blobs"]:  # type: ignore[union-attr]
        name = str(blob.get("blobName", "")) if isinstance(blob, dict) else ""
        local = manifest.parent / name.rsplit("/", 1)[-1]
        if not name or not local.is_file():
            raise SourceError(source, str(manifest), f"names data file {name!r}, which is not at {local}")
        paths.append(local)
    return paths


def _kind(source: str, paths: Sequence[Path]) -> str:
    """``focus`` or ``cost_details``, from each file's header; one export may not mix them."""
    kinds = {_file_kind(source, p) for p in paths}
    if len(kinds) > 1:
        raise SourceError(source, str(paths[0].parent), "mixes FOCUS and cost details files", "export them apart")
    return kinds.pop()


def _file_kind(source: str, path: Path) -> str:
    header = {c.lower().lstrip("\ufeff").strip() for c in _header(source, path)}
    if {"billedcost", "chargeperiodstart"} <= header:
        return "focus"
    if any(alias in header for alias in COLUMNS["cost"]) and any(alias in header for alias in COLUMNS["date"]):
        return "cost_details"
    raise SourceError(
        source,
        str(path),
        "is neither a FOCUS export (BilledCost, ChargePeriodStart) nor cost details (CostInBillingCurrency, Date)",
        "point path at a Cost Management export",
    )


def _header(source: str, path: Path) -> list[str]:
    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.read_schema(path).names)
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:  # type: ignore[operator]
            return next(csv.reader(handle), [])
    except (OSError, ValueError, EOFError) as exc:
        raise SourceError(source, str(path), f"cannot be read: {exc}") from None


# --- cost details --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    """One export (actual or amortized): its rows of the period with our column names, and what was read."""

    rows: pl.DataFrame
    agreement: str
    quarantine: pl.DataFrame
    outside_period: int


def _cost_details(source: str, actual: list[Path], amortized: list[Path], period: BillingPeriod) -> LoadResult:
    billed = _read_side(source, actual, period)
    amortization = _read_side(source, amortized, period) if amortized else None
    joined = _with_all_columns(_join(billed.rows, amortization.rows if amortization else None))
    rows, reasons = _focus_rows(joined, billed.agreement)
    bad = reasons["reason"].is_not_null()
    unreadable = [side.quarantine for side in (billed, amortization) if side is not None]
    quarantine = pl.concat([*unreadable, reasons.filter(bad).select(QUARANTINE_SCHEMA.keys())])
    frame = rows.filter(~bad)
    stats = {
        "files": len(actual) + len(amortized),
        "rows": frame.height,
        "rows_outside_period": billed.outside_period,
        "amortized_rows_without_actual_row": _count(joined, pl.col("__only") == "amortized_other"),
        "actual_rows_without_amortized_row": _count(joined, pl.col("__only") == "actual_other"),
        "effective_cost_not_amortized_rows": 0 if amortized else _count(joined, _commitment_row()),
    }
    repairs = {
        "tags_outer_braces_added": _count(rows, pl.col("__tags_wrapped")),
        **{f"filled_missing:{c}": _count(rows, pl.col(f"__filled_{c}")) for c in FILLED},
    }
    return LoadResult(
        frame=frame.drop("__tags_wrapped", *(f"__filled_{c}" for c in FILLED)),
        quarantine=quarantine,
        files=[str(p) for p in [*actual, *amortized]],
        source_total=_provider_total(billed.rows),
        repairs={k: v for k, v in repairs.items() if v},
        stats={k: v for k, v in sorted(stats.items()) if v},
    )


def _read_side(source: str, paths: Sequence[Path], period: BillingPeriod) -> _Side:
    frames, agreements, quarantines, outside = [], set(), [], 0
    for path in paths:
        for raw in focus_file.raw_batches(source, path):
            frame = _our_columns(source, path, raw)
            agreements.add(_agreement(frame))
            frame, unreadable = _in_period(path, frame, period)
            quarantines.append(unreadable)
            outside += int(frame["__outside"].sum())
            frames.append(frame.filter(~pl.col("__outside")).drop("__outside"))
    if len(agreements) > 1:
        raise SourceError(source, str(paths[0].parent), f"mixes agreement schemas {sorted(agreements)}")
    rows = pl.concat(frames, how="diagonal_relaxed")
    return _Side(rows, agreements.pop(), pl.concat(quarantines), outside)


def _our_columns(source: str, path: Path, raw: pl.DataFrame) -> pl.DataFrame:
    """The columns we use, under our names (every alias of every version), as trimmed strings or null."""
    by_lower = {c.lower().lstrip("\ufeff").strip(): c for c in raw.columns}
    chosen = {name: next((by_lower[a] for a in aliases if a in by_lower), None) for name, aliases in COLUMNS.items()}
    missing = [name for name in REQUIRED if chosen[name] is None]
    if missing:
        wanted = "; ".join(f"{n} ({' or '.join(COLUMNS[n])})" for n in missing)
        raise SourceError(
            source, str(path), f"missing cost details column(s): {wanted}", "did the export schema change?"
        )
    text = [
        pl.col(column).str.strip_chars().replace("", None).alias(name)
        for name, column in chosen.items()
        if column is not None
    ]
    return raw.select(*text, pl.col(LINE), pl.lit(str(path)).alias(FILE))


def _agreement(frame: pl.DataFrame) -> str:
    if {"pricing_currency", "exchange_rate"} & set(frame.columns):
        return "MCA"
    if "charge_type" not in frame.columns and "billing_account_id" not in frame.columns:
        return "PAYG"
    return "EA"


def _in_period(path: Path, frame: pl.DataFrame, period: BillingPeriod) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows flagged outside ``period`` (by billing period start, else usage month); unreadable dates quarantined."""
    date = parse_date(pl.col("date"))
    start = parse_date(pl.col("billing_period_start")) if "billing_period_start" in frame.columns else date
    frame = frame.with_columns(__date=date, __bps=start.dt.truncate("1mo"))
    problems = [("date", date)] + ([("billing_period_start", start)] if "billing_period_start" in frame.columns else [])
    reason = pl.concat_str(
        [pl.when(pl.col(c).is_not_null() & p.is_null()).then(pl.format(f"{c}: '{{}}' is not a date", pl.col(c)))
         for c, p in problems] + [pl.when(pl.col("date").is_null()).then(pl.lit("date: NULL"))],
        separator="; ", ignore_nulls=True,
    )  # fmt: skip
    frame = frame.with_columns(__reason=reason.replace("", None))
    unreadable = frame.filter(pl.col("__reason").is_not_null())
    quarantine = unreadable.select(file=pl.lit(str(path)), line=pl.col(LINE).cast(pl.String), reason=pl.col("__reason"))
    frame = frame.filter(pl.col("__reason").is_null()).drop("__reason")
    outside = (pl.col("__bps") < period.start) | (pl.col("__bps") >= period.end)
    return frame.with_columns(__outside=outside), quarantine


def parse_date(text: pl.Expr) -> pl.Expr:
    """Cost details dates: ``MM/DD/YYYY`` (EA/MCA CSV), ``YYYY-MM-DD`` or an ISO date/time, as UTC."""
    return pl.coalesce(
        text.str.to_datetime("%m/%d/%Y", strict=False, time_zone="UTC", time_unit="us"),
        focus_file.parse_datetime(text),
    ).cast(TIMESTAMP)


def _join(actual: pl.DataFrame, amortized: pl.DataFrame | None) -> pl.DataFrame:
    """Actual rows with the cost of their amortized twin (``__effective``), plus amortized rows without one."""
    actual = actual.with_columns(
        __billed=pl.col("cost"),
        __effective_text=pl.lit(None, pl.String),
        __effective_pricing_text=pl.lit(None, pl.String),
    )
    if amortized is None:
        return actual.with_columns(__only=pl.lit(None, pl.String), __side=pl.lit("actual"))
    key = [c for c in ROW_KEY if c in actual.columns or c in amortized.columns]
    actual, amortized = _keyed(actual, key), _keyed(amortized, key)
    twins = amortized.select(
        "__key",
        "__occurrence",
        __effective_text=pl.col("cost"),
        __effective_pricing_text=pl.col("cost_in_pricing_currency") if "cost_in_pricing_currency" in amortized.columns
        else pl.lit(None, pl.String),
        __twin_file=pl.col(FILE),
        __twin_line=pl.col(LINE),
    )  # fmt: skip
    matched = actual.drop("__effective_text", "__effective_pricing_text").join(
        twins, on=["__key", "__occurrence"], how="left"
    )
    lonely = amortized.join(actual.select("__key", "__occurrence"), on=["__key", "__occurrence"], how="anti")
    lonely = lonely.with_columns(
        __billed=pl.lit("0"),
        __effective_text=pl.col("cost"),
        __effective_pricing_text=pl.col("cost_in_pricing_currency")
        if "cost_in_pricing_currency" in lonely.columns
        else pl.lit(None, pl.String),
        __side=pl.lit("amortized"),
    )
    matched = matched.with_columns(__side=pl.lit("actual"))
    rows = pl.concat([matched, lonely], how="diagonal_relaxed")
    charge_type = pl.col("charge_type").str.to_lowercase()
    commitment_purchase = charge_type.is_in(["purchase", "refund"]) & _commitment_id().is_not_null()
    only = (
        pl.when((pl.col("__side") == "actual") & pl.col("__twin_line").is_null())
        .then(pl.when(commitment_purchase).then(pl.lit("actual_expected")).otherwise(pl.lit("actual_other")))
        .when(pl.col("__side") == "amortized")
        .then(
            pl.when(charge_type.is_in(UNUSED)).then(pl.lit("amortized_expected")).otherwise(pl.lit("amortized_other"))
        )
    )
    return rows.with_columns(__only=only, __amortized=pl.lit(True))


def _keyed(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    parts = [pl.col(c).fill_null("") if c in frame.columns else pl.lit("") for c in key]
    frame = frame.with_columns(__key=pl.concat_str(parts, separator="\x1f"))
    return frame.with_columns(__occurrence=pl.int_range(pl.len()).over("__key"))


# --- FOCUS columns -------------------------------------------------------------------------------


def _focus_rows(rows: pl.DataFrame, agreement: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """FOCUS 1.2 columns for the joined rows, and a reason (file, line, reason) for each row that can't load."""
    rows, reasons = _typed(rows)
    rows = rows.with_columns(_services(rows), _units(rows))
    rows = rows.unnest("__service", "__unit")
    tags = {t: focus_file.repair_tags(t) for t in rows["tags"].drop_nulls().unique().to_list()}
    rows = rows.with_columns(
        __tags=pl.col("tags").replace_strict(tags, default=None, return_dtype=pl.String),
        __tags_wrapped=pl.col("tags").is_not_null() & ~pl.col("tags").is_in([k for k, v in tags.items() if v == k]),
    )
    bad_tags = pl.when(pl.col("tags").is_not_null() & pl.col("__tags").is_null()).then(
        pl.lit("Tags: not a JSON object")
    )
    unknown = pl.when(pl.col("__category").is_null()).then(
        pl.format("ChargeType: '{}' is not a documented value", pl.col("charge_type"))
    )
    reasons = reasons.with_columns(
        reason=pl.concat_str(
            [pl.col("reason"), rows.select(bad_tags).to_series(), rows.select(unknown).to_series()],
            separator="; ",
            ignore_nulls=True,
        ).replace("", None)
    )
    rows = rows.with_columns(__tags_wrapped=pl.col("__tags_wrapped") & pl.col("__tags").is_not_null())
    return rows.select(*_focus_columns(agreement), "__tags_wrapped", *_filled()), reasons


def _with_all_columns(rows: pl.DataFrame) -> pl.DataFrame:
    absent = [pl.lit(None, pl.String).alias(c) for c in COLUMNS if c not in rows.columns]
    extra = [pl.lit(None, pl.String).alias(c) for c in ("__twin_file", "__twin_line") if c not in rows.columns]
    rows = rows.with_columns(*absent, *extra)
    if "__amortized" not in rows.columns:
        rows = rows.with_columns(__amortized=pl.lit(False), __only=pl.lit(None, pl.String))
    charge_type = pl.col("charge_type").fill_null("Usage")  # PAYG's usage-only file has no ChargeType
    categories = {k: category for k, (category, _) in CHARGE_TYPES.items()}
    return rows.with_columns(
        __charge_type=charge_type,
        __commitment=_commitment_id(),
        __category=charge_type.str.to_lowercase().replace_strict(categories, default=None, return_dtype=pl.String),
    )


def _typed(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Decimals parsed; a reason naming the file and line of each value that isn't a number."""
    values = {
        **{c: pl.col(c) for c in DECIMALS},
        "__billed": pl.col("__billed"),
        "__effective": pl.col("__effective_text"),
        "__effective_pricing": pl.col("__effective_pricing_text"),
    }
    exprs = [v.cast(MONEY, strict=False).alias(f"__{k}" if not k.startswith("__") else k) for k, v in values.items()]
    rows = rows.with_columns(exprs)
    twin = (
        pl.col("__effective_text").is_not_null() & pl.col("__effective").is_null() & pl.col("__twin_line").is_not_null()
    )
    own = [
        pl.when(pl.col(c).is_not_null() & pl.col(f"__{c}").is_null()).then(
            pl.format(f"{c}: '{{}}' is not a decimal number", pl.col(c))
        )
        for c in DECIMALS
    ]
    reason = pl.concat_str(own, separator="; ", ignore_nulls=True).replace("", None)
    reasons = rows.select(
        file=pl.when(reason.is_null() & twin).then(pl.col("__twin_file")).otherwise(pl.col(FILE)),
        line=pl.when(reason.is_null() & twin).then(pl.col("__twin_line")).otherwise(pl.col(LINE)).cast(pl.String),
        reason=pl.when(reason.is_null() & twin)
        .then(pl.format("cost: '{}' is not a decimal number", pl.col("__effective_text")))
        .otherwise(reason),
    )
    return rows, reasons


def _focus_columns(agreement: str) -> list[pl.Expr]:
    charge_type = pl.col("__charge_type").str.to_lowercase()
    unused = charge_type.is_in(UNUSED)
    usage = pl.col("__category") == "Usage"
    billed, effective = _costs()
    block = pl.col("__block").cast(MONEY)
    priced = (pl.col("__category") != "Tax") & pl.col("unit_of_measure").is_not_null()
    pricing_quantity = pl.when(priced).then(pl.col("__quantity") / block)
    rate = pl.col("__exchange_rate").fill_null(1) if agreement == "MCA" else pl.lit(1).cast(MONEY)
    list_price, contracted_price = _list_price() * rate, _price("__unit_price") * rate
    pricing_currency = pl.coalesce(pl.col("pricing_currency"), pl.col("currency"))
    effective_pricing = _effective_in_pricing_currency(effective, pricing_currency)
    fallback = pl.when(usage).then(effective).otherwise(billed)
    refund = charge_type == "refund"  # a correction: its costs are the refunded amount, whatever the unit price
    account_id, account_name, account_type = _billing_account(agreement)
    location = pl.col("location")
    return [
        billed.alias("BilledCost"),
        effective.alias("EffectiveCost"),
        pl.coalesce(pl.when(~refund).then(list_price * pricing_quantity), fallback).cast(MONEY).alias("ListCost"),
        pl.coalesce(pl.when(~refund).then(contracted_price * pricing_quantity), fallback)
        .cast(MONEY)
        .alias("ContractedCost"),
        list_price.cast(MONEY).alias("ListUnitPrice"),
        contracted_price.cast(MONEY).alias("ContractedUnitPrice"),
        pricing_quantity.cast(MONEY).alias("PricingQuantity"),
        pl.when(pricing_quantity.is_not_null()).then(pl.col("__pricing_unit")).alias("PricingUnit"),
        pl.when(usage & ~unused).then(pl.col("__quantity")).alias("ConsumedQuantity"),
        pl.when(usage & ~unused & pl.col("__quantity").is_not_null())
        .then(pl.col("__pricing_unit"))
        .alias("ConsumedUnit"),
        account_id.alias("BillingAccountId"),
        account_name.alias("BillingAccountName"),
        pl.when(account_id.is_not_null()).then(pl.lit(account_type)).alias("BillingAccountType"),
        pl.col("currency").alias("BillingCurrency"),
        pricing_currency.alias("PricingCurrency"),
        effective_pricing.alias("PricingCurrencyEffectiveCost"),
        _list_price().cast(MONEY).alias("PricingCurrencyListUnitPrice"),
        _price("__unit_price").cast(MONEY).alias("PricingCurrencyContractedUnitPrice"),
        pl.col("__bps").alias("BillingPeriodStart"),
        _billing_period_end().alias("BillingPeriodEnd"),
        pl.col("__date").alias("ChargePeriodStart"),
        (pl.col("__date") + pl.duration(days=1)).alias("ChargePeriodEnd"),
        pl.col("__category").alias("ChargeCategory"),
        pl.when(charge_type == "refund").then(pl.lit("Correction")).alias("ChargeClass"),
        pl.coalesce(pl.col("product_name"), pl.col("meter_name")).alias("ChargeDescription"),
        _charge_frequency().alias("ChargeFrequency"),
        _pricing_category().alias("PricingCategory"),
        *_commitment_columns(effective_pricing, pricing_currency),
        pl.lit(PROVIDER).alias("ProviderName"),
        pl.coalesce(pl.col("publisher_name"), pl.lit(PROVIDER)).alias("PublisherName"),
        pl.coalesce(pl.col("partner_name"), pl.lit(PROVIDER)).alias("InvoiceIssuerName"),
        pl.col("invoice_id").alias("InvoiceId"),
        location.str.to_lowercase().str.replace_all(" ", "", literal=True).alias("RegionId"),
        pl.when(location.is_not_null()).then(pl.coalesce(pl.col("location_name"), location)).alias("RegionName"),
        pl.col("availability_zone").alias("AvailabilityZone"),
        pl.col("resource_id").alias("ResourceId"),
        pl.coalesce(pl.col("resource_name"), pl.col("resource_id").str.extract(r"([^/]+)$")).alias("ResourceName"),
        pl.when(pl.col("resource_id").is_not_null())
        .then(pl.coalesce(pl.col("__arm_type"), pl.lit("unknown")))
        .alias("ResourceType"),
        pl.col("__service_name").alias("ServiceName"),
        pl.col("__service_category").alias("ServiceCategory"),
        pl.col("__service_subcategory").alias("ServiceSubcategory"),
        _sku_id().alias("SkuId"),
        pl.when(_sku_id().is_not_null())
        .then(pl.coalesce(pl.col("meter_name"), pl.col("product_name")))
        .alias("SkuMeter"),  # FOCUS: NULL when SkuId is
        _sku_price_id().alias("SkuPriceId"),
        pl.col("subscription_id").alias("SubAccountId"),
        pl.col("subscription_name").alias("SubAccountName"),
        pl.when(pl.col("subscription_id").is_not_null()).then(pl.lit("Subscription")).alias("SubAccountType"),
        pl.col("__tags").alias("Tags"),
        pl.col("charge_type").alias("x_line_item_type"),
        pl.col(FILE).alias("x_source_file"),
        pl.format(
            "{} {}",
            pl.when(pl.col(FILE).str.ends_with(".parquet")).then(pl.lit("row")).otherwise(pl.lit("line")),
            pl.col(LINE),
        ).alias("x_source_line"),
    ]


def _price(name: str) -> pl.Expr:
    """A unit price; 0 on a row that costs something means "not available" (FinOps toolkit known issue 1),
    except on unused commitment rows, whose 0 is their price (their cost is the commitment's)."""
    costs = (pl.col("__billed").fill_null(0) != 0) | (pl.col("__effective").fill_null(0) != 0)
    unused = pl.col("__charge_type").str.to_lowercase().is_in(UNUSED)
    return pl.when((pl.col(name) == 0) & costs & ~unused).then(None).otherwise(pl.col(name))


def _commitment_purchase() -> pl.Expr:
    return (pl.col("__charge_type").str.to_lowercase() == "purchase") & pl.col("__commitment").is_not_null()


def _list_price() -> pl.Expr:
    """PayGPrice; a commitment purchase has none, so the fee's own UnitPrice (see the module doc)."""
    return (
        pl.when(_commitment_purchase())
        .then(pl.coalesce(_price("__payg_price"), _price("__unit_price")))
        .otherwise(_price("__payg_price"))
    )


def _given_sku_id() -> pl.Expr:
    return pl.coalesce(pl.col("product_id"), pl.col("part_number"))


def _sku_id() -> pl.Expr:
    """ProductId/PartNumber; a Marketplace purchase's ProductName; an unused savings plan's benefit; null on Tax."""
    charge_type = pl.col("__charge_type").str.to_lowercase()
    fallback = (
        pl.when(charge_type.is_in(UNUSED))
        .then(pl.col("__commitment"))
        .when(charge_type.is_in(["usage", "purchase"]))
        .then(pl.col("product_name"))
    )
    return pl.when(pl.col("__category") != "Tax").then(pl.coalesce(_given_sku_id(), fallback))


def _sku_price_id() -> pl.Expr:
    """The product, meter, pricing model and term that select the row's price (see the module doc)."""
    parts = [_sku_id(), pl.col("meter_id"), pl.col("pricing_model"), pl.col("term")]
    priced = pl.col("__category").is_in(["Usage", "Purchase"]) & _sku_id().is_not_null()
    return pl.when(priced).then(pl.concat_str(parts, separator=":", ignore_nulls=True))


def _filled() -> list[pl.Expr]:
    """Flags of the values filled in because the cost details have none (counted in ``repairs``)."""
    sku = _sku_id()
    return [
        (sku.is_not_null() & _given_sku_id().is_null()).fill_null(False).alias("__filled_SkuId"),
        (sku.is_not_null() & pl.col("meter_name").is_null() & pl.col("product_name").is_not_null())
        .fill_null(False)
        .alias("__filled_SkuMeter"),
        (_commitment_purchase() & _price("__payg_price").is_null() & _price("__unit_price").is_not_null())
        .fill_null(False)
        .alias("__filled_ListUnitPrice"),
    ]


def _effective_in_pricing_currency(effective: pl.Expr, pricing_currency: pl.Expr) -> pl.Expr:
    """EffectiveCost in the pricing currency: the same amount when it is the billing currency, else the
    amortized (or, alone, the actual) ``costInPricingCurrency`` (MCA)."""
    commitment_purchase = pl.col("__category").eq("Purchase") & pl.col("__commitment").is_not_null()
    actual_only = (
        pl.when(commitment_purchase).then(pl.lit(0).cast(MONEY)).otherwise(pl.col("__cost_in_pricing_currency"))
    )
    other = pl.when(pl.col("__amortized")).then(pl.col("__effective_pricing")).otherwise(actual_only)
    return pl.when(pricing_currency == pl.col("currency")).then(effective).otherwise(other).cast(MONEY)


def _costs() -> tuple[pl.Expr, pl.Expr]:
    """BilledCost from the actual file; EffectiveCost from the amortized file (or, alone, the actual one)."""
    billed = pl.col("__billed").fill_null(0)
    amortized = pl.col("__effective").fill_null(0)
    commitment_purchase = pl.col("__category").eq("Purchase") & pl.col("__commitment").is_not_null()
    alone = pl.when(commitment_purchase).then(pl.lit(0).cast(MONEY)).otherwise(billed)
    return billed.cast(MONEY), pl.when(pl.col("__amortized")).then(amortized).otherwise(alone).cast(MONEY)


def _commitment_id() -> pl.Expr:
    return pl.coalesce(pl.col("benefit_id"), pl.col("reservation_id"))


def _commitment_row() -> pl.Expr:
    """Rows whose amortized cost is missing without the amortized file: commitment purchases and covered usage."""
    model = pl.col("pricing_model").str.to_lowercase().str.replace_all(" ", "", literal=True)
    purchase = pl.col("charge_type").str.to_lowercase().is_in(["purchase", "refund"]) & _commitment_id().is_not_null()
    return model.is_in(["reservation", "savingsplan"]).fill_null(False) | purchase.fill_null(False)


def _commitment_columns(effective_pricing: pl.Expr, pricing_currency: pl.Expr) -> list[pl.Expr]:
    """Commitment columns; the quantity of used or unused commitment the way the FinOps toolkit computes it:
    a reservation's usage quantity × ``RINormalizationRatio`` (AdditionalInfo), a savings plan's cost."""
    charge_type = pl.col("__charge_type").str.to_lowercase()
    model = pl.col("pricing_model").str.to_lowercase().str.replace_all(" ", "", literal=True)
    lowered = pl.col("__commitment").str.to_lowercase()
    reservation = lowered.str.contains("/microsoft.capacity/") | (model == "reservation")
    savings_plan = lowered.str.contains("/microsoft.billingbenefits/") | (model == "savingsplan")
    kind = (
        pl.when(reservation | (charge_type == "unusedreservation"))
        .then(pl.lit("Reservation"))
        .when(savings_plan | (charge_type == "unusedsavingsplan"))
        .then(pl.lit("Savings Plan"))
    )
    has = pl.col("__commitment").is_not_null() & (
        model.is_in(["reservation", "savingsplan"]) | charge_type.is_in([*UNUSED, "purchase", "refund"])
    ).fill_null(False)
    status = (
        pl.when(has & charge_type.is_in(UNUSED))
        .then(pl.lit("Unused"))
        .when(has & (pl.col("__category") == "Usage"))
        .then(pl.lit("Used"))
    )
    ratio = pl.col("additional_info").str.json_path_match("$.RINormalizationRatio").cast(MONEY, strict=False)
    applied = status.is_not_null()
    purchase = has & (charge_type == "purchase")
    recurring = pl.col("frequency").str.to_lowercase().str.replace_all(r"[ \-]", "") == "recurring"
    period_hours = (_billing_period_end() - pl.col("__bps")).dt.total_hours()
    term_months = pl.col("term").str.extract(r"(\d+)").cast(pl.Int64, strict=False)
    term_end = pl.col("__date").dt.offset_by(pl.format("{}mo", term_months))
    term_hours = (term_end - pl.col("__date")).dt.total_hours()
    bought_hours = pl.when(recurring.fill_null(False)).then(period_hours).otherwise(term_hours)
    quantity = (
        pl.when(applied & (kind == "Reservation"))
        .then(pl.col("__quantity") * ratio.fill_null(1))
        .when(applied & (kind == "Savings Plan"))
        .then(effective_pricing)
        .when(purchase & (kind == "Reservation"))
        .then(pl.col("__quantity") * bought_hours.cast(MONEY))
        .when(purchase & (kind == "Savings Plan"))
        .then(pl.coalesce(pl.col("__cost_in_pricing_currency"), pl.col("__billed")))
    )
    pricing_unit = pl.col("__pricing_unit")
    reservation_unit = (
        pl.when(ratio.fill_null(1) != 1).then(pl.lit("Normalized ") + pricing_unit).otherwise(pricing_unit)
    )
    unit = pl.when(kind == "Reservation").then(reservation_unit).when(kind == "Savings Plan").then(pricing_currency)
    return [
        quantity.cast(MONEY).alias("CommitmentDiscountQuantity"),
        pl.when(quantity.is_not_null()).then(unit).alias("CommitmentDiscountUnit"),
        pl.when(has).then(pl.col("__commitment")).alias("CommitmentDiscountId"),
        pl.when(has)
        .then(pl.coalesce(pl.col("benefit_name"), pl.col("reservation_name")))
        .alias("CommitmentDiscountName"),
        pl.when(has).then(kind).alias("CommitmentDiscountType"),
        pl.when(has)
        .then(kind.replace_strict({"Reservation": "Usage", "Savings Plan": "Spend"}, default=None))
        .alias("CommitmentDiscountCategory"),
        status.alias("CommitmentDiscountStatus"),
    ]


def _charge_frequency() -> pl.Expr:
    given = (
        pl.col("frequency")
        .str.to_lowercase()
        .str.replace_all(r"[ \-]", "")
        .replace_strict(FREQUENCIES, default=None, return_dtype=pl.String)
    )
    default = pl.when(pl.col("__category") == "Usage").then(pl.lit("Usage-Based")).otherwise(pl.lit("One-Time"))
    return pl.coalesce(given, default)


def _pricing_category() -> pl.Expr:
    model = pl.col("pricing_model").str.to_lowercase().str.replace_all(" ", "", literal=True)
    mapped = model.replace_strict(PRICING_MODELS, default=None, return_dtype=pl.String)
    unused = pl.col("__charge_type").str.to_lowercase().is_in(UNUSED)
    return (
        pl.when(pl.col("__category").is_in(["Tax", "Adjustment"]))
        .then(None)
        .when(unused)
        .then(pl.lit("Committed"))
        .when(pl.col("__category") == "Purchase")
        .then(pl.lit("Standard"))  # commitment purchases are priced at their standard price (toolkit)
        .otherwise(pl.coalesce(mapped, pl.lit("Standard")))
    )


def _billing_account(agreement: str) -> tuple[pl.Expr, pl.Expr, str]:
    if agreement == "MCA":
        return pl.col("billing_profile_id"), pl.col("billing_profile_name"), "Billing Profile"
    if agreement == "PAYG":  # the schema pages: the billing profile of pay-as-you-go is the subscription
        return (
            pl.coalesce(pl.col("billing_profile_id"), pl.col("subscription_id")),
            pl.coalesce(pl.col("billing_profile_name"), pl.col("subscription_name")),
            "Subscription",
        )
    return (
        pl.coalesce(pl.col("billing_account_id"), pl.col("billing_profile_id")),
        pl.coalesce(pl.col("billing_account_name"), pl.col("billing_profile_name")),
        "Billing Account",
    )


def _billing_period_end() -> pl.Expr:
    end = parse_date(pl.col("billing_period_end"))
    return pl.coalesce(end + pl.duration(days=1), pl.col("__bps").dt.offset_by("1mo")).cast(TIMESTAMP)


# --- services and units (FinOps toolkit tables) --------------------------------------------------


def _services(rows: pl.DataFrame) -> pl.Expr:
    """ServiceName/Category/Subcategory by (ConsumedService, resource type), then resource type, then meter."""
    by_pair, by_type, by_name = _service_tables()
    types = {i: arm_resource_type(i) for i in rows["resource_id"].drop_nulls().unique().to_list()}
    parsed = pl.col("resource_id").replace_strict(types, default=None, return_dtype=pl.String)
    arm_type = pl.coalesce(pl.col("resource_type"), parsed)
    arm_type = arm_type.str.to_lowercase()
    pair = pl.concat_str(pl.col("consumed_service").str.to_lowercase().fill_null(""), arm_type, separator="|")
    service = pl.coalesce(
        pair.replace_strict(by_pair, default=None, return_dtype=pl.String),
        arm_type.replace_strict(by_type, default=None, return_dtype=pl.String),
        pl.col("meter_category").replace_strict(by_name, default=None, return_dtype=pl.String),
    )
    fallback_name = pl.coalesce(
        pl.col("meter_category"), pl.col("consumed_service"), pl.col("product_name"), pl.lit("Unknown")
    )
    fallback = pl.concat_str(fallback_name, pl.lit("Other"), pl.lit("Other (Other)"), separator="\x1f")
    parts = pl.coalesce(service, fallback).str.split("\x1f")
    return pl.struct(
        parts.list.get(0).alias("__service_name"),
        parts.list.get(1).alias("__service_category"),
        parts.list.get(2).alias("__service_subcategory"),
        arm_type.alias("__arm_type"),
    ).alias("__service")


@cache
def _service_tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    rows = _toolkit_table("ms_finops_toolkit_Services.csv")
    value = {id(r): "\x1f".join((r["ServiceName"], r["ServiceCategory"], r["ServiceSubcategory"])) for r in rows}
    by_pair = {f"{r['ConsumedService'].lower()}|{r['ResourceType'].lower()}": value[id(r)] for r in rows}
    by_type: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for r in rows:  # first row wins: the table lists a resource type under several consumed services
        by_type.setdefault(r["ResourceType"].lower(), value[id(r)])
        by_name.setdefault(r["ServiceName"], value[id(r)])
    return by_pair, by_type, by_name


def _units(rows: pl.DataFrame) -> pl.Expr:
    """PricingUnit (the toolkit's DistinctUnits) and the pricing block size for each UnitOfMeasure."""
    units = _unit_table()
    measure = pl.col("unit_of_measure")
    found = pl.coalesce(
        measure.replace_strict(units, default=None, return_dtype=pl.String),
        measure.str.strip_chars().replace_strict(units, default=None, return_dtype=pl.String),
    )
    parts = found.str.split("\x1f")
    return pl.struct(
        pl.coalesce(parts.list.get(0), measure).alias("__pricing_unit"),
        pl.coalesce(parts.list.get(1), pl.lit("1")).alias("__block"),
    ).alias("__unit")


@cache
def _unit_table() -> dict[str, str]:
    return {r["UnitOfMeasure"]: f"{r['DistinctUnits']}\x1f{r['PricingBlockSize']}" for r in _toolkit_table(
        "ms_finops_toolkit_PricingUnits.csv")}  # fmt: skip


def _toolkit_table(name: str) -> list[dict[str, str]]:
    text = (package_files("connectors") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def arm_resource_type(resource_id: str | None) -> str | None:
    """The Azure Resource Manager type of a resource ID: ``/…/providers/Microsoft.Sql/servers/s/databases/d``
    → ``microsoft.sql/servers/databases``."""
    if not resource_id:
        return None
    match = _ARM_TYPE.search(resource_id)
    if match is None:
        return None
    nested = match.group(3).split("/")[1::2] if match.group(3) else []
    return "/".join([match.group(1), match.group(2), *nested]).lower()


def _provider_total(actual: pl.DataFrame) -> Decimal:
    """The actual file's cost column summed exactly as written (values that aren't numbers are quarantined)."""
    total = Decimal(0)
    for value in actual["cost"].drop_nulls().to_list():
        try:
            amount = Decimal(value)
        except InvalidOperation:
            continue
        if amount.is_finite():
            total += amount
    return total


def _count(frame: pl.DataFrame, condition: pl.Expr) -> int:
    return int(frame.select(condition.fill_null(False).sum()).item())
