"""LiteLLM proxy spend logs (``LiteLLM_SpendLogs`` in its PostgreSQL) → hourly ``inference_usage``.

Schema followed: BerriAI/litellm ``schema.prisma`` (model ``LiteLLM_SpendLogs``) and the SQL Prisma
generates for it (``litellm-proxy-extras/.../migrations``): quoted camel-case identifiers
(``"LiteLLM_SpendLogs"``, ``"startTime"``, ``"endTime"``); ``"startTime"`` is ``TIMESTAMP(3)`` without time
zone holding UTC; ``prompt_tokens``/``completion_tokens`` ``INTEGER``; ``model``, ``custom_llm_provider``,
``api_base``, ``cache_hit`` (the text "True"/"False"), ``status`` ("success"/"failure", newer versions),
``end_user``, ``user`` ``TEXT``; ``request_duration_ms`` ``INTEGER`` (newer versions); ``request_tags``
``JSONB`` array of strings (LiteLLM adds its own, e.g. ``User-Agent: …``); ``metadata`` ``JSONB``
(``SpendLogsMetadata`` in ``litellm/proxy/_types.py``: ``status``, ``spend_logs_metadata`` — the caller's
own key/values —, ``additional_usage_values`` with ``cache_read_input_tokens``,
``cache_creation_input_tokens``, ``prompt_tokens_details.cached_tokens``,
``completion_tokens_details.reasoning_tokens``).

Privacy: ``messages``, ``response`` and ``proxy_server_request`` hold prompt and completion text and are
never selected; nor is ``metadata`` as a whole (it may embed the request): only the JSON paths named
here are extracted, by PostgreSQL, so no prompt text leaves the database.

Reading: one read-only transaction, a server-side cursor over ``"startTime" >= month start AND
"startTime" < next month start`` ordered by ``"startTime"``, fetched ``batch_size`` rows at a time; each
batch yields the hours it completed (bounded memory). Columns a LiteLLM version lacks are read as NULL
and counted (``column_missing:<name>``).

Rules (each counted in stats): ``input_tokens`` = ``prompt_tokens`` (OpenAI usage semantics, which
LiteLLM normalizes to: cached and cache-writing tokens included), ``output_tokens`` = ``completion_tokens``
(reasoning included); cached = ``cache_read_input_tokens`` or ``prompt_tokens_details.cached_tokens``.
*failed* when ``status`` (or ``metadata.status``) is ``failure``; rows without either count as succeeded
(``rows_without_status``: older LiteLLM logged successes only). A LiteLLM cache hit (``cache_hit`` =
True) never reached the provider: it counts as a succeeded request with 0 tokens and 0 GPU time
(``cache_hit_requests``). Feature: the first request tag starting with ``feature_tag_prefix``, else the
``feature_metadata_key`` path, else ``unattributed``; environment likewise (else ``environment``).
*retried*/*accepted* from their metadata paths; *useful* per the feature's versioned rule (see
``connectors.request_logs``). Deployment: the host of ``api_base``, else the provider; provider:
``custom_llm_provider``; model: ``model``, else ``model_group``. ``gpu_seconds`` = request duration for
``self_hosted_providers``. A row with a negative or non-numeric token count is quarantined (file: the
database and table, line: the ``request_id``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import polars as pl
import psycopg
from psycopg import sql

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError, customer_salt
from connectors.request_logs import outcome_columns, summed
from models.config import LiteLLMTelemetry
from models.focus import TIMESTAMP
from models.usage import (
    GPU_SECONDS,
    UNKNOWN_FEATURE,
    USAGE_KEYS,
    USAGE_MEASURES,
    aggregate_hourly,
    hash_customer,
    useful_rules,
)

UNKNOWN = "unknown"
PROMPT_COLUMNS = frozenset({"messages", "response", "proxy_server_request"})  # never selected
REQUIRED = ("request_id", "startTime", "prompt_tokens", "completion_tokens", "model")
OPTIONAL = (
    "endTime",
    "request_duration_ms",
    "status",
    "model_group",
    "custom_llm_provider",
    "api_base",
    "cache_hit",
    "request_tags",
)
USAGE_PATHS = {
    "metadata_status": ["status"],
    "cache_read": ["additional_usage_values", "cache_read_input_tokens"],
    "cached_tokens": ["additional_usage_values", "prompt_tokens_details", "cached_tokens"],
    "cache_creation": ["additional_usage_values", "cache_creation_input_tokens"],
    "reasoning": ["additional_usage_values", "completion_tokens_details", "reasoning_tokens"],
}
_EVENT_SCHEMA: dict[str, pl.DataType] = {
    "hour": TIMESTAMP,
    "deployment": pl.String(),
    "provider": pl.String(),
    "model": pl.String(),
    "feature": pl.String(),
    "environment": pl.String(),
    "customer": pl.String(),
    "failed": pl.Int64(),
    "retried": pl.Int64(),
    "accepted": pl.Int64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cached_input_tokens": pl.Int64(),
    "cache_creation_input_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "gpu_ms": pl.Int64(),
}


class _BadRow(ValueError):
    """A spend log row that can't be counted (goes to the quarantine)."""


@dataclass
class _Batch:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


# --- entry points ----------------------------------------------------------------------------------


def load(source: LiteLLMTelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None) -> LoadResult:
    """The period's spend logs summed per hour (all batches of ``load_batches`` in one)."""
    results = list(load_batches(source, period, useful_output))
    frames = [r.frame for r in results if not r.frame.is_empty()]
    return LoadResult(
        frame=aggregate_hourly(pl.concat(frames)) if frames else pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES),
        quarantine=pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *(r.quarantine for r in results)]),
        files=[f for r in results for f in r.files],
        stats=summed(r.stats for r in results),
    )


def load_batches(
    source: LiteLLMTelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> Iterator[LoadResult]:
    """Stream the month's rows with a server-side cursor; yield the hours each batch completes."""
    url = _database_url(source)
    where = f"{_display(url)} {source.db_schema}.{source.table}"
    rules = useful_rules(useful_output)
    salt = customer_salt(source.name, source.customer_column is not None, source.customer_hash_salt_env,
                         source.store_raw_customer)  # fmt: skip
    pending = pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES)
    try:
        with psycopg.connect(url, connect_timeout=30) as conn:
            conn.read_only = True
            columns = _columns(conn, source, where)
            query, params = spend_logs_query(source, columns, period)
            missing = Counter({f"column_missing:{c}": 1 for c in OPTIONAL if c not in columns})
            with conn.cursor(name="cogs_litellm_spend_logs") as cursor:
                cursor.itersize = source.batch_size
                cursor.execute(query, params)
                names = [d.name for d in cursor.description or []]
                while rows := cursor.fetchmany(source.batch_size):
                    batch = _read_rows(source, salt, where, names, rows)
                    pending, done = _complete_hours(pending, _aggregate(source, batch, rules), rows[-1][1])
                    yield LoadResult(
                        frame=done,
                        quarantine=pl.DataFrame(batch.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
                        stats=dict(batch.stats),
                    )
    except psycopg.Error as exc:
        raise SourceError(source.name, where, f"PostgreSQL error: {str(exc).strip().splitlines()[0]}") from None
    yield LoadResult(frame=pending, files=[where], stats=dict(missing))


def spend_logs_query(
    source: LiteLLMTelemetry, columns: Mapping[str, str], period: BillingPeriod
) -> tuple[sql.Composed, dict[str, Any]]:
    """The SELECT: named columns (NULL when the version lacks them) and JSON paths, never prompt columns."""
    selected: list[sql.Composable] = []
    for name in (*REQUIRED, *OPTIONAL, source.customer_column):
        if name is None:
            continue
        expr = sql.Identifier(name) if name in columns else sql.SQL("NULL")
        selected.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(name)))
    paths = dict(USAGE_PATHS)
    for key, path in (
        ("feature_path", source.feature_metadata_key),
        ("environment_path", source.environment_metadata_key),
        ("retry_path", source.retry_metadata_key),
        ("accepted_path", source.accepted_metadata_key),
    ):
        if path:
            paths[key] = path.split(".")
    params: dict[str, Any] = {}
    metadata = columns.get("metadata")
    if metadata in ("jsonb", "json"):
        typeof = sql.SQL("jsonb_typeof" if metadata == "jsonb" else "json_typeof")
        selected.append(sql.SQL('{}("metadata") AS metadata_type').format(typeof))
        for key, path in paths.items():
            selected.append(
                sql.SQL('"metadata" #>> {}::text[] AS {}').format(sql.Placeholder(key), sql.Identifier(key))
            )
            params[key] = path
    else:
        selected.append(sql.SQL("NULL AS metadata_type"))
        selected += [sql.SQL("NULL AS {}").format(sql.Identifier(key)) for key in paths]
    naive = columns.get("startTime") == "timestamp without time zone"  # Prisma's DateTime: UTC, no zone
    params["start"] = period.start.replace(tzinfo=None) if naive else period.start
    params["end"] = period.end.replace(tzinfo=None) if naive else period.end
    query = sql.SQL(
        'SELECT {} FROM {}.{} WHERE "startTime" >= %(start)s AND "startTime" < %(end)s '
        'ORDER BY "startTime", "request_id"'
    ).format(sql.SQL(", ").join(selected), sql.Identifier(source.db_schema), sql.Identifier(source.table))
    return query, params


# --- database --------------------------------------------------------------------------------------


def _database_url(source: LiteLLMTelemetry) -> str:
    url = os.environ.get(source.url_env, "").strip()
    if not url:
        raise SourceError(
            source.name,
            f"environment variable {source.url_env}",
            "is not set",
            "export it with the postgresql:// URL of LiteLLM's database (never put it in cogs.yaml)",
        )
    return url


def _display(url: str) -> str:
    """``postgresql://host:port/dbname``: the URL without user or password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparseable URL)"
    return f"postgresql://{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _columns(conn: psycopg.Connection[Any], source: LiteLLMTelemetry, where: str) -> dict[str, str]:
    """Column name → data type of the spend logs table (only the columns this role may read)."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (source.db_schema, source.table),
    ).fetchall()
    columns = {name: dtype for name, dtype in rows}
    if not columns:
        raise SourceError(source.name, where, "table not found (or not readable)", "check table and db_schema")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise SourceError(source.name, where, f"missing column(s) {missing}; is this LiteLLM's spend logs table?")
    return columns


# --- rows ------------------------------------------------------------------------------------------


def _read_rows(
    source: LiteLLMTelemetry, salt: bytes | None, where: str, names: list[str], rows: list[tuple[Any, ...]]
) -> _Batch:
    batch = _Batch()
    for values in rows:
        row = dict(zip(names, values, strict=True))
        batch.stats["records_read"] += 1
        try:
            batch.events.append(_event(source, salt, row, batch.stats))
        except _BadRow as exc:
            batch.quarantine.append((where, str(row["request_id"]), str(exc)))
    return batch


def _event(source: LiteLLMTelemetry, salt: bytes | None, row: dict[str, Any], stats: Counter[str]) -> tuple[Any, ...]:
    # values that can be malformed first, so a quarantined row leaves no other trace in the stats
    input_tokens = _count(row, "prompt_tokens")
    output_tokens = _count(row, "completion_tokens")
    cached = _count(row, "cache_read", "cached_tokens")
    creation = _count(row, "cache_creation")
    reasoning = _count(row, "reasoning")
    if row["metadata_type"] not in (None, "object"):
        stats["rows_unreadable_metadata"] += 1
    tags = _tags(row.get("request_tags"), stats)
    provider = _text(row.get("custom_llm_provider")) or UNKNOWN
    feature = _tagged(tags, source.feature_tag_prefix) or _text(row.get("feature_path"))
    if feature is None:
        stats["rows_missing_feature"] += 1
    environment = _tagged(tags, source.environment_tag_prefix) or _text(row.get("environment_path"))
    failed = _status(row, stats) == "failure"
    gpu_ms = _duration_ms(row) if provider in source.self_hosted_providers else 0
    if _text(row.get("cache_hit")) == "True":  # answered from LiteLLM's cache: the provider never saw it
        stats["cache_hit_requests"] += 1
        input_tokens = output_tokens = cached = creation = reasoning = gpu_ms = 0
    customer = _text(row.get(source.customer_column)) if source.customer_column else None
    start = row["startTime"]
    return (
        start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC),
        _host(row.get("api_base")) or provider,
        provider,
        _text(row.get("model")) or _text(row.get("model_group")) or UNKNOWN,
        feature or UNKNOWN_FEATURE,
        environment or source.environment,
        hash_customer(customer, salt) if customer and salt else customer,
        int(failed),
        int(_truthy(row.get("retry_path"))),
        int(_truthy(row.get("accepted_path"))),
        input_tokens,
        output_tokens,
        cached,
        creation,
        reasoning,
        gpu_ms,
    )


def _tags(raw: Any, stats: Counter[str]) -> list[str]:
    if isinstance(raw, str):  # a JSON array stored as a JSON string
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if raw is None:
        return []
    if not isinstance(raw, list):
        stats["rows_unreadable_request_tags"] += 1
        return []
    return [t for t in raw if isinstance(t, str)]


def _tagged(tags: list[str], prefix: str | None) -> str | None:
    if not prefix:
        return None
    return next((t[len(prefix) :].strip() or None for t in tags if t.startswith(prefix)), None)


def _status(row: dict[str, Any], stats: Counter[str]) -> str:
    status = (_text(row.get("status")) or _text(row.get("metadata_status")) or "").lower()
    if not status:
        stats["rows_without_status"] += 1
        return "success"
    if status not in ("success", "failure"):
        stats[f"unknown_status:{status}"] += 1
    return status


def _count(row: dict[str, Any], *keys: str) -> int:
    """The first present of ``keys`` as a non-negative integer (0 when none is present)."""
    for key in keys:
        value = row.get(key)
        if value is None or value == "":
            continue
        try:
            number = int(value) if not isinstance(value, str) else int(float(value))
        except (TypeError, ValueError):
            raise _BadRow(f"{key} is not a number: {str(value)[:40]!r}") from None
        if number < 0 or (isinstance(value, str) and float(value) != number):
            raise _BadRow(f"{key} is not a non-negative integer: {value!r}")
        return number
    return 0


def _duration_ms(row: dict[str, Any]) -> int:
    if row.get("request_duration_ms") is not None:
        return max(0, int(row["request_duration_ms"]))
    if row.get("endTime") is not None:
        return max(0, int((row["endTime"] - row["startTime"]).total_seconds() * 1000))
    return 0


def _truthy(value: Any) -> bool:
    text = (_text(value) or "").lower()
    if text in ("true", "yes"):
        return True
    try:
        return float(text) > 0
    except ValueError:
        return False


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _host(api_base: Any) -> str | None:
    text = _text(api_base)
    if text is None:
        return None
    return urlsplit(text if "://" in text else f"//{text}").hostname or text


# --- aggregation -----------------------------------------------------------------------------------


def _aggregate(source: LiteLLMTelemetry, batch: _Batch, rules: dict[str, tuple[str, str]]) -> pl.DataFrame:
    if not batch.events:
        return pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES)
    events = pl.DataFrame(batch.events, schema=_EVENT_SCHEMA, orient="row").with_columns(
        pl.lit(source.name).alias("source"),
        pl.lit(1, pl.Int64()).alias("requests"),
        (pl.col("gpu_ms").cast(GPU_SECONDS) * pl.lit(Decimal("0.001"), GPU_SECONDS)).alias("gpu_seconds"),
    )
    return aggregate_hourly(events.with_columns(*outcome_columns(rules)).drop("gpu_ms"))


def _complete_hours(
    pending: pl.DataFrame, new: pl.DataFrame, last_start: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows are ordered by start time: hours before the last row's hour are complete and can go."""
    merged = aggregate_hourly(pl.concat([pending, new])) if not new.is_empty() else pending
    cutoff = (last_start.replace(tzinfo=UTC) if last_start.tzinfo is None else last_start.astimezone(UTC)).replace(
        minute=0, second=0, microsecond=0
    )
    hour = pl.col("hour")
    return merged.filter(hour >= cutoff), merged.filter(hour < cutoff)
