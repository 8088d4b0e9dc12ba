"""Sensors: run the month again as soon as AWS delivers a new Cost and Usage Report for it.

AWS refreshes a billing period's CUR several times a day while it is open, and restates a closed period
for a while after it closes; each refresh writes a new manifest for the period with a new id: CUR 2.0's
``executionId`` (Data Exports, "Understanding export delivery"), legacy CUR's ``assemblyId`` ("an ID that
AWS creates each time that the report is updated", "Accessing your Cost and Usage Reports in Amazon S3").
The sensor reads the manifests of the current and the previous billing period, remembers in its cursor
the id it last started a run for, and requests one partitioned run per new delivery, keyed
``<YYYY-MM>:<delivery id>`` so a delivery is never loaded twice. A manifest without an id is told apart by
its S3 ETag (or local mtime and size).

No ``from __future__ import annotations`` here: Dagster inspects the sensor function's annotations.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from connectors import connector
from connectors.base import BillingPeriod
from models.config import AwsCur2Source, AwsCurLegacySource

if TYPE_CHECKING:  # what dg.define_asset_job returns; dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

DEFAULT_INTERVAL_SECONDS = 15 * 60  # AWS refreshes a CUR a few times a day; a quarter hour is prompt enough


def watched_periods(now: datetime) -> list[str]:
    """The previous and the current billing period (YYYY-MM): the ones AWS still delivers."""
    previous = f"{now.year - (now.month == 1)}-{(now.month - 2) % 12 + 1:02d}"
    return [previous, f"{now:%Y-%m}"]


def cur_delivery_sensor(
    source: AwsCur2Source | AwsCurLegacySource,
    job: "UnresolvedAssetJobDefinition | dg.JobDefinition",
    *,
    minimum_interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    clock: Callable[[], datetime] | None = None,
) -> dg.SensorDefinition:
    """A sensor named ``<source>_cur_deliveries`` that requests a ``job`` run per new delivery of ``source``.

    ``clock`` (tests) replaces the wall clock that decides which billing periods are current.
    """
    module = connector(source.type)
    now = clock or (lambda: datetime.now(UTC))

    @dg.sensor(
        name=f"{source.name}_cur_deliveries",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        description=f"Runs the month when AWS delivers a new CUR for source {source.name!r} ({source.type}).",
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
