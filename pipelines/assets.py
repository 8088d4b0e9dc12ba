"""Assets: ingest (one per configured source) → warehouse → allocation → marts → report.

No ``from __future__ import annotations`` here: Dagster reads the context and resource annotations.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl

from models.allocation import CHARGE_COLUMNS, allocate_batches, usage_classes
from models.anomaly import ANOMALY_SCHEMA, Series, group_runs, rank_drivers, score_days
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
                description="The mart's COGS (idle and unallocated included) equals EffectiveCost billed.",
            ),
        ],
    )
    def feature_costs_daily(
        context: dg.AssetExecutionContext, warehouse: Warehouse
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        period = context.partition_key
        warehouse.run_sql_file("transform/feature_costs_daily.sql", period=period)
        mart = warehouse.read("SELECT SUM(cogs) AS cogs FROM feature_costs_daily WHERE billing_period = :p", p=period)
        billed = warehouse.read(
            'SELECT SUM("EffectiveCost") AS effective FROM focus_costs WHERE x_billing_period = :p', p=period
        )
        cogs, effective = mart["cogs"][0] or Decimal(0), billed["effective"][0] or Decimal(0)
        yield dg.AssetCheckResult(
            check_name="cogs_equals_effective_cost",
            passed=cogs == effective,
            metadata={"mart_cogs": _money(cogs), "effective_cost": _money(effective)},
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
    """Score each feature's daily spend and unit cost over the month and the 28 days before it."""
    start = BillingPeriod(period).start
    history_start = (start - timedelta(days=28)).date()
    daily = warehouse.read(
        "SELECT date, feature, cogs, useful_outputs FROM feature_costs_daily "
        "WHERE date >= :history_start AND feature NOT IN ('idle', 'unallocated') ORDER BY date",
        history_start=history_start,
    ).with_columns(pl.col("cogs").cast(pl.Float64))
    breakdown = warehouse.read(
        "SELECT charge_date AS date, feature, provider_name || ' / ' || service_name AS child, "
        "SUM(effective_cost) AS cost FROM cost_allocations WHERE charge_date >= :history_start "
        "GROUP BY charge_date, feature, provider_name, service_name",
        history_start=history_start,
    ).with_columns(pl.col("cost").cast(pl.Float64))
    found: list[dict[str, object]] = []
    for feature in sorted(daily["feature"].unique().to_list()):
        days = daily.filter(pl.col("feature") == feature)
        spend = days.select("date", value=pl.col("cogs"), volume=pl.lit(1.0))
        unit = days.select(
            "date",
            value=pl.when(pl.col("useful_outputs") > 0).then(pl.col("cogs") / pl.col("useful_outputs")),
            volume=pl.col("useful_outputs").cast(pl.Float64),
        )
        for metric, series_frame in (("spend", spend), ("unit_cost", unit)):
            series = Series("feature", feature, metric)
            for anomaly in group_runs(score_days(series_frame, config.anomalies), series):
                if str(anomaly["start_date"]) < str(start.date()):
                    continue
                day = anomaly["start_date"]
                window = [day - timedelta(days=7 * i) for i in range(1, 5)]  # type: ignore[operator]
                drivers = rank_drivers(breakdown.filter(pl.col("feature") == feature), day, window)  # type: ignore[arg-type]
                found.append(anomaly | {"drivers": json.dumps(drivers)})
    frame = pl.DataFrame(found, schema=ANOMALY_SCHEMA)
    return frame.with_columns(billing_period=pl.lit(period), detected_at=pl.lit(datetime.now(UTC)))


def _markdown(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "_none_"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows())
