"""The ``inference_usage`` schema: hourly inference usage per deployment, model and feature."""

from __future__ import annotations

import polars as pl

from models.focus import TIMESTAMP

GPU_SECONDS = pl.Decimal(38, 6)

USAGE_KEYS: dict[str, pl.DataType] = {
    "hour": TIMESTAMP,
    "source": pl.String(),
    "deployment": pl.String(),
    "provider": pl.String(),
    "model": pl.String(),
    "feature": pl.String(),
    "environment": pl.String(),
}
USAGE_MEASURES: dict[str, pl.DataType] = {
    "requests": pl.Int64(),
    "succeeded": pl.Int64(),
    "failed": pl.Int64(),
    "retried": pl.Int64(),
    "accepted": pl.Int64(),
    "useful_outputs": pl.Int64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cached_input_tokens": pl.Int64(),
    "gpu_seconds": GPU_SECONDS,
}
USAGE_META: dict[str, pl.DataType] = {
    "billing_period": pl.String(),
    "batch_id": pl.String(),
}
INFERENCE_USAGE_SCHEMA: dict[str, pl.DataType] = USAGE_KEYS | USAGE_MEASURES | USAGE_META

UNKNOWN_FEATURE = "unattributed"
"""Feature value for telemetry that names no feature (kept, never dropped)."""


def aggregate_hourly(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Sum request-level rows into the hourly grain: keys + measures, sorted by the keys.

    The partition columns (``billing_period``, ``batch_id``) are added by the pipeline.
    """
    return (
        events.lazy()
        .with_columns(pl.col("hour").dt.truncate("1h"))
        .group_by(list(USAGE_KEYS))
        .agg(pl.col(m).sum().cast(t) for m, t in USAGE_MEASURES.items())
        .select(*USAGE_KEYS, *USAGE_MEASURES)
        .sort(list(USAGE_KEYS))
        .collect()
    )
