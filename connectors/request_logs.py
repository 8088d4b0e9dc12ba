"""Generic request logs (CSV or Parquet, one row per model request) → hourly ``inference_usage``.

For logs an application writes itself (an API gateway's access log export, a table dumped to Parquet):
``columns`` in cogs.yaml says which column holds what; only ``timestamp`` is required. Formats read:
RFC 4180 CSV with a header row (``.csv``, ``.csv.gz``; any one-character separator) and Apache Parquet
(``.parquet``, typed or string columns). Timestamps: ISO 8601 / RFC 3339 (``2025-03-01T12:00:00Z``,
``…+02:00``, a space instead of ``T``, fractions) with offsets converted to UTC and naive ones read in
``naive_timezone``; or epoch seconds / milliseconds / microseconds.

Rules (each counted in ``LoadResult.stats``):

- Bad rows go to the quarantine with the file, the line (CSV: physical line, the header being line 1,
  for files without line breaks inside quoted fields; Parquet: ``row N``) and the first reason found:
  unreadable or missing timestamp, token count or latency that is not a non-negative integer/number,
  a status in neither ``success_values`` nor ``failure_values`` (numbers: 1xx-3xx succeed, 4xx-5xx fail),
  an accepted/retry flag that is not a boolean or count. Nothing else is dropped.
- Rows whose timestamp is outside the billing period are skipped and counted (``rows_outside_period``).
- Empty key cells take ``defaults``; then feature → ``unattributed`` (``rows_missing_feature``), model
  and provider → ``unknown``, deployment → the provider, environment → NULL. Empty token cells count 0
  (``rows_missing_tokens`` when input and output are both empty); integral decimals such as ``1840.0``
  (pandas writes integer columns with gaps as floats) are read as integers. Without a status column every
  request succeeded.
- Outcome, like the OTel spans: *failed* by status; *retried* when the retry column is > 0 or true;
  *accepted* when the accepted column is true; *useful* per the feature's versioned rule
  (``succeeded``: succeeded and not retried; ``accepted``: succeeded and accepted), recorded in
  ``useful_output_rule`` (``succeeded@v1`` for features without one).
- ``gpu_seconds`` is the latency (``latency_unit``) for providers in ``self_hosted_providers``, else 0.
- ``customer``: HMAC-SHA256 pseudonym with the salt from ``customer_hash_salt_env`` (raw only with
  ``store_raw_customer``). Prompt and completion text is never read: only the mapped columns are.

Streaming: ``load_batches`` yields one result per file (CSV and Parquet are scanned lazily and summed
with polars' streaming engine); ``load`` sums them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError, customer_salt, find_files
from models.config import RequestLogsTelemetry
from models.focus import TIMESTAMP
from models.usage import (
    DEFAULT_USEFUL_OUTPUT_RULE,
    GPU_SECONDS,
    UNKNOWN_FEATURE,
    USAGE_KEYS,
    USAGE_MEASURES,
    aggregate_hourly,
    hash_customer,
    useful_rules,
)

UNKNOWN = "unknown"
TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)
TRUE_VALUES = ("true", "t", "yes", "y", "1")
FALSE_VALUES = ("false", "f", "no", "n", "0", "")
EPOCH_UNITS = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
READABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
MICRO = Decimal("0.000001")


# --- shared with the LiteLLM connector: outcomes and customer pseudonyms ------------------


def outcome_columns(rules: Mapping[str, tuple[str, str]]) -> list[pl.Expr]:
    """``succeeded``, ``useful_outputs`` and ``useful_output_rule`` from ``feature``, ``failed``,
    ``retried`` and ``accepted`` (0/1 integer columns)."""
    feature = pl.col("feature")
    mode = feature.replace_strict({f: m for f, (m, _) in rules.items()}, default="succeeded", return_dtype=pl.String())
    recorded = feature.replace_strict(
        {f: r for f, (_, r) in rules.items()}, default=DEFAULT_USEFUL_OUTPUT_RULE, return_dtype=pl.String()
    )
    succeeded = 1 - pl.col("failed")
    useful = (
        pl.when(mode == "accepted").then(succeeded * pl.col("accepted")).otherwise(succeeded * (1 - pl.col("retried")))
    )
    return [succeeded.alias("succeeded"), useful.alias("useful_outputs"), recorded.alias("useful_output_rule")]


def pseudonyms(column: pl.Expr, salt: bytes | None) -> pl.Expr:
    """Customer ids as HMAC pseudonyms (or raw when there is no salt); empty ids are NULL."""
    ids = column.cast(pl.String()).str.strip_chars().replace("", None)
    if salt is None:
        return ids
    return ids.map_elements(lambda v: hash_customer(v, salt), return_dtype=pl.String())


# --- entry points ----------------------------------------------------------------------------------


def load(
    source: RequestLogsTelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> LoadResult:
    """All files' requests of the period, summed per hour (``load_batches`` in one)."""
    results = list(load_batches(source, period, useful_output))
    frames = [r.frame for r in results if not r.frame.is_empty()]
    return LoadResult(
        frame=aggregate_hourly(pl.concat(frames)) if frames else pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES),
        quarantine=pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *(r.quarantine for r in results)]),
        files=[f for r in results for f in r.files],
        stats=summed(r.stats for r in results),
    )


def summed(stats: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counts in stats:
        total.update(counts)  # update keeps zero counts (``+`` would drop them)
    return dict(total)


def load_batches(
    source: RequestLogsTelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> Iterator[LoadResult]:
    """One result per log file: its hourly rows, quarantine and counts."""
    rules = useful_rules(useful_output)
    salt = customer_salt(source.name, source.columns.customer is not None, source.customer_hash_salt_env,
                         source.store_raw_customer)  # fmt: skip
    for path in log_files(source):
        yield _load_file(source, path, period, rules, salt)


def log_files(source: RequestLogsTelemetry) -> list[Path]:
    files = [p for p in find_files(source.name, source.path) if p.name.endswith(READABLE_SUFFIXES)]
    if not files:
        raise SourceError(source.name, source.path, f"no log files ({', '.join(READABLE_SUFFIXES)}) found")
    return files


# --- one file --------------------------------------------------------------------------------------


def _load_file(
    source: RequestLogsTelemetry,
    path: Path,
    period: BillingPeriod,
    rules: dict[str, tuple[str, str]],
    salt: bytes | None,
) -> LoadResult:
    parquet = path.name.endswith(".parquet")
    raw = (
        pl.scan_parquet(path)
        if parquet
        else pl.scan_csv(path, infer_schema=False, separator=source.csv_separator, empty_string_is_null=False)
    )
    schema = _checked_schema(source, path, raw)
    where = (pl.lit("row ") + pl.col("_row").cast(pl.String())) if parquet else (pl.col("_row") + 1).cast(pl.String())
    parsed = raw.with_row_index("_row", offset=1).select(
        pl.lit(str(path)).alias("file"), where.alias("line"), *_parsed(source, schema, salt)
    )
    reason = pl.coalesce(*_problems(source))
    in_period = pl.col("ts").is_between(period.start, period.end, closed="left")
    try:
        counts = parsed.select(
            rows=pl.len(),
            bad=reason.is_not_null().sum(),
            outside=(reason.is_null() & ~in_period).sum(),
            missing_feature=(reason.is_null() & in_period & pl.col("feature_missing")).sum(),
            missing_tokens=(reason.is_null() & in_period & pl.col("tokens_missing")).sum(),
        ).collect(engine="streaming")
        quarantine = parsed.filter(reason.is_not_null()).select("file", "line", reason=reason).collect()
        rows = _hourly(source, parsed.filter(reason.is_null() & in_period), rules).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise SourceError(source.name, str(path), f"can't be read: {str(exc).splitlines()[0]}") from exc
    stats = counts.row(0, named=True)
    return LoadResult(
        frame=aggregate_hourly(rows) if rows.height else pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES),
        quarantine=quarantine,
        files=[str(path)],
        stats={
            "files": 1,
            "records_read": stats["rows"],
            "rows_quarantined": stats["bad"],
            "rows_outside_period": stats["outside"],
            "rows_missing_feature": stats["missing_feature"],
            "rows_missing_tokens": stats["missing_tokens"],
        },
    )


def _checked_schema(source: RequestLogsTelemetry, path: Path, raw: pl.LazyFrame) -> pl.Schema:
    try:
        schema = raw.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise SourceError(source.name, str(path), f"can't be read: {str(exc).splitlines()[0]}") from exc
    missing = [f"{key}: {col!r}" for key, col in source.columns if col is not None and col not in schema]
    if missing:
        raise SourceError(
            source.name,
            str(path),
            f"mapped column(s) not in the file: {', '.join(missing)}",
            f"the file has {list(schema)[:30]}; fix `columns` in cogs.yaml",
        )
    return schema


def _parsed(source: RequestLogsTelemetry, schema: pl.Schema, salt: bytes | None) -> list[pl.Expr]:
    """Typed columns plus a ``bad_<field>`` flag for each value that can't be read."""
    c = source.columns
    exprs: list[pl.Expr] = [*_timestamp(source, schema)]
    for key in ("feature", "model", "provider", "deployment", "environment"):
        column = getattr(c, key)
        value = _text(column) if column else pl.lit(None, pl.String())
        exprs.append(value.fill_null(pl.lit(source.defaults.get(key), pl.String())).alias(key))
    exprs.append((_text(c.feature).is_null() if c.feature else pl.lit(True)).alias("feature_missing"))
    for key in TOKEN_COLUMNS:
        column = getattr(c, key)
        exprs += (
            _count(column, schema, key)
            if column
            else [pl.lit(0, pl.Int64()).alias(key), pl.lit(False).alias(f"bad_{key}")]
        )
    both = [c.input_tokens, c.output_tokens]
    exprs.append(pl.all_horizontal([_text(x).is_null() for x in both if x] or [pl.lit(True)]).alias("tokens_missing"))
    exprs += _status(source, schema)
    exprs += _flag(c.accepted, schema, "accepted") + _flag(c.retry, schema, "retried")
    exprs += _latency(source, schema)
    exprs.append((pseudonyms(pl.col(c.customer), salt) if c.customer else pl.lit(None, pl.String())).alias("customer"))
    return exprs


def _text(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String()).str.strip_chars().replace("", None)


def _timestamp(source: RequestLogsTelemetry, schema: pl.Schema) -> list[pl.Expr]:
    column = source.columns.timestamp
    dtype = schema[column]
    raw = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        ts = raw if dtype.time_zone else _localize(raw, source.naive_timezone)
    elif isinstance(dtype, pl.Date):
        ts = _localize(raw.cast(pl.Datetime("us")), source.naive_timezone)
    elif source.timestamp_format in EPOCH_UNITS:
        number = raw.cast(pl.String()).str.strip_chars().cast(pl.Float64(), strict=False)
        micros = (number * EPOCH_UNITS[source.timestamp_format]).round(0).cast(pl.Int64(), strict=False)
        ts = pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")
    else:
        text = raw.cast(pl.String()).str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
        aware = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_unit="us")
        naive = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
        ts = pl.coalesce(aware.dt.convert_time_zone("UTC"), _localize(naive, source.naive_timezone))
    ts = ts.dt.convert_time_zone("UTC").cast(TIMESTAMP)
    return [ts.alias("ts"), raw.cast(pl.String()).alias("ts_raw")]


def _localize(naive: pl.Expr, zone: str) -> pl.Expr:
    # a wall-clock time that occurs twice (DST fall-back) is read as the earlier; one that never occurs is unreadable
    return naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")


def _count(column: str, schema: pl.Schema, key: str) -> list[pl.Expr]:
    """A non-negative integer column (text, integer or integral float); empty cells are 0."""
    dtype = schema[column]
    raw = pl.col(column)
    if dtype.is_integer():
        value, present = raw.cast(pl.Int64()), raw.is_not_null()
    elif dtype.is_float():
        value, present = pl.when(raw == raw.round(0)).then(raw.cast(pl.Int64(), strict=False)), raw.is_not_null()
    else:
        text = _text(column)
        # "1840.0": integers a float column wrote (pandas writes int columns with gaps as floats)
        number = text.cast(pl.Float64(), strict=False)
        integral = pl.when(number == number.round(0)).then(number.cast(pl.Int64(), strict=False))
        value, present = pl.coalesce(text.str.to_integer(strict=False), integral), text.is_not_null()
    bad = present & (value.is_null() | (value < 0))
    return [value.fill_null(0).alias(key), bad.fill_null(False).alias(f"bad_{key}")]


def _status(source: RequestLogsTelemetry, schema: pl.Schema) -> list[pl.Expr]:
    """``failed`` (0/1) and, for rows whose status is neither a success nor a failure, why."""
    column = source.columns.status
    if column is None:
        return [pl.lit(0, pl.Int64()).alias("failed"), pl.lit(None, pl.String()).alias("status_problem")]
    text = _text(column).str.to_lowercase()
    code = text.str.to_integer(strict=False)
    ok = (text.is_in([v.lower() for v in source.success_values]) | code.is_between(100, 399)).fill_null(False)
    failed = (text.is_in([v.lower() for v in source.failure_values]) | code.is_between(400, 599)).fill_null(False)
    problem = (
        pl.when(text.is_null())
        .then(pl.lit("empty status"))
        .when(~ok & ~failed)
        .then(pl.format("unknown status {}; add it to success_values or failure_values", _text(column)))
    )
    return [pl.when(failed).then(1).otherwise(0).cast(pl.Int64()).alias("failed"), problem.alias("status_problem")]


def _flag(column: str | None, schema: pl.Schema, key: str) -> list[pl.Expr]:
    """A yes/no column: booleans, true/false/yes/no/1/0 text, or a count (retry attempt: > 0 is yes)."""
    if column is None:
        return [pl.lit(0, pl.Int64()).alias(key), pl.lit(False).alias(f"bad_{key}")]
    if schema[column] == pl.Boolean():
        return [pl.col(column).fill_null(False).cast(pl.Int64()).alias(key), pl.lit(False).alias(f"bad_{key}")]
    text = pl.col(column).cast(pl.String()).str.strip_chars().str.to_lowercase().fill_null("")
    count = text.str.to_integer(strict=False)
    yes = text.is_in(TRUE_VALUES) | (count > 0)
    no = text.is_in(FALSE_VALUES) | (count == 0)
    return [
        pl.when(yes).then(1).otherwise(0).cast(pl.Int64()).alias(key),
        (~yes.fill_null(False) & ~no.fill_null(False)).alias(f"bad_{key}"),
    ]


def _latency(source: RequestLogsTelemetry, schema: pl.Schema) -> list[pl.Expr]:
    column = source.columns.latency
    if column is None:
        return [pl.lit(0, pl.Int64()).alias("latency_us"), pl.lit(False).alias("bad_latency")]
    number = pl.col(column).cast(pl.String()).str.strip_chars().replace("", None).cast(pl.Float64(), strict=False)
    micros = (number * (1_000 if source.latency_unit == "ms" else 1_000_000)).round(0).cast(pl.Int64(), strict=False)
    present = pl.col(column).cast(pl.String()).str.strip_chars().replace("", None).is_not_null()
    bad = (present & micros.is_null()) | (micros < 0)
    return [micros.fill_null(0).alias("latency_us"), bad.fill_null(False).alias("bad_latency")]


def _problems(source: RequestLogsTelemetry) -> list[pl.Expr]:
    """Reasons a row can't be counted, in the order they are reported (the first one wins)."""
    c = source.columns
    fmt = {
        "iso8601": "an ISO 8601 timestamp",
        "epoch_s": "a timestamp in epoch seconds",
        "epoch_ms": "a timestamp in epoch milliseconds",
        "epoch_us": "a timestamp in epoch microseconds",
    }
    reasons = [
        pl.when(pl.col("ts").is_null()).then(
            pl.format(
                f"{c.timestamp}: {{}} is not {fmt[source.timestamp_format]}", pl.col("ts_raw").fill_null("(empty)")
            )
        )
    ]
    for key in TOKEN_COLUMNS:
        if getattr(c, key):
            reasons.append(pl.when(pl.col(f"bad_{key}")).then(pl.lit(f"{getattr(c, key)}: not a non-negative integer")))
    if c.status:
        reasons.append(
            pl.when(pl.col("status_problem").is_not_null()).then(pl.lit(f"{c.status}: ") + pl.col("status_problem"))
        )
    for key, column in (("accepted", c.accepted), ("retried", c.retry)):
        if column:
            reasons.append(pl.when(pl.col(f"bad_{key}")).then(pl.lit(f"{column}: not a boolean or a count")))
    if c.latency:
        reasons.append(pl.when(pl.col("bad_latency")).then(pl.lit(f"{c.latency}: not a non-negative number")))
    return reasons


def _hourly(source: RequestLogsTelemetry, rows: pl.LazyFrame, rules: dict[str, tuple[str, str]]) -> pl.LazyFrame:
    """Good rows → one row per hour and key, with the outcome and GPU measures."""
    self_hosted = pl.col("provider").is_in(source.self_hosted_providers)
    events = rows.with_columns(
        hour=pl.col("ts").dt.truncate("1h"),
        source=pl.lit(source.name),
        feature=pl.col("feature").fill_null(UNKNOWN_FEATURE),
        model=pl.col("model").fill_null(UNKNOWN),
        provider=pl.col("provider").fill_null(UNKNOWN),
        requests=pl.lit(1, pl.Int64()),
        gpu_us=pl.when(self_hosted).then(pl.col("latency_us")).otherwise(0),
    ).with_columns(deployment=pl.col("deployment").fill_null(pl.col("provider")))
    events = events.with_columns(*outcome_columns(rules))
    keys = list(USAGE_KEYS)
    sums = ("requests", "succeeded", "failed", "retried", "accepted", "useful_outputs", *TOKEN_COLUMNS, "gpu_us")
    return (
        events.group_by(keys)
        .agg(pl.col(m).sum() for m in sums)
        .with_columns(gpu_seconds=pl.col("gpu_us").cast(GPU_SECONDS) * pl.lit(MICRO, GPU_SECONDS))
        .drop("gpu_us")
    )
