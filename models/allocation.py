"""Attribution engine: every charge row to features, idle or unallocated, exactly, with the rule used.

Rules, in order of precedence (the first that applies to a charge wins; ``rule_id`` records which):

1. ``unused_commitment``: the unused part of a commitment (CommitmentDiscountStatus = Unused) is
   idle capacity: kept as an ``idle`` line, or spread over the features by their cost that day.
2. ``tag:<key>``: the first tag/label of ``feature_tag_keys`` present on the charge names its feature.
3. ``direct:<name>``: the first ``direct`` rule whose charge match holds names the feature.
4. ``pool:<name>``: the first pool whose charge match holds splits the charge over the features that
   used the pool during the charge period, by the pool's driver. When the pool knows its capacity
   (billed resources × ``gpus_per_resource``, or GPU metrics in the usage) what nobody used is idle,
   kept as an ``idle`` line or spread over the pool's features in proportion to use.
5. ``overhead:<name>``: the first overhead rule whose match holds spreads the charge over features:
   in proportion to their attributed cost that day, evenly, or by fixed percentages.
6. ``unmatched``: anything else is an explicit ``unallocated`` line.

A pool without usage in a period gives ``pool:<name>:no_usage`` and an overhead rule without a
cost basis that day gives ``overhead:<name>:no_basis``: both ``unallocated``, never dropped.

Charges spanning several UTC days of their billing month (monthly tax, support fees) are first cut
into one slice per day in proportion to time, so each day carries its own share. Each slice's
EffectiveCost and BilledCost are split separately by ``models.money``'s cumulative rounding: the
parts of every charge add up to both amounts to the last stored decimal, whatever the order of the
input rows.

Every part is classified COGS, R&D or OpEx (``cost_class``): an environment listed in
``classification.environments`` fixes the class (staging → rnd); otherwise the feature's workload
decides (production inference → cogs, training → rnd, free tier → opex, ...). A rule's
``cost_class`` overrides both. ``docs/allocation.md`` is the reference for finance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl
import polars.selectors as cs

from models.config import (
    PRICE_PLACES,
    AllocationConfig,
    ChargeMatch,
    FeatureConfig,
    Pool,
    TokenPrice,
    UsageMatch,
)
from models.focus import FOCUS_COSTS_SCHEMA, MONEY, TIMESTAMP
from models.money import (
    PRODUCT_LIMIT,
    UNIT,
    check_amounts,
    cumulative_part,
    to_units,
    units_to_money,
    weight_divisor,
)
from models.usage import USAGE_KEYS, USAGE_MEASURES

IDLE = "idle"
UNALLOCATED = "unallocated"
KINDS = ("direct", "shared", "idle", "overhead", "unallocated")
DRIVER_NUMBER = pl.Decimal(38, 12)
PRICE_SCALE = 10**PRICE_PLACES
PER_MILLION = 1_000_000
DAY_US = 86_400_000_000
BATCH_ROWS = 500_000  # charge slices per batch (whole days): ~1.8 GiB at peak, two batches at once, ~5 parts each

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
    "BillingAccountId",
    "SubAccountId",
    "ResourceId",
    "ServiceName",
    "ServiceCategory",
    "SkuId",
    "ProviderName",
    "Tags",
)
"""The focus_costs columns the rules read (others are ignored)."""
REQUIRED = ("x_charge_id", "ChargePeriodStart", "ChargePeriodEnd", "EffectiveCost", "BilledCost")
OUTPUT_COLUMNS = ("x_source", "x_billing_period", "ProviderName", "ServiceName", "ChargeCategory")
# What a charge slice carries once its rule is known: the output's columns, amounts, and what pools read.
SLICE_COLUMNS = (
    "x_charge_id",
    *OUTPUT_COLUMNS,
    "slice_start",
    "slice_end",
    "charge_date",
    "eff_units",
    "bill_units",
    "rule_id",
    "_ftag",
    "_etag",
    "ResourceId",
    "rule_index",
)

# Few distinct values over millions of rows: categorical (strings to every reader, a 4-byte code in memory).
LABEL = pl.Categorical()
ALLOCATION_SCHEMA: dict[str, pl.DataType] = {
    "x_charge_id": pl.String(),
    "x_source": LABEL,
    "x_billing_period": LABEL,
    "charge_period_start": TIMESTAMP,
    "charge_date": pl.Date(),
    "provider_name": LABEL,
    "service_name": LABEL,
    "charge_category": LABEL,
    "feature": LABEL,
    "environment": LABEL,
    "cost_class": LABEL,  # cogs | rnd | opex
    "allocation_kind": LABEL,  # one of KINDS
    "rule_id": LABEL,
    "driver": LABEL,
    "driver_quantity": DRIVER_NUMBER,
    "driver_total": DRIVER_NUMBER,
    "share": DRIVER_NUMBER,
    "effective_cost": MONEY,
    "billed_cost": MONEY,
}


def allocate(
    charges: pl.DataFrame | pl.LazyFrame,
    usage: pl.DataFrame | pl.LazyFrame,
    config: AllocationConfig,
    features: Mapping[str, FeatureConfig] | None = None,
) -> pl.DataFrame:
    """Split every charge row; rows in ``ALLOCATION_SCHEMA``, sorted, identical for any input row order."""
    parts = list(allocate_batches(charges, usage, config, features))
    rows = pl.concat(parts) if parts else pl.DataFrame(schema=ALLOCATION_SCHEMA)
    return rows.sort("x_charge_id", "charge_date", "rule_id", "allocation_kind", "feature", "environment")


def allocate_batches(
    charges: pl.DataFrame | pl.LazyFrame,
    usage: pl.DataFrame | pl.LazyFrame,
    config: AllocationConfig,
    features: Mapping[str, FeatureConfig] | None = None,
    batch_rows: int = BATCH_ROWS,
    workers: int = 2,
) -> Iterator[pl.DataFrame]:
    """The allocation a few whole UTC days at a time (bounded memory): write each batch, then drop it.

    ``charges`` may be lazy (a Parquet scan, a query): consecutive days are collected together up to
    about ``batch_rows`` charge slices. Usage is aggregated per pool, hour, feature and environment
    once, up front. ``workers`` batches are computed at once, in threads, and yielded in order. The
    rows depend neither on how the days are batched nor on how many workers compute them.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # The usage is aggregated while the charges are counted.
        engine_ready = pool.submit(_Engine, config, features or {}, usage)
        single, ready, counts = _charge_days(_charge_columns(charges.lazy(), config))
        engine = engine_ready.result()

        def days(first: date, last: date) -> pl.DataFrame:
            lo = datetime.combine(first, datetime.min.time(), UTC)
            hi = datetime.combine(last, datetime.min.time(), UTC) + timedelta(days=1)
            read = single.filter(pl.col("ChargePeriodStart").is_between(lo, hi, closed="left")).collect()
            batch = pl.concat([whole_slices(read), ready.filter(pl.col("charge_date").is_between(first, last))])
            return engine.allocate(batch) if batch.height else batch.clear()

        # Batches are independent: `workers` of them run at once (polars releases the GIL, and many of its
        # steps use one core at a batch's size). They are yielded in order: the rows do not depend on it.
        # One more is queued, so a worker starts it as soon as it is free, not when the caller has written
        # the batch before.
        submitted = (pool.submit(days, first, last) for first, last in _day_ranges(counts, batch_rows))
        yield from (done for done in _in_order(submitted, workers + 1) if done.height)


def _in_order(futures: Iterator[Future[pl.DataFrame]], running: int) -> Iterator[pl.DataFrame]:
    """The results of ``futures`` in order, taking the next one only while fewer than ``running`` are pending."""
    pending: deque[Future[pl.DataFrame]] = deque()
    for future in futures:
        pending.append(future)
        if len(pending) >= running:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _charge_days(lf: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.DataFrame, pl.DataFrame]:
    """(charges within one day, slices of the others, charge slices per day) of the charges to allocate.

    Few charges are cut by day or start before their month: they are read once, up front, as slices.
    The rest is read batch by batch with a plain range on ChargePeriodStart (Parquet row groups skipped).
    The counts only size the batches: one pass over the billing months and start days gives them, with
    the few charges cut by day counted on their start day as well.
    """
    per_day = lf.group_by("x_billing_period", charge_date=pl.col("ChargePeriodStart").dt.date()).len().collect()
    cut, early, month_day = _calendar(per_day.get_column("x_billing_period").unique().to_list())
    ready = pl.concat(
        [daily_slices(lf.filter(cut).collect()), whole_slices(lf.filter(early & ~cut).collect(), month_day)]
    )
    counts = (
        pl.concat([per_day.select("charge_date", "len"), ready.group_by("charge_date").len()], how="vertical_relaxed")
        .group_by("charge_date")
        .agg(pl.col("len").sum())
        .sort("charge_date")
    )
    return lf.filter(~cut & ~early), ready, counts


def _calendar(months: list[str | None]) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(cut by day?, starts before its month?, its month's first day) given the billing months.

    Charges spanning several days of their billing month (``x_billing_period``, YYYY-MM) are cut by
    day. One reaching beyond its month (a one-time purchase of a year) stays whole: its billed cost
    belongs to the month that billed it; it is dated on its start, or on its month's first day when
    it started before. A billing period that is not YYYY-MM has no month: nothing is clipped.
    """
    starts, ends = {}, {}
    for month in months:
        with suppress(TypeError, ValueError):
            starts[month] = datetime.strptime(f"{month}-01", "%Y-%m-%d").replace(tzinfo=UTC)
            ends[month] = (starts[month].replace(day=28) + timedelta(days=4)).replace(day=1)
    start, end = pl.col("ChargePeriodStart"), pl.col("ChargePeriodEnd")
    # Integer microseconds: calendar arithmetic on every row of every batch costs more than the split.
    day = pl.lit(DAY_US, pl.Int64)
    multi_day = end.dt.epoch("us") > (start.dt.epoch("us") // day + 1) * day
    if not starts:
        return multi_day, pl.lit(False), start.dt.date()
    period = pl.col("x_billing_period")
    first = period.replace_strict(starts, default=None, return_dtype=TIMESTAMP)
    month_end = period.replace_strict(ends, default=None, return_dtype=TIMESTAMP)
    within = first.is_null() | ((start >= first) & (end <= month_end))
    # The literal bound first: Parquet row-group statistics answer it without reading the rows.
    early = (start < max(starts.values())) & (start < first).fill_null(False)
    return multi_day & within, early, first.dt.date()


def _day_ranges(counts: pl.DataFrame, budget: int) -> list[tuple[date, date]]:
    """Consecutive days grouped so each group holds about ``budget`` rows (a day is never cut)."""
    ranges: list[tuple[date, date]] = []
    first: date | None = None
    last: date | None = None
    rows = 0
    for day, n in counts.iter_rows():
        if first is not None and rows + n > budget:
            ranges.append((first, last))  # type: ignore[arg-type]
            first, rows = None, 0
        first = first or day
        last, rows = day, rows + n
    if first is not None:
        ranges.append((first, last))  # type: ignore[arg-type]
    return ranges


def _charge_columns(charges: pl.LazyFrame, config: AllocationConfig) -> pl.LazyFrame:
    """The columns the rules read, typed. Columns no rule reads, or a partial frame lacks, are null (not read)."""
    present = charges.collect_schema().names()
    missing = [c for c in REQUIRED if c not in present]
    if missing:
        raise ValueError(f"charges lack the columns {missing} the allocation needs")
    read = _read_columns(config)
    typed = {c: LABEL if c in OUTPUT_COLUMNS else FOCUS_COSTS_SCHEMA[c] for c in CHARGE_COLUMNS}
    return charges.select(
        (pl.col(c) if c in present and c in read else pl.lit(None)).cast(typed[c]).alias(c) for c in CHARGE_COLUMNS
    )


def _read_columns(config: AllocationConfig) -> set[str]:
    """The charge columns the configured rules and the output need."""
    read = {*REQUIRED, *OUTPUT_COLUMNS, "CommitmentDiscountStatus"}
    if _tag_keys(config):
        read.add("Tags")
    if any(p.gpus_per_resource for p in config.pools):
        read.add("ResourceId")
    for rule in (*config.direct, *config.pools, *config.overhead):
        m = rule.charges
        for used, column in (
            (m.source, "x_source"),
            (m.providers, "ProviderName"),
            (m.billing_account_ids, "BillingAccountId"),
            (m.sub_account_ids, "SubAccountId"),
            (m.resource_ids or m.resource_id_prefix, "ResourceId"),
            (m.service_names, "ServiceName"),
            (m.service_categories, "ServiceCategory"),
            (m.sku_ids, "SkuId"),
            (m.charge_categories, "ChargeCategory"),
        ):
            if used:
                read.add(column)
    return read


def _usage_columns(usage: pl.LazyFrame) -> pl.LazyFrame:
    """Usage with every key and measure column: keys a source lacks are null, measures 0."""
    present = usage.collect_schema().names()
    missing_keys = [pl.lit(None, t).alias(c) for c, t in USAGE_KEYS.items() if c not in present]
    missing_measures = [pl.lit(0).cast(t).alias(c) for c, t in USAGE_MEASURES.items() if c not in present]
    return usage.with_columns(*missing_keys, *missing_measures)


def usage_classes(
    usage: pl.DataFrame | pl.LazyFrame, config: AllocationConfig, features: Mapping[str, FeatureConfig] | None = None
) -> pl.DataFrame:
    """The cost class of each (feature, environment) of the usage, so unit costs divide like by like."""
    classes = _Classes(config, features or {})
    return (
        usage.lazy()
        .select("feature", "environment")
        .unique()
        .with_columns(cost_class=classes.of(pl.col("feature"), pl.col("environment")))
        .sort("feature", "environment", nulls_last=False)
        .collect()
    )


# --- slicing by day ---------------------------------------------------------------------------------------


def daily_slices(charges: pl.DataFrame) -> pl.DataFrame:
    """One row per charge and UTC day of its period, with the day's exact share of both amounts.

    Adds ``slice_start``, ``slice_end``, ``charge_date``, ``eff_units`` and ``bill_units`` (Int128).
    A charge within one day is its own single slice.
    """
    start, end = pl.col("ChargePeriodStart"), pl.col("ChargePeriodEnd")
    # A period that ends at or before its start (malformed) is one slice on its start day.
    last = pl.max_horizontal(end - timedelta(microseconds=1), start)
    frame = charges.with_columns(_day=pl.datetime_ranges(start.dt.truncate("1d"), last, "1d", closed="both")).explode(
        "_day"
    )
    slice_start = pl.max_horizontal(start, pl.col("_day"))
    slice_end = pl.min_horizontal(end, pl.col("_day") + timedelta(days=1))
    total = pl.max_horizontal((end - start).dt.total_microseconds(), pl.lit(0)).cast(pl.Int128)
    single = total <= (slice_end - slice_start).dt.total_microseconds()
    check_amounts(_max_abs(charges, "EffectiveCost", "BilledCost"))

    def part(column: str) -> pl.Expr:
        before = (slice_start - start).dt.total_microseconds().cast(pl.Int128)
        upto = (slice_end - start).dt.total_microseconds().cast(pl.Int128)
        whole = to_units(pl.col(column))
        return pl.when(single).then(whole).otherwise(cumulative_part(whole, before, upto, total))

    return frame.with_columns(
        slice_start=pl.when(single).then(start).otherwise(slice_start),
        slice_end=pl.when(single).then(end).otherwise(slice_end),
        charge_date=pl.col("_day").dt.date(),
        eff_units=part("EffectiveCost"),
        bill_units=part("BilledCost"),
    ).drop("_day")


def whole_slices(charges: pl.DataFrame, charge_day: pl.Expr | None = None) -> pl.DataFrame:
    """``daily_slices`` for charges known to lie within one UTC day: each charge is its own slice."""
    check_amounts(_max_abs(charges, "EffectiveCost", "BilledCost"))
    return charges.with_columns(
        slice_start=pl.col("ChargePeriodStart"),
        slice_end=pl.col("ChargePeriodEnd"),
        charge_date=pl.col("ChargePeriodStart").dt.date() if charge_day is None else charge_day,
        eff_units=to_units(pl.col("EffectiveCost")),
        bill_units=to_units(pl.col("BilledCost")),
    )


def _max_abs(frame: pl.DataFrame, *columns: str, units: bool = False) -> int:
    """The largest magnitude among ``columns``, in money units (exact Python int)."""
    if frame.is_empty():
        return 0
    values = frame.select((pl.col(c) if units else to_units(pl.col(c))).abs().max() for c in columns).row(0)
    return max(int(v or 0) for v in values)


# --- matching charges and usage ------------------------------------------------------------------------


def _tag_keys(config: AllocationConfig) -> list[str]:
    """Every tag key a rule reads, in a stable order."""
    keys = [*config.feature_tag_keys, *config.environment_tag_keys]
    for rule in (*config.direct, *config.pools, *config.overhead):
        keys.extend(rule.charges.tags)
    return list(dict.fromkeys(keys))


def _tag_column(key: str) -> str:
    return f"_tag:{key}"


def _tag_only(m: ChargeMatch) -> bool:
    """Whether ``m`` reads nothing but tags (its answer is the same for every row with the same Tags)."""
    return bool(m.tags) and m.model_copy(update={"tags": {}}).is_empty()


def _tag_runs(config: AllocationConfig) -> list[list[int]]:
    """Runs of consecutive rule indices (``RuleOrder.ids``) decided by the Tags value alone.

    The feature tag rules and rules matching only tags: within a run, the first that holds is found
    once per distinct Tags value, not row by row.
    """
    order = RuleOrder.of(config)
    decided = list(range(1, order.first_direct))
    others = [*config.direct, *config.pools, *config.overhead]
    decided += [order.first_direct + i for i, r in enumerate(others) if _tag_only(r.charges)]
    runs: list[list[int]] = []
    for i in decided:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _run_column(run: list[int]) -> str:
    return f"_run:{run[0]}"


def _first_tag(keys: list[str]) -> tuple[pl.Expr, pl.Expr]:
    """(value, index in ``keys``) of the first key present, both null when none is."""
    value, index = pl.lit(None, pl.String), pl.lit(None, pl.Int32)
    for i, key in reversed(list(enumerate(keys))):
        found = pl.col(_tag_column(key)).is_not_null()
        value = pl.when(found).then(pl.col(_tag_column(key))).otherwise(value)
        index = pl.when(found).then(pl.lit(i, pl.Int32)).otherwise(index)
    return value, index


def charge_matches(m: ChargeMatch) -> pl.Expr:
    """Whether a charge row satisfies every condition of ``m`` (null columns never match).

    Tag conditions read the columns ``_Classifier.with_tags`` adds.
    """
    cond = pl.lit(True)
    if m.source:
        cond &= pl.col("x_source") == m.source
    for values, column in (
        (m.providers, "ProviderName"),
        (m.billing_account_ids, "BillingAccountId"),
        (m.sub_account_ids, "SubAccountId"),
        (m.resource_ids, "ResourceId"),
        (m.service_names, "ServiceName"),
        (m.service_categories, "ServiceCategory"),
        (m.sku_ids, "SkuId"),
        (m.charge_categories, "ChargeCategory"),
    ):
        if values:
            cond &= pl.col(column).is_in(values)
    for key, value in m.tags.items():
        tag = pl.col(_tag_column(key))
        cond &= tag.is_not_null() if value == "*" else tag == value
    if m.resource_id_prefix:
        # Compared only where the other conditions hold (string kernels skip nulls): a prefix on every
        # row of a batch, once per rule, costs more than the rest of the classification.
        ids = pl.col("ResourceId")
        if not cond.meta.eq(pl.lit(True)):
            ids = pl.when(cond).then(ids)
        cond &= ids.str.starts_with(m.resource_id_prefix)
    return cond.fill_null(False)


def usage_matches(m: UsageMatch) -> pl.Expr:
    cond = pl.lit(True)
    for values, column in (
        (m.sources, "source"),
        (m.deployments, "deployment"),
        (m.providers, "provider"),
        (m.models, "model"),
        (m.environments, "environment"),
        (m.features, "feature"),
    ):
        if values:
            cond &= pl.col(column).is_in(values)
    return cond.fill_null(False)


@dataclass(frozen=True)
class RuleOrder:
    """Every rule id in precedence order; ``rule_index`` in classified charges points into ``ids``."""

    ids: list[str]
    first_direct: int
    first_pool: int
    first_overhead: int

    @classmethod
    def of(cls, config: AllocationConfig) -> RuleOrder:
        tags = [f"tag:{k}" for k in config.feature_tag_keys]
        first_direct = 1 + len(tags)
        first_pool = first_direct + len(config.direct)
        first_overhead = first_pool + len(config.pools)
        others = [r.rule_id for r in (*config.direct, *config.pools, *config.overhead)]
        return cls(["unused_commitment", *tags, *others, "unmatched"], first_direct, first_pool, first_overhead)

    @property
    def unmatched(self) -> int:
        return len(self.ids) - 1


class _Classifier:
    """The rule that takes each charge, with its expressions built once (they depend on the rules only).

    An engine classifies a month a day at a time; building the expressions of every rule for each batch
    cost a tenth of a batch's time, with Python's lock held (the other batch's thread waits).
    """

    def __init__(self, config: AllocationConfig) -> None:
        keys = _tag_keys(config)
        order = RuleOrder.of(config)
        others = [*config.direct, *config.pools, *config.overhead]
        self.tagged = bool(keys)
        self.runs = _tag_runs(config) if self.tagged else []
        # What with_tags derives from each distinct Tags value.
        self.tag_values = [pl.col("Tags").str.json_path_match(f"$['{k}']").alias(_tag_column(k)) for k in keys]
        self.non_empty = [pl.when(pl.col(_tag_column(k)) != "").then(pl.col(_tag_column(k))) for k in keys]
        tag_value, tag_index = _first_tag(config.feature_tag_keys)
        env_tag, _ = _first_tag(config.environment_tag_keys)
        rules = {order.first_direct + i: r for i, r in enumerate(others)}
        self.derived = [tag_value.alias("_ftag"), env_tag.alias("_etag")]
        for run in self.runs:
            found = pl.lit(None, pl.Int32)
            for i in reversed(run):
                tag_rule = i < order.first_direct
                holds = (tag_index == i - 1).fill_null(False) if tag_rule else charge_matches(rules[i].charges)
                found = pl.when(holds).then(pl.lit(i, pl.Int32)).otherwise(found)
            self.derived.append(found.alias(_run_column(run)))
        mixed = [m.tags for m in (r.charges for r in others) if m.tags and not _tag_only(m)]
        self.read = [_tag_column(k) for k in keys if any(k in tags for tags in mixed)]
        # The rule index of each charge: the first rule that holds, in precedence order.
        first_runs = {run[0]: run for run in self.runs}
        decided = {i for run in self.runs for i in run}
        unused = (pl.col("CommitmentDiscountStatus") == "Unused").fill_null(False)
        index = pl.when(unused).then(pl.lit(0, pl.Int32))
        for i in range(1, order.unmatched):
            if i in first_runs:
                found = pl.col(_run_column(first_runs[i]))
                index = index.when(found.is_not_null()).then(found)
            elif i not in decided:
                index = index.when(charge_matches(others[i - order.first_direct].charges)).then(pl.lit(i, pl.Int32))
        self.index = index.otherwise(pl.lit(order.unmatched, pl.Int32))
        first_other = order.first_direct
        direct = {first_other + i: r for i, r in enumerate(config.direct)}
        # A gather from the (small) categorical of rule ids, not a string per row cast to categorical.
        self.rule_id = pl.lit(pl.Series(order.ids, dtype=LABEL)).gather(pl.col("rule_index"))
        rule = pl.col("rule_index")
        is_tag = (rule >= 1) & (rule < first_other)
        named = is_tag | rule.is_in(list(direct))
        by_direct = {i: r.feature for i, r in direct.items()}
        env_direct = {i: r.environment for i, r in direct.items() if r.environment}
        # What a charge taken by a tag or a direct rule is labelled (read by the engine once per distinct
        # rule and tag values, not per charge).
        self.labels = {
            "feature": pl.when(is_tag).then(pl.col("_ftag")).otherwise(_lookup(rule, by_direct, None)),
            "environment": pl.when(named).then(pl.coalesce(_lookup(rule, env_direct, None), pl.col("_etag"))),
        }

    def with_tags(self, charges: pl.LazyFrame) -> pl.LazyFrame:
        """Add what the rules read from Tags, each distinct Tags value parsed and checked once.

        ``_ftag``/``_etag``: the first feature/environment tag value present; one ``_run:<i>`` per run of
        ``_tag_runs`` (the first of its rules that holds, null when none); and ``_tag:<key>`` (value, null
        when absent or empty) for the keys that rules mixing tags with other conditions read row by row.
        """
        if not self.tagged:
            return charges.with_columns(_ftag=pl.lit(None, pl.String), _etag=pl.lit(None, pl.String))
        distinct = charges.select(pl.col("Tags").drop_nulls().unique())
        values = distinct.with_columns(self.tag_values).with_columns(self.non_empty)
        values = values.select("Tags", *self.derived, *self.read)
        return charges.join(values, on="Tags", how="left", maintain_order="left")

    def __call__(self, charges: pl.DataFrame) -> pl.DataFrame:
        """Add ``rule_index``/``rule_id`` (the rule that takes each charge) and the feature and environment
        tag values ``_ftag``/``_etag`` (null without tags). One query: a call into polars per step costs
        more than a step on a small batch."""
        return (
            self.with_tags(charges.lazy())
            .with_columns(rule_index=self.index)
            .with_columns(rule_id=self.rule_id)
            .drop(cs.starts_with("_tag:", "_run:"))
            .collect(engine="in-memory")
        )


# --- classification COGS / R&D / OpEx ------------------------------------------------------------------


class _Classes:
    """Cost class of a (feature, environment): environment first, then the feature's workload."""

    def __init__(self, config: AllocationConfig, features: Mapping[str, FeatureConfig]) -> None:
        c = config.classification
        self.environments = {k.lower(): v for k, v in c.environments.items()}
        self.by_feature = {name: f.cost_class or c.workloads[f.workload] for name, f in features.items()}
        self.default = c.workloads["production_inference"]
        self.idle, self.unallocated = c.idle, c.unallocated

    def of(self, feature: pl.Expr, environment: pl.Expr) -> pl.Expr:
        by_env = _lookup(environment.str.to_lowercase(), self.environments, None)
        return pl.coalesce(by_env, _lookup(feature, self.by_feature, self.default))


def _lookup(expr: pl.Expr, mapping: Mapping[object, str | None], default: str | None) -> pl.Expr:
    """``mapping[value]``, else ``default`` (also for null values), as a String expression."""
    fallback = pl.lit(default, pl.String)
    if not mapping:
        return fallback
    return expr.replace_strict(dict(mapping), default=fallback, return_dtype=pl.String).fill_null(fallback)


# --- drivers -----------------------------------------------------------------------------------------------


def _price_for(model: str, prices: Mapping[str, TokenPrice], default: TokenPrice) -> TokenPrice:
    """The price of the longest configured model name that ``model`` starts with (exact names included)."""
    names = [n for n in prices if model.startswith(n)]
    return prices[max(names, key=len)] if names else default


def _micro(p: TokenPrice) -> tuple[int, int, int, int]:
    """(input, cache read, cache write, output) in micro-USD per 1M tokens: exact integers (6 decimals at most)."""
    read = p.input if p.cached_input is None else p.cached_input
    write = p.input if p.cache_write_input is None else p.cache_write_input
    prices = (p.input, read, write, p.output)
    return tuple(int(price * PRICE_SCALE) for price in prices)  # type: ignore[return-value]


def _model_prices(usage: pl.DataFrame, config: AllocationConfig) -> list[pl.Expr]:
    """Per-row (input, cache read, cache write, output) prices by the usage row's model."""
    prices = config.token_prices
    default = _micro(prices.default)
    table = {m: _micro(_price_for(m, prices.models, prices.default)) for m in usage["model"].drop_nulls().unique()}
    model = pl.col("model")

    def column(i: int) -> pl.Expr:
        if not table:
            return pl.lit(default[i], pl.Int128)
        mapping = {k: v[i] for k, v in table.items()}
        return model.replace_strict(mapping, default=default[i], return_dtype=pl.Int128).fill_null(default[i])

    return [column(i) for i in range(4)]


def driver_weight(driver: str, usage: pl.DataFrame, config: AllocationConfig) -> pl.Expr:
    """Integer weight of each usage row for ``driver`` (see ``driver_scale`` for its unit)."""
    if driver == "tokens":
        return (pl.col("input_tokens") + pl.col("output_tokens")).cast(pl.Int128)
    if driver == "priced_tokens":
        p_in, p_read, p_write, p_out = _model_prices(usage, config)
        # input_tokens include the cache reads and writes (inference_usage's definition); they are priced apart.
        tokens = pl.col("input_tokens").cast(pl.Int128)
        read = pl.min_horizontal(pl.col("cached_input_tokens").fill_null(0).cast(pl.Int128), tokens)
        write = pl.min_horizontal(pl.col("cache_creation_input_tokens").fill_null(0).cast(pl.Int128), tokens - read)
        plain = tokens - read - write
        return plain * p_in + read * p_read + write * p_write + pl.col("output_tokens").cast(pl.Int128) * p_out
    dtype = USAGE_MEASURES[driver]
    if isinstance(dtype, pl.Decimal):
        return (pl.col(driver).cast(dtype) * 10 ** (dtype.scale or 0)).cast(pl.Int128)
    return pl.col(driver).cast(pl.Int128)


def driver_scale(driver: str) -> int:
    """Divide a weight by this to read it in the driver's unit (priced tokens: USD at the configured prices)."""
    if driver == "priced_tokens":
        return PRICE_SCALE * PER_MILLION
    dtype = USAGE_MEASURES.get(driver)
    return 10 ** (dtype.scale or 0) if isinstance(dtype, pl.Decimal) else 1


# --- the engine ----------------------------------------------------------------------------------------

PERIOD = ["rule_id", "slice_start", "slice_end"]
ONE = Decimal(1)


class _Engine:
    """The configured rules, with the usage of every pool aggregated per hour, feature and environment."""

    def __init__(
        self, config: AllocationConfig, features: Mapping[str, FeatureConfig], usage: pl.DataFrame | pl.LazyFrame
    ) -> None:
        self.config = config
        self.features = features
        self.classes = _Classes(config, features)
        self.classify = _Classifier(config)
        # Built once: an expression holding its lookup tables costs more to build than to run on a day.
        self.feature_class = self.classes.of(pl.col("feature"), pl.col("environment"))
        self.overhead = {o.rule_id: o for o in config.overhead}
        self.order = RuleOrder.of(config)
        self.pools = pl.DataFrame(
            {
                "rule_id": [p.rule_id for p in config.pools],
                "_gpus": [p.gpus_per_resource if p.capacity == "billing" else None for p in config.pools],
                "_spread": [p.idle == "spread" for p in config.pools],
                "_pool_class": [p.cost_class for p in config.pools],
                "_unit": [ONE / driver_scale(p.driver) for p in config.pools],
                "driver": [p.driver for p in config.pools],
            },
            schema={
                "rule_id": LABEL,
                "_gpus": pl.Int128,
                "_spread": pl.Boolean,
                "_pool_class": pl.String,
                "_unit": DRIVER_NUMBER,
                "driver": pl.String,
            },
        )
        used = _usage_columns(usage.lazy()).with_columns(pl.col("hour").cast(TIMESTAMP)).collect()
        # Every pool's aggregation in one collect_all: one call into polars, not one per pool.
        hourly = pl.collect_all([self._hourly_use(p, used) for p in config.pools])
        # Sorted by hour: a batch takes its hours as a slice (no pass over the month).
        self.hourly = (pl.concat(hourly) if hourly else pl.DataFrame(schema=HOURLY_SCHEMA)).sort("hour")
        measured = [p for p in config.pools if p.capacity == "telemetry"]
        provisioned = pl.collect_all([self._provisioned(p, used) for p in measured])
        self.provisioned = pl.concat(provisioned) if provisioned else pl.DataFrame(schema=PROVISIONED_SCHEMA)

    def _hourly_use(self, pool: Pool, usage: pl.DataFrame) -> pl.LazyFrame:
        rows = usage.lazy().filter(usage_matches(pool.usage))
        weight = driver_weight(pool.driver, usage, self.config)
        return (
            rows.group_by("hour", "feature", "environment")
            .agg(weight.sum().alias("weight"))
            .filter(pl.col("weight") > 0)
            .select(
                rule_id=pl.lit(pool.rule_id), hour="hour", feature="feature", environment="environment", weight="weight"
            )
            .cast(HOURLY_SCHEMA)  # type: ignore[arg-type]
        )

    def _provisioned(self, pool: Pool, usage: pl.DataFrame) -> pl.LazyFrame:
        """GPU-microseconds provisioned per hour for a pool measured by GPU metrics (gpu_seconds_provisioned)."""
        return (
            usage.lazy()
            .filter(usage_matches(pool.usage))
            .group_by("hour")
            .agg(driver_weight("gpu_seconds_provisioned", usage, self.config).sum().alias("provisioned"))
            .select(rule_id=pl.lit(pool.rule_id), hour="hour", provisioned="provisioned")
            .cast(PROVISIONED_SCHEMA)  # type: ignore[arg-type]
        )

    def allocate(self, batch: pl.DataFrame) -> pl.DataFrame:
        """A batch of whole days: charges taken whole or pooled first, then what spreads by their cost."""
        classified = self.classify(batch).select(SLICE_COLUMNS)
        index, order = pl.col("rule_index"), self.order
        deferred = index.is_between(order.first_overhead, order.unmatched, closed="left")
        if self.config.unused_commitment == "spread":
            deferred |= index == 0
        pooled = index.is_between(order.first_pool, order.first_overhead, closed="left")
        # One pass over the batch: 0 taken whole, 1 pooled, 2 deferred to overhead (each in batch order).
        phase = pl.when(pooled).then(pl.lit(1, pl.Int8)).when(deferred).then(pl.lit(2, pl.Int8)).otherwise(0)
        split = classified.with_columns(_phase=phase).partition_by("_phase", as_dict=True, include_key=False)
        empty = classified.clear()
        del classified  # each frame is let go once used: a batch's peak memory is what it holds at once
        whole = self._whole(split.pop((0,), empty))
        shared, pool_basis = self._pooled(split.pop((1,), empty))
        parts = [_finish(whole), *shared]
        later = split.pop((2,), empty)
        if later.height:
            parts.extend(self._overhead(later, pl.concat([_basis(whole), pool_basis])))
        return pl.concat(parts)

    def _whole(self, charges: pl.DataFrame) -> pl.DataFrame:
        """Charges taken whole: tags, direct rules, unused commitment (kept), unmatched.

        The labels are worked out once per distinct rule and tag values, and joined back as categoricals:
        string expressions on every charge cost more than the rest of its way through.
        """
        index = pl.col("rule_index")
        unused, unmatched = index == 0, index == self.order.unmatched
        first = self.order.first_direct
        overrides = {first + i: r.cost_class for i, r in enumerate(self.config.direct) if r.cost_class}
        keys = ["rule_index", "_ftag", "_etag"]
        labels = (
            charges.lazy()
            .select(keys)
            .unique()
            .with_columns(**self.classify.labels)
            .with_columns(
                feature=pl.when(unused)
                .then(pl.lit(IDLE))
                .when(unmatched)
                .then(pl.lit(UNALLOCATED))
                .otherwise("feature"),
                allocation_kind=pl.when(unused)
                .then(pl.lit("idle"))
                .when(unmatched)
                .then(pl.lit("unallocated"))
                .otherwise(pl.lit("direct")),
                cost_class=pl.when(unused)
                .then(pl.lit(self.classes.idle))
                .when(unmatched)
                .then(pl.lit(self.classes.unallocated))
                .otherwise(pl.coalesce(_lookup(index, overrides, None), self.feature_class)),
            )
            .with_columns(pl.col("feature", "environment", "allocation_kind", "cost_class").cast(LABEL))
            .collect(engine="in-memory")
        )
        joined = charges.join(labels, on=keys, how="left", maintain_order="left", nulls_equal=True)
        return joined.drop("_ftag", "_etag").with_columns(**_taken_whole())

    def _unallocated(self, charges: pl.DataFrame, suffix: str) -> pl.DataFrame:
        """Charges a pool or overhead rule took but could not split: whole, ``unallocated``, rule suffixed."""
        return charges.with_columns(
            feature=pl.lit(UNALLOCATED),
            environment=pl.lit(None, pl.String),
            allocation_kind=pl.lit("unallocated"),
            cost_class=pl.lit(self.classes.unallocated),
            rule_id=pl.concat_str(pl.col("rule_id").cast(pl.String), pl.lit(suffix)),
            **_taken_whole(),
        )

    # Shared pools ------------------------------------------------------------------------------------

    def _pooled(self, charges: pl.DataFrame) -> tuple[list[pl.DataFrame], pl.DataFrame]:
        """Pool charges split by their pools' weights (finished rows), and the cost they give each feature."""
        if charges.is_empty():
            return [], pl.DataFrame(schema=BASIS_SCHEMA)
        charges = charges.drop("_ftag", "_etag")
        # One integer per (pool, period): what groups or joins the charges by period uses it, not three
        # columns hashed as rows, each time.
        periods = charges.select(PERIOD).unique(maintain_order=True).with_row_index("_period")
        charges = charges.join(periods, on=PERIOD, how="left", maintain_order="left")
        weights = self._pool_weights(charges, periods)
        if weights.is_empty():
            return [_finish(self._unallocated(charges, ":no_usage"))], pl.DataFrame(schema=BASIS_SCHEMA)
        return self._split_by(charges, weights, ["_period"], ":no_usage"), _weights_basis(charges, weights)

    def _split_by(
        self, charges: pl.DataFrame, weights: pl.DataFrame, keys: list[str], lacking: str
    ) -> list[pl.DataFrame]:
        """Finished rows: charges split by the weights of their ``keys``; those without weights unallocated.

        The big join (one row per part) is on one integer key and carries only the columns the output
        reads: materializing tens of millions of part rows is most of the allocation's time.
        """
        weights = _bounded(weights, charges, keys)
        ids = weights.select(keys).unique(maintain_order=True).with_row_index("_key")
        carried = [c for c in dict.fromkeys([*PART_COLUMNS, *SPLIT_COLUMNS]) if c not in keys]
        weights = weights.join(ids, on=keys, how="inner", maintain_order="left").select("_key", *carried)
        payload = charges.select(*dict.fromkeys([*keys, "rule_id", *CHARGE_PAYLOAD])).join(
            ids, on=keys, how="left", maintain_order="left"
        )
        # A part's own columns come from the weights (the rule too, when it is not a key); charges without
        # weights keep their rule (they are unallocated under it).
        dropped = [c for c in keys if c not in CHARGE_PAYLOAD and c not in PART_COLUMNS]
        dropped += ["rule_id"] if "rule_id" in carried else []
        without = payload.filter(pl.col("_key").is_null())
        found = payload.filter(pl.col("_key").is_not_null()).drop(dropped).with_columns(_amounts=AMOUNTS)
        del payload
        groups = found.partition_by("_amounts", as_dict=True)
        del found
        parts = []
        for key in sorted(groups):
            amounts = str(key[0])
            group = groups.pop(key).drop("_amounts", *UNREAD.get(amounts, []))
            joined = group.join(weights, on="_key", how="inner", maintain_order="left_right")
            del group
            parts.append(_finish(_split(joined, amounts), same_amounts=amounts == "same"))
            del joined
        if without.height:
            parts.append(_finish(self._unallocated(without, lacking)))
        return parts

    def _pool_weights(self, charges: pl.DataFrame, periods: pl.DataFrame) -> pl.DataFrame:
        """Per pool and period of the batch's pool charges: one row per part, with its running weights.

        Each step is a lazy query, collected once (polars does not share a subplan read twice): on a day's
        few hundred periods, a call into polars per operation costs more than the operation.
        """
        last = pl.col("slice_end") - timedelta(microseconds=1)
        hours = (
            periods.lazy()
            .with_columns(hour=pl.datetime_ranges(pl.col("slice_start").dt.truncate("1h"), last, "1h", closed="both"))
            .explode("hour")
        )
        # The month's usage is cut to the batch's hours first: the join then hashes a day of it, not all.
        lo, hi = periods.select(pl.col("slice_start").min().dt.truncate("1h"), last.max()).row(0)
        hour = self.hourly.get_column("hour")
        first, end = hour.search_sorted(lo, side="left"), hour.search_sorted(hi, side="right")
        hourly = self.hourly.slice(first, max(end - first, 0))
        used = (
            hours.join(hourly.lazy(), on=["rule_id", "hour"], how="inner")
            .group_by("_period", "feature", "environment")
            .agg(pl.col("weight").sum())
            .join(periods.lazy(), on="_period", how="inner")
            .join(self.pools.lazy(), on="rule_id", how="left")
            .with_columns(cost_class=pl.coalesce("_pool_class", self.feature_class))
            .collect(engine="in-memory")
        )
        idle = self._idle(charges.lazy(), periods.lazy(), hours, used.lazy()).collect(engine="in-memory")
        return _pool_parts(used.lazy(), idle.lazy(), self.pools.lazy(), self.classes.idle).collect(engine="in-memory")

    def _idle(
        self, charges: pl.LazyFrame, periods: pl.LazyFrame, hours: pl.LazyFrame, used: pl.LazyFrame
    ) -> pl.LazyFrame:
        """Provisioned minus used GPU-microseconds per pool period, for pools that measure their capacity.

        Billing: distinct billed resources (Usage lines) × GPUs per resource × the period's length.
        Telemetry: the pool's usage rows' gpu_seconds_provisioned over the period's hours.
        """
        gpu_pools = self.pools.lazy().filter(pl.col("_gpus").is_not_null()).select("rule_id", "_gpus")
        micros = (pl.col("slice_end") - pl.col("slice_start")).dt.total_microseconds().cast(pl.Int128)
        billed = (
            charges.select("_period", "rule_id", "ChargeCategory", "ResourceId")
            .filter((pl.col("ChargeCategory") == "Usage") & pl.col("ResourceId").is_not_null())
            .join(gpu_pools, on="rule_id", how="inner")
            .group_by("_period")
            .agg(pl.col("ResourceId").n_unique().cast(pl.Int128).alias("resources"), pl.col("_gpus").first())
            .join(periods, on="_period", how="inner")
            .select("_period", capacity=pl.col("resources") * pl.col("_gpus") * micros)
        )
        measured = (
            hours.join(self.provisioned.lazy(), on=["rule_id", "hour"], how="inner")
            .group_by("_period")
            .agg(pl.col("provisioned").sum().alias("capacity"))
        )
        capacity = pl.concat([billed, measured])
        busy = used.group_by("_period").agg(pl.col("weight").sum().alias("busy"))
        idle = pl.max_horizontal(pl.col("capacity") - pl.col("busy").fill_null(0), pl.lit(0, pl.Int128))
        return (
            capacity.join(busy, on="_period", how="left")
            .select("_period", idle=idle)
            .filter(pl.col("idle") > 0)
            .join(periods, on="_period", how="inner")
        )

    # Overhead and spread unused commitments ------------------------------------------------------------

    def _overhead(self, charges: pl.DataFrame, basis: pl.DataFrame) -> list[pl.DataFrame]:
        """Each overhead rule's charges split by its weights for the charge's day (or unallocated)."""
        parts = []
        charges = charges.drop("_ftag", "_etag")
        rules = sorted(charges.get_column("rule_id").unique().cast(pl.String).to_list())
        # Rules weighted per day by cost get their weights in one pass and are split together, in one
        # join: per rule, the fixed cost of the many small steps outweighs the work at a day's worth.
        proportional = [r for r in rules if self._proportional_rule(r)]
        weights = _proportional(basis, [self._proportional_spec(r) for r in proportional]) if proportional else None
        with_basis = [] if weights is None else weights.get_column("rule_id").unique().cast(pl.String).to_list()
        rule = pl.col("rule_id")
        without = [r for r in proportional if r not in with_basis]
        if without:
            parts.append(_finish(self._unallocated(charges.filter(rule.is_in(without)), ":no_basis")))
        for rule_id in (r for r in rules if r not in proportional):
            mine = charges.filter(rule == rule_id)
            fixed, keys = self._overhead_weights(rule_id)
            if fixed.is_empty():
                parts.append(_finish(self._unallocated(mine, ":no_basis")))
                continue
            labelled = fixed.with_columns(rule_id=pl.lit(rule_id).cast(LABEL))
            parts.extend(self._split_by(mine, labelled, keys, ":no_basis"))
        if with_basis:
            daily = ["rule_id", "charge_date"]
            parts.extend(self._split_by(charges.filter(rule.is_in(with_basis)), weights, daily, ":no_basis"))
        return parts

    def _proportional_rule(self, rule_id: str) -> bool:
        return rule_id == "unused_commitment" or self.overhead[rule_id].split == "proportional"

    def _proportional_spec(self, rule_id: str) -> _Proportional:
        if rule_id == "unused_commitment":
            return _Proportional(rule_id, [], [], None, "idle")
        rule = self.overhead[rule_id]
        return _Proportional(rule_id, rule.features, rule.basis, rule.cost_class, "overhead")

    def _overhead_weights(self, rule_id: str) -> tuple[pl.DataFrame, list[str]]:
        """The weights of a rule splitting evenly or by percentages, and the columns that join them to its charges."""
        rule = self.overhead[rule_id]
        if rule.split == "even":
            weights = dict.fromkeys(rule.features or sorted(self.features), 1)
            driver, scale = "even", 1
        else:
            weights = {name: int(p * PRICE_SCALE) for name, p in rule.percentages.items()}
            driver, scale = "percent", PRICE_SCALE
        frame = pl.DataFrame(
            {"feature": list(weights), "weight": list(weights.values())},
            schema={"feature": pl.String, "weight": pl.Int128},
        ).with_columns(environment=pl.lit(None, pl.String))
        frame = frame.with_columns(
            cost_class=pl.lit(rule.cost_class) if rule.cost_class else self.feature_class,
            allocation_kind=pl.lit("overhead"),
            driver=pl.lit(driver),
            _use="weight",
            _shown_total=pl.col("weight").sum(),
            _unit=pl.lit(ONE / scale, DRIVER_NUMBER),
        )
        return _running(frame.lazy(), group=[]).collect(engine="in-memory"), ["rule_id"]


HOURLY_SCHEMA = {
    "rule_id": LABEL,
    "hour": TIMESTAMP,
    "feature": pl.String,
    "environment": pl.String,
    "weight": pl.Int128,
}
LABELS = ("rule_id", "feature", "environment", "cost_class", "allocation_kind", "driver")
# What a split carries through its join: from each part, and from each charge.
PART_COLUMNS = (*LABELS, "driver_quantity", "driver_total", "share")
SPLIT_COLUMNS = ("_first", "_upto2", "_total")
CHARGE_PAYLOAD = ("x_charge_id", *OUTPUT_COLUMNS, "slice_start", "charge_date", "eff_units", "bill_units")
PROVISIONED_SCHEMA = {"rule_id": LABEL, "hour": TIMESTAMP, "provisioned": pl.Int128}
BASIS_SCHEMA = {
    "charge_date": pl.Date,
    "rule_id": pl.String,
    "feature": pl.String,
    "environment": pl.String,
    "cost_class": pl.String,
    "weight": pl.Int128,
}


def _taken_whole() -> dict[str, pl.Expr]:
    """Columns of a part that is its whole charge slice."""
    return {
        "driver": pl.lit(None, pl.String),
        "share": pl.lit(ONE, DRIVER_NUMBER),
        "eff_part": pl.col("eff_units"),
        "bill_part": pl.col("bill_units"),
    }


def _pool_parts(used: pl.LazyFrame, idle: pl.LazyFrame, pools: pl.LazyFrame, idle_class: str) -> pl.LazyFrame:
    """Running weights of the pools' parts per period: features (shared), then idle, kept or spread.

    Spread idle is one level: feature f's shared part weighs ``w_f · busy`` and its idle part
    ``w_f · idle``, out of ``busy · (busy + idle)``: the busy share split by use plus the idle share
    split by the same use. A period nobody used keeps its idle whole (there is no use to spread it by).
    """
    busy_by_period = used.group_by("_period").agg(pl.col("weight").sum().alias("_busy"))
    used = used.join(idle.select("_period", "idle"), on="_period", how="left").join(
        busy_by_period, on="_period", how="left"
    )
    used = used.with_columns(pl.col("idle").fill_null(0))
    capacity = pl.col("_busy") + pl.col("idle")
    keep = used.filter(~pl.col("_spread")).with_columns(
        allocation_kind=pl.lit("shared"), _use="weight", _shown_total=capacity
    )
    spread = used.filter(pl.col("_spread"))
    spread_shared = spread.with_columns(
        allocation_kind=pl.lit("shared"),
        _use="weight",
        weight=pl.col("weight") * pl.col("_busy"),
        _shown_total=capacity,
    )
    spread_idle = spread.filter(pl.col("idle") > 0).with_columns(
        allocation_kind=pl.lit("idle"), _use="weight", weight=pl.col("weight") * pl.col("idle"), _shown_total="_busy"
    )
    kept_idle = (
        idle.join(pools, on="rule_id", how="left")
        .join(busy_by_period, on="_period", how="left")
        .filter(~pl.col("_spread") | pl.col("_busy").is_null())
        .with_columns(
            feature=pl.lit(IDLE),
            environment=pl.lit(None, pl.String),
            allocation_kind=pl.lit("idle"),
            cost_class=pl.coalesce("_pool_class", pl.lit(idle_class)),
            weight="idle",
            _use="idle",
            _shown_total=pl.col("_busy").fill_null(0) + pl.col("idle"),
        )
    )
    columns = [
        "_period",
        *PERIOD,
        "feature",
        "environment",
        "cost_class",
        "allocation_kind",
        "driver",
        "weight",
        "_use",
        "_shown_total",
        "_unit",
    ]
    frame = pl.concat(
        [f.select(columns) for f in (keep, spread_shared, spread_idle, kept_idle)], how="vertical_relaxed"
    )
    return _running(frame, group=["_period"])


def _running(frame: pl.LazyFrame, group: list[str]) -> pl.LazyFrame:
    """Order parts (kind, feature, environment) inside each group; add running weights and display columns.

    ``frame`` has ``weight`` (what splits), ``_use`` and ``_shown_total`` (the driver quantities shown)
    and ``_unit`` (one weight unit in the driver's unit).
    """
    order = [*group, "allocation_kind", "feature", "environment"]
    w = pl.col("weight")
    upto = w.cum_sum().over(group) if group else w.cum_sum()
    total = w.sum().over(group) if group else w.sum()
    unit = pl.col("_unit")
    return (
        frame.with_columns(w.cast(pl.Int128))
        .sort(order, nulls_last=False)
        .with_columns(
            _before=upto - w,
            _upto=upto,
            _total=total,
            driver_quantity=(pl.col("_use").cast(pl.Int128) * unit).cast(DRIVER_NUMBER),
            driver_total=(pl.col("_shown_total").cast(pl.Int128) * unit).cast(DRIVER_NUMBER),
            share=(w.cast(pl.Float64) / total.cast(pl.Float64)).round(12).cast(DRIVER_NUMBER),
        )
        .drop("_use", "_shown_total", "_unit", "weight")
        .with_columns(cs.by_name(LABELS, require_all=False).cast(LABEL))
    )


def _basis(parts: pl.DataFrame | None) -> pl.DataFrame:
    """Attributed EffectiveCost (units) per day, rule, feature, environment and class of whole-taken parts."""
    if parts is None or parts.is_empty():
        return pl.DataFrame(schema=BASIS_SCHEMA)
    return (
        parts.lazy()
        .filter(pl.col("allocation_kind") == "direct")
        .group_by("charge_date", "rule_id", "feature", "environment", "cost_class")
        .agg(pl.col("eff_part").sum().alias("weight"))
        .cast(BASIS_SCHEMA)  # type: ignore[arg-type]
        .collect(engine="in-memory")
    )


def _weights_basis(charges: pl.DataFrame, weights: pl.DataFrame) -> pl.DataFrame:
    """Each feature's attributed pool cost per day, from the pools' weights and each period's total amount.

    It is the cost before each charge's sub-unit rounding: a weight for overhead, not a booked amount.
    Both frames carry ``_period`` (see ``_Engine._pooled``).
    """
    totals = charges.lazy().group_by("_period").agg(pl.col("eff_units").sum().alias("_amount"))
    share = (pl.col("_amount") * (pl.col("_upto") - pl.col("_before"))) // pl.col("_total")
    return (
        weights.lazy()
        .filter(pl.col("feature") != IDLE)
        .join(totals, on="_period", how="inner")
        .group_by(
            charge_date=pl.col("slice_start").dt.date(),
            rule_id="rule_id",
            feature="feature",
            environment="environment",
            cost_class="cost_class",
        )
        .agg(share.sum().alias("weight"))
        .cast(BASIS_SCHEMA)  # type: ignore[arg-type]
        .collect(engine="in-memory")
    )


@dataclass(frozen=True)
class _Proportional:
    """A rule spreading by attributed cost: which features and basis rules count, its class and kind."""

    rule_id: str
    features: list[str]
    rules: list[str]
    cost_class: str | None
    kind: str


def _proportional(basis: pl.DataFrame, specs: list[_Proportional]) -> pl.DataFrame:
    """Weights per rule and day in proportion to each (feature, environment)'s attributed cost (positive totals)."""
    rows = basis.lazy().filter(~pl.col("feature").is_in([IDLE, UNALLOCATED]))
    frames = []
    for spec in specs:
        mine = rows
        if spec.features:
            mine = mine.filter(pl.col("feature").is_in(spec.features))
        if spec.rules:
            mine = mine.filter(pl.col("rule_id").is_in(spec.rules))
        frames.append(
            mine.select(
                "charge_date",
                "feature",
                "environment",
                "weight",
                rule_id=pl.lit(spec.rule_id, pl.String),
                cost_class=pl.lit(spec.cost_class, pl.String) if spec.cost_class else pl.col("cost_class"),
                allocation_kind=pl.lit(spec.kind, pl.String),
            )
        )
    group = ["rule_id", "charge_date"]
    schema = {**BASIS_SCHEMA, "allocation_kind": pl.String}
    rows = (
        (pl.concat(frames) if frames else pl.LazyFrame(schema=schema))
        .group_by(*group, "feature", "environment", "cost_class", "allocation_kind")
        .agg(pl.col("weight").sum())
        .filter(pl.col("weight") > 0)
        .with_columns(
            driver=pl.lit("cost"),
            _use="weight",
            _shown_total=pl.col("weight").sum().over(group),
            _unit=pl.lit(UNIT, DRIVER_NUMBER),
        )
    )
    return _running(rows, group=group).collect(engine="in-memory")


def _bounded(weights: pl.DataFrame, charges: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Weights ready to split: scaled down where amount × total weight could overflow 128 bits (rare)."""
    largest = _max_abs(charges, "eff_units", "bill_units", units=True)
    check_amounts(largest)
    if largest * int(weights["_total"].max() or 0) >= PRODUCT_LIMIT:  # type: ignore[operator]
        weights = _scaled_down(weights, charges, keys)
    return weights.with_columns(_first=pl.col("_before") == 0, _upto2=pl.col("_upto") * 2)


def _scaled_down(weights: pl.DataFrame, charges: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    per_group = charges.group_by(keys).agg(
        pl.max_horizontal(pl.col("eff_units").abs(), pl.col("bill_units").abs()).max().alias("_max")
    )
    # Boundaries shared by neighbouring parts are floored alike, so the parts still telescope exactly.
    return (
        weights.join(per_group, on=keys, how="left", maintain_order="left")
        .with_columns(_div=weight_divisor(pl.col("_max").fill_null(0), pl.col("_total")))
        .with_columns(pl.col(c) // pl.col("_div") for c in ("_before", "_upto", "_total"))
        .drop("_max", "_div")
    )


# Which amounts of a charge need their own split: most charges bill what they cost (one split serves
# both), commitment-covered usage often has one amount 0; only the rest needs two.
AMOUNTS = (
    pl.when(pl.col("eff_units") == pl.col("bill_units"))
    .then(pl.lit("same"))
    .when(pl.col("eff_units") == 0)
    .then(pl.lit("billed"))
    .when(pl.col("bill_units") == 0)
    .then(pl.lit("effective"))
    .otherwise(pl.lit("both"))
)


PART_OF = {"eff_units": "eff_part", "bill_units": "bill_part"}
UNREAD = {"same": ["bill_units"], "billed": ["eff_units"], "effective": ["bill_units"]}  # amounts no split reads


def _split(rows: pl.DataFrame, amounts: str = "both") -> pl.DataFrame:
    """Each part of its charge slice by cumulative rounding (see ``models.money``).

    Rows must hold the parts of each charge next to each other in running-weight order (the joins
    keep the charge's order, then the weights table's, as polars documents for ``maintain_order``):
    a part's lower boundary is then the upper boundary of the row before it, so each part costs one
    128-bit division per amount, not two. ``amounts`` says which amounts need a split (see AMOUNTS).
    """
    total, first = pl.col("_total"), pl.col("_first")

    def part(units: str) -> pl.Expr:
        upper = pl.col(f"_{units}")
        return pl.when(first).then(upper).otherwise(upper.diff())  # one kernel: a third faster than shift

    needed = {"same": ["eff_units"], "billed": ["bill_units"], "effective": ["eff_units"]}.get(
        amounts, ["eff_units", "bill_units"]
    )
    upper = {f"_{u}": (pl.col(u) * pl.col("_upto2") + total) // (total * 2) for u in needed}
    rows = rows.with_columns(**upper).with_columns(part(u).alias(PART_OF[u]) for u in needed)
    if amounts == "same":
        rows = rows.with_columns(bill_part="eff_part")
    return rows.drop(*(f"_{u}" for u in needed))


def _finish(parts: pl.DataFrame, same_amounts: bool = False) -> pl.DataFrame:
    """Rows in ``ALLOCATION_SCHEMA``: amounts back to Decimal(38, 12) (once when both are the same).

    An amount without its part column (``eff_part``/``bill_part``) is zero: its split was not computed.
    """
    present = set(parts.columns)

    def money(part: str) -> pl.Series | pl.Expr:
        return units_to_money(parts.get_column(part)) if part in present else pl.lit(Decimal(0), MONEY)

    rows = parts.select(
        "x_charge_id",
        "x_source",
        "x_billing_period",
        charge_period_start=pl.col("slice_start"),
        charge_date="charge_date",
        provider_name=pl.col("ProviderName"),
        service_name=pl.col("ServiceName"),
        charge_category=pl.col("ChargeCategory"),
        feature="feature",
        environment="environment",
        cost_class="cost_class",
        allocation_kind="allocation_kind",
        rule_id="rule_id",
        driver="driver",
        driver_quantity=pl.col("driver_quantity") if "driver_quantity" in present else pl.lit(None),
        driver_total=pl.col("driver_total") if "driver_total" in present else pl.lit(None),
        share="share",
        effective_cost=money("eff_part"),
        billed_cost=pl.lit(None) if same_amounts else money("bill_part"),
    )
    if same_amounts:
        rows = rows.with_columns(billed_cost="effective_cost")
    return rows.cast(ALLOCATION_SCHEMA)  # type: ignore[arg-type]


# --- reading the result --------------------------------------------------------------------------------


def waterfall_steps(
    parts: pl.DataFrame, unit: Mapping[str, object] | None
) -> list[tuple[str, Decimal, Decimal | None]]:
    """(label, amount, running total) from each provider's part of a feature's cost to COGS and unit cost.

    ``parts``: provider_name, allocation_kind, cost_class, cost (v_feature_waterfall for one feature
    and month); ``unit``: the feature's v_feature_cogs_monthly row. Used by ``cogs explain`` and the report.
    """
    steps: list[tuple[str, Decimal, Decimal | None]] = []
    running = Decimal(0)
    totals = parts.group_by("provider_name").agg(pl.col("cost").sum())
    for provider in totals.sort("cost", "provider_name", descending=[True, False])["provider_name"].to_list():
        mine = parts.filter(pl.col("provider_name") == provider)
        for kind in KINDS:
            amount = Decimal(mine.filter(pl.col("allocation_kind") == kind)["cost"].sum() or 0)
            if amount:
                running += amount
                steps.append((f"{provider} bill · {kind}", amount, running))
    steps.append(("= attributed cost", running, None))
    for cost_class, label in (
        ("rnd", "− R&D (non-production, training, evaluation)"),
        ("opex", "− OpEx (free tier, internal)"),
    ):
        amount = Decimal(parts.filter(pl.col("cost_class") == cost_class)["cost"].sum() or 0)
        if amount:
            running -= amount
            steps.append((label, -amount, running))
    steps.append(("= COGS", running, None))
    if unit and unit.get("useful_outputs"):
        outputs = int(unit["useful_outputs"])  # type: ignore[call-overload]
        per_output = Decimal(str(unit["cost_per_useful_output"]))
        steps.append((f"÷ {outputs:,} useful outputs = per useful output", per_output, None))
    return steps
