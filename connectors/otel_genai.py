"""OpenTelemetry GenAI client spans (OTLP JSON lines) → hourly ``inference_usage``.

Formats followed (checked against the documents, not guessed):

- OTLP, "JSON Protobuf Encoding" (opentelemetry-proto ``docs/specification.md``;
  https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): keys are lowerCamelCase,
  ``traceId``/``spanId`` are case-insensitive hex, enums (``status.code``: 0 unset, 1 ok, 2 error)
  are integers, 64-bit integers (``intValue``, ``startTimeUnixNano``) are decimal strings but
  numbers are accepted too, fields left at their default are omitted, unknown fields are ignored.
- Collector ``file`` exporter (opentelemetry-collector-contrib ``exporter/fileexporter``): one
  ``ExportTraceServiceRequest`` JSON object per line. Its own compression is zstd, which the stdlib
  cannot read: such files are refused with a hint; gzip (``.gz``) copies are read.
- Semantic conventions for generative AI client spans (semantic-conventions
  ``docs/gen-ai/gen-ai-spans.md`` and ``docs/registry/attributes/gen-ai.md``, status Development):
  ``gen_ai.operation.name`` (required), ``gen_ai.provider.name`` (replaces deprecated
  ``gen_ai.system``), ``gen_ai.request.model``/``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens`` (includes cached tokens), ``gen_ai.usage.output_tokens``,
  ``gen_ai.usage.cache_read.input_tokens``, deprecated ``gen_ai.usage.prompt_tokens`` /
  ``completion_tokens``, ``error.type``, ``server.address``; resource attribute
  ``deployment.environment.name`` (replaces ``deployment.environment``).
- "TraceState: Probability Sampling" (opentelemetry-specification
  ``specification/trace/tracestate-probability-sampling.md``): the ``ot`` tracestate member's
  ``th`` sub-key is the rejection threshold T, 1–14 hex digits with trailing zeros removed
  (``th:fc`` is T = 0xfc000000000000); sampling probability p = (2^56 − T) / 2^56 and the span's
  adjusted count is 1/p = 2^56 / (2^56 − T). ``th:fc`` → 64, ``th:8`` → 2, ``th:0`` → 1.

Rules (each one counted in ``LoadResult.stats``, nothing dropped silently):

- A span is a GenAI request when it carries ``gen_ai.operation.name`` and the operation is not a
  wrapper or non-model call (``invoke_agent``, ``create_agent``, ``execute_tool``, ``retrieval``),
  whose tokens, when present, repeat their child model calls. Other spans (HTTP, DB, agents) are
  counted in ``non_genai_spans`` / ``genai_non_inference_spans`` and skipped.
- The same ``traceId``+``spanId`` seen again (re-sent batches) counts once: ``duplicate_spans``.
- Spans are kept when ``startTimeUnixNano`` falls in the billing period; ``hour`` is its UTC hour.
- A line that is not JSON, or a span without ids or start time, goes to the quarantine with
  file, line number and reason. Prompt and completion content (``gen_ai.input.messages``,
  ``gen_ai.output.messages``, ``gen_ai.prompt``, ``gen_ai.completion``, event bodies) is never
  read into the output: only the attributes named below are looked at.
- Outcome per span: *failed* when ``status.code`` is 2 or ``error.type`` is set; *succeeded*
  otherwise; *retried* when the retry attribute is > 0 (or true); *accepted* when the accepted
  attribute is true. *Useful*: in ``"succeeded"`` mode (the default) a succeeded first attempt
  (succeeded and not retried); in ``"accepted"`` mode succeeded and accepted.
- A span without token counts still counts as a request, with 0 tokens (``spans_missing_tokens``).
- ``gpu_seconds`` is the span duration for providers in ``self_hosted_providers``, else 0.
- Sampled spans weigh their adjusted count in every measure; unsampled spans weigh 1. Weighted
  sums are rounded half-up to whole requests/tokens (and to the microsecond for GPU-seconds)
  per hourly group and threshold, so they are exact for power-of-two sampling such as ``th:fc``.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError
from models.config import OtelGenAITelemetry
from models.usage import GPU_SECONDS, UNKNOWN_FEATURE, USAGE_KEYS, aggregate_hourly

NS_PER_HOUR = 3_600 * 10**9
MAX_THRESHOLD = 1 << 56  # 2^56: thresholds and randomness are 56-bit values
UNKNOWN = "unknown"
USEFUL_MODES = ("succeeded", "accepted")
READABLE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")

# Operations that wrap model calls (agents) or are not model calls: their token attributes, when
# present, repeat the child chat spans, so counting them would double the usage.
NON_INFERENCE_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool", "retrieval"})

OPERATION = "gen_ai.operation.name"
PROVIDER, PROVIDER_DEPRECATED = "gen_ai.provider.name", "gen_ai.system"
REQUEST_MODEL, RESPONSE_MODEL = "gen_ai.request.model", "gen_ai.response.model"
INPUT_TOKENS, INPUT_TOKENS_DEPRECATED = "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"
OUTPUT_TOKENS, OUTPUT_TOKENS_DEPRECATED = "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
CACHED_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
ERROR_TYPE = "error.type"
ENVIRONMENT_DEPRECATED = "deployment.environment"
STATUS_ERROR = 2
SPAN_ATTRIBUTES = frozenset(
    {
        OPERATION,
        PROVIDER,
        PROVIDER_DEPRECATED,
        REQUEST_MODEL,
        RESPONSE_MODEL,
        INPUT_TOKENS,
        INPUT_TOKENS_DEPRECATED,
        OUTPUT_TOKENS,
        OUTPUT_TOKENS_DEPRECATED,
        CACHED_INPUT_TOKENS,
        ERROR_TYPE,
    }
)

TH_PATTERN = re.compile(r"^[0-9a-f]{1,14}$")

_SPAN_COLUMNS: dict[str, pl.DataType] = {
    "hour_us": pl.Int64(),
    "deployment": pl.String(),
    "provider": pl.String(),
    "model": pl.String(),
    "feature": pl.String(),
    "environment": pl.String(),
    "failed": pl.Int64(),
    "retried": pl.Int64(),
    "accepted": pl.Int64(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cached_input_tokens": pl.Int64(),
    "duration_ns": pl.Int64(),
    "weight_num": pl.Int64(),
    "weight_den": pl.Int64(),
}
_COUNTED = ("requests", "succeeded", "failed", "retried", "accepted", "useful_outputs")
_TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens")


class _BadSpan(ValueError):
    """A span that can't be turned into a request (goes to the quarantine)."""


class _BadValue(ValueError):
    """An attribute value of the wrong type."""


@dataclass
class _Reader:
    """State of one load: the config, the period in nanoseconds, and what was seen so far."""

    source: OtelGenAITelemetry
    start_ns: int
    end_ns: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)
    stats: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)
    span_keys: frozenset[str] = field(init=False)
    resource_keys: frozenset[str] = field(init=False)
    self_hosted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        s = self.source
        configured = {s.deployment_attribute, s.feature_attribute, s.accepted_attribute, s.retry_attribute}
        self.span_keys = frozenset(SPAN_ATTRIBUTES | configured)
        self.resource_keys = frozenset({s.feature_attribute, s.environment_attribute, ENVIRONMENT_DEPRECATED})
        self.self_hosted = frozenset(s.self_hosted_providers)


def load(
    source: OtelGenAITelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> LoadResult:
    """Read the span files under ``source.path`` and sum the period's GenAI requests per hour.

    ``useful_output`` maps a feature to ``"succeeded"`` or ``"accepted"`` (what a useful output
    is for it, from the ``features`` config); features not named use ``"succeeded"``.
    """
    modes = dict(useful_output or {})
    bad = {f: m for f, m in modes.items() if m not in USEFUL_MODES}
    if bad:
        raise ValueError(f"useful_output must map features to one of {USEFUL_MODES}, got {bad}")
    files = _span_files(source)
    reader = _Reader(source, _ns(period.start.timestamp()), _ns(period.end.timestamp()))
    for path in files:
        _read_file(reader, path)
    reader.stats["files"] = len(files)
    reader.stats["genai_spans"] = len(reader.rows)
    return LoadResult(
        frame=_aggregate(reader.rows, source.name, modes),
        quarantine=pl.DataFrame(reader.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=[str(p) for p in files],
        repairs=dict(reader.repairs),
        stats=dict(reader.stats),
    )


# --- files and lines -------------------------------------------------------------------------------


def _span_files(source: OtelGenAITelemetry) -> list[Path]:
    """The span files a folder (searched recursively) or a glob names, in a stable order."""
    root = Path(source.path)
    if root.is_dir():
        candidates = [p for p in root.rglob("*") if p.is_file()]
    elif glob.has_magic(source.path):
        candidates = [Path(p) for p in glob.glob(source.path, recursive=True) if Path(p).is_file()]
    elif root.is_file():
        candidates = [root]
    else:
        raise SourceError(source.name, source.path, "no such file or folder", "set `path` to a folder or a glob")
    zstd = [p for p in candidates if p.name.endswith(".zst")]
    if zstd:
        raise SourceError(
            source.name,
            str(zstd[0]),
            "zstd-compressed span files can't be read",
            "decompress them (zstd -d) or gzip them, or turn off the file exporter's compression",
        )
    files = sorted(p for p in candidates if p.name.endswith(READABLE_SUFFIXES))
    if not files:
        raise SourceError(
            source.name, source.path, f"no span files ({', '.join(READABLE_SUFFIXES)}) found", "check `path`"
        )
    return files


def _read_file(reader: _Reader, path: Path) -> None:
    for line_no, request in _requests(path, reader):
        resource_spans = request.get("resourceSpans") if isinstance(request, dict) else None
        if not isinstance(resource_spans, list):
            reader.quarantine.append(
                (str(path), str(line_no), "expected an ExportTraceServiceRequest object with `resourceSpans`")
            )
            continue
        for resource_span in resource_spans:
            _read_resource_spans(reader, resource_span, path, line_no)


def _requests(path: Path, reader: _Reader) -> Iterator[tuple[int, Any]]:
    """Each line's JSON object; a file holding one pretty-printed object is read whole."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        pass  # several objects: JSON lines, the file exporter's format
    else:
        reader.stats["lines"] += 1
        yield 1, whole
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        reader.stats["lines"] += 1
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            reader.quarantine.append((str(path), str(line_no), f"invalid JSON: {exc.msg} at column {exc.colno}"))


# --- spans -----------------------------------------------------------------------------------------


def _read_resource_spans(reader: _Reader, resource_span: Any, path: Path, line_no: int) -> None:
    if not isinstance(resource_span, dict):
        reader.quarantine.append((str(path), str(line_no), "resourceSpans entry is not an object"))
        return
    resource = _attributes((resource_span.get("resource") or {}).get("attributes"), reader.resource_keys)
    for scope_span in resource_span.get("scopeSpans") or []:
        for span in (scope_span or {}).get("spans") or []:
            reader.stats["spans_read"] += 1
            try:
                row = _span_row(reader, span, resource)
            except _BadSpan as exc:
                span_id = span.get("spanId") if isinstance(span, dict) else None
                reader.quarantine.append((str(path), str(line_no), f"span {span_id or '?'}: {exc}"))
                continue
            if row is not None:
                reader.rows.append(row)


def _span_row(reader: _Reader, span: Any, resource: dict[str, Any]) -> tuple[Any, ...] | None:
    """The request row of one span, or None when the span is skipped (and counted)."""
    if not isinstance(span, dict):
        raise _BadSpan("span is not an object")
    ids = _span_ids(span)
    if ids in reader.seen:
        reader.stats["duplicate_spans"] += 1
        return None
    reader.seen.add(ids)
    attrs = _attributes(span.get("attributes"), reader.span_keys)
    operation = attrs.get(OPERATION)
    if operation is None:
        reader.stats["non_genai_spans"] += 1
        return None
    if _text(operation) in NON_INFERENCE_OPERATIONS:
        reader.stats["genai_non_inference_spans"] += 1
        return None
    start_ns = _nanos(span, "startTimeUnixNano", required=True)
    if not reader.start_ns <= start_ns < reader.end_ns:
        reader.stats["spans_outside_period"] += 1
        return None
    try:
        return _request_row(reader, span, attrs, resource, start_ns)
    except _BadValue as exc:
        raise _BadSpan(str(exc)) from None


def _request_row(
    reader: _Reader, span: dict[str, Any], attrs: dict[str, Any], resource: dict[str, Any], start_ns: int
) -> tuple[Any, ...]:
    s, stats = reader.source, reader.stats
    # values that can be malformed first, so a quarantined span leaves no other trace in the stats
    input_tokens = _first_int(reader, attrs, INPUT_TOKENS, INPUT_TOKENS_DEPRECATED)
    output_tokens = _first_int(reader, attrs, OUTPUT_TOKENS, OUTPUT_TOKENS_DEPRECATED)
    cached_tokens = _first_int(reader, attrs, CACHED_INPUT_TOKENS)
    retry = attrs.get(s.retry_attribute)
    retried = retry is not None and _truthy_count(reader, retry) > 0
    if input_tokens is None and output_tokens is None:
        stats["spans_missing_tokens"] += 1

    provider = _first_text(attrs, PROVIDER, PROVIDER_DEPRECATED)
    model = _first_text(attrs, RESPONSE_MODEL, REQUEST_MODEL)
    feature = _first_text(attrs, s.feature_attribute) or _first_text(resource, s.feature_attribute)
    environment = _first_text(resource, s.environment_attribute, ENVIRONMENT_DEPRECATED)
    for name, value in (("provider", provider), ("model", model), ("environment", environment)):
        if value is None:
            stats[f"spans_missing_{name}"] += 1
    if feature is None:
        stats["spans_missing_feature"] += 1
    provider = provider or UNKNOWN
    deployment = _first_text(attrs, s.deployment_attribute) or provider

    failed = _status_code(span) == STATUS_ERROR or attrs.get(ERROR_TYPE) is not None
    accepted = attrs.get(s.accepted_attribute) is not None and _flag(attrs[s.accepted_attribute])
    duration_ns = _self_hosted_duration(reader, span, provider, start_ns)
    weight_num, weight_den = _adjusted_count(reader, span.get("traceState"))
    return (
        (start_ns - start_ns % NS_PER_HOUR) // 1_000,
        deployment,
        provider,
        model or UNKNOWN,
        feature or UNKNOWN_FEATURE,
        environment or UNKNOWN,
        int(failed),
        int(retried),
        int(accepted),
        input_tokens or 0,
        output_tokens or 0,
        cached_tokens or 0,
        duration_ns,
        weight_num,
        weight_den,
    )


def _span_ids(span: dict[str, Any]) -> tuple[str, str]:
    trace_id, span_id = span.get("traceId"), span.get("spanId")
    if not (isinstance(trace_id, str) and trace_id and isinstance(span_id, str) and span_id):
        raise _BadSpan("missing traceId or spanId")
    return trace_id.lower(), span_id.lower()  # hex is case-insensitive in OTLP/JSON


def _nanos(span: dict[str, Any], name: str, required: bool = False) -> int:
    value = span.get(name)
    if value is None:
        if required:
            raise _BadSpan(f"missing {name}")
        return 0  # proto3 JSON omits fields left at 0
    try:
        return int(value)  # fixed64: a decimal string, or a number
    except (TypeError, ValueError):
        raise _BadSpan(f"{name} is not an integer: {value!r}") from None


def _status_code(span: dict[str, Any]) -> int:
    status = span.get("status")
    code = status.get("code", 0) if isinstance(status, dict) else 0
    if code == "STATUS_CODE_ERROR":  # enum names are forbidden in OTLP/JSON but proto3 JSON allows them
        return STATUS_ERROR
    return code if isinstance(code, int) else 0


def _self_hosted_duration(reader: _Reader, span: dict[str, Any], provider: str, start_ns: int) -> int:
    if provider not in reader.self_hosted:
        return 0
    duration = _nanos(span, "endTimeUnixNano") - start_ns
    if duration < 0:
        reader.stats["self_hosted_spans_without_duration"] += 1
        return 0
    return duration


def _adjusted_count(reader: _Reader, trace_state: Any) -> tuple[int, int]:
    """The span's adjusted count 2^56 / (2^56 − T) as a reduced fraction; (1, 1) when unsampled."""
    th = _threshold_value(trace_state) if isinstance(trace_state, str) and trace_state else None
    if th is None:
        return 1, 1
    if not TH_PATTERN.match(th):
        reader.stats["invalid_sampling_thresholds"] += 1
        return 1, 1
    reader.stats["sampled_spans"] += 1
    threshold = int(th, 16) << (4 * (14 - len(th)))
    num, den = MAX_THRESHOLD, MAX_THRESHOLD - threshold
    g = math.gcd(num, den)
    return num // g, den // g


def _threshold_value(trace_state: str) -> str | None:
    """``th`` of the ``ot`` member of a W3C tracestate such as ``congo=t61,ot=th:fc;rv:...``."""
    for member in trace_state.split(","):
        key, _, value = member.strip().partition("=")
        if key != "ot":
            continue
        for sub in value.split(";"):
            sub_key, _, sub_value = sub.partition(":")
            if sub_key == "th":
                return sub_value
    return None


# --- attribute values (AnyValue) -------------------------------------------------------------------


def _attributes(key_values: Any, wanted: frozenset[str]) -> dict[str, Any]:
    """The AnyValue objects of the wanted keys only: content attributes are never looked at."""
    if not isinstance(key_values, list):
        return {}
    found: dict[str, Any] = {}
    for kv in key_values:
        if isinstance(kv, dict) and kv.get("key") in wanted:
            value = kv.get("value")
            found[kv["key"]] = value if isinstance(value, dict) else {}
    return found


def _scalar(value: dict[str, Any]) -> Any:
    for kind in ("stringValue", "intValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    return None


def _text(value: dict[str, Any]) -> str | None:
    scalar = _scalar(value)
    return None if scalar is None or scalar == "" else str(scalar)


def _first_text(attrs: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        if key in attrs and (text := _text(attrs[key])) is not None:
            return text
    return None


def _first_int(reader: _Reader, attrs: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if key in attrs:
            return _count(reader, key, attrs[key])
    return None


def _count(reader: _Reader, key: str, value: dict[str, Any]) -> int:
    """A non-negative integer: ``intValue`` (string or number); integral doubles and digit strings repaired."""
    if "intValue" in value:
        number = _int_or_none(value["intValue"])
    elif "doubleValue" in value and isinstance(value["doubleValue"], int | float):
        double = float(value["doubleValue"])
        number = int(double) if double.is_integer() else None
        if number is not None:
            reader.repairs["integer_attribute_sent_as_double"] += 1
    elif isinstance(value.get("stringValue"), str) and value["stringValue"].isdigit():
        number = int(value["stringValue"])
        reader.repairs["integer_attribute_sent_as_string"] += 1
    else:
        number = None
    if number is None or number < 0:
        raise _BadValue(f"{key} is not a non-negative integer: {value!r}")
    return number


def _int_or_none(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _truthy_count(reader: _Reader, value: dict[str, Any]) -> int:
    if "boolValue" in value:
        return int(value["boolValue"] is True)
    return _count(reader, "retry attribute", value)


def _flag(value: dict[str, Any]) -> bool:
    if "boolValue" in value:
        return value["boolValue"] is True
    return str(_scalar(value)).lower() in ("true", "1")


# --- aggregation -----------------------------------------------------------------------------------


def _aggregate(rows: list[tuple[Any, ...]], source_name: str, modes: dict[str, str]) -> pl.DataFrame:
    """Sum request rows per hour group and sampling weight, weight them, then sum to the hourly grain."""
    keys = [k for k in USAGE_KEYS if k not in ("hour", "source")]
    spans = pl.DataFrame(rows, schema=_SPAN_COLUMNS, orient="row")
    mode = pl.col("feature").replace_strict(modes, default="succeeded", return_dtype=pl.String())
    succeeded = 1 - pl.col("failed")
    useful = (
        pl.when(mode == "accepted").then(succeeded * pl.col("accepted")).otherwise(succeeded * (1 - pl.col("retried")))
    )
    per_weight = (
        spans.lazy()
        .with_columns(requests=pl.lit(1, pl.Int64()), succeeded=succeeded, useful_outputs=useful)
        .group_by(["hour_us", *keys, "weight_num", "weight_den"])
        .agg(pl.col(m).sum() for m in (*_COUNTED, *_TOKENS, "duration_ns"))
    )
    num, den = pl.col("weight_num").cast(pl.Int128()), pl.col("weight_den").cast(pl.Int128())

    def weighted(column: str, per_unit: int = 1) -> pl.Expr:
        # round(sum × num / (den × per_unit)), half-up, in exact integer arithmetic
        scaled = pl.col(column).cast(pl.Int128()) * num * 2 + den * per_unit
        return (scaled // (den * per_unit * 2)).cast(pl.Int64())

    events = per_weight.select(
        pl.from_epoch("hour_us", time_unit="us").dt.replace_time_zone("UTC").alias("hour"),
        pl.lit(source_name, pl.String()).alias("source"),
        *keys,
        *(weighted(m).alias(m) for m in (*_COUNTED, *_TOKENS)),
        (weighted("duration_ns", per_unit=1_000).cast(GPU_SECONDS) * pl.lit(Decimal("0.000001"), GPU_SECONDS)).alias(
            "gpu_seconds"
        ),
    )
    return aggregate_hourly(events)


def _ns(seconds: float) -> int:
    return int(seconds) * 10**9
