"""NVIDIA DCGM exporter GPU utilization → busy and provisioned GPU-seconds per deployment and hour.

Metrics followed (NVIDIA/dcgm-exporter ``etc/default-counters.csv`` and README): ``DCGM_FI_DEV_GPU_UTIL``,
gauge "GPU utilization (in %)", 0-100; or ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``, gauge "Ratio of time the
graphics engine is active", 0-1 (the one OpenCost uses for ``gpuUsageAverage``). Labels: ``gpu``,
``UUID``, ``device``, ``modelName``, ``Hostname`` (and ``pci_bus_id``, ``DCGM_FI_DRIVER_VERSION`` in newer
versions); with the Kubernetes mapping on, ``namespace``, ``pod`` and ``container`` of the pod holding the
GPU (empty for a GPU no pod holds). Scrapes come from text files or the Prometheus HTTP API
(``connectors.prometheus``).

Rules (idle capacity is measured from what the exporter saw, not guessed; each rule counted in stats):

- One GPU is one ``UUID`` (else ``Hostname`` + ``gpu``). Each sample stands for the time from its
  timestamp to the GPU's next sample. Gaps: when the next sample is more than ``max_gap`` away (a missed
  scrape, an exporter or node down, the GPU gone) or there is none, the sample stands for one
  ``scrape_interval_seconds`` only, and the rest of the gap is **not provisioned**: a GPU nobody saw is not
  counted as capacity (``gaps``, ``gap_seconds_not_provisioned``). With the API the samples are the
  query's grid points, ``scrape_interval_seconds`` apart.
- provisioned GPU-seconds = Σ the time each GPU was seen; busy GPU-seconds = Σ utilization × that time
  (GPU_UTIL / 100, or the GR_ENGINE_ACTIVE ratio); idle = provisioned − busy. Time is cut at hour and
  period boundaries, so each hour gets exactly its part.
- deployment: the first non-empty of ``deployment_labels`` (default ``pod``, then ``Hostname``: a GPU no
  pod holds is the node's idle capacity), renamed by ``deployments`` (exact value or glob such as
  ``vllm-llama70b-*``). feature: ``deployment_features[deployment]`` or ``unattributed``; model and
  useful_output_rule are NULL (GPU rows describe capacity, not requests), provider/environment from config.
- A GPU reported for several pods at the same time (time-slicing) counts once, for the first pod by name
  (``shared_gpu_samples``); a sample seen twice counts once (``duplicate_samples``).
- A value outside 0-100 (GPU_UTIL) or 0-1 (GR_ENGINE_ACTIVE), e.g. DCGM's blank sentinel values, is
  quarantined with file and line; the GPU's time around it then follows the gap rule.
- Busy GPU-seconds are rounded half-up to the microsecond per output row; provisioned ones are exact.

These rows carry only ``gpu_seconds_busy``/``gpu_seconds_provisioned`` (no requests or tokens), so they add
to span or request-log usage of the same deployment without counting anything twice: spans give the
feature split (``gpu_seconds``), these give capacity and idle (``capacity: telemetry`` pools).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult
from connectors.prometheus import (
    Samples,
    api_client,
    deployment_of,
    plain_number,
    query_range,
    read_scrapes,
    selector_query,
)
from models.config import DcgmMetricsTelemetry
from models.focus import TIMESTAMP
from models.usage import GPU_SECONDS, UNKNOWN_FEATURE, USAGE_KEYS, USAGE_MEASURES, aggregate_hourly

MS_PER_HOUR = 3_600_000
UNKNOWN = "unknown"
MICROSECOND = Decimal("0.000001")
# value × milliseconds ÷ this = busy seconds: GPU_UTIL is a percentage, GR_ENGINE_ACTIVE a ratio
BUSY_DIVISOR = {"DCGM_FI_DEV_GPU_UTIL": Decimal(100_000), "DCGM_FI_PROF_GR_ENGINE_ACTIVE": Decimal(1_000)}
VALUE_RANGE = {"DCGM_FI_DEV_GPU_UTIL": (0, 100, "0-100 (%)"), "DCGM_FI_PROF_GR_ENGINE_ACTIVE": (0, 1, "0-1 (ratio)")}
_SERIES_SCHEMA: dict[str, pl.DataType] = {
    "series": pl.Int64(),
    "gpu": pl.String(),
    "owner": pl.String(),
    "deployment": pl.String(),
    "feature": pl.String(),
}


def load(
    source: DcgmMetricsTelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> LoadResult:
    """Busy and provisioned GPU-seconds of the period per hour and deployment (``useful_output`` is unused)."""
    start_ms, end_ms = int(period.start.timestamp()) * 1000, int(period.end.timestamp()) * 1000
    interval_ms, gap_ms = source.scrape_interval_seconds * 1000, source.max_gap * 1000
    metric = source.utilization_metric
    if source.path is not None:
        samples = read_scrapes(source.name, source.path, metric.__eq__, (start_ms - gap_ms, end_ms))
    else:
        samples = Samples()
        with api_client(source) as client:
            query = selector_query(metric, source.selector)
            query_range(client, samples, query, start_ms, end_ms - interval_ms, source.scrape_interval_seconds)
    frame, bad = _valid(samples, source)
    pieces = _hour_pieces(_coverage(frame, samples, interval_ms, gap_ms), start_ms, end_ms)
    samples.stats["series"] = len(samples.series)
    return LoadResult(
        frame=_rows(pieces, source),
        quarantine=pl.concat([samples.quarantine_frame(), bad], how="vertical"),
        files=samples.files,
        stats=dict(samples.stats),
    )


def _valid(samples: Samples, source: DcgmMetricsTelemetry) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Samples joined to their GPU and deployment; out-of-range values split off for the quarantine."""
    low, high, described = VALUE_RANGE[source.utilization_metric]
    frame = samples.frame.join(_series(samples, source), on="series", how="inner")
    in_range = pl.col("value").is_between(low, high)
    bad = frame.filter(~in_range).select(
        "file",
        "line",
        reason=pl.format(f"{source.utilization_metric} value {{}} outside {described}", plain_number("value")),
    )
    return frame.filter(in_range), bad.cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _series(samples: Samples, source: DcgmMetricsTelemetry) -> pl.DataFrame:
    rows = []
    for sid, labels in enumerate(samples.series):
        gpu = (
            labels.get("UUID")
            or labels.get("uuid")
            or f"{labels.get('Hostname', labels.get('instance', '?'))}/gpu{labels.get('gpu', '?')}"
        )
        owner = next((labels[n] for n in source.deployment_labels if labels.get(n)), "")
        deployment = deployment_of(labels, source.deployment_labels, source.deployments)
        if deployment is None:
            samples.stats["series_without_deployment"] += 1
        deployment = deployment or UNKNOWN
        rows.append((sid, gpu, owner, deployment, source.deployment_features.get(deployment, UNKNOWN_FEATURE)))
    return pl.DataFrame(rows, schema=_SERIES_SCHEMA, orient="row")


def _coverage(frame: pl.DataFrame, samples: Samples, interval_ms: int, gap_ms: int) -> pl.DataFrame:
    """Each kept sample with the time it stands for: ``[ts_ms, ts_ms + cover_ms)``."""
    stats = samples.stats
    unique = frame.unique(["series", "ts_ms"], keep="first", maintain_order=True)
    stats["duplicate_samples"] += frame.height - unique.height
    per_gpu = unique.sort("gpu", "ts_ms", "owner").unique(["gpu", "ts_ms"], keep="first", maintain_order=True)
    stats["shared_gpu_samples"] += unique.height - per_gpu.height
    stats["samples"] += per_gpu.height
    stats["gpus"] += per_gpu["gpu"].n_unique()
    gap = pl.col("ts_ms").shift(-1).over("gpu", order_by="ts_ms") - pl.col("ts_ms")
    covered = per_gpu.with_columns(gap_ms=gap).with_columns(
        cover_ms=pl.when(pl.col("gap_ms").is_null() | (pl.col("gap_ms") > gap_ms))
        .then(interval_ms)
        .otherwise(pl.col("gap_ms"))
    )
    gaps = covered.filter(pl.col("gap_ms") > gap_ms)
    stats["gaps"] += gaps.height
    stats["gap_seconds_not_provisioned"] += int((gaps["gap_ms"] - interval_ms).sum() or 0) // 1000
    return covered


def _hour_pieces(covered: pl.DataFrame, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The covered time cut to the period and split at the hour (a sample covers at most an hour)."""
    begin = pl.max_horizontal(pl.col("ts_ms"), pl.lit(start_ms))
    finish = pl.min_horizontal(pl.col("ts_ms") + pl.col("cover_ms"), pl.lit(end_ms))
    clipped = covered.with_columns(begin=begin, finish=finish).filter(pl.col("finish") > pl.col("begin"))
    boundary = pl.col("begin") // MS_PER_HOUR * MS_PER_HOUR + MS_PER_HOUR
    keys = ["deployment", "feature", "value"]
    first = clipped.select(
        *keys,
        hour_ms=pl.col("begin") // MS_PER_HOUR * MS_PER_HOUR,
        piece_ms=pl.min_horizontal(pl.col("finish"), boundary) - pl.col("begin"),
    )
    second = clipped.filter(pl.col("finish") > boundary).select(
        *keys, hour_ms=boundary, piece_ms=pl.col("finish") - boundary
    )
    return pl.concat([first, second], how="vertical")


def _rows(pieces: pl.DataFrame, source: DcgmMetricsTelemetry) -> pl.DataFrame:
    if pieces.is_empty():
        return pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES)
    sums = pieces.group_by("hour_ms", "deployment", "feature").agg(
        busy=(pl.col("piece_ms").cast(pl.Decimal(38, 0)) * pl.col("value")).sum(),
        provisioned_ms=pl.col("piece_ms").sum(),
    )
    divisor = BUSY_DIVISOR[source.utilization_metric]
    busy = [(b / divisor).quantize(MICROSECOND, rounding=ROUND_HALF_UP) for b in sums["busy"]]
    provisioned = [Decimal(ms) / 1000 for ms in sums["provisioned_ms"]]
    events = sums.select(
        pl.from_epoch("hour_ms", time_unit="ms").dt.replace_time_zone("UTC").cast(TIMESTAMP).alias("hour"),
        pl.lit(source.name).alias("source"),
        "deployment",
        pl.lit(source.provider, pl.String()).alias("provider"),
        pl.lit(None, pl.String()).alias("model"),
        "feature",
        pl.lit(source.environment, pl.String()).alias("environment"),
    ).with_columns(
        gpu_seconds_busy=pl.Series(busy, dtype=GPU_SECONDS),
        gpu_seconds_provisioned=pl.Series(provisioned, dtype=GPU_SECONDS),
    )
    return aggregate_hourly(events)
