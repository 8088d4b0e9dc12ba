"""Allocation, first version: every charge row to features, idle or unallocated, exactly.

Rules, in order of precedence (the first that applies wins; ``rule_id`` records which):

1. ``unused_commitment`` — the unused part of a commitment (CommitmentDiscountStatus = Unused) is idle.
2. ``tag:<key>`` — a tag/label from ``allocation.feature_tag_keys`` names the feature directly.
3. ``pool:<name>`` — a charge on a shared deployment, cluster or API project is split across the
   features that used the pool during the charge period, by the pool's driver (tokens, GPU-seconds
   or requests). With ``gpus_per_resource`` the provisioned GPU-seconds are measured from the billed
   resources, and what no feature used is an explicit ``idle`` part.
4. ``unmatched`` — anything else is an explicit ``unallocated`` row.

Each charge's EffectiveCost and BilledCost are split separately with the largest-remainder rule, so
the parts of every charge add up to both amounts to the last stored decimal.
"""

from __future__ import annotations

import polars as pl

from models.config import AllocationConfig, Pool
from models.focus import FOCUS_COSTS_SCHEMA, MONEY
from models.money import from_units, split_units, to_units

IDLE = "idle"
UNALLOCATED = "unallocated"
GPU_SECOND_UNITS = 1_000_000  # GPU-seconds are weighed in microseconds so weights stay integers

CHARGE_COLUMNS = (
    "x_charge_id",
    "x_source",
    "x_billing_period",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "CommitmentDiscountStatus",
    "EffectiveCost",
    "BilledCost",
    "ResourceId",
    "SubAccountId",
    "ServiceName",
    "ProviderName",
    "Tags",
)

ALLOCATION_SCHEMA: dict[str, pl.DataType] = {
    "x_charge_id": pl.String(),
    "x_source": pl.String(),
    "x_billing_period": pl.String(),
    "charge_period_start": pl.Datetime("us", "UTC"),
    "charge_date": pl.Date(),
    "provider_name": pl.String(),
    "service_name": pl.String(),
    "charge_category": pl.String(),
    "feature": pl.String(),
    "allocation_kind": pl.String(),  # direct | shared | idle | unallocated
    "rule_id": pl.String(),
    "driver": pl.String(),
    "driver_quantity": pl.Decimal(38, 6),
    "driver_total": pl.Decimal(38, 6),
    "effective_cost": MONEY,
    "billed_cost": MONEY,
}


def _tag_feature(keys: list[str]) -> pl.Expr:
    """The first configured tag key present in the Tags JSON object, as (feature, rule_id)."""
    feature = pl.lit(None, pl.String)
    rule = pl.lit(None, pl.String)
    for key in reversed(keys):
        value = pl.col("Tags").str.json_path_match(f"$['{key}']")
        found = value.is_not_null() & (value != "")
        feature = pl.when(found).then(value).otherwise(feature)
        rule = pl.when(found).then(pl.lit(f"tag:{key}")).otherwise(rule)
    return pl.struct(feature.alias("feature"), rule.alias("rule_id"))


def _charge_in_pool(pool: Pool) -> pl.Expr:
    m = pool.charges
    cond = pl.lit(True)
    if m.source:
        cond &= pl.col("x_source") == m.source
    if m.resource_ids:
        cond &= pl.col("ResourceId").is_in(m.resource_ids)
    if m.resource_id_prefix:
        cond &= pl.col("ResourceId").str.starts_with(m.resource_id_prefix)
    if m.sub_account_ids:
        cond &= pl.col("SubAccountId").is_in(m.sub_account_ids)
    if m.service_names:
        cond &= pl.col("ServiceName").is_in(m.service_names)
    for key, value in m.tags.items():
        cond &= pl.col("Tags").str.json_path_match(f"$['{key}']") == value
    return cond.fill_null(False)


def _usage_in_pool(pool: Pool) -> pl.Expr:
    m = pool.usage
    cond = pl.lit(True)
    if m.deployments:
        cond &= pl.col("deployment").is_in(m.deployments)
    if m.providers:
        cond &= pl.col("provider").is_in(m.providers)
    if m.environments:
        cond &= pl.col("environment").is_in(m.environments)
    return cond.fill_null(False)


def _driver_units(driver: str) -> pl.Expr:
    if driver == "tokens":
        return (pl.col("input_tokens") + pl.col("output_tokens")).cast(pl.Int128)
    if driver == "requests":
        return pl.col("requests").cast(pl.Int128)
    return (pl.col("gpu_seconds").cast(pl.Decimal(38, 6)) * GPU_SECOND_UNITS).cast(pl.Int128)


def classify(charges: pl.DataFrame, config: AllocationConfig) -> pl.DataFrame:
    """Add ``rule_id``, ``direct_feature`` and ``pool`` to each charge (the rule that applies)."""
    pool_name = pl.lit(None, pl.String)
    for pool in reversed(config.pools):
        pool_name = pl.when(_charge_in_pool(pool)).then(pl.lit(pool.name)).otherwise(pool_name)
    tagged = _tag_feature(config.feature_tag_keys)
    unused = pl.col("CommitmentDiscountStatus").fill_null("") == "Unused"
    return (
        charges.with_columns(_tag=tagged, _pool=pool_name)
        .with_columns(
            rule_id=pl.when(unused)
            .then(pl.lit("unused_commitment"))
            .when(pl.col("_tag").struct.field("rule_id").is_not_null())
            .then(pl.col("_tag").struct.field("rule_id"))
            .when(pl.col("_pool").is_not_null())
            .then(pl.lit("pool:") + pl.col("_pool"))
            .otherwise(pl.lit("unmatched")),
            direct_feature=pl.col("_tag").struct.field("feature"),
        )
        .with_columns(pool=pl.when(pl.col("rule_id").str.starts_with("pool:")).then(pl.col("_pool")))
        .drop("_tag", "_pool")
    )


def _pool_weights(pool: Pool, charges: pl.DataFrame, usage: pl.DataFrame) -> pl.DataFrame:
    """Weights per (charge period, feature) for one pool, ``idle`` included when capacity is known."""
    periods = charges.select("ChargePeriodStart", "ChargePeriodEnd").unique()
    used = usage.filter(_usage_in_pool(pool)).select("hour", "feature", _driver_units(pool.driver).alias("weight"))
    by_feature = (
        periods.join_where(
            used,
            pl.col("hour") >= pl.col("ChargePeriodStart"),
            pl.col("hour") < pl.col("ChargePeriodEnd"),
        )
        .group_by("ChargePeriodStart", "ChargePeriodEnd", "feature")
        .agg(pl.col("weight").sum())
    )
    if pool.gpus_per_resource is None:
        return by_feature
    seconds = (pl.col("ChargePeriodEnd") - pl.col("ChargePeriodStart")).dt.total_seconds()
    provisioned = (
        charges.filter((pl.col("ChargeCategory") == "Usage") & pl.col("ResourceId").is_not_null())
        .group_by("ChargePeriodStart", "ChargePeriodEnd")
        .agg(pl.col("ResourceId").n_unique().alias("resources"))
        .with_columns(
            capacity=(pl.col("resources") * pool.gpus_per_resource * seconds).cast(pl.Int128) * GPU_SECOND_UNITS
        )
    )
    idle = (
        provisioned.join(
            by_feature.group_by("ChargePeriodStart", "ChargePeriodEnd").agg(pl.col("weight").sum().alias("busy")),
            on=["ChargePeriodStart", "ChargePeriodEnd"],
            how="left",
        )
        .select(
            "ChargePeriodStart",
            "ChargePeriodEnd",
            feature=pl.lit(IDLE),
            weight=pl.max_horizontal(pl.col("capacity") - pl.col("busy").fill_null(0), pl.lit(0, pl.Int128)),
        )
        .filter(pl.col("weight") > 0)
    )
    return pl.concat([by_feature, idle.cast(by_feature.schema)])


def allocate(charges: pl.DataFrame, usage: pl.DataFrame, config: AllocationConfig) -> pl.DataFrame:
    """Split every charge row; returns rows in ``ALLOCATION_SCHEMA`` (order-independent, exact)."""
    classified = classify(charges.select(pl.col(c).cast(FOCUS_COSTS_SCHEMA[c]) for c in CHARGE_COLUMNS), config)
    pools = {p.name: p for p in config.pools}

    simple = classified.filter(pl.col("pool").is_null()).select(
        pl.exclude("direct_feature", "pool"),
        feature=pl.when(pl.col("rule_id") == "unused_commitment")
        .then(pl.lit(IDLE))
        .when(pl.col("rule_id") == "unmatched")
        .then(pl.lit(UNALLOCATED))
        .otherwise(pl.col("direct_feature")),
        allocation_kind=pl.when(pl.col("rule_id") == "unused_commitment")
        .then(pl.lit("idle"))
        .when(pl.col("rule_id") == "unmatched")
        .then(pl.lit("unallocated"))
        .otherwise(pl.lit("direct")),
        driver=pl.lit(None, pl.String),
        weight=pl.lit(1, pl.Int128),
        driver_total=pl.lit(1, pl.Int128),
    )
    parts = [simple]
    for name, pool in pools.items():
        pooled = classified.filter(pl.col("pool") == name)
        if pooled.is_empty():
            continue
        weights = _pool_weights(pool, pooled, usage)
        joined = pooled.join(weights, on=["ChargePeriodStart", "ChargePeriodEnd"], how="left")
        joined = joined.with_columns(driver_total=pl.col("weight").sum().over("x_charge_id"))
        no_usage = joined.filter(pl.col("driver_total").fill_null(0) == 0).unique("x_charge_id")
        shared = joined.filter(pl.col("driver_total") > 0)
        parts.append(
            shared.select(
                pl.exclude("direct_feature", "pool", "weight", "driver_total", "feature"),
                feature=pl.col("feature"),
                allocation_kind=pl.when(pl.col("feature") == IDLE).then(pl.lit("idle")).otherwise(pl.lit("shared")),
                driver=pl.lit(pool.driver),
                weight=pl.col("weight"),
                driver_total=pl.col("driver_total"),
            )
        )
        parts.append(
            no_usage.select(
                pl.exclude("direct_feature", "pool", "weight", "driver_total", "feature"),
                feature=pl.lit(UNALLOCATED),
                allocation_kind=pl.lit("unallocated"),
                driver=pl.lit(pool.driver),
                weight=pl.lit(0, pl.Int128),
                driver_total=pl.lit(0, pl.Int128),
            ).with_columns(rule_id=pl.col("rule_id") + ":no_usage")
        )
    rows = pl.concat([p.cast(parts[0].schema) for p in parts])
    return _split(rows)


def _split(rows: pl.DataFrame) -> pl.DataFrame:
    """Split both cost columns by ``weight`` within each charge; zero-weight charges keep the whole."""
    rows = rows.with_columns(
        _w=pl.when(pl.col("driver_total") > 0).then(pl.col("weight")).otherwise(pl.lit(1, pl.Int128)),
        _eff=to_units(pl.col("EffectiveCost")),
        _bill=to_units(pl.col("BilledCost")),
    )
    lf = split_units(rows, group="x_charge_id", amount="_eff", weight="_w", order="feature", out="_eff_part")
    lf = split_units(lf, group="x_charge_id", amount="_bill", weight="_w", order="feature", out="_bill_part")
    unit_scale = pl.lit(GPU_SECOND_UNITS, pl.Int128)
    scale = pl.when(pl.col("driver") == "gpu_seconds").then(unit_scale).otherwise(pl.lit(1, pl.Int128))
    return (
        lf.select(
            "x_charge_id",
            "x_source",
            "x_billing_period",
            charge_period_start=pl.col("ChargePeriodStart"),
            charge_date=pl.col("ChargePeriodStart").dt.date(),
            provider_name=pl.col("ProviderName"),
            service_name=pl.col("ServiceName"),
            charge_category=pl.col("ChargeCategory"),
            feature="feature",
            allocation_kind="allocation_kind",
            rule_id="rule_id",
            driver="driver",
            driver_quantity=pl.when(pl.col("driver").is_not_null()).then(
                pl.col("weight").cast(pl.Decimal(38, 6)) / scale.cast(pl.Decimal(38, 6))
            ),
            driver_total=pl.when(pl.col("driver").is_not_null()).then(
                pl.col("driver_total").cast(pl.Decimal(38, 6)) / scale.cast(pl.Decimal(38, 6))
            ),
            effective_cost=from_units(pl.col("_eff_part")),
            billed_cost=from_units(pl.col("_bill_part")),
        )
        .sort("x_charge_id", "feature")
        .collect()
        .cast(ALLOCATION_SCHEMA)  # type: ignore[arg-type]
    )
