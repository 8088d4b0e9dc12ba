"""Assets: ingest (one per configured source) → warehouse → allocation → marts → report.

No ``from __future__ import annotations`` here: Dagster reads the context and resource annotations.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl

from models.allocation import CHARGE_COLUMNS, allocate_batches, usage_classes
from models.anomaly import Anomaly, anomaly_frame, attach_drivers, complete_through, detect, fold_incidents
from models.config import CogsConfig
from models.focus import CHARGE_CATEGORIES, REQUIRED_COLUMNS
from models.period import BillingPeriod
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

INGEST, WAREHOUSE, ALLOCATION, MARTS, REPORT = "ingest", "warehouse", "allocation", "marts", "report"


def _money(value: Decimal | None) -> float:
    return float(value or 0)


def ingest_asset(
    name: str,
    source_type: str,
    partitions: dg.PartitionsDefinition,
    config: CogsConfig,
    deps: list[dg.AssetsDefinition] | None = None,
) -> dg.AssetsDefinition:
    """One asset per configured source: loads its billing period, replacing the previous load."""

    @dg.asset(
        name=f"ingest_{name}",
        group_name=INGEST,
        partitions_def=partitions,
        kinds={source_type.split("_")[0]},
        description=f"Loads source {name!r} ({source_type}) for the month, replacing its previous load atomically.",
        tags={"source": name},
        deps=deps or [],
    )
    def _ingest(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        warehouse.ensure_schema()
        summary = ingest(warehouse, config, name, context.partition_key)
        if summary.quarantined:
            context.log.warning(f"{summary.quarantined} rows quarantined; see table ingest_quarantine")
        metadata: dict[str, dg.RawMetadataValue] = {
            "batch_id": summary.batch_id,
            "rows": summary.rows,
            "rows_quarantined": summary.quarantined,
            "files": summary.files,
            "repairs": dg.MetadataValue.json(summary.repairs),
            "stats": dg.MetadataValue.json(summary.stats),
        }
        if summary.source_total is not None:
            metadata["provider_total"] = _money(summary.source_total)
        if summary.loaded_billed_cost is not None:
            metadata["billed_cost"] = _money(summary.loaded_billed_cost)
        return dg.MaterializeResult(metadata=metadata)

    return _ingest


def build_assets(config: CogsConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    usage_ingest = [ingest_asset(t.name, t.type, partitions, config) for t in config.telemetry]
    # Reserved capacity is priced from telemetry (Used/Unused hours), so it loads after it.
    cost_ingest = [
        ingest_asset(s.name, s.type, partitions, config, deps=usage_ingest if s.type == "reserved_capacity" else None)
        for s in config.sources
    ]

    @dg.asset(
        group_name=WAREHOUSE,
        partitions_def=partitions,
        deps=cost_ingest,
        kinds={"sql"},
        description="FOCUS 1.2 Cost and Usage rows of every source for the month.",
        check_specs=[
            dg.AssetCheckSpec(
                "focus_mandatory_columns",
                asset="focus_costs",
                blocking=True,
                description="Mandatory FOCUS columns are filled and ChargeCategory is allowed.",
            ),
            dg.AssetCheckSpec(
                "reconciles_to_provider_totals",
                asset="focus_costs",
                blocking=True,
                description="Per source, BilledCost equals the provider's own export total.",
            ),
        ],
    )
    def focus_costs(
        context: dg.AssetExecutionContext, warehouse: Warehouse
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        period = context.partition_key
        nulls = ", ".join(f'SUM(CASE WHEN "{c}" IS NULL THEN 1 ELSE 0 END) AS "{c}"' for c in REQUIRED_COLUMNS)
        null_counts = warehouse.read(f"SELECT {nulls} FROM focus_costs WHERE x_billing_period = :p", p=period)
        bad_nulls = {c: int(v) for c, v in null_counts.row(0, named=True).items() if v}
        allowed = ", ".join(f"'{c}'" for c in CHARGE_CATEGORIES)
        bad_categories = warehouse.read(
            f'SELECT DISTINCT "ChargeCategory" FROM focus_costs WHERE x_billing_period = :p '
            f'AND "ChargeCategory" NOT IN ({allowed})',
            p=period,
        )["ChargeCategory"].to_list()
        yield dg.AssetCheckResult(
            check_name="focus_mandatory_columns",
            passed=not bad_nulls and not bad_categories,
            metadata={"null_counts": dg.MetadataValue.json(bad_nulls), "bad_charge_categories": bad_categories},
        )
        recon = warehouse.read("SELECT * FROM v_reconciliation WHERE billing_period = :p", p=period)
        off = recon.filter(pl.col("difference") != 0)
        yield dg.AssetCheckResult(
            check_name="reconciles_to_provider_totals",
            passed=off.is_empty(),
            metadata={
                "sources": dg.MetadataValue.md(
                    _markdown(recon.select("source", "provider_total", "warehouse_billed_cost", "difference"))
                ),
            },
        )
        by_provider = warehouse.read(
            'SELECT "ProviderName" AS provider, SUM("BilledCost") AS billed, SUM("EffectiveCost") AS effective, '
            "COUNT(*) AS row_count FROM focus_costs WHERE x_billing_period = :p GROUP BY 1 ORDER BY 1",
            p=period,
        )
        yield dg.MaterializeResult(
            metadata={
                "rows": int(by_provider["row_count"].sum() or 0),
                "billed_cost": _money(by_provider["billed"].sum()),
                "effective_cost": _money(by_provider["effective"].sum()),
                "by_provider": dg.MetadataValue.md(_markdown(by_provider)),
            }
        )

    @dg.asset(
        group_name=WAREHOUSE,
        partitions_def=partitions,
        deps=usage_ingest,
        kinds={"sql"},
        description="Hourly inference usage per deployment, model, feature and environment for the month.",
    )
    def inference_usage(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        totals = warehouse.read(
            "SELECT feature, SUM(requests) AS requests, SUM(useful_outputs) AS useful_outputs, "
            "SUM(input_tokens + output_tokens) AS tokens, SUM(gpu_seconds) AS gpu_seconds "
            "FROM inference_usage WHERE billing_period = :p GROUP BY feature ORDER BY feature",
            p=context.partition_key,
        )
        return dg.MaterializeResult(
            metadata={
                "requests": int(totals["requests"].sum() or 0),
                "by_feature": dg.MetadataValue.md(_markdown(totals)),
            }
        )

    @dg.asset(
        group_name=ALLOCATION,
        partitions_def=partitions,
        deps=[focus_costs, inference_usage],
        kinds={"polars"},
        description="Every charge row split to features, idle or unallocated, with the rule and driver used.",
        check_specs=[
            dg.AssetCheckSpec(
                "conservation",
                asset="cost_allocations",
                blocking=True,
                description="Each charge's allocations add up to its EffectiveCost and BilledCost exactly.",
            ),
        ],
    )
    def cost_allocations(
        context: dg.AssetExecutionContext, warehouse: Warehouse
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        period = context.partition_key
        columns = ", ".join(f'"{c}"' for c in CHARGE_COLUMNS)
        charges = warehouse.read(f"SELECT {columns} FROM focus_costs WHERE x_billing_period = :p", p=period)
        usage = warehouse.read("SELECT * FROM inference_usage WHERE billing_period = :p", p=period)
        rows, kinds = 0, []
        with warehouse.transaction() as conn:  # batch by batch, in one transaction: never half a month
            warehouse.delete("cost_allocations", {"x_billing_period": period}, conn)
            for batch in allocate_batches(charges, usage, config.allocation, config.features):
                rows += warehouse.insert("cost_allocations", batch, conn)
                kinds.append(batch.group_by("cost_class", "allocation_kind").agg(pl.col("effective_cost").sum()))
            classes = usage_classes(usage, config.allocation, config.features)
            warehouse.replace(
                "cost_classes", {"billing_period": period}, classes.with_columns(billing_period=pl.lit(period)), conn
            )
        gaps = warehouse.read("SELECT * FROM v_allocation_gaps WHERE x_billing_period = :p", p=period)
        yield dg.AssetCheckResult(
            check_name="conservation",
            passed=gaps.is_empty(),
            metadata={"charges_out_of_balance": gaps.height, "charges": charges.height},
        )
        by_kind = (
            pl.concat(kinds)
            .group_by("cost_class", "allocation_kind")
            .agg(pl.col("effective_cost").sum())
            .sort("cost_class", "allocation_kind")
            if kinds
            else pl.DataFrame()
        )
        yield dg.MaterializeResult(metadata={"rows": rows, "by_kind": dg.MetadataValue.md(_markdown(by_kind))})

    @dg.asset(
        group_name=MARTS,
        partitions_def=partitions,
        deps=[cost_allocations],
        kinds={"sql"},
        description="COGS, idle, waste and unit costs per feature and day.",
        check_specs=[
            dg.AssetCheckSpec(
                "cogs_equals_effective_cost",
                asset="feature_costs_daily",
                blocking=True,
                description="The mart's effective cost (COGS + R&D + OpEx, idle and unallocated included) equals "
                "EffectiveCost billed.",
            ),
        ],
    )
    def feature_costs_daily(
        context: dg.AssetExecutionContext, warehouse: Warehouse
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        period = context.partition_key
        warehouse.run_sql_file("transform/feature_costs_daily.sql", period=period)
        mart = warehouse.read(
            "SELECT SUM(effective_cost) AS effective, SUM(cogs) AS cogs FROM feature_costs_daily"
            " WHERE billing_period = :p",
            p=period,
        )
        billed = warehouse.read(
            'SELECT SUM("EffectiveCost") AS effective FROM focus_costs WHERE x_billing_period = :p', p=period
        )
        allocated, effective = mart["effective"][0] or Decimal(0), billed["effective"][0] or Decimal(0)
        yield dg.AssetCheckResult(
            check_name="cogs_equals_effective_cost",
            passed=allocated == effective,
            metadata={
                "mart_effective_cost": _money(allocated),
                "mart_cogs": _money(mart["cogs"][0] or Decimal(0)),
                "effective_cost_billed": _money(effective),
            },
        )
        monthly = warehouse.read(
            "SELECT feature, cogs, useful_outputs, cost_per_useful_output FROM v_feature_cogs_monthly "
            "WHERE billing_period = :p ORDER BY cogs DESC",
            p=period,
        )
        yield dg.MaterializeResult(metadata={"by_feature": dg.MetadataValue.md(_markdown(monthly))})

    @dg.asset(
        group_name=MARTS,
        partitions_def=partitions,
        deps=[feature_costs_daily],
        kinds={"polars"},
        description="Daily spend and unit-cost anomalies per feature, with their drivers.",
    )
    def cost_anomalies(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        found = detect_anomalies(warehouse, config, context.partition_key)
        warehouse.replace("cost_anomalies", {"billing_period": context.partition_key}, found)
        return dg.MaterializeResult(
            metadata={
                "anomalies": found.height,
                "list": dg.MetadataValue.md(_markdown(found.select("series_id", "start_date", "impact_usd"))),
            }
        )

    @dg.asset(
        group_name=REPORT,
        partitions_def=partitions,
        deps=[feature_costs_daily, cost_anomalies],
        kinds={"html"},
        description="The month's COGS report (HTML with charts).",
    )
    def cogs_report(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        from pipelines.report import write_report

        path = write_report(warehouse, config, context.partition_key)
        return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path))})

    return [
        *cost_ingest,
        *usage_ingest,
        focus_costs,
        inference_usage,
        cost_allocations,
        feature_costs_daily,
        cost_anomalies,
        cogs_report,
    ]


def detect_anomalies(warehouse: Warehouse, config: CogsConfig, period: str) -> pl.DataFrame:
    """Spend and unit-cost anomalies per feature and per provider/service touching the month, complete days only.

    The baseline reaches back before the month (``baseline_weeks`` weeks or the fallback window); a day is
    scored once every configured source that has data has delivered it whole (``complete_through``). A re-run
    of the month (a restatement) recomputes its anomalies under the same ids.
    """
    cfg = config.anomalies
    billing = BillingPeriod(period)
    lookback = max(cfg.baseline_weeks * 7, cfg.fallback_window_days) + 1
    history_start = (billing.start - timedelta(days=lookback)).date()
    through = complete_through(_latest_data_by_source(warehouse, config, history_start))
    spend, unit = _anomaly_series(warehouse, history_start)
    found = detect(
        spend,
        unit,
        cfg,
        through=through,
        keep_from=billing.start.date(),
        keep_to=(billing.end - timedelta(days=1)).date(),
    )
    if found:
        breakdown = _anomaly_breakdown(warehouse, history_start, through, found, spend)
        found = fold_incidents(attach_drivers(found, breakdown, cfg.top_drivers))
    return anomaly_frame(found).with_columns(billing_period=pl.lit(period), detected_at=pl.lit(datetime.now(UTC)))


def _latest_data_by_source(warehouse: Warehouse, config: CogsConfig, since: date) -> dict[str, datetime]:
    """Per configured source with data since ``since``: where its usage data ends (bills) or its last hour ends."""
    latest = warehouse.read(
        'SELECT x_source AS source, MAX("ChargePeriodEnd") AS latest FROM focus_costs '
        "WHERE \"ChargePeriodEnd\" > :since AND COALESCE(\"ChargeFrequency\", 'Usage-Based') = 'Usage-Based' "
        "GROUP BY x_source "
        "UNION ALL SELECT source, MAX(hour) + INTERVAL '1 hour' FROM inference_usage WHERE hour >= :since "
        "GROUP BY source",
        since=datetime.combine(since, datetime.min.time(), UTC),
    )
    configured = {s.name for s in config.sources} | {t.name for t in config.telemetry}
    return {s: t for s, t in latest.iter_rows() if s in configured and t is not None}


def _anomaly_series(warehouse: Warehouse, since: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Daily spend per feature and per provider/service; daily cost and units per feature and pricing unit."""
    spend = warehouse.read(
        "SELECT 'feature' AS dimension, feature AS value, date, cogs AS spend FROM feature_costs_daily "
        "WHERE date >= :since "
        "UNION ALL SELECT 'provider_service', provider_name || ' / ' || service_name, charge_date, "
        "SUM(effective_cost) FROM cost_allocations WHERE charge_date >= :since GROUP BY 2, 3",
        since=since,
    )
    unit = warehouse.read(
        "SELECT 'feature' AS dimension, feature AS value, 'useful output' AS unit, date, cogs AS cost, "
        "useful_outputs AS quantity FROM feature_costs_daily "
        "WHERE date >= :since AND feature NOT IN ('idle', 'unallocated') "
        'UNION ALL SELECT \'provider_service\', "ProviderName" || \' / \' || "ServiceName", "PricingUnit", '
        'CAST("ChargePeriodStart" AT TIME ZONE \'UTC\' AS DATE), SUM("EffectiveCost"), SUM("PricingQuantity") '
        'FROM focus_costs WHERE "ChargeCategory" = \'Usage\' AND "PricingQuantity" > 0 '
        'AND "PricingUnit" IS NOT NULL AND "ChargePeriodStart" >= :since_ts '
        'AND "ChargePeriodEnd" - "ChargePeriodStart" <= INTERVAL \'1 day\' GROUP BY 2, 3, 4',
        since=since,
        since_ts=datetime.combine(since, datetime.min.time(), UTC),
    )
    return spend, unit


def _anomaly_breakdown(
    warehouse: Warehouse, since: date, through: date | None, found: list[Anomaly], spend: pl.DataFrame
) -> pl.DataFrame:
    """Cost per child (provider/service, region, line item, feature; model and customer by token share) and day."""
    parents = {(a.series.dimension, a.series.value) for a in found}
    charges = warehouse.read(
        "SELECT a.charge_date AS date, a.feature, a.provider_name || ' / ' || a.service_name AS provider_service, "
        "a.cost_class, COALESCE(f.\"RegionId\", '(none)') AS region, "
        'COALESCE(f."ChargeDescription", f."SkuId", f.x_line_item_type, f."ChargeCategory") AS line_item, '
        "SUM(a.effective_cost) AS cost FROM cost_allocations AS a JOIN focus_costs AS f "
        "ON f.x_charge_id = a.x_charge_id AND f.x_billing_period = a.x_billing_period "
        "WHERE a.charge_date >= :since AND a.charge_date <= :through GROUP BY 1, 2, 3, 4, 5, 6",
        since=since,
        through=through,
    ).with_columns(pl.col("cost").cast(pl.Float64))
    usage = warehouse.read(
        "SELECT CAST(hour AT TIME ZONE 'UTC' AS DATE) AS date, feature, COALESCE(model, '(none)') AS model, "
        "COALESCE(customer, '(none)') AS customer, SUM(input_tokens + output_tokens) AS tokens, "
        "SUM(requests) AS requests FROM inference_usage WHERE hour >= :since_ts GROUP BY 1, 2, 3, 4",
        since_ts=datetime.combine(since, datetime.min.time(), UTC),
    )
    cogs = charges.filter(pl.col("cost_class") == "cogs")  # a feature's spend is its COGS
    parts = [_children(cogs, "feature", child) for child in ("provider_service", "region", "line_item")]
    parts += [_children(charges, "provider_service", child) for child in ("feature", "region", "line_item")]
    feature_spend = spend.filter(pl.col("dimension") == "feature").select(
        "date", feature="value", spend=pl.col("spend").cast(pl.Float64)
    )
    for child in ("model", "customer"):  # usage only: the feature's cost split by each child's share of tokens
        by_child = usage.group_by("date", "feature", child).agg(pl.col("tokens", "requests").sum())
        tokens = pl.col("tokens").sum().over("date", "feature") > 0
        weight = pl.when(tokens).then("tokens").otherwise("requests").cast(pl.Float64)
        estimated = by_child.join(feature_spend, on=["date", "feature"]).with_columns(
            cost=(pl.col("spend") * weight / weight.sum().over("date", "feature")).fill_nan(0.0)
        )
        parts.append(_children(estimated, "feature", child))
    frame = pl.concat(parts)
    return frame.filter(pl.struct("dimension", "value").is_in([{"dimension": d, "value": v} for d, v in parents]))


def _children(frame: pl.DataFrame, parent: str, child: str) -> pl.DataFrame:
    """Rows of ``frame`` as (date, dimension, value, child_dimension, child, cost) for one parent and child column."""
    return frame.select(
        "date",
        dimension=pl.lit(parent),
        value=pl.col(parent),
        child_dimension=pl.lit(child),
        child=pl.col(child).cast(pl.String),
        cost=pl.col("cost").cast(pl.Float64),
    )


def _markdown(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "_none_"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows())
