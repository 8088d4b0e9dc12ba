"""The one Dagster ``Definitions`` of inference-cogs, built from ``cogs.yaml`` (``COGS_CONFIG``)."""

from __future__ import annotations

import dagster as dg

from models.config import CogsConfig
from pipelines.assets import build_assets
from pipelines.partitions import monthly_partitions
from pipelines.schedules import daily_refresh
from pipelines.settings import load_config
from pipelines.warehouse import Warehouse

MONTH_JOB = "cogs_month"


def build_definitions(config: CogsConfig) -> dg.Definitions:
    partitions = monthly_partitions(config.start_month)
    job = dg.define_asset_job(MONTH_JOB, selection=dg.AssetSelection.all(), partitions_def=partitions)
    return dg.Definitions(
        assets=build_assets(config, partitions),
        jobs=[job],
        schedules=[daily_refresh(job)],
        resources={"warehouse": Warehouse(url=config.warehouse)},
        # DuckDB allows one writing process: run steps in the run's own process.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_config())
