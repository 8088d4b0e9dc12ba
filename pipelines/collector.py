"""``cogs collect``: an OTLP/HTTP trace receiver that appends spans to hourly-partitioned JSON-lines files.

Protocol (opentelemetry-proto ``docs/specification.md``, "OTLP/HTTP"; https://opentelemetry.io/docs/specs/otlp/):

- ``POST /v1/traces`` with an ``ExportTraceServiceRequest``, binary Protobuf (``application/x-protobuf``)
  or JSON Protobuf encoding (``application/json``: hex ids, integer enums, lowerCamelCase keys), optionally
  ``Content-Encoding: gzip``. The response uses the request's Content-Type.
- 200 with an ``ExportTraceServiceResponse``: ``partial_success`` left unset on full success; set with
  ``rejected_spans`` and an English ``error_message`` when some spans are rejected (here: spans whose
  trace or span id has the wrong length or is all zeros). An empty request is a success.
- Failures carry a ``google.rpc.Status`` body: 400 for data that can't be decoded (not retryable), 413 when
  the body is over the limit before or after decompression (20 MiB by default, as recommended; not
  retryable), 415 for another Content-Type or Content-Encoding, 404/405 for other paths and methods, and
  503 with ``Retry-After`` when the receiver is overloaded (too many requests in flight) or can't write
  (retryable).

Storage: each accepted request becomes one line of OTLP JSON (the Collector file exporter's format, which
``connectors.otel_genai`` reads) in ``OUT/date=YYYY-MM-DD/hour=HH/spans-<pid>-<n>.jsonl``, named after the
UTC hour it was received in. A file is written as a hidden ``.tmp`` file and renamed atomically when it is
rotated (the hour changes, it grows past ``max_file_bytes``, it is ``rotate_seconds`` old, or the receiver
stops), so readers only ever see complete files. Prompt and completion content (``gen_ai.input.messages``,
``gen_ai.output.messages``, ``gen_ai.system_instructions``, ``gen_ai.prompt*``, ``gen_ai.completion*``,
tool-call arguments and results, and the attributes of content events) is removed before anything is
written: it never reaches the disk.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

try:  # faster, and its output is the same compact JSON
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")

    _loads = json.loads

log = logging.getLogger("cogs.collect")

TRACES_PATH = "/v1/traces"
JSON, PROTOBUF = "application/json", "application/x-protobuf"
MIB = 1 << 20
DEFAULT_PORT = 4318  # the OTLP/HTTP default port

CONTENT_KEYS = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.definitions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.event.content",
    }
)
CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.")  # OpenLLMetry's gen_ai.prompt.0.content, ...
CONTENT_EVENTS = frozenset(
    {
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.client.inference.operation.details",
    }
)


@dataclass(frozen=True)
class CollectorSettings:
    out_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_request_bytes: int = 20 * MIB  # the spec's recommended limit, before and after decompression
    max_in_flight: int = 16  # requests decoded/written at once; more get 503 + Retry-After
    retry_after_seconds: int = 1
    max_file_bytes: int = 256 * MIB
    rotate_seconds: float = 60.0  # an open file is closed (made visible) at most this long after it opened


class _Reject(Exception):
    """A request answered with an error status and a google.rpc.Status body."""

    def __init__(self, status: HTTPStatus, message: str, code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


# --- files -----------------------------------------------------------------------------------------


@dataclass
class _OpenFile:
    hour: datetime
    tmp: Path
    final: Path
    handle: IO[bytes]
    opened: float
    size: int = 0


@dataclass
class SpanWriter:
    """Appends lines to the current hour's file; rotation renames the hidden file to its final name."""

    out_dir: Path
    max_file_bytes: int = 256 * MIB
    rotate_seconds: float = 60.0
    files_written: list[Path] = field(default_factory=list)
    _current: _OpenFile | None = field(default=None, init=False)
    _sequence: int = field(default=0, init=False)
    _closed: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def write(self, line: bytes, now: datetime) -> None:
        hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        with self._lock:
            if self._closed:
                raise OSError("the receiver is stopping")
            current = self._current
            if current is not None and (current.hour != hour or current.size >= self.max_file_bytes):
                self._close()
            if self._current is None:
                self._current = self._open(hour)
            self._current.handle.write(line)
            self._current.size += len(line)

    def rotate_if_due(self, now: datetime) -> None:
        """Close a file of an earlier hour, or one open longer than ``rotate_seconds`` (called by a timer)."""
        hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        with self._lock:
            current = self._current
            if current is not None and (
                current.hour != hour or time.monotonic() - current.opened >= self.rotate_seconds
            ):
                self._close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close()

    def _open(self, hour: datetime) -> _OpenFile:
        folder = self.out_dir / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        while True:  # never reuse a name left by an earlier run of the same pid
            self._sequence += 1
            name = f"spans-{os.getpid()}-{self._sequence}.jsonl"
            if not (folder / name).exists():
                break
        tmp = folder / f".{name}.tmp"
        return _OpenFile(hour, tmp, folder / name, open(tmp, "wb"), time.monotonic())

    def _close(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        current.handle.flush()
        os.fsync(current.handle.fileno())
        current.handle.close()
        if current.size:
            os.replace(current.tmp, current.final)  # atomic: readers see the whole file or none of it
            self.files_written.append(current.final)
        else:
            current.tmp.unlink()


# --- decoding --------------------------------------------------------------------------------------


def _body(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    """The raw request body (Content-Length or chunked), refused past ``limit`` bytes."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        return _chunked_body(handler, limit)
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        raise _Reject(HTTPStatus.BAD_REQUEST, "Content-Length is not a number", code_pb2.INVALID_ARGUMENT) from None
    if length > limit:
        handler.close_connection = True  # the unread body would be taken for the next request
        raise _too_large(limit)
    return handler.rfile.read(length)


def _chunked_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = handler.rfile.readline(1024).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _Reject(HTTPStatus.BAD_REQUEST, "malformed chunked body", code_pb2.INVALID_ARGUMENT) from None
        if size == 0:
            while handler.rfile.readline(1024).strip():  # trailers
                pass
            return b"".join(parts)
        total += size
        if total > limit:
            handler.close_connection = True
            raise _too_large(limit)
        parts.append(handler.rfile.read(size))
        handler.rfile.readline(1024)  # the CRLF after each chunk


def _too_large(limit: int) -> _Reject:
    return _Reject(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"request body over {limit} bytes (before or after decompression); send smaller batches",
        code_pb2.RESOURCE_EXHAUSTED,
    )


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise _Reject(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is not supported; use gzip or none",
            code_pb2.INVALID_ARGUMENT,
        )
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
    try:
        data = inflater.decompress(body, limit + 1)  # stops early: a small bomb can't fill memory
        if len(data) > limit:
            raise _too_large(limit)
        if inflater.unconsumed_tail or not inflater.eof:
            raise zlib.error("truncated or concatenated gzip stream")
    except zlib.error as exc:
        raise _Reject(HTTPStatus.BAD_REQUEST, f"invalid gzip body: {exc}", code_pb2.INVALID_ARGUMENT) from None
    return data


def decode_request(body: bytes, content_type: str) -> dict[str, Any]:
    """An ExportTraceServiceRequest as an OTLP/JSON object, whichever encoding it came in."""
    if content_type == PROTOBUF:
        try:
            message = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise _Reject(
                HTTPStatus.BAD_REQUEST, f"invalid protobuf ExportTraceServiceRequest: {exc}", code_pb2.INVALID_ARGUMENT
            ) from None
        return _protobuf_to_otlp_json(message)
    try:
        request = _loads(body)
    except ValueError as exc:
        raise _Reject(HTTPStatus.BAD_REQUEST, f"invalid JSON: {exc}", code_pb2.INVALID_ARGUMENT) from None
    if not isinstance(request, dict) or not isinstance(request.get("resourceSpans", []), list):
        raise _Reject(
            HTTPStatus.BAD_REQUEST,
            "expected an ExportTraceServiceRequest object with a `resourceSpans` list",
            code_pb2.INVALID_ARGUMENT,
        )
    return request


def _protobuf_to_otlp_json(message: trace_service_pb2.ExportTraceServiceRequest) -> dict[str, Any]:
    """proto3 JSON mapping with OTLP's deviations: integer enums (by option) and hex ids (fixed here)."""
    request = json_format.MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links", []):
                    _hex_ids(link, ("traceId", "spanId"))
    return request


def _hex_ids(message: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in message:
            message[key] = base64.b64decode(message[key]).hex()


# --- validation and privacy ------------------------------------------------------------------------


def _valid_id(value: Any, hex_digits: int) -> bool:
    if not isinstance(value, str) or len(value) != hex_digits:
        return False
    try:
        return int(value, 16) != 0  # all-zero ids are invalid
    except ValueError:
        return False


def _without_content(attributes: Any, stats: Counter[str]) -> Any:
    if not isinstance(attributes, list):
        return attributes
    kept = []
    for kv in attributes:
        key = kv.get("key") if isinstance(kv, dict) else None
        if isinstance(key, str) and (key in CONTENT_KEYS or key.startswith(CONTENT_PREFIXES)):
            stats["content_attributes_removed"] += 1
        else:
            kept.append(kv)
    return kept


def _scrub_span(span: dict[str, Any], stats: Counter[str]) -> None:
    """Remove prompt and completion content from a span and its events (in place)."""
    if "attributes" in span:
        span["attributes"] = _without_content(span["attributes"], stats)
    for event in span.get("events") or []:
        if not isinstance(event, dict):
            continue
        if event.get("name") in CONTENT_EVENTS and event.get("attributes"):
            stats["content_attributes_removed"] += len(event["attributes"])
            event["attributes"] = []
        elif "attributes" in event:
            event["attributes"] = _without_content(event["attributes"], stats)


def accept_spans(request: dict[str, Any], stats: Counter[str]) -> tuple[int, int, list[str]]:
    """Drop invalid spans and content (in place); (accepted, rejected, reasons)."""
    accepted = rejected = 0
    reasons: list[str] = []
    for resource_spans in request.get("resourceSpans") or []:
        if not isinstance(resource_spans, dict):
            continue
        for scope_spans in resource_spans.get("scopeSpans") or []:
            if not isinstance(scope_spans, dict):
                continue
            kept = []
            for span in scope_spans.get("spans") or []:
                reason = _invalid_reason(span)
                if reason:
                    rejected += 1
                    if reason not in reasons:
                        reasons.append(reason)
                    continue
                _scrub_span(span, stats)
                kept.append(span)
                accepted += 1
            scope_spans["spans"] = kept
    return accepted, rejected, reasons


def _invalid_reason(span: Any) -> str | None:
    if not isinstance(span, dict):
        return "span is not an object"
    if not _valid_id(span.get("traceId"), 32):
        return "traceId must be 16 bytes (32 hex digits), not all zeros"
    if not _valid_id(span.get("spanId"), 16):
        return "spanId must be 8 bytes (16 hex digits), not all zeros"
    return None


# --- responses -------------------------------------------------------------------------------------


def _export_response(content_type: str, rejected: int, message: str) -> bytes:
    response = trace_service_pb2.ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if content_type == PROTOBUF:
        return response.SerializeToString()
    return json.dumps(json_format.MessageToDict(response)).encode("utf-8")


def _status_body(content_type: str, code: int, message: str) -> bytes:
    status = status_pb2.Status(code=code, message=message)
    if content_type == PROTOBUF:
        return status.SerializeToString()
    return json.dumps(json_format.MessageToDict(status)).encode("utf-8")


# --- the server ------------------------------------------------------------------------------------


class Collector(ThreadingHTTPServer):
    """The OTLP/HTTP receiver. ``start()`` serves in a thread; ``stop()`` closes the open file."""

    daemon_threads = True

    def __init__(self, settings: CollectorSettings) -> None:
        super().__init__((settings.host, settings.port), _Handler)
        self.settings = settings
        self.writer = SpanWriter(settings.out_dir, settings.max_file_bytes, settings.rotate_seconds)
        self.capacity = threading.BoundedSemaphore(settings.max_in_flight)
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._stopped = threading.Event()
        self._background: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> Collector:
        for name, target in (("serve", self._serve), ("rotate", self._rotate_periodically)):
            thread = threading.Thread(target=target, name=f"cogs-collect-{name}", daemon=True)
            thread.start()
            self._background.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close the open file (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.shutdown()
        self.server_close()
        self.writer.close()

    def _serve(self) -> None:
        self.serve_forever(poll_interval=0.05)  # stop() returns within one poll

    def serve_until_interrupted(self) -> None:
        """Block until Ctrl-C or SIGTERM (a service manager's stop), then stop: the open file is renamed."""
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while not self._stopped.wait(3600):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def count(self, **increments: int) -> None:
        with self._stats_lock:
            self.stats.update(increments)

    def _rotate_periodically(self) -> None:
        interval = max(0.05, min(5.0, self.settings.rotate_seconds / 4))
        while not self._stopped.wait(interval):
            self.writer.rotate_if_due(datetime.now(UTC))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OTLP clients expect
    server: Collector

    def do_POST(self) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        reply_type = PROTOBUF if content_type == PROTOBUF else JSON
        try:
            self._admit(content_type)
            try:
                body = self._export(content_type)
            finally:
                self.server.capacity.release()
        except _Reject as reject:
            self.server.count(**{f"responses_{int(reject.status)}": 1})
            self._reply(
                reject.status, reply_type, _status_body(reply_type, reject.code, reject.message), reject.headers
            )
            return
        self.server.count(responses_200=1)
        self._reply(HTTPStatus.OK, reply_type, body)

    def _admit(self, content_type: str) -> None:
        """Refuse (after draining the body) a wrong path or type, or any request past the in-flight limit."""
        reject = None
        if self.path.split("?")[0] != TRACES_PATH:
            reject = _Reject(
                HTTPStatus.NOT_FOUND, f"unknown path {self.path}; send traces to {TRACES_PATH}", code_pb2.NOT_FOUND
            )
        elif content_type not in (JSON, PROTOBUF):
            reject = _Reject(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {content_type or '(none)'!r} is not supported; use {PROTOBUF} or {JSON}",
                code_pb2.INVALID_ARGUMENT,
            )
        elif not self.server.capacity.acquire(blocking=False):
            reject = _Reject(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "receiver overloaded; retry later",
                code_pb2.UNAVAILABLE,
                {"Retry-After": str(self.server.settings.retry_after_seconds)},
            )
        if reject is not None:
            self._discard_body()
            raise reject

    def do_GET(self) -> None:
        self._reply(
            HTTPStatus.METHOD_NOT_ALLOWED,
            JSON,
            _status_body(JSON, code_pb2.UNIMPLEMENTED, f"use POST {TRACES_PATH}"),
            {"Allow": "POST"},
        )

    do_PUT = do_DELETE = do_PATCH = do_GET

    def _export(self, content_type: str) -> bytes:
        limit = self.server.settings.max_request_bytes
        raw = _body(self, limit)
        request = decode_request(_decompress(raw, self.headers.get("Content-Encoding") or "", limit), content_type)
        stats: Counter[str] = Counter()
        accepted, rejected, reasons = accept_spans(request, stats)
        if accepted:
            try:
                self.server.writer.write(_dumps(request) + b"\n", datetime.now(UTC))
            except OSError as exc:
                log.error("can't write spans: %s", exc)
                raise _Reject(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "receiver can't store spans right now; retry later",
                    code_pb2.UNAVAILABLE,
                    {"Retry-After": str(self.server.settings.retry_after_seconds)},
                ) from None
        self.server.count(requests=1, spans_accepted=accepted, spans_rejected=rejected, **stats)
        message = f"{rejected} span(s) rejected: {'; '.join(reasons)}" if rejected else ""
        return _export_response(content_type, rejected, message)

    def _discard_body(self) -> None:
        """Read what the client sent, so the kept-alive connection stays in step."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if not chunked and 0 <= length <= self.server.settings.max_request_bytes:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _reply(self, status: HTTPStatus, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)
