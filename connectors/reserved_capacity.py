"""Reserved GPU capacity declared in config → FOCUS 1.2 commitment Purchase and amortized Usage rows.

No API reports a contract such as "64 H100s for 12 months at $2.10 per GPU-hour, $100k upfront", so it is
declared in ``cogs.yaml`` (``ReservedCapacitySource``) and turned into the rows a FOCUS provider would
export for a commitment, following FOCUS 1.2 (FOCUS_Spec tag v1.2: ``specification/columns/
commitmentdiscount*.md``, ``capacityreservation*.md``, ``chargefrequency.md``, ``effectivecost.md`` and
the "Commitment discount" scenarios of the spec's examples, copied to tests/fixtures/gpu_clouds/):

- **Purchase, One-Time** (the upfront payment, in the month the term starts): BilledCost = upfront,
  EffectiveCost 0, ChargePeriod = the whole term, CommitmentDiscountQuantity = GPU-hours of the term.
- **Purchase, Recurring** (the hourly fee, one row per billing month): BilledCost = hourly fee × the term's
  hours in the month, EffectiveCost 0, CommitmentDiscountQuantity = the month's GPU-hours.
- **Usage, Usage-Based, PricingCategory Committed**, every hour of the term: BilledCost 0 and
  EffectiveCost = the hourly fee + the hour's share of the upfront (cumulative rounding over the whole
  term, so the shares add back to the upfront exactly across months). The hour is split by telemetry:
  one ``Used`` row per deployment the contract serves (ResourceId = the deployment, weight = its busy
  GPU-seconds) and one ``Unused`` row (ResourceId = the contract id) for the idle GPU-seconds, with
  ``models.money.split_units`` so the parts add up to the hour's amount exactly. When deployments
  report more busy GPU-seconds than the hour provides, the hour is all Used, shared in proportion.

So per contract, over the term, Σ EffectiveCost of Usage = Σ BilledCost of Purchase (the FOCUS rule), and
in each month BilledCost is what the contract invoices. CommitmentDiscountId = CapacityReservationId = the
contract id; CommitmentDiscountStatus = CapacityReservationStatus = Used/Unused on Usage rows;
CommitmentDiscountCategory ``Usage`` (GPU-hours), CommitmentDiscountType ``Reserved GPU Capacity``,
CommitmentDiscountUnit/PricingUnit/ConsumedUnit ``GPU-Hours`` (12 places). ListCost = ContractedCost =
the row's BilledCost on purchases and EffectiveCost on usage (no on-demand price is declared); the unit
prices are never null on these Usage/Purchase rows (FOCUS 1.2 ListUnitPrice-C-005-C, ContractedUnitPrice-C-006-C):
the amount per GPU-hour, rounded to 12 places. BillingAccountName/Type and RegionName come from the
contract (defaults: the account id, ``Billing Account``, the region id) so they are set whenever the ids are.

The connector cannot read the warehouse: ``load(source, period, usage=...)`` takes the hours' busy
GPU-seconds as a frame (``inference_usage`` rows or any frame with ``hour``, ``gpu_seconds`` and
optionally ``deployment``); without it every hour is Unused (counted in ``stats``).
``source_total`` is what the contracts bill in the month, computed from the declared terms alone.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import polars as pl

from connectors.base import BillingPeriod, LoadResult
from models.config import ReservedCapacitySource, ReservedContract
from models.focus import MONEY, MONEY_SCALE, TIMESTAMP
from models.money import from_units, split_units

HOUR = timedelta(hours=1)
QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
UNITS_PER_MONEY = 10**MONEY_SCALE
MICROS = 1_000_000  # busy time is weighed in micro-GPU-seconds (inference_usage keeps 6 places)
MICROS_PER_GPU_HOUR = 3600 * MICROS
UNIT = "GPU-Hours"
TYPE = "Reserved GPU Capacity"
UNUSED = "\uffffunused"  # sorts after every deployment name: the idle part is split last

_STRINGS = (
    "BillingAccountId", "BillingAccountName", "BillingAccountType", "BillingCurrency", "CapacityReservationId",
    "CapacityReservationStatus", "ChargeCategory", "ChargeDescription", "ChargeFrequency",
    "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus",
    "CommitmentDiscountType", "CommitmentDiscountUnit", "ConsumedUnit", "InvoiceIssuerName", "PricingCategory",
    "PricingUnit", "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName",
    "ResourceType", "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceId",
    "SkuPriceDetails", "x_source_file", "x_source_line", "x_line_item_type",
)  # fmt: skip
_DECIMALS = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice",
    "CommitmentDiscountQuantity", "ConsumedQuantity", "PricingQuantity",
)  # fmt: skip
_TIMES = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
FRAME_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in _STRINGS},
    **{c: MONEY for c in _DECIMALS},
    **{c: TIMESTAMP for c in _TIMES},
}


def load(source: ReservedCapacitySource, period: BillingPeriod, *, usage: pl.DataFrame | None = None) -> LoadResult:
    """Every contract's purchase and hourly usage rows for ``period``, Used/Unused from ``usage``."""
    stats: Counter[str] = Counter()
    if usage is None:
        stats["months_without_usage_data"] += 1
    frames = [
        commitment_rows(contract, period, usage, billing_account_id=source.name, stats=stats)
        for contract in source.contracts
    ]
    return LoadResult(
        frame=pl.concat(frames) if frames else pl.DataFrame(schema=FRAME_SCHEMA),
        files=[f"contract {c.id}" for c in source.contracts if _slice(c, period) is not None],
        source_total=billed_in(source, period),
        stats={k: v for k, v in sorted(stats.items()) if v},
    )


def billed_in(source: ReservedCapacitySource, period: BillingPeriod) -> Decimal:
    """What the contracts bill in ``period``, from the declared terms: upfront in the start month, hourly fees."""
    total = Decimal(0)
    for contract in source.contracts:
        window = _slice(contract, period)
        if window is None:
            continue
        if period.start <= contract.start < period.end:
            total += contract.upfront
        total += contract.hourly_total * _hours(*window)
    return total


def commitment_rows(
    contract: ReservedContract,
    period: BillingPeriod,
    busy_gpu_seconds_by_hour: pl.DataFrame | None,
    *,
    billing_account_id: str | None = None,
    stats: Counter[str] | None = None,
) -> pl.DataFrame:
    """The contract's FOCUS rows for ``period`` (pure).

    ``busy_gpu_seconds_by_hour`` has ``hour`` and ``gpu_seconds`` columns, and optionally ``deployment``
    (then only the contract's ``deployments`` count); None or an empty frame means nothing was busy.
    """
    stats = stats if stats is not None else Counter()
    window = _slice(contract, period)
    if window is None:
        return pl.DataFrame(schema=FRAME_SCHEMA)
    base = _base(contract, period, billing_account_id)
    rows = _purchase_rows(contract, period, window, base)
    busy = _busy(contract, window, busy_gpu_seconds_by_hour)
    usage = _usage_rows(contract, window, busy, base, stats)
    frame = pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row")
    return pl.concat([frame, usage]) if usage.height else frame


# --- purchases -------------------------------------------------------------------------------------


def _purchase_rows(
    contract: ReservedContract, period: BillingPeriod, window: tuple[datetime, datetime], base: dict[str, Any]
) -> list[tuple[Any, ...]]:
    rows = []
    if contract.upfront and period.start <= contract.start < period.end:
        quantity = Decimal(contract.gpu_count) * _hours(contract.start, contract.end)
        price = _money(contract.upfront / quantity)
        term = (contract.start, contract.end)
        rows.append(_purchase(base, contract, "One-Time", contract.upfront, quantity, price, term,
                              "Upfront", "upfront payment for the term"))  # fmt: skip
    if contract.hourly_total:
        hours = _hours(*window)
        fee = _money(contract.hourly_total * hours)
        quantity = Decimal(contract.gpu_count) * hours
        rows.append(_purchase(base, contract, "Recurring", fee, quantity, _per_gpu_rate(contract), window,
                              "RecurringFee", f"hourly fee, {hours} hours of {period.key}"))  # fmt: skip
    return rows


def _purchase(
    base: dict[str, Any],
    contract: ReservedContract,
    frequency: str,
    amount: Decimal,
    quantity: Decimal,
    unit_price: Decimal | None,
    window: tuple[datetime, datetime],
    kind: str,
    what: str,
) -> tuple[Any, ...]:
    values = {
        **base,
        "ChargeCategory": "Purchase",
        "ChargeFrequency": frequency,
        "ChargeDescription": f"{_title(contract)}: {what}",
        "PricingCategory": "Standard",
        "ResourceId": contract.id,
        "ResourceName": contract.name or contract.id,
        "ResourceType": TYPE,
        "BilledCost": amount,
        "EffectiveCost": Decimal(0),  # a purchase covering future usage (EffectiveCost-C-005-C)
        "ListCost": amount,
        "ContractedCost": amount,
        "ListUnitPrice": unit_price,
        "ContractedUnitPrice": unit_price,
        "CommitmentDiscountQuantity": quantity,
        "PricingQuantity": quantity,
        "PricingUnit": UNIT,
        "ChargePeriodStart": window[0],
        "ChargePeriodEnd": window[1],
        "x_line_item_type": kind,
        "x_source_line": f"{kind} {window[0]:%Y-%m-%dT%H}",
    }
    return tuple(values.get(c) for c in FRAME_SCHEMA)


# --- hourly usage --------------------------------------------------------------------------------


def _usage_rows(
    contract: ReservedContract,
    window: tuple[datetime, datetime],
    busy: dict[datetime, dict[str, int]],
    base: dict[str, Any],
    stats: Counter[str],
) -> pl.DataFrame:
    """Each hour's amortized amount split into Used (per deployment) and Unused parts, exactly."""
    provisioned = contract.gpu_count * MICROS_PER_GPU_HOUR
    parts: dict[str, list[Any]] = defaultdict(list)
    for hour, amount in _hourly_amounts(contract, window):
        by_deployment = busy.get(hour, {})
        used = sum(by_deployment.values())
        idle = max(0, provisioned - used)
        stats["contract_hours"] += 1
        stats["hours_fully_idle"] += int(used == 0)
        stats["hours_busier_than_provisioned"] += int(used > provisioned)
        for name, weight in [*sorted(by_deployment.items()), (UNUSED, idle)]:
            if weight > 0:
                parts["hour"].append(hour)
                parts["part"].append(name)
                parts["weight"].append(weight)
                parts["amount"].append(int(amount * UNITS_PER_MONEY))
                parts["gpu_hours"].append(contract.gpu_count * UNITS_PER_MONEY)
                # the hour's amount per GPU-hour: each part's cost is its GPU-hours × this (within 1e-12 rounding)
                parts["rate"].append(int(_money(amount / contract.gpu_count) * UNITS_PER_MONEY))
    if not parts:
        return pl.DataFrame(schema=FRAME_SCHEMA)
    frame = pl.DataFrame(
        parts, schema={"hour": TIMESTAMP, "part": pl.String, "weight": pl.Int64, "amount": pl.Int128,
                       "gpu_hours": pl.Int128, "rate": pl.Int128},
    )  # fmt: skip
    split = split_units(frame, group="hour", amount="amount", weight="weight", order="part", out="units")
    # the hour's GPU-hours split the same way, in 1e-12 units: the parts add up to gpu_count exactly
    split = split_units(split, group="hour", amount="gpu_hours", weight="weight", order="part", out="quantity")
    return split.sort("hour", "part").collect().pipe(_usage_frame, contract, base)


def _usage_frame(split: pl.DataFrame, contract: ReservedContract, base: dict[str, Any]) -> pl.DataFrame:
    unused = pl.col("part") == UNUSED
    cost = from_units(pl.col("units"))
    quantity = from_units(pl.col("quantity"))
    status = pl.when(unused).then(pl.lit("Unused")).otherwise(pl.lit("Used"))
    title = _title(contract)
    frame = split.select(
        *[pl.lit(v, dtype=FRAME_SCHEMA[k]).alias(k) for k, v in base.items()],
        pl.lit("Usage").alias("ChargeCategory"),
        pl.lit("Usage-Based").alias("ChargeFrequency"),
        pl.when(unused)
        .then(pl.lit(f"{title}: unused capacity"))
        .otherwise(pl.format(f"{title}: used by {{}}", pl.col("part")))
        .alias("ChargeDescription"),
        pl.lit("Committed").alias("PricingCategory"),
        pl.when(unused).then(pl.lit(contract.id)).otherwise(pl.col("part")).alias("ResourceId"),
        pl.when(unused).then(pl.lit(contract.name or contract.id)).otherwise(pl.col("part")).alias("ResourceName"),
        pl.when(unused).then(pl.lit(TYPE)).otherwise(pl.lit("Deployment")).alias("ResourceType"),
        status.alias("CommitmentDiscountStatus"),
        status.alias("CapacityReservationStatus"),
        pl.lit(0, MONEY).alias("BilledCost"),
        cost.alias("EffectiveCost"),
        cost.alias("ListCost"),
        cost.alias("ContractedCost"),
        from_units(pl.col("rate")).alias("ListUnitPrice"),
        from_units(pl.col("rate")).alias("ContractedUnitPrice"),
        quantity.alias("CommitmentDiscountQuantity"),
        quantity.alias("PricingQuantity"),
        pl.lit(UNIT).alias("PricingUnit"),
        pl.when(unused).then(None).otherwise(quantity).alias("ConsumedQuantity"),
        pl.when(unused).then(None).otherwise(pl.lit(UNIT)).alias("ConsumedUnit"),
        pl.col("hour").alias("ChargePeriodStart"),
        (pl.col("hour") + HOUR).alias("ChargePeriodEnd"),
        status.alias("x_line_item_type"),
        pl.format("{} {}", status, pl.col("hour").dt.strftime("%Y-%m-%dT%H")).alias("x_source_line"),
    )
    return frame.select(
        pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in FRAME_SCHEMA.items()
    )


def _hourly_amounts(contract: ReservedContract, window: tuple[datetime, datetime]) -> list[tuple[datetime, Decimal]]:
    """(hour, fee + that hour's share of the upfront) for every hour of ``window``.

    The upfront share of hour k of the term is R(U·(k+1)/H) − R(U·k/H): the shares of all hours add
    back to U exactly, whichever months they are loaded in.
    """
    term_hours = int(_hours(contract.start, contract.end))
    fee = _money(contract.hourly_total)
    first = int(_hours(contract.start, window[0]))
    count = int(_hours(*window))

    def upfront_until(k: int) -> Decimal:
        return _money(contract.upfront * k / term_hours)

    return [(window[0] + i * HOUR, fee + upfront_until(first + i + 1) - upfront_until(first + i)) for i in range(count)]


def _busy(
    contract: ReservedContract, window: tuple[datetime, datetime], usage: pl.DataFrame | None
) -> dict[datetime, dict[str, int]]:
    """Busy micro-GPU-seconds per hour and deployment within ``window`` (only the contract's deployments)."""
    if usage is None or usage.is_empty():
        return {}
    frame = usage.lazy()
    if "deployment" in usage.columns:
        if contract.deployments:
            frame = frame.filter(pl.col("deployment").is_in(contract.deployments))
    else:
        frame = frame.with_columns(
            pl.lit(contract.deployments[0] if contract.deployments else contract.id).alias("deployment")
        )
    frame = (
        frame.with_columns(pl.col("hour").cast(TIMESTAMP).dt.truncate("1h"))
        .filter((pl.col("hour") >= window[0]) & (pl.col("hour") < window[1]) & pl.col("deployment").is_not_null())
        .group_by("hour", "deployment")
        .agg(pl.col("gpu_seconds").cast(pl.Decimal(38, 6)).sum())
        .collect()
    )
    busy: dict[datetime, dict[str, int]] = defaultdict(dict)
    for hour, deployment, seconds in frame.iter_rows():
        micros = int(Decimal(seconds) * MICROS)
        if micros > 0:
            busy[hour][deployment] = micros
    return busy


# --- shared ------------------------------------------------------------------------------------------


def _base(contract: ReservedContract, period: BillingPeriod, account: str | None) -> dict[str, Any]:
    details = {"x_GpuType": contract.gpu_type, "x_GpuCount": contract.gpu_count,
               "x_HourlyFee": str(contract.hourly_total), "x_Upfront": str(contract.upfront)}  # fmt: skip
    account_id = contract.billing_account_id or account or contract.provider
    return {
        "BillingAccountId": account_id,
        # FOCUS 1.2: BillingAccountType MUST NOT be null when BillingAccountId is not null, and BillingAccountName
        # MUST NOT be null where accounts can be named (the config names it; else its id is its name)
        "BillingAccountName": contract.billing_account_name or account_id,
        "BillingAccountType": contract.billing_account_type,
        "BillingCurrency": contract.currency,
        "CapacityReservationId": contract.id,
        "CommitmentDiscountCategory": "Usage",
        "CommitmentDiscountId": contract.id,
        "CommitmentDiscountName": contract.name or contract.id,
        "CommitmentDiscountType": TYPE,
        "CommitmentDiscountUnit": UNIT,
        "InvoiceIssuerName": contract.provider,
        "ProviderName": contract.provider,
        "PublisherName": contract.provider,
        "RegionId": contract.region,
        # FOCUS 1.2 RegionName-C-005-C: MUST NOT be null when RegionId is not null
        "RegionName": (contract.region_name or contract.region) if contract.region else None,
        "ServiceCategory": "Compute",
        "ServiceName": f"{contract.provider} {TYPE}",
        "ServiceSubcategory": "Virtual Machines",
        "SkuId": contract.gpu_type,
        "SkuMeter": UNIT,
        "SkuPriceId": contract.id,
        "SkuPriceDetails": json.dumps(details, separators=(",", ":")),
        "x_source_file": f"contract {contract.id}",
        "BillingPeriodStart": period.start,
        "BillingPeriodEnd": period.end,
    }


def _slice(contract: ReservedContract, period: BillingPeriod) -> tuple[datetime, datetime] | None:
    start, end = max(contract.start, period.start), min(contract.end, period.end)
    return (start, end) if start < end else None


def _hours(start: datetime, end: datetime) -> Decimal:
    return Decimal((end - start) // HOUR)


def _per_gpu_rate(contract: ReservedContract) -> Decimal:
    """The contracted price per GPU-hour: declared, or the total's share rounded to 12 places.

    FOCUS 1.2 ListUnitPrice/ContractedUnitPrice-C-005-C: not null on a Purchase; rounded, the price × quantity
    stays within far less than a cent of the fee (the validator's tolerance is 1e-9 relative).
    """
    if contract.hourly_rate_per_gpu is not None:
        return contract.hourly_rate_per_gpu
    return _money(contract.hourly_total / contract.gpu_count)


def _money(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, ROUND_HALF_EVEN)


def _title(contract: ReservedContract) -> str:
    return f"Reserved {contract.gpu_count} × {contract.gpu_type} ({contract.name or contract.id})"
