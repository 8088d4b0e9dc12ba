"""Demo telemetry: the month's OpenTelemetry GenAI client spans, as the Collector's file exporter writes them.

Each line of ``otel/spans-YYYY-MM-DD.jsonl`` is one ``ExportTraceServiceRequest`` in OTLP/JSON
(lowerCamelCase keys, hex ids, ``intValue`` and nanosecond timestamps as decimal strings, enums as
integers): one batch of one service's spans for one hour. Spans follow the GenAI semantic
conventions (``chat {gen_ai.request.model}``, CLIENT kind, ``gen_ai.*`` attributes, ``error.type``
and status code 2 on failures) plus the demo company's own ``app.feature``, ``app.user_accepted``
and ``app.retry.attempt``, and ``app.customer.id``: one of ``CUSTOMERS`` fictional business customers, a
few large and a long tail (Zipf weights), picked from the span id so the other draws stay as they were.

Traffic comes from ``pipelines.demo.company``: for every hour, feature and route the number of
kept spans is Poisson(expected requests × route share / SAMPLING_RATIO). Kept traces carry the
probability-sampling tracestate ``ot=th:fc`` (rejection threshold 0xfc << 48, so p = 4/256 = 1/64)
and a trace id whose 56 random bits pass that threshold, as a consistent sampler's would.
"""

from __future__ import annotations

import json
import math
import random
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from itertools import accumulate, groupby
from pathlib import Path
from typing import Any

from pipelines.demo.company import FEATURES, SAMPLING_RATIO, DemoMonth, Feature, Route, expected_requests

RANDOMNESS_BITS = 56
REJECTION_THRESHOLD = (1 << RANDOMNESS_BITS) - (1 << RANDOMNESS_BITS) // SAMPLING_RATIO
TRACE_STATE = "ot=th:" + f"{REJECTION_THRESHOLD:014x}".rstrip("0")  # "ot=th:fc" for 1 in 64
SPANS_PER_BATCH = 512  # the batch processor's send_batch_size, kept small
SPAN_KIND_CLIENT = 3
STATUS_CODE_ERROR = 2
NS = 10**9
POISSON_CHUNK = 30.0  # Knuth's sampler is exact but needs exp(-lambda) to stay far from underflow

SELF_HOSTED_PROVIDER = "vllm"
ERROR_TYPES = {
    "openai": ("RateLimitError", "APITimeoutError", "InternalServerError"),
    SELF_HOSTED_PROVIDER: ("InternalServerError", "APITimeoutError"),
}
SERVER_PORTS = {"openai": 443, SELF_HOSTED_PROVIDER: 8000}
SCOPE = {"name": "lumen.inference.client", "version": "1.4.2"}
DATED_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")
CUSTOMERS = 400
_CUSTOMER_CUMULATIVE = list(accumulate(1 / rank for rank in range(1, CUSTOMERS + 1)))


def write(month: DemoMonth, out_dir: Path, seed: int) -> Path:
    """Write the month's span files under ``out_dir/otel/`` and return that folder."""
    return write_hours(month, month.hours(), out_dir, seed)


def write_hours(month: DemoMonth, hours: Iterable[datetime], out_dir: Path, seed: int) -> Path:
    """Write the spans of some hours of the month (one file per day); each hour is seeded on its own,
    so an hour's spans are the same whether it is written alone or with the whole month."""
    folder = out_dir / "otel"
    folder.mkdir(parents=True, exist_ok=True)
    for day, day_hours in groupby(sorted(hours), key=lambda h: h.date()):
        with open(_day_file(folder, day), "w", encoding="utf-8") as fh:
            for hour in day_hours:
                for feature in FEATURES:
                    for request in _export_requests(month, feature, hour, seed):
                        fh.write(json.dumps(request, separators=(",", ":")))
                        fh.write("\n")
    return folder


def _day_file(folder: Path, day: date) -> Path:
    return folder / f"spans-{day.isoformat()}.jsonl"


def _export_requests(month: DemoMonth, feature: Feature, hour: datetime, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"{seed}:{feature.name}:{hour.isoformat()}")
    spans = [span for route in feature.routes for span in _route_spans(rng, month, feature, route, hour)]
    spans.sort(key=lambda s: int(s["startTimeUnixNano"]))
    for i in range(0, len(spans), SPANS_PER_BATCH):
        yield {
            "resourceSpans": [
                {
                    "resource": {"attributes": _resource_attributes(feature)},
                    "scopeSpans": [{"scope": SCOPE, "spans": spans[i : i + SPANS_PER_BATCH]}],
                }
            ]
        }


def _resource_attributes(feature: Feature) -> list[dict[str, Any]]:
    return [
        _str("service.name", "lumen-" + feature.name.replace("_", "-")),
        _str("service.version", "2025.3.1"),
        _str("deployment.environment.name", "production"),
        _str("telemetry.sdk.language", "python"),
        _str("telemetry.sdk.name", "opentelemetry"),
        _str("telemetry.sdk.version", "1.36.0"),
    ]


def _route_spans(
    rng: random.Random, month: DemoMonth, feature: Feature, route: Route, hour: datetime
) -> Iterator[dict[str, Any]]:
    storm = month.storm_active(feature.name, hour)
    error_rate = month.storm.error_rate if storm else feature.error_rate
    # in the storm, the extra requests over normal traffic are the client's retries
    retry_rate = max(feature.retry_rate, 1 - 1 / month.storm.request_multiplier) if storm else feature.retry_rate
    kept = _poisson(rng, expected_requests(feature, hour, month) * route.share / SAMPLING_RATIO)
    hour_ns = int(hour.timestamp()) * NS
    for _ in range(kept):
        retry_attempt = rng.randint(1, 8 if storm else 3) if rng.random() < retry_rate else 0
        failed = rng.random() < error_rate
        # a looping client's duplicate answers are never the one the user accepts
        accepted = not failed and not (storm and retry_attempt) and rng.random() < feature.accept_rate
        start_ns = hour_ns + rng.randrange(3_600 * NS)
        yield _span(rng, feature, route, start_ns, retry_attempt, failed, accepted)


def _span(
    rng: random.Random,
    feature: Feature,
    route: Route,
    start_ns: int,
    retry_attempt: int,
    failed: bool,
    accepted: bool,
) -> dict[str, Any]:
    if route.provider == SELF_HOSTED_PROVIDER:
        seconds = route.gpu_seconds * max(0.2, rng.gauss(1.0, 0.25))
    else:
        seconds = rng.uniform(1.0, 8.0)
    attributes = [
        _str("gen_ai.operation.name", "chat"),
        _str("gen_ai.provider.name", route.provider),
        _str("gen_ai.request.model", DATED_SNAPSHOT.sub("", route.model)),
        _str("server.address", route.deployment),
        _int("server.port", SERVER_PORTS.get(route.provider, 443)),
        _str("app.feature", feature.name),
    ]
    if retry_attempt:
        attributes.append(_int("app.retry.attempt", retry_attempt))
    status: dict[str, Any] = {}
    if failed:
        error_type = rng.choice(ERROR_TYPES.get(route.provider, ("InternalServerError",)))
        attributes.append(_str("error.type", error_type))
        status = {"message": f"{error_type} from {route.deployment}", "code": STATUS_CODE_ERROR}
    else:
        attributes += [_str("gen_ai.response.model", route.model), *_usage(rng, route)]
        attributes.append({"key": "gen_ai.response.finish_reasons", "value": _strings(["stop"])})
        attributes.append(_bool("app.user_accepted", accepted))
    trace_id, span_id = _trace_id(rng), f"{rng.getrandbits(64):016x}"
    attributes.append(_str("app.customer.id", _customer(span_id)))
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "traceState": TRACE_STATE,
        "name": f"chat {DATED_SNAPSHOT.sub('', route.model)}",
        "kind": SPAN_KIND_CLIENT,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + round(seconds * NS)),
        "attributes": attributes,
        "status": status,
    }


def _usage(rng: random.Random, route: Route) -> list[dict[str, Any]]:
    """Token counts around the route's means; input includes cached tokens (GenAI conventions)."""
    input_tokens = max(1, round(route.input_tokens * rng.uniform(0.5, 1.5)))
    usage = [
        _int("gen_ai.usage.input_tokens", input_tokens),
        _int("gen_ai.usage.output_tokens", max(1, round(route.output_tokens * rng.uniform(0.5, 1.5)))),
    ]
    if route.cached_input_tokens:
        cached = min(input_tokens, round(route.cached_input_tokens * rng.uniform(0.5, 1.5)))
        usage.append(_int("gen_ai.usage.cache_read.input_tokens", cached))
    return usage


def _customer(span_id: str) -> str:
    """A customer id drawn (Zipf) from the span id's random bits, without touching the generator."""
    u = int(span_id[:12], 16) / (1 << 48) * _CUSTOMER_CUMULATIVE[-1]
    return f"cust-{bisect_left(_CUSTOMER_CUMULATIVE, u) + 1:04d}"


def _trace_id(rng: random.Random) -> str:
    """128 bits whose low 56 (the W3C randomness) are >= the rejection threshold: a kept trace."""
    randomness = REJECTION_THRESHOLD + rng.randrange((1 << RANDOMNESS_BITS) - REJECTION_THRESHOLD)
    return f"{rng.getrandbits(72):018x}{randomness:014x}"


def _poisson(rng: random.Random, mean: float) -> int:
    """Exact Poisson draw: Knuth's method on chunks of the mean (a sum of Poissons is Poisson)."""
    total = 0
    while mean > 0:
        chunk = min(mean, POISSON_CHUNK)
        mean -= chunk
        limit, product = math.exp(-chunk), rng.random()
        while product > limit:
            total += 1
            product *= rng.random()
    return total


def _str(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _int(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(value)}}  # int64: a decimal string in OTLP/JSON


def _bool(key: str, value: bool) -> dict[str, Any]:
    return {"key": key, "value": {"boolValue": value}}


def _strings(values: list[str]) -> dict[str, Any]:
    return {"arrayValue": {"values": [{"stringValue": v} for v in values]}}
