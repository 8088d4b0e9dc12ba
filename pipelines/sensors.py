"""Sensors: run the month again when a provider delivers new bill data; sample Lambda Cloud uptime.

AWS refreshes a billing period's CUR several times a day while it is open, and restates a closed period
for a while after it closes; each refresh writes a new manifest for the period with a new id: CUR 2.0's
``executionId`` (Data Exports, "Understanding export delivery"), legacy CUR's ``assemblyId`` ("an ID that
AWS creates each time that the report is updated", "Accessing your Cost and Usage Reports in Amazon S3").
The sensor reads the manifests of the current and the previous billing period, remembers in its cursor
the id it last started a run for, and requests one partitioned run per new delivery, keyed
``<YYYY-MM>:<delivery id>`` so a delivery is never loaded twice. A manifest without an id is told apart by
its S3 ETag (or local mtime and size). The GCP billing export gets the same sensor: its "delivery id" is the
month's row count, newest ``export_time`` and total (BigQuery) or the export files' names, sizes and times.

Lambda Cloud has no billing endpoint: ``lambda_uptime_sensor`` samples ``GET /api/v1/instances`` every few
minutes into the uptime log that ``connectors.lambda_cloud`` prices.

No ``from __future__ import annotations`` here: Dagster inspects the sensor function's annotations.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from connectors import connector, lambda_cloud
from connectors.base import BillingPeriod
from models.config import AwsCur2Source, AwsCurLegacySource, CogsConfig, GcpBillingExportSource, LambdaCloudSource

if TYPE_CHECKING:  # what dg.define_asset_job returns; dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

DEFAULT_INTERVAL_SECONDS = 15 * 60  # AWS refreshes a CUR a few times a day; a quarter hour is prompt enough
DELIVERY_SOURCES = ("aws_cur2", "aws_cur_legacy", "gcp_billing_export")
DeliverySource = AwsCur2Source | AwsCurLegacySource | GcpBillingExportSource


def watched_periods(now: datetime) -> list[str]:
    """The previous and the current billing period (YYYY-MM): the ones AWS still delivers."""
    previous = f"{now.year - (now.month == 1)}-{(now.month - 2) % 12 + 1:02d}"
    return [previous, f"{now:%Y-%m}"]


def delivery_sensor(
    source: DeliverySource,
    job: "UnresolvedAssetJobDefinition | dg.JobDefinition",
    *,
    minimum_interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    clock: Callable[[], datetime] | None = None,
) -> dg.SensorDefinition:
    """A sensor named ``<source>_deliveries`` that requests a ``job`` run per new delivery of ``source``.

    ``clock`` (tests) replaces the wall clock that decides which billing periods are current.
    """
    module = connector(source.type)
    now = clock or (lambda: datetime.now(UTC))

    @dg.sensor(
        name=f"{source.name}_deliveries",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        description=f"Runs the month when a new delivery of source {source.name!r} ({source.type}) arrives.",
    )
    def _deliveries(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        moment = now()
        seen = _read_cursor(context.cursor)
        current: dict[str, str] = {}
        requests = []
        for period in watched_periods(moment):
            delivery = module.current_delivery(source, BillingPeriod(period))
            if delivery is None:
                continue
            current[period] = delivery.delivery_id
            if seen.get(period) != delivery.delivery_id and _is_partition(context, job, period, moment):
                requests.append(
                    dg.RunRequest(
                        run_key=f"{period}:{delivery.delivery_id}",
                        partition_key=period,
                        tags={"cogs/source": source.name, "cogs/delivery": delivery.delivery_id},
                    )
                )
        cursor = json.dumps(current, sort_keys=True)
        if not requests:
            return dg.SensorResult(
                skip_reason=f"no new delivery of {source.name} for {', '.join(current) or 'any period'}", cursor=cursor
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _deliveries


def _read_cursor(cursor: str | None) -> dict[str, str]:
    """The delivery id last requested per period (an unreadable cursor starts afresh)."""
    try:
        value = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _is_partition(
    context: dg.SensorEvaluationContext,
    job: "UnresolvedAssetJobDefinition | dg.JobDefinition",
    period: str,
    now: datetime,
) -> bool:
    """Whether the job has the month as a partition (months before ``start_month`` are not loaded)."""
    partitions = job.partitions_def
    if partitions is None and context.repository_def is not None:  # inferred from the job's assets
        partitions = context.repository_def.get_job(job.name).partitions_def
    return partitions is None or period in partitions.get_partition_keys(current_time=now)


def lambda_uptime_sensor(
    source: LambdaCloudSource, *, clock: Callable[[], datetime] | None = None
) -> dg.SensorDefinition:
    """A sensor named ``<source>_uptime`` appending one instances sample per tick to the source's uptime log.

    Ticks follow ``max_sample_gap_minutes`` halved, so a missed tick still leaves no unobserved gap.
    """
    now = clock or (lambda: datetime.now(UTC))

    @dg.sensor(
        name=f"{source.name}_uptime",
        minimum_interval_seconds=max(60, source.max_sample_gap_minutes * 30),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Samples Lambda Cloud instances for source {source.name!r} into {source.uptime_log_dir}.",
    )
    def _uptime(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        moment = now()
        observations = lambda_cloud.sample_instances(source, now=moment)
        path = lambda_cloud.append_observations(source, observations, observed_at=moment)
        return dg.SkipReason(f"sampled {len(observations)} instance(s) into {path}")

    return _uptime


def source_sensors(
    config: CogsConfig, job: "UnresolvedAssetJobDefinition | dg.JobDefinition"
) -> list[dg.SensorDefinition]:
    """The delivery sensor of every CUR and GCP export source and the uptime sensor of every Lambda source."""
    sensors = [delivery_sensor(s, job) for s in config.sources if s.type in DELIVERY_SOURCES]
    sensors += [lambda_uptime_sensor(s) for s in config.sources if isinstance(s, LambdaCloudSource)]
    return sensors
