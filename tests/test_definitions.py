from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from models.config import parse_config
from pipelines.definitions import MONTH_JOB, build_definitions
from pipelines.schedules import months_to_refresh

CONFIG = parse_config(
    """
start_month: 2026-01
sources:
  - {name: aws_cur, type: aws_cur2, path: /data/cur}
  - {name: openai, type: openai_costs}
  - {name: gcp, type: gcp_billing_export, path: /data/gcp}
  - {name: lambda, type: lambda_cloud, uptime_log_dir: /data/lambda}
telemetry:
  - {name: otel, type: otel_genai, path: /data/otel}
"""
)


def test_definitions_load_with_one_ingest_asset_per_source_and_ordered_groups() -> None:
    defs = build_definitions(CONFIG)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "ingest_aws_cur": "ingest",
        "ingest_openai": "ingest",
        "ingest_gcp": "ingest",
        "ingest_lambda": "ingest",
        "ingest_otel": "ingest",
        "focus_costs": "warehouse",
        "inference_usage": "warehouse",
        "cost_allocations": "allocation",
        "feature_costs_daily": "marts",
        "cost_anomalies": "marts",
        "cogs_report": "report",
        "month_close": "finance",
        "weekly_flash": "finance",
    }
    assert graph.get(dg.AssetKey("cost_allocations")).parent_keys == {
        dg.AssetKey("focus_costs"),
        dg.AssetKey("inference_usage"),
    }


def test_blocking_checks_guard_the_invariants() -> None:
    graph = build_definitions(CONFIG).resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {
        ("focus_costs", "focus_mandatory_columns"),
        ("focus_costs", "reconciles_to_provider_totals"),
        ("cost_allocations", "conservation"),
        ("feature_costs_daily", "cogs_equals_effective_cost"),
    }
    assert all(graph.get_check_spec(k).blocking for k in graph.asset_check_keys)


def test_monthly_partitions_and_daily_schedule() -> None:
    defs = build_definitions(CONFIG)
    job = defs.resolve_job_def(MONTH_JOB)
    keys = job.partitions_def.get_partition_keys(current_time=datetime(2026, 11, 23, tzinfo=UTC))
    assert keys[0] == "2026-01" and keys[-1] == "2026-11"  # the month in progress included
    schedule = defs.resolve_schedule_def("daily_refresh")
    assert schedule.cron_schedule == "0 6 * * *"


def test_previous_month_is_refreshed_while_it_can_be_restated() -> None:
    assert months_to_refresh(datetime(2026, 11, 3, 6, tzinfo=UTC)) == ["2026-10", "2026-11"]
    assert months_to_refresh(datetime(2026, 1, 15, 6, tzinfo=UTC)) == ["2025-12", "2026-01"]
    assert months_to_refresh(datetime(2026, 11, 16, 6, tzinfo=UTC)) == ["2026-11"]


def test_jobs_schedules_and_sensors() -> None:
    defs = build_definitions(CONFIG)
    month = defs.resolve_job_def(MONTH_JOB)
    assert "month_close" not in {n.name for n in month.graph.node_defs}  # closing is finance's own job
    assert {s.name for s in defs.sensors} == {
        "aws_cur_deliveries",
        "gcp_deliveries",
        "lambda_uptime",
        "cost_anomaly_alerts",
    }
    assert {s.name for s in defs.schedules} == {"daily_refresh", "month_close", "weekly_flash"}
    assert {j.name for j in defs.jobs} == {MONTH_JOB, "cogs_close", "cogs_weekly_flash"}
