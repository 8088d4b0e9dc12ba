"""The one Dagster ``Definitions`` of inference-cogs, built from ``cogs.yaml`` (``COGS_CONFIG``)."""

from __future__ import annotations

import dagster as dg

from models.config import CogsConfig
from pipelines.alert_sensors import alert_sensor
from pipelines.assets import build_assets
from pipelines.partitions import monthly_partitions
from pipelines.report_assets import FINANCE, build_report_assets, report_jobs, report_schedules
from pipelines.schedules import daily_refresh
from pipelines.sensors import source_sensors
from pipelines.settings import load_config
from pipelines.warehouse import Warehouse

MONTH_JOB = "cogs_month"


def build_definitions(config: CogsConfig) -> dg.Definitions:
    partitions = monthly_partitions(config.start_month)
    # The month job refreshes bills, usage, allocation, marts and the report; closing a month and the weekly
    # flash are finance's own jobs on their own schedules.
    job = dg.define_asset_job(
        MONTH_JOB, selection=dg.AssetSelection.all() - dg.AssetSelection.groups(FINANCE), partitions_def=partitions
    )
    close_job, flash_job = report_jobs()
    return dg.Definitions(
        assets=[*build_assets(config, partitions), *build_report_assets(config, partitions)],
        jobs=[job, close_job, flash_job],
        schedules=[daily_refresh(job), *report_schedules(config, close_job, flash_job)],
        sensors=[*source_sensors(config, job), alert_sensor(config)],
        resources={"warehouse": Warehouse(url=config.warehouse)},
        # DuckDB allows one writing process: run steps in the run's own process.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_config())
