"""The ``inference_usage`` schema: hourly inference usage per deployment, model, feature (and customer).

Keys that a source cannot fill stay NULL (``customer`` without a configured customer attribute,
``useful_output_rule`` for sources without outcomes such as GPU metrics); measures it cannot fill are 0.
``aggregate_hourly`` adds both, so a connector only builds the columns it knows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

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
    # HMAC-SHA256 pseudonym of the customer id (see ``hash_customer``); raw only when a source allows it
    "customer": pl.String(),
    # the versioned definition of a useful output the row was counted with, e.g. "accepted@v2"
    "useful_output_rule": pl.String(),
}
USAGE_MEASURES: dict[str, pl.DataType] = {
    "requests": pl.Int64(),
    "succeeded": pl.Int64(),
    "failed": pl.Int64(),
    "retried": pl.Int64(),
    "accepted": pl.Int64(),
    "useful_outputs": pl.Int64(),
    "input_tokens": pl.Int64(),  # all input tokens, cached and cache-writing ones included
    "output_tokens": pl.Int64(),  # all output tokens, reasoning ones included
    "cached_input_tokens": pl.Int64(),  # input tokens read from the prompt cache (part of input_tokens)
    "cache_creation_input_tokens": pl.Int64(),  # input tokens written to the prompt cache (part of input_tokens)
    "reasoning_tokens": pl.Int64(),  # output tokens spent on reasoning (part of output_tokens)
    # GPU time of the row's own requests (self-hosted span durations): a per-feature allocation driver
    "gpu_seconds": GPU_SECONDS,
    # deployment-level GPU time from GPU metrics (DCGM): busy (utilization × held) and held (provisioned);
    # idle = provisioned − busy. Rows carrying them usually have feature = "unattributed".
    "gpu_seconds_busy": GPU_SECONDS,
    "gpu_seconds_provisioned": GPU_SECONDS,
}
USAGE_META: dict[str, pl.DataType] = {
    "billing_period": pl.String(),
    "batch_id": pl.String(),
}
INFERENCE_USAGE_SCHEMA: dict[str, pl.DataType] = USAGE_KEYS | USAGE_MEASURES | USAGE_META

UNKNOWN_FEATURE = "unattributed"
"""Feature value for telemetry that names no feature (kept, never dropped)."""

OPTIONAL_KEYS = ("customer", "useful_output_rule")
"""Keys a connector may leave out: ``aggregate_hourly`` fills them with NULL."""

DEFAULT_USEFUL_OUTPUT_RULE = "succeeded@v1"
"""The rule features without a ``features`` entry are counted with (see ``models.config.FeatureConfig``)."""


USEFUL_MODES = ("succeeded", "accepted")
_VERSIONED_RULE = re.compile(r"^(succeeded|accepted)(?:@v([1-9][0-9]*))?$")


def useful_rules(useful_output: Mapping[str, str] | None) -> dict[str, tuple[str, str]]:
    """Feature → (mode, recorded rule) from ``"succeeded"``/``"accepted"``, optionally ``@vN``."""
    rules: dict[str, tuple[str, str]] = {}
    bad = {}
    for feature, rule in (useful_output or {}).items():
        match = _VERSIONED_RULE.match(rule)
        if match is None:
            bad[feature] = rule
            continue
        rules[feature] = (match[1], f"{match[1]}@v{match[2] or 1}")
    if bad:
        raise ValueError(f"useful_output must map features to one of {USEFUL_MODES} (optionally @vN), got {bad}")
    return rules


def useful_output_rule(rule: str, version: int) -> str:
    """The recorded name of a versioned useful-output definition: ``accepted@v2``."""
    return f"{rule}@v{version}"


def hash_customer(customer: str, salt: bytes) -> str:
    """A stable pseudonym of a customer id: HMAC-SHA256 keyed by the salt, first 128 bits in hex.

    Keyed, so ids can't be recovered by hashing a list of guesses without the salt; the same id and
    salt always give the same pseudonym, so per-customer costs still add up across sources and months.
    """
    return hmac.new(salt, customer.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def aggregate_hourly(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Sum request-level rows into the hourly grain: keys + measures, sorted by the keys.

    Optional keys missing from ``events`` are NULL and missing measures 0. The partition columns
    (``billing_period``, ``batch_id``) are added by the pipeline.
    """
    frame = events.lazy()
    present = frame.collect_schema().names()
    missing_keys = [k for k in OPTIONAL_KEYS if k not in present]
    missing_measures = [m for m in USAGE_MEASURES if m not in present]
    return (
        frame.with_columns(
            *(pl.lit(None, USAGE_KEYS[k]).alias(k) for k in missing_keys),
            *(pl.lit(0).cast(USAGE_MEASURES[m]).alias(m) for m in missing_measures),
        )
        .with_columns(pl.col("hour").dt.truncate("1h"))
        .group_by(list(USAGE_KEYS))
        .agg(pl.col(m).sum().cast(t) for m, t in USAGE_MEASURES.items())
        .select(*USAGE_KEYS, *USAGE_MEASURES)
        .sort(list(USAGE_KEYS), nulls_last=True)
        .collect()
    )
