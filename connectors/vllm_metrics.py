"""vLLM's Prometheus counters → hourly ``inference_usage`` per deployment and model.

Metrics followed (vllm-project/vllm ``vllm/v1/metrics/loggers.py`` and ``docs/design/metrics.md``; every
series carries the labels ``model_name`` and ``engine``, plus the scrape's ``instance`` and ``job``):

- ``vllm:prompt_tokens_total`` "Number of prefill tokens processed." → ``input_tokens`` (prefix-cache
  hits included);
- ``vllm:prompt_tokens_cached_total`` "Number of cached tokens processed." (newer versions) →
  ``cached_input_tokens`` (a part of ``input_tokens``);
- ``vllm:generation_tokens_total`` "Number of generation tokens processed." → ``output_tokens``;
- ``vllm:request_success_total{finished_reason}`` "Count of successfully processed requests.": despite
  its name it counts every finished request by reason (``FINISH_REASON_STRINGS`` in
  ``vllm/v1/engine/__init__.py``: stop, length, abort, error, repetition) → ``requests``; reasons in
  ``failed_finish_reasons`` (default abort, error) are ``failed``, the others ``succeeded``.

Other vLLM series (gauges, histograms, ``*_created``) are skipped and counted. Scrapes come from text
files or the Prometheus HTTP API (see ``connectors.prometheus``).

Counting rules (each counted in ``LoadResult.stats``):

- Hourly increase, per series (metric + every label): the increase between two consecutive samples
  belongs to the hour of the later sample (API: to the hour of the interval (t − step, t] that the grid
  point t closes). A value lower than the previous one is a **counter reset** (the process restarted
  and counts from 0): the increase is the new value itself (``counter_resets``). Samples at the same
  time twice count once (``duplicate_samples``).
- The first sample of a series is its baseline (what it counted before the data is unknown), unless the
  series starts more than ``max_gap`` after the data does: then the process started during the data
  and counted from 0, so its first value is an increase (``series_started_in_data``).
- Samples before the period are baselines only; increases are kept when their hour is in the period.
- Counter values must be non-negative integers; others are quarantined with file and line.
- ``deployment``: the first non-empty of ``deployment_labels`` (default ``instance``), renamed by
  ``deployments`` (exact value or glob); ``model`` from ``model_name``; ``provider`` is ``vllm``.
- Feature: ``feature_label`` when set and present, else ``deployment_features[deployment]``, else
  ``unattributed`` (vLLM metrics name no feature).

Combining with OTel spans (no double counting): per deployment, ONE source counts requests and tokens.
Spans carry features, outcomes, retries and acceptance; counters carry none of them, so for a deployment
that is traced, spans drive the feature split and these counters are not written: list it in
``deployments_with_spans`` and its increases only go to the stats (``deployments_with_spans:<measure>``,
to check span sampling against exact counts). Use the counters as usage for deployments without spans
(mapped to a feature with ``deployment_features`` when the deployment serves one). GPU capacity and idle
come from GPU metrics (``dcgm_metrics``), never from here. ``useful_outputs`` is 0 and
``useful_output_rule`` NULL: counters can't see retries or acceptance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult
from connectors.prometheus import (
    NAME_LABEL,
    VALUE,
    Samples,
    api_client,
    deployment_of,
    plain_number,
    query_range,
    read_scrapes,
    selector_query,
)
from models.config import VllmMetricsTelemetry
from models.focus import TIMESTAMP
from models.usage import UNKNOWN_FEATURE, USAGE_KEYS, USAGE_MEASURES, aggregate_hourly

MS_PER_HOUR = 3_600_000
UNKNOWN = "unknown"
MEASURE_OF_METRIC = {
    "vllm:prompt_tokens_total": "input_tokens",
    "vllm:prompt_tokens_cached_total": "cached_input_tokens",
    "vllm:generation_tokens_total": "output_tokens",
    "vllm:request_success_total": "requests",
}
NAME_MATCHER = '__name__=~"vllm:(prompt_tokens|prompt_tokens_cached|generation_tokens|request_success)_total"'
_SERIES_SCHEMA: dict[str, pl.DataType] = {
    "series": pl.Int64(),
    "measure": pl.String(),
    "deployment": pl.String(),
    "model": pl.String(),
    "feature": pl.String(),
    "failed_reason": pl.Boolean(),
}


def load(
    source: VllmMetricsTelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> LoadResult:
    """Hourly increases of the period's vLLM counters. ``useful_output`` is accepted and unused (see above)."""
    start_ms, end_ms = _ms(period.start.timestamp()), _ms(period.end.timestamp())
    gap_ms = source.max_gap * 1000
    samples, data_start, shift_ms = _samples(source, start_ms, end_ms)
    stats = samples.stats
    increases, bad = _increases(samples, source, data_start, gap_ms, shift_ms)
    # baselines are increases of 0: rows of nothing but zeros are not written
    increases = increases.filter(
        pl.col("hour_ms").is_between(start_ms, end_ms, closed="left") & (pl.col("increase") > 0)
    )
    covered = pl.col("deployment").is_in(source.deployments_with_spans)
    _count_covered(increases.filter(covered), stats)
    stats["series"] = len(samples.series)
    return LoadResult(
        frame=_rows(increases.filter(~covered), source),
        quarantine=pl.concat([samples.quarantine_frame(), bad], how="vertical"),
        files=samples.files,
        stats=dict(stats),
    )


def _samples(source: VllmMetricsTelemetry, start_ms: int, end_ms: int) -> tuple[Samples, int | None, int]:
    """The counters' samples, where the data starts (None: at the first sample) and the hour shift."""
    if source.path is not None:
        window = (start_ms - source.max_gap * 1000, end_ms)  # samples before the period are baselines
        return read_scrapes(source.name, source.path, MEASURE_OF_METRIC.__contains__, window), None, 0
    step_ms = source.scrape_interval_seconds * 1000
    samples = Samples()
    with api_client(source) as client:
        query = selector_query(NAME_MATCHER, source.selector)
        query_range(client, samples, query, start_ms - step_ms, end_ms, source.scrape_interval_seconds)
    # the grid value at t closes (t − step, t]: 1 ms back puts it in that interval's hour
    return samples, start_ms - step_ms - (start_ms - step_ms) % step_ms, 1


def _increases(
    samples: Samples, source: VllmMetricsTelemetry, data_start: int | None, gap_ms: int, shift_ms: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per sample: its increase over the previous sample of its series, and the hour it belongs to."""
    stats = samples.stats
    frame = samples.frame.join(_series(samples, source), on="series", how="inner")
    as_int = pl.col("value").cast(pl.Int64(), strict=False)
    valid = as_int.is_not_null() & (as_int.cast(VALUE) == pl.col("value")) & (pl.col("value") >= 0)
    bad = frame.filter(~valid).select(
        "file", "line", reason=pl.format("counter value {} is not a non-negative integer", plain_number("value"))
    )
    frame = frame.filter(valid).with_columns(value=as_int)
    unique = frame.unique(["series", "ts_ms"], keep="first", maintain_order=True)
    stats["duplicate_samples"] += frame.height - unique.height
    stats["samples"] += unique.height
    start = data_start if data_start is not None else (unique["ts_ms"].min() or 0)
    previous = pl.col("value").shift(1).over("series", order_by="ts_ms")
    first_ts = pl.col("ts_ms").min().over("series")
    new_series = first_ts > start + gap_ms
    marked = unique.with_columns(previous=previous, new_series=new_series)
    stats["counter_resets"] += marked.filter(pl.col("value") < pl.col("previous")).height
    stats["series_started_in_data"] += marked.filter(pl.col("new_series"))["series"].n_unique()
    increase = (
        pl.when(pl.col("previous").is_null())
        .then(pl.when(pl.col("new_series")).then(pl.col("value")).otherwise(0))
        .when(pl.col("value") >= pl.col("previous"))
        .then(pl.col("value") - pl.col("previous"))
        .otherwise(pl.col("value"))  # reset: the process counted from 0 since
    )
    hour = (pl.col("ts_ms") - shift_ms) // MS_PER_HOUR * MS_PER_HOUR
    out = marked.select("measure", "deployment", "model", "feature", "failed_reason", hour_ms=hour, increase=increase)
    return out, bad.cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _series(samples: Samples, source: VllmMetricsTelemetry) -> pl.DataFrame:
    """Each wanted series' measure and keys, from its labels."""
    failed = set(source.failed_finish_reasons)
    stats = samples.stats
    rows = []
    for sid, labels in enumerate(samples.series):
        measure = MEASURE_OF_METRIC.get(labels.get(NAME_LABEL, ""))
        if measure is None:  # a Prometheus API result without the metric name
            stats["series_unknown_metric"] += 1
            continue
        deployment = deployment_of(labels, source.deployment_labels, source.deployments)
        if deployment is None:
            stats["series_without_deployment"] += 1
        deployment = deployment or UNKNOWN
        feature = (
            labels.get(source.feature_label) if source.feature_label else None
        ) or source.deployment_features.get(deployment)
        if feature is None:
            stats["series_without_feature"] += 1
        model = labels.get("model_name") or UNKNOWN
        rows.append(
            (sid, measure, deployment, model, feature or UNKNOWN_FEATURE, labels.get("finished_reason") in failed)
        )
    return pl.DataFrame(rows, schema=_SERIES_SCHEMA, orient="row")


def _count_covered(increases: pl.DataFrame, stats: Counter[str]) -> None:
    """Increases of deployments that spans already count: stats only, so they can be compared."""
    for measure, total in increases.group_by("measure").agg(pl.col("increase").sum()).iter_rows():
        stats[f"deployments_with_spans:{measure}"] += int(total)


def _rows(increases: pl.DataFrame, source: VllmMetricsTelemetry) -> pl.DataFrame:
    measure, inc = pl.col("measure"), pl.col("increase")
    requests = measure == "requests"
    events = increases.select(
        pl.from_epoch("hour_ms", time_unit="ms").dt.replace_time_zone("UTC").cast(TIMESTAMP).alias("hour"),
        pl.lit(source.name).alias("source"),
        "deployment",
        pl.lit(source.provider).alias("provider"),
        "model",
        "feature",
        pl.lit(source.environment, pl.String()).alias("environment"),
        requests=pl.when(requests).then(inc).otherwise(0),
        succeeded=pl.when(requests & ~pl.col("failed_reason")).then(inc).otherwise(0),
        failed=pl.when(requests & pl.col("failed_reason")).then(inc).otherwise(0),
        input_tokens=pl.when(measure == "input_tokens").then(inc).otherwise(0),
        cached_input_tokens=pl.when(measure == "cached_input_tokens").then(inc).otherwise(0),
        output_tokens=pl.when(measure == "output_tokens").then(inc).otherwise(0),
    )
    if events.is_empty():
        return pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES)
    return aggregate_hourly(events)


def _ms(seconds: float) -> int:
    return int(seconds) * 1000
