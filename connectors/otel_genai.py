"""OpenTelemetry GenAI client spans (OTLP JSON lines) → hourly ``inference_usage``.

Formats followed (checked against the documents, not guessed):

- OTLP, "JSON Protobuf Encoding" (opentelemetry-proto ``docs/specification.md``;
  https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): keys are lowerCamelCase,
  ``traceId``/``spanId`` are case-insensitive hex, enums (``status.code``: 0 unset, 1 ok, 2 error)
  are integers, 64-bit integers (``intValue``, ``startTimeUnixNano``) are decimal strings but
  numbers are accepted too, fields left at their default are omitted, unknown fields are ignored.
- Collector ``file`` exporter (opentelemetry-collector-contrib ``exporter/fileexporter``): one
  ``ExportTraceServiceRequest`` JSON object per line. Its own compression is zstd, which the stdlib
  cannot read: such files are refused with a hint; gzip (``.gz``) copies are read. ``cogs collect``
  (``pipelines/collector.py``) writes the same lines under ``date=YYYY-MM-DD/hour=HH/`` folders named
  after the hour it received them, which gives each span an export window (see the clock-skew rule).
- Semantic conventions for generative AI client spans (semantic-conventions ``docs/gen-ai/gen-ai-spans.md``
  and ``docs/registry/attributes/gen-ai.md``, now in ``semantic-conventions-genai``; status Development):
  ``gen_ai.operation.name`` (required), ``gen_ai.provider.name`` (replaces deprecated ``gen_ai.system``),
  ``gen_ai.request.model``/``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` (includes cached and
  cache-creation tokens), ``gen_ai.usage.output_tokens`` (includes reasoning tokens),
  ``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``,
  ``gen_ai.usage.reasoning.output_tokens``; deprecated ``gen_ai.usage.prompt_tokens`` /
  ``completion_tokens``; the flat spellings some instrumentations (OpenLLMetry) emit,
  ``gen_ai.usage.cache_read_input_tokens`` / ``cache_creation_input_tokens`` / ``reasoning_tokens``;
  ``error.type``, ``server.address``; resource attribute ``deployment.environment.name`` (replaces
  ``deployment.environment``); the ``gen_ai.evaluation.result`` event (``gen_ai.evaluation.name``,
  ``gen_ai.evaluation.score.label``) for user feedback.
- "TraceState: Probability Sampling" (opentelemetry-specification
  ``specification/trace/tracestate-probability-sampling.md``): the ``ot`` tracestate member's
  ``th`` sub-key is the rejection threshold T, 1–14 hex digits with trailing zeros removed
  (``th:fc`` is T = 0xfc000000000000); sampling probability p = (2^56 − T) / 2^56 and the span's
  adjusted count is 1/p = 2^56 / (2^56 − T). ``th:fc`` → 64, ``th:8`` → 2, ``th:0`` → 1.

Rules (each one counted in ``LoadResult.stats``; nothing is dropped silently):

- A span is a GenAI request when it carries ``gen_ai.operation.name`` and the operation is not a
  wrapper or non-model call (``invoke_agent``, ``create_agent``, ``invoke_workflow``, ``execute_tool``,
  ``retrieval``), whose tokens, when present, repeat their child model calls. Other spans are counted in
  ``non_genai_spans`` / ``genai_non_inference_spans`` and skipped. An operation name not in the
  conventions counts as a request and in ``spans_unknown_operation``.
- Feature, environment, customer and deployment come from the configured attributes, looked up on the
  span first and then on its resource.
- Duplicates: the same ``traceId``+``spanId`` seen again (a re-sent batch, or the same file twice) counts
  once, in ``duplicate_spans``, across files and batches. The key kept per span is a 64-bit fingerprint of
  the ids, bucketed by the hour the span claims to start in (a re-sent copy claims the same start): 8 bytes
  per distinct span, so memory stays ~100 times below the size of the input. Two different spans of one
  hour would have to collide on 64 bits (odds below 1e-7 at a million spans an hour).
- Clock skew: a span whose end is before its start (or that has no end) is counted with no duration
  (``spans_end_before_start``). A span read from a ``date=…/hour=…`` partition that starts more than
  ``max_clock_skew_seconds`` outside that hour (a client clock that is off) is counted at the start of the
  hour it was received in (``clock_skewed_spans``); without partitions there is no export window to check.
- Spans are kept when their (possibly corrected) start falls in the billing period (else
  ``spans_outside_period``); ``hour`` is its UTC hour. Partitions that can't hold such spans are not read
  (``files_outside_period``).
- A line that is not JSON, or a span without ids or a readable start time or with a malformed token
  count, goes to the quarantine with file, line number and reason. Prompt and completion content
  (``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``,
  ``gen_ai.prompt``, ``gen_ai.completion``, event bodies) is never read into the output: only the
  attributes named here are looked at.
- Unknown attributes: a ``gen_ai.usage.*`` attribute this connector does not know (e.g.
  ``gen_ai.usage.total_tokens``) is counted per name in ``unknown_attribute:<name>`` (per span read), so a
  new kind of billable token shows up instead of vanishing; its value is not used. Per-modality
  breakdowns (``gen_ai.usage.{text,image,audio,video}.{input,output}_tokens``) are parts of the totals.
  Attributes outside ``gen_ai.usage.*`` that are not configured are ignored.
- A span without token counts (neither input nor output) still counts as a request, with 0 tokens
  (``spans_missing_tokens``); failures usually have none.
- Outcome: *failed* when ``status.code`` is 2 or ``error.type`` is set; *succeeded* otherwise;
  *retried* when the retry attribute is > 0 (or true); *accepted* when the accepted attribute is true or
  the latest configured feedback event (optionally only those whose ``gen_ai.evaluation.name`` is
  ``feedback_name``) has a verdict in ``feedback_accepted_values``. *Useful* per the feature's versioned
  rule (``features.<name>.useful_output`` @ ``useful_output_version``, recorded in ``useful_output_rule``):
  ``succeeded`` = a succeeded first attempt (succeeded and not retried); ``accepted`` = succeeded and
  accepted. Features without a rule use ``succeeded@v1``. Failures and retries stay in their columns.
- Customer: when ``customer_attribute`` is set, its value is stored as ``hash_customer(id, salt)``
  (HMAC-SHA256) with the salt read from the environment variable ``customer_hash_salt_env``, or raw only
  when ``store_raw_customer`` is true; spans without it have a NULL customer (``spans_missing_customer``).
- ``gpu_seconds`` is the span duration for providers in ``self_hosted_providers``, else 0.
- Sampled spans weigh their adjusted count in every measure; unsampled spans weigh 1. Weighted
  sums are rounded half-up to whole requests/tokens (and to the microsecond for GPU-seconds)
  per hourly group and threshold, so they are exact for power-of-two sampling such as ``th:fc``.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from connectors.base import QUARANTINE_SCHEMA, BillingPeriod, LoadResult, SourceError, customer_salt, find_files
from models.config import OtelGenAITelemetry
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

try:  # orjson parses OTLP lines ~3x faster; the stdlib parser is the fallback
    import orjson

    _fast_loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = json.loads

NS = 10**9
NS_PER_HOUR = 3_600 * NS
MAX_THRESHOLD = 1 << 56  # 2^56: thresholds and randomness are 56-bit values
UNKNOWN = "unknown"
READABLE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
BATCH_SPANS = 100_000  # request rows parsed before they are deduplicated and summed
PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})[/\\]hour=(\d{2})(?:[/\\]|$)")

# Operations that wrap model calls (agents, workflows) or are not model calls: their token attributes,
# when present, repeat the child chat spans, so counting them would double the usage.
NON_INFERENCE_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow", "execute_tool", "retrieval"})
INFERENCE_OPERATIONS = frozenset({"chat", "generate_content", "text_completion", "embeddings"})

OPERATION = "gen_ai.operation.name"
PROVIDER, PROVIDER_DEPRECATED = "gen_ai.provider.name", "gen_ai.system"
REQUEST_MODEL, RESPONSE_MODEL = "gen_ai.request.model", "gen_ai.response.model"
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHED_INPUT_TOKENS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_CREATION_TOKENS = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
REASONING_TOKENS = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
ERROR_TYPE = "error.type"
ENVIRONMENT_DEPRECATED = "deployment.environment"
EVALUATION_NAME = "gen_ai.evaluation.name"
STATUS_ERROR = 2
USAGE_PREFIX = "gen_ai.usage."
MODALITY_TOKENS = frozenset(
    f"{USAGE_PREFIX}{modality}.{side}_tokens"
    for modality in ("text", "image", "audio", "video")
    for side in ("input", "output")
)
TOKEN_KINDS = (INPUT_TOKENS, OUTPUT_TOKENS, CACHED_INPUT_TOKENS, CACHE_CREATION_TOKENS, REASONING_TOKENS)
# token attribute → (which count, preference: the current name before its older spellings)
TOKEN_SLOTS = {key: (slot, rank) for slot, keys in enumerate(TOKEN_KINDS) for rank, key in enumerate(keys)}
SPAN_ATTRIBUTES = frozenset(
    {
        OPERATION,
        PROVIDER,
        PROVIDER_DEPRECATED,
        REQUEST_MODEL,
        RESPONSE_MODEL,
        ERROR_TYPE,
        ENVIRONMENT_DEPRECATED,
        *INPUT_TOKENS,
        *OUTPUT_TOKENS,
        *CACHED_INPUT_TOKENS,
        *CACHE_CREATION_TOKENS,
        *REASONING_TOKENS,
    }
)
TH_PATTERN = re.compile(r"^[0-9a-f]{1,14}$")

# One pending request row: fingerprint, dedup bucket, group id, flags, then the summed measures.
FP, BUCKET, GROUP, FLAGS = range(4)
MEASURES = (
    "requests",
    "failed",
    "retried",
    "accepted",
    "useful_outputs",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
    "duration_ns",
)
WIDTH = 4 + len(MEASURES)
GROUP_COLUMNS: dict[str, pl.DataType] = {
    "hour_us": pl.Int64(),
    "deployment": pl.String(),
    "provider": pl.String(),
    "model": pl.String(),
    "feature": pl.String(),
    "environment": pl.String(),
    "customer": pl.String(),
    "useful_output_rule": pl.String(),
    "weight_num": pl.Int64(),
    "weight_den": pl.Int64(),
}

# Per-span conditions, counted once per distinct span after duplicates are removed.
FLAG_STATS = (
    "spans_missing_tokens",
    "spans_missing_provider",
    "spans_missing_model",
    "spans_missing_feature",
    "spans_missing_environment",
    "spans_missing_customer",
    "spans_unknown_operation",
    "spans_end_before_start",
    "clock_skewed_spans",
    "sampled_spans",
    "invalid_sampling_thresholds",
)
FLAG = {name: 1 << i for i, name in enumerate(FLAG_STATS)}


class _BadSpan(ValueError):
    """A span that can't be turned into a request (goes to the quarantine)."""


@dataclass(frozen=True)
class _Window:
    """The hour a partition's spans were received in, in nanoseconds."""

    start_ns: int
    end_ns: int


@dataclass
class _Reader:
    """State of one load: config, period, the aggregate so far, and the duplicate-detection keys."""

    source: OtelGenAITelemetry
    start_ns: int
    end_ns: int
    rules: dict[str, tuple[str, str]]  # feature → (mode, recorded rule)
    salt: bytes | None
    groups: dict[tuple[Any, ...], int] = field(default_factory=dict)
    sums: np.ndarray = field(default_factory=lambda: np.zeros((64, len(MEASURES)), np.int64))
    pending: array = field(default_factory=lambda: array("q"))
    seen: dict[int, np.ndarray] = field(default_factory=dict)  # start hour → sorted fingerprints
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    repairs: Counter[str] = field(default_factory=Counter)
    weights: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # tracestate → (num, den, flags)
    customers: dict[str, str] = field(default_factory=dict)  # raw id → stored value (bounded cache)
    span_keys: frozenset[str] = field(init=False)
    resource_keys: frozenset[str] = field(init=False)
    self_hosted: frozenset[str] = field(init=False)
    accepted_values: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        s = self.source
        configured = {s.deployment_attribute, s.feature_attribute, s.environment_attribute}
        configured |= {s.accepted_attribute, s.retry_attribute}
        if s.customer_attribute:
            configured.add(s.customer_attribute)
        self.span_keys = frozenset(SPAN_ATTRIBUTES | configured)
        self.resource_keys = frozenset(configured | {ENVIRONMENT_DEPRECATED})
        self.self_hosted = frozenset(s.self_hosted_providers)
        self.accepted_values = frozenset(v.lower() for v in s.feedback_accepted_values)


# --- entry points ----------------------------------------------------------------------------------


def load(
    source: OtelGenAITelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> LoadResult:
    """Read the span files under ``source.path`` and sum the period's GenAI requests per hour.

    ``useful_output`` maps a feature to its rule, ``"succeeded"`` or ``"accepted"``, optionally
    versioned (``"accepted@v2"``; a bare rule is version 1). All batches of ``load_batches`` in one.
    """
    results = list(load_batches(source, period, useful_output))
    return LoadResult(
        frame=results[-1].frame,
        quarantine=pl.concat([r.quarantine for r in results]),
        files=[f for r in results for f in r.files],
        repairs=dict(sum((Counter(r.repairs) for r in results), Counter())),
        stats=dict(sum((Counter(r.stats) for r in results), Counter())),
    )


def load_batches(
    source: OtelGenAITelemetry, period: BillingPeriod, useful_output: Mapping[str, str] | None = None
) -> Iterator[LoadResult]:
    """Stream the span files: one result per file (quarantine, stats; no rows), then the hourly rows.

    Files are read line by line and summed into hourly groups as they go, so memory holds the groups
    and the duplicate-detection keys (8 bytes per distinct span), never the spans.
    """
    reader = _Reader(
        source,
        int(period.start.timestamp()) * NS,
        int(period.end.timestamp()) * NS,
        useful_rules(useful_output),
        _salt(source),
    )
    files = _span_files(source)
    for path in files:
        window = _window(path)
        if window is not None and not _window_overlaps(reader, window):
            reader.stats["files_outside_period"] += 1
            continue
        _read_file(reader, path, window)
        _flush(reader)
        yield _file_result(reader, path)
    yield LoadResult(frame=_aggregate(reader), stats=dict(reader.stats + Counter(files=len(files))))


def _file_result(reader: _Reader, path: Path) -> LoadResult:
    """What one file added to the quarantine and the counters; the reader's counters start over."""
    result = LoadResult(
        frame=pl.DataFrame(schema=USAGE_KEYS | USAGE_MEASURES),
        quarantine=pl.DataFrame(reader.quarantine, schema=QUARANTINE_SCHEMA, orient="row"),
        files=[str(path)],
        repairs=dict(reader.repairs),
        stats=dict(reader.stats),
    )
    reader.quarantine, reader.repairs, reader.stats = [], Counter(), Counter()
    return result


def _salt(source: OtelGenAITelemetry) -> bytes | None:
    return customer_salt(
        source.name, source.customer_attribute is not None, source.customer_hash_salt_env, source.store_raw_customer
    )


# --- files and lines -------------------------------------------------------------------------------


def _span_files(source: OtelGenAITelemetry) -> list[Path]:
    """The span files a folder (searched recursively) or a glob names, in a stable order."""
    candidates = find_files(source.name, source.path)
    zstd = [p for p in candidates if p.name.endswith(".zst")]
    if zstd:
        raise SourceError(
            source.name,
            str(zstd[0]),
            "zstd-compressed span files can't be read",
            "decompress them (zstd -d) or gzip them, or turn off the file exporter's compression",
        )
    files = [p for p in candidates if p.name.endswith(READABLE_SUFFIXES) and not p.name.startswith(".")]
    if not files:
        raise SourceError(
            source.name, source.path, f"no span files ({', '.join(READABLE_SUFFIXES)}) found", "check `path`"
        )
    return files


def _window(path: Path) -> _Window | None:
    """The receive hour of a ``date=YYYY-MM-DD/hour=HH`` partition (``cogs collect``'s layout)."""
    match = PARTITION.search(path.as_posix())
    if match is None:
        return None
    day = datetime.strptime(match[1], "%Y-%m-%d").replace(tzinfo=UTC)
    start = (int(day.timestamp()) + int(match[2]) * 3_600) * NS
    return _Window(start, start + NS_PER_HOUR)


def _window_overlaps(reader: _Reader, window: _Window) -> bool:
    """Whether a partition can hold spans counted in the period (kept starts lie within the skew)."""
    skew = reader.source.max_clock_skew_seconds * NS
    return window.start_ns - skew < reader.end_ns and window.end_ns + skew > reader.start_ns


def _read_file(reader: _Reader, path: Path, window: _Window | None) -> None:
    for line_no, request in _requests(path, reader):
        resource_spans = request.get("resourceSpans") if isinstance(request, dict) else None
        if not isinstance(resource_spans, list):
            reader.quarantine.append(
                (str(path), str(line_no), "expected an ExportTraceServiceRequest object with `resourceSpans`")
            )
            continue
        for resource_span in resource_spans:
            _read_resource_spans(reader, resource_span, path, line_no, window)
        if len(reader.pending) >= BATCH_SPANS * WIDTH:
            _flush(reader)


def _requests(path: Path, reader: _Reader) -> Iterator[tuple[int, Any]]:
    """Each line's JSON object, streamed; a ``.json`` file holding one pretty-printed object is read whole."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        if path.name.endswith((".json", ".json.gz")):
            text = fh.read()
            try:
                whole = _fast_loads(text)
            except ValueError:
                lines: Any = text.splitlines()  # several objects: JSON lines after all
            else:
                reader.stats["lines"] += 1
                yield 1, whole
                return
        else:
            lines = fh
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            reader.stats["lines"] += 1
            try:
                yield line_no, _loads(line)
            except json.JSONDecodeError as exc:
                reader.quarantine.append((str(path), str(line_no), f"invalid JSON: {exc.msg} at column {exc.colno}"))


def _loads(line: bytes) -> Any:
    try:
        return _fast_loads(line)
    except ValueError:
        return json.loads(line)  # the stdlib's message names the problem and column (or it parses after all)


# --- spans -----------------------------------------------------------------------------------------


def _read_resource_spans(reader: _Reader, resource_span: Any, path: Path, line_no: int, window: _Window | None) -> None:
    if not isinstance(resource_span, dict):
        reader.quarantine.append((str(path), str(line_no), "resourceSpans entry is not an object"))
        return
    resource_attrs = (resource_span.get("resource") or {}).get("attributes")
    found = _attributes(reader, resource_attrs, reader.resource_keys, count_unknown=False)
    resource = {key: _text(found[key]) for key in reader.resource_keys if key in found}  # once per resource
    for scope_span in resource_span.get("scopeSpans") or []:
        for span in (scope_span or {}).get("spans") or []:
            reader.stats["spans_read"] += 1
            try:
                _read_span(reader, span, resource, window)
            except _BadSpan as exc:
                span_id = span.get("spanId") if isinstance(span, dict) else None
                reader.quarantine.append((str(path), str(line_no), f"span {span_id or '?'}: {exc}"))


def _read_span(reader: _Reader, span: Any, resource: dict[str, str | None], window: _Window | None) -> None:
    """Queue the request row of one span, or count why it is skipped."""
    if not isinstance(span, dict):
        raise _BadSpan("span is not an object")
    attrs = _attributes(reader, span.get("attributes"), reader.span_keys, count_unknown=True)
    operation = _text(attrs[OPERATION]) if OPERATION in attrs else None
    if operation is None:
        reader.stats["non_genai_spans"] += 1
        return
    if operation in NON_INFERENCE_OPERATIONS:
        reader.stats["genai_non_inference_spans"] += 1
        return
    fingerprint = _fingerprint(span)
    claimed_ns = _nanos(span, "startTimeUnixNano", required=True)
    start_ns, flags = _corrected_start(reader, claimed_ns, window)
    if not reader.start_ns <= start_ns < reader.end_ns:
        reader.stats["spans_outside_period"] += 1
        return
    if operation not in INFERENCE_OPERATIONS:
        flags |= FLAG["spans_unknown_operation"]
    group, measures, flags = _request(reader, span, attrs, resource, start_ns, claimed_ns, flags)
    reader.pending.extend((fingerprint, claimed_ns // NS_PER_HOUR, group, flags, *measures))


def _request(
    reader: _Reader,
    span: dict[str, Any],
    attrs: dict[str, Any],
    resource: dict[str, str | None],
    start_ns: int,
    claimed_ns: int,
    flags: int,
) -> tuple[int, tuple[int, ...], int]:
    """The span's group id, its measures and its flags."""
    s = reader.source
    # values that can be malformed first, so a quarantined span leaves no other trace
    tokens = _tokens(reader, attrs)
    retry = attrs.get(s.retry_attribute)
    retried = retry is not None and _truthy_count(reader, retry) > 0
    if tokens[0] is None and tokens[1] is None:
        flags |= FLAG["spans_missing_tokens"]

    provider = _first_text(attrs, PROVIDER, PROVIDER_DEPRECATED)
    model = _first_text(attrs, RESPONSE_MODEL, REQUEST_MODEL)
    feature = _lookup(attrs, resource, s.feature_attribute)
    environment = _lookup(attrs, resource, s.environment_attribute) or _lookup(attrs, resource, ENVIRONMENT_DEPRECATED)
    customer = _customer(reader, attrs, resource)
    for name, value in (("provider", provider), ("model", model), ("feature", feature), ("environment", environment)):
        if value is None:
            flags |= FLAG[f"spans_missing_{name}"]
    if s.customer_attribute and customer is None:
        flags |= FLAG["spans_missing_customer"]
    provider = provider or UNKNOWN
    feature = feature or UNKNOWN_FEATURE
    deployment = _lookup(attrs, resource, s.deployment_attribute) or provider

    failed = _status_code(span) == STATUS_ERROR or attrs.get(ERROR_TYPE) is not None
    accepted = _accepted(reader, span, attrs)
    mode, rule = reader.rules.get(feature) or ("succeeded", DEFAULT_USEFUL_OUTPUT_RULE)
    useful = not failed and (accepted if mode == "accepted" else not retried)
    duration_ns, flags = _duration(reader, span, provider, claimed_ns, flags)
    weight_num, weight_den, weight_flags = _adjusted_count(reader, span.get("traceState"))
    key = (
        (start_ns - start_ns % NS_PER_HOUR) // 1_000,
        deployment,
        provider,
        model or UNKNOWN,
        feature,
        environment or UNKNOWN,
        customer,
        rule,
        weight_num,
        weight_den,
    )
    group = reader.groups.setdefault(key, len(reader.groups))
    counts = (t or 0 for t in tokens)
    return group, (1, int(failed), int(retried), int(accepted), int(useful), *counts, duration_ns), flags | weight_flags


def _fingerprint(span: dict[str, Any]) -> int:
    """A 64-bit key of the span's ids (hex is case-insensitive in OTLP/JSON)."""
    trace_id, span_id = span.get("traceId"), span.get("spanId")
    if not (isinstance(trace_id, str) and trace_id and isinstance(span_id, str) and span_id):
        raise _BadSpan("missing traceId or spanId")
    return hash((trace_id.lower(), span_id.lower()))


def _corrected_start(reader: _Reader, claimed_ns: int, window: _Window | None) -> tuple[int, int]:
    """The start time to count the span at: its own, or its receive hour's when its clock is off."""
    if window is None:
        return claimed_ns, 0
    skew = reader.source.max_clock_skew_seconds * NS
    if window.start_ns - skew <= claimed_ns < window.end_ns + skew:
        return claimed_ns, 0
    return window.start_ns, FLAG["clock_skewed_spans"]


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


def _duration(reader: _Reader, span: dict[str, Any], provider: str, start_ns: int, flags: int) -> tuple[int, int]:
    """GPU time on a self-hosted deployment: the span's duration (0 when its end is before its start)."""
    duration = _nanos(span, "endTimeUnixNano") - start_ns
    if duration < 0:
        return 0, flags | FLAG["spans_end_before_start"]
    return (duration if provider in reader.self_hosted else 0), flags


def _status_code(span: dict[str, Any]) -> int:
    status = span.get("status")
    code = status.get("code", 0) if isinstance(status, dict) else 0
    if code == "STATUS_CODE_ERROR":  # enum names are forbidden in OTLP/JSON but proto3 JSON allows them
        return STATUS_ERROR
    return code if isinstance(code, int) else 0


def _accepted(reader: _Reader, span: dict[str, Any], attrs: dict[str, Any]) -> bool:
    """The accepted attribute, or the verdict of the latest configured feedback event."""
    s = reader.source
    if s.accepted_attribute in attrs and _flag(attrs[s.accepted_attribute]):
        return True
    events = span.get("events") if s.feedback_event else None
    if not isinstance(events, list):
        return False
    keys = frozenset({s.feedback_attribute, EVALUATION_NAME})
    latest: tuple[int, bool] | None = None
    for event in events:
        if not isinstance(event, dict) or event.get("name") != s.feedback_event:
            continue
        values = _attributes(reader, event.get("attributes"), keys, count_unknown=False)
        if s.feedback_name is not None and _first_text(values, EVALUATION_NAME) != s.feedback_name:
            continue
        verdict = values.get(s.feedback_attribute)
        if verdict is None:
            continue
        at = _int_or_none(event.get("timeUnixNano")) or 0
        if latest is None or at >= latest[0]:
            latest = (at, _verdict(reader, verdict))
    return latest is not None and latest[1]


def _verdict(reader: _Reader, value: Any) -> bool:
    if isinstance(value, dict) and "boolValue" in value:
        return value["boolValue"] is True
    return (_text(value) or "").lower() in reader.accepted_values


def _customer(reader: _Reader, attrs: dict[str, Any], resource: dict[str, str | None]) -> str | None:
    """The stored customer value: an HMAC pseudonym, or the raw id only when the config allows it."""
    if not reader.source.customer_attribute:
        return None
    raw = _lookup(attrs, resource, reader.source.customer_attribute)
    if raw is None or reader.salt is None:
        return raw
    stored = reader.customers.get(raw)
    if stored is None:
        if len(reader.customers) >= 100_000:
            reader.customers.clear()  # keeps the cache bounded with very many customers
        stored = reader.customers[raw] = hash_customer(raw, reader.salt)
    return stored


def _adjusted_count(reader: _Reader, trace_state: Any) -> tuple[int, int, int]:
    """The span's adjusted count 2^56 / (2^56 − T) as a reduced fraction, and its flags; (1, 1) unsampled."""
    if not isinstance(trace_state, str) or not trace_state:
        return 1, 1, 0
    cached = reader.weights.get(trace_state)
    if cached is not None:
        return cached
    th = _threshold_value(trace_state)
    if th is None:
        weight = (1, 1, 0)
    elif not TH_PATTERN.match(th):
        weight = (1, 1, FLAG["invalid_sampling_thresholds"])
    else:
        threshold = int(th, 16) << (4 * (14 - len(th)))
        num, den = MAX_THRESHOLD, MAX_THRESHOLD - threshold
        g = math.gcd(num, den)
        weight = (num // g, den // g, FLAG["sampled_spans"])
    if len(reader.weights) < 10_000:  # tracestates with per-trace members are not worth keeping
        reader.weights[trace_state] = weight
    return weight


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


def _attributes(reader: _Reader, key_values: Any, wanted: frozenset[str], count_unknown: bool) -> dict[str, Any]:
    """The AnyValue objects of the attributes by key; only the wanted keys' values are ever looked at.

    With ``count_unknown``, ``gen_ai.usage.*`` keys that are neither wanted nor known parts of the
    totals are counted by name (never their values).
    """
    if not isinstance(key_values, list):
        return {}
    try:
        found = {kv["key"]: kv["value"] for kv in key_values}
    except (TypeError, KeyError):  # a malformed entry: the careful way, skipping it
        found = {kv["key"]: kv.get("value") for kv in key_values if isinstance(kv, dict) and "key" in kv}
    if count_unknown:
        for key in found.keys() - wanted:
            if isinstance(key, str) and key.startswith(USAGE_PREFIX) and key not in MODALITY_TOKENS:
                reader.stats[f"unknown_attribute:{key}"] += 1
    return found


def _text(value: Any) -> str | None:
    """A scalar AnyValue as text; None when absent or empty."""
    if not isinstance(value, dict):
        return None
    text = value.get("stringValue")
    if text is None:
        for kind in ("intValue", "boolValue", "doubleValue"):
            if kind in value:
                text = value[kind]
                break
        else:
            return None
    return None if text == "" else str(text)


def _first_text(attrs: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None and (text := _text(value)) is not None:
            return text
    return None


def _lookup(attrs: dict[str, Any], resource: dict[str, str | None], key: str) -> str | None:
    """A configured attribute: on the span, else on its resource (already read as text)."""
    return _first_text(attrs, key) or resource.get(key)


def _tokens(reader: _Reader, attrs: dict[str, Any]) -> list[int | None]:
    """Input, output, cache-read, cache-creation and reasoning tokens; None where the span has no count.

    Each count comes from its current attribute name, else from an older spelling (only that one is read).
    """
    chosen: dict[int, tuple[int, str]] = {}
    for key in attrs.keys() & TOKEN_SLOTS.keys():
        slot, rank = TOKEN_SLOTS[key]
        if slot not in chosen or rank < chosen[slot][0]:
            chosen[slot] = (rank, key)
    tokens: list[int | None] = [None] * len(TOKEN_KINDS)
    for slot, (_, key) in sorted(chosen.items()):
        tokens[slot] = _count(reader, key, attrs[key])
    return tokens


def _count(reader: _Reader, key: str, value: Any) -> int:
    """A non-negative integer: ``intValue`` (string or number); integral doubles and digit strings repaired."""
    if not isinstance(value, dict):
        number = None
    elif "intValue" in value:
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
        raise _BadSpan(f"{key} is not a non-negative integer: {value!r}")
    return number


def _int_or_none(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _truthy_count(reader: _Reader, value: Any) -> int:
    if isinstance(value, dict) and "boolValue" in value:
        return int(value["boolValue"] is True)
    return _count(reader, "retry attribute", value)


def _flag(value: Any) -> bool:
    if isinstance(value, dict) and "boolValue" in value:
        return value["boolValue"] is True
    return (_text(value) or "").lower() in ("true", "1")


# --- duplicates and sums ---------------------------------------------------------------------------


def _flush(reader: _Reader) -> None:
    """Drop the pending rows' duplicates (within them and against every earlier row) and add them up."""
    if not reader.pending:
        return
    rows = np.frombuffer(reader.pending, dtype=np.int64).reshape(-1, WIDTH).copy()
    reader.pending = array("q")
    kept = rows[_first_sightings(reader, rows[:, FP], rows[:, BUCKET])]
    reader.stats["duplicate_spans"] += len(rows) - len(kept)
    reader.stats["genai_spans"] += len(kept)
    flags = kept[:, FLAGS]
    for name, bit in FLAG.items():
        count = int(np.count_nonzero(flags & bit))
        if count:
            reader.stats[name] += count
    if len(reader.groups) > len(reader.sums):
        grown = np.zeros((max(len(reader.groups), 2 * len(reader.sums)), len(MEASURES)), np.int64)
        grown[: len(reader.sums)] = reader.sums
        reader.sums = grown
    np.add.at(reader.sums, kept[:, GROUP], kept[:, FLAGS + 1 :])


def _first_sightings(reader: _Reader, fingerprints: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """Mask of rows whose fingerprint was not seen before, in its bucket, in this batch or an earlier one."""
    order = np.lexsort((fingerprints, buckets))  # stable: the first sighting leads each run of equal keys
    fps, hours = fingerprints[order], buckets[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (fps[1:] == fps[:-1]) & (hours[1:] == hours[:-1])
    bounds = np.flatnonzero(np.diff(hours)) + 1
    for begin, end in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
        hour = int(hours[begin])
        segment = fps[begin:end]
        seen = reader.seen.get(hour)
        if seen is not None:
            at = np.minimum(np.searchsorted(seen, segment), len(seen) - 1)
            repeat[begin:end] |= seen[at] == segment
        fresh = segment[~repeat[begin:end]]
        reader.seen[hour] = fresh if seen is None else np.union1d(seen, fresh)
    keep = np.empty(len(order), dtype=bool)
    keep[order] = ~repeat
    return keep


def _aggregate(reader: _Reader) -> pl.DataFrame:
    """Weight each (hour group, sampling threshold) sum, then sum to the hourly grain."""
    groups = pl.DataFrame(list(reader.groups), schema=GROUP_COLUMNS, orient="row")
    sums = pl.DataFrame(reader.sums[: len(reader.groups)], schema=list(MEASURES), orient="row")
    per_weight = pl.concat([groups, sums], how="horizontal")
    num, den = pl.col("weight_num").cast(pl.Int128()), pl.col("weight_den").cast(pl.Int128())

    def weighted(column: str, per_unit: int = 1) -> pl.Expr:
        # round(sum × num / (den × per_unit)), half-up, in exact integer arithmetic
        scaled = pl.col(column).cast(pl.Int128()) * num * 2 + den * per_unit
        return (scaled // (den * per_unit * 2)).cast(pl.Int64())

    counted = [m for m in MEASURES if m != "duration_ns"]
    events = per_weight.select(
        pl.from_epoch("hour_us", time_unit="us").dt.replace_time_zone("UTC").alias("hour"),
        pl.lit(reader.source.name, pl.String()).alias("source"),
        *(c for c in GROUP_COLUMNS if c not in ("hour_us", "weight_num", "weight_den")),
        *(weighted(m).alias(m) for m in counted),
        (weighted("duration_ns", per_unit=1_000).cast(GPU_SECONDS) * pl.lit(Decimal("0.000001"), GPU_SECONDS)).alias(
            "gpu_seconds"
        ),
    ).with_columns(succeeded=pl.col("requests") - pl.col("failed"))
    return aggregate_hourly(events)
