"""The alert sensor: every ``alerts.interval_seconds``, queues new anomalies and delivers what is due.

Delivery goes through the ``alert_outbox`` table (pipelines/alerts.py), so the sensor holds no state of its
own: a tick that fails half-way loses nothing, and the next one carries on. A channel that fails is
retried on later ticks with backoff; the tick that saw the failure ends in error naming the channel and
the reason (Dagster shows it on the sensor's page), after every other channel has been served.

No ``from __future__ import annotations`` here: Dagster inspects the sensor function's annotations.
"""

from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from models.config import CogsConfig
from pipelines.alerts import run_alerts
from pipelines.warehouse import Warehouse

SENSOR_NAME = "cost_anomaly_alerts"


class AlertDeliveryFailed(RuntimeError):
    """Some deliveries failed this tick; they stay in the outbox and are retried."""


def alert_sensor(config: CogsConfig, *, clock: Callable[[], datetime] | None = None) -> dg.SensorDefinition:
    """The ``cost_anomaly_alerts`` sensor for the channels of ``config.alerts`` (running when any exist).

    ``clock`` (tests) replaces the wall clock that decides what is due.
    """
    now = clock or (lambda: datetime.now(UTC))
    channels = ", ".join(f"{c.name} ({c.type})" for c in config.alerts.channels) or "none configured"

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=config.alerts.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if config.alerts.channels else dg.DefaultSensorStatus.STOPPED,
        description=f"Sends cost anomaly alerts through the alert_outbox table. Channels: {channels}.",
    )
    def _alerts(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SkipReason:
        try:
            report = run_alerts(warehouse, config, now())
        except sa.exc.DBAPIError as exc:
            if "lock" in str(exc).lower():  # DuckDB: a run holds the file; the outbox waits for the next tick
                return dg.SkipReason("the warehouse is busy (a run is writing to it); trying again next tick")
            raise
        for line in report.sent:
            context.log.info(f"sent {line}")
        for line in report.failed:
            context.log.warning(f"failed {line}")
        if report.failed:
            raise AlertDeliveryFailed(
                f"{len(report.failed)} alert delivery(ies) failed and will be retried: " + " | ".join(report.failed)
            )
        return dg.SkipReason(report.summary())

    return _alerts
