"""``cogs collect``: real OTLP/HTTP requests (JSON and protobuf) on a free port, read back through the connector."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from connectors.otel_genai import load
from models.config import OtelGenAITelemetry
from models.period import BillingPeriod
from pipelines.collector import Collector, CollectorSettings, SpanWriter

JSON, PROTOBUF = "application/json", "application/x-protobuf"
NOW = datetime.now(UTC)
START_NS = int((NOW - timedelta(minutes=2)).timestamp()) * 10**9  # a moment ago: inside the receive hour's skew
PROMPT = "SECRET-PROMPT: my card is 4111-1111"


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    server = Collector(CollectorSettings(out_dir=tmp_path / "spans", port=0, max_request_bytes=64 * 1024)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(collector: Collector) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{collector.port}", timeout=10) as http:
        yield http


def _json_span(i: int, trace_id: str | None = None, span_id: str | None = None, **attrs: Any) -> dict[str, Any]:
    values = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1-mini",
        "app.feature": "search",
        "gen_ai.usage.input_tokens": 100 + i,
        "gen_ai.usage.output_tokens": 10,
        "gen_ai.input.messages": PROMPT,
    } | attrs
    return {
        "traceId": trace_id or f"{i + 1:032x}",
        "spanId": span_id or f"{i + 1:016x}",
        "name": "chat gpt-4.1-mini",
        "kind": 3,
        "startTimeUnixNano": str(START_NS + i),
        "endTimeUnixNano": str(START_NS + i + 2 * 10**9),
        "attributes": [
            {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
            for k, v in values.items()
        ],
        "events": [
            {"name": "gen_ai.user.message", "attributes": [{"key": "content", "value": {"stringValue": PROMPT}}]}
        ],
    }


def _json_request(spans: list[dict[str, Any]]) -> bytes:
    resource = {"attributes": [{"key": "deployment.environment.name", "value": {"stringValue": "production"}}]}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}).encode()


def _proto_request(count: int, first: int = 0) -> trace_service_pb2.ExportTraceServiceRequest:
    def attr(key: str, value: str | int) -> common_pb2.KeyValue:
        any_value = (
            common_pb2.AnyValue(int_value=value) if isinstance(value, int) else common_pb2.AnyValue(string_value=value)
        )
        return common_pb2.KeyValue(key=key, value=any_value)

    spans = [
        trace_pb2.Span(
            trace_id=(first + i + 1).to_bytes(16, "big"),
            span_id=(first + i + 1).to_bytes(8, "big"),
            name="chat Qwen",
            kind=trace_pb2.Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=START_NS + i,
            end_time_unix_nano=START_NS + i + 3 * 10**9,
            attributes=[
                attr("gen_ai.operation.name", "chat"),
                attr("gen_ai.provider.name", "vllm"),
                attr("gen_ai.request.model", "Qwen"),
                attr("server.address", "vllm-qwen"),
                attr("app.feature", "code_assist"),
                attr("gen_ai.usage.input_tokens", 1_000),
                attr("gen_ai.usage.output_tokens", 50),
                attr("gen_ai.output.messages", PROMPT),
            ],
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR) if i == 0 else trace_pb2.Status(),
        )
        for i in range(count)
    ]
    resource = resource_pb2.Resource(attributes=[attr("deployment.environment.name", "production")])
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
    )


def _read_back(folder: Path) -> Any:
    source = OtelGenAITelemetry(name="otel", type="otel_genai", path=str(folder))
    return load(source, BillingPeriod.containing(NOW - timedelta(minutes=2)))


def _span_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _status(response: httpx.Response) -> str:
    if response.headers["content-type"] == PROTOBUF:
        return status_pb2.Status.FromString(response.content).message
    return response.json()["message"]


# --- success -------------------------------------------------------------------------------------


def test_json_and_gzipped_protobuf_requests_land_in_hourly_files_the_connector_reads(
    collector: Collector, client: httpx.Client, tmp_path: Path
) -> None:
    as_json = client.post(
        "/v1/traces", content=_json_request([_json_span(0), _json_span(1)]), headers={"Content-Type": JSON}
    )
    proto = gzip.compress(_proto_request(3, first=100).SerializeToString())
    as_proto = client.post("/v1/traces", content=proto, headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"})
    collector.stop()  # closes (renames) the open file

    assert (as_json.status_code, as_json.headers["content-type"], as_json.json()) == (200, JSON, {})
    assert (as_proto.status_code, as_proto.headers["content-type"]) == (200, PROTOBUF)
    assert not trace_service_pb2.ExportTraceServiceResponse.FromString(as_proto.content).HasField("partial_success")
    folder = tmp_path / "spans"
    received = collector.writer.files_written[0]
    assert received.relative_to(folder).as_posix() == (
        f"date={received.parent.parent.name[5:]}/hour={received.parent.name[5:]}/spans-{os.getpid()}-1.jsonl"
    )
    assert _span_files(folder) == [received.relative_to(folder).as_posix()]  # no .tmp left behind
    lines = [json.loads(line) for line in received.read_text().splitlines()]
    proto_span = lines[1]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert proto_span["traceId"] == f"{101:032x}" and proto_span["spanId"] == f"{101:016x}"  # hex, not base64
    assert proto_span["kind"] == 3 and proto_span["status"] == {"code": 2}  # integer enums
    assert proto_span["startTimeUnixNano"] == str(START_NS)

    result = _read_back(folder)
    rows = result.frame.select("deployment", "feature", "requests", "failed", "input_tokens", "gpu_seconds").rows()
    assert rows == [("openai", "search", 2, 0, 201, 0), ("vllm-qwen", "code_assist", 3, 1, 3_000, 9)]
    assert result.stats["genai_spans"] == 5 and "clock_skewed_spans" not in result.stats
    assert collector.stats == {
        "requests": 2,
        "spans_accepted": 5,
        "spans_rejected": 0,
        "content_attributes_removed": 7,  # 2 JSON input messages + their 2 event contents + 3 protobuf outputs
        "responses_200": 2,
    }


def test_prompt_content_never_reaches_the_disk(collector: Collector, client: httpx.Client, tmp_path: Path) -> None:
    client.post("/v1/traces", content=_json_request([_json_span(0)]), headers={"Content-Type": JSON})
    client.post("/v1/traces", content=_proto_request(1).SerializeToString(), headers={"Content-Type": PROTOBUF})
    collector.stop()

    written = b"".join(p.read_bytes() for p in (tmp_path / "spans").rglob("*") if p.is_file())
    assert b"gen_ai.usage.input_tokens" in written
    assert b"SECRET" not in written and b"4111" not in written and b"messages" not in written


def test_spans_with_bad_ids_get_a_partial_success(collector: Collector, client: httpx.Client) -> None:
    spans = [_json_span(0), _json_span(1, trace_id="0" * 32), _json_span(2, span_id="xyz"), _json_span(3)]
    response = client.post("/v1/traces", content=_json_request(spans), headers={"Content-Type": JSON})
    collector.stop()

    assert response.status_code == 200
    assert response.json() == {
        "partialSuccess": {
            "rejectedSpans": "2",
            "errorMessage": "2 span(s) rejected: traceId must be 16 bytes (32 hex digits), not all zeros; "
            "spanId must be 8 bytes (16 hex digits), not all zeros",
        }
    }
    assert _read_back(collector.settings.out_dir).stats["genai_spans"] == 2


def test_an_empty_request_is_a_success_and_writes_nothing(collector: Collector, client: httpx.Client) -> None:
    empty = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
    response = client.post("/v1/traces", content=empty, headers={"Content-Type": PROTOBUF})
    collector.stop()

    assert response.status_code == 200 and response.content == b""  # an empty ExportTraceServiceResponse
    assert collector.writer.files_written == []


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{not json", {"Content-Type": JSON}, 400, "invalid JSON: "),
        (b'{"resourceSpans": 3}', {"Content-Type": JSON}, 400, "expected an ExportTraceServiceRequest object"),
        (b"\xff\xff\xff", {"Content-Type": PROTOBUF}, 400, "invalid protobuf ExportTraceServiceRequest"),
        (b"not gzip", {"Content-Type": JSON, "Content-Encoding": "gzip"}, 400, "invalid gzip body"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "Content-Type 'text/plain' is not supported"),
        (b"{}", {"Content-Type": JSON, "Content-Encoding": "br"}, 415, "Content-Encoding 'br' is not supported"),
        (b"x" * (64 * 1024 + 1), {"Content-Type": JSON}, 413, "request body over 65536 bytes"),
        (
            gzip.compress(b" " * (64 * 1024 + 1)),
            {"Content-Type": JSON, "Content-Encoding": "gzip"},
            413,
            "request body over",
        ),
    ],
    ids=["bad-json", "not-a-request", "bad-protobuf", "bad-gzip", "media-type", "encoding", "too-big", "gzip-bomb"],
)
def test_failures_answer_with_a_status_message(
    client: httpx.Client, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response = client.post("/v1/traces", content=body, headers=headers)

    assert response.status_code == status
    assert response.headers["content-type"] == headers["Content-Type"] if status != 415 else JSON
    assert _status(response).startswith(message)
    assert "retry-after" not in response.headers  # none of these may be retried


def test_overload_answers_503_with_retry_after_then_recovers(collector: Collector, client: httpx.Client) -> None:
    held = [collector.capacity.acquire(blocking=False) for _ in range(collector.settings.max_in_flight)]
    busy = client.post("/v1/traces", content=_proto_request(1).SerializeToString(), headers={"Content-Type": PROTOBUF})
    for _ in held:
        collector.capacity.release()
    again = client.post("/v1/traces", content=_proto_request(1).SerializeToString(), headers={"Content-Type": PROTOBUF})

    assert all(held) and busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert status_pb2.Status.FromString(busy.content).message == "receiver overloaded; retry later"
    assert again.status_code == 200  # the same kept-alive connection, still in step


def test_other_paths_and_methods(client: httpx.Client) -> None:
    wrong_path = client.post("/v1/metrics", content=b"{}", headers={"Content-Type": JSON})
    wrong_method = client.get("/v1/traces")

    assert wrong_path.status_code == 404 and _status(wrong_path).startswith("unknown path /v1/metrics")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


# --- files ---------------------------------------------------------------------------------------


def test_writer_rotates_per_hour_and_size_with_atomic_renames(tmp_path: Path) -> None:
    writer = SpanWriter(tmp_path, max_file_bytes=10)
    nine = datetime(2025, 3, 1, 9, 59, 59, tzinfo=UTC)
    writer.write(b"a" * 6 + b"\n", nine)
    assert _span_files(tmp_path) == [f"date=2025-03-01/hour=09/.spans-{os.getpid()}-1.jsonl.tmp"]
    writer.write(b"b" * 6 + b"\n", nine)  # still under 10 bytes before this line: same file
    writer.write(b"c\n", nine + timedelta(seconds=1))  # next hour
    writer.write(b"d\n", nine + timedelta(seconds=2))
    writer.rotate_if_due(nine + timedelta(hours=1, minutes=1))  # the 10:00 file is still current
    writer.close()

    pid = os.getpid()
    assert _span_files(tmp_path) == [
        f"date=2025-03-01/hour=09/spans-{pid}-1.jsonl",
        f"date=2025-03-01/hour=10/spans-{pid}-2.jsonl",
    ]
    assert (tmp_path / f"date=2025-03-01/hour=09/spans-{pid}-1.jsonl").read_bytes() == b"aaaaaa\nbbbbbb\n"
    assert (tmp_path / f"date=2025-03-01/hour=10/spans-{pid}-2.jsonl").read_bytes() == b"c\nd\n"
    with pytest.raises(OSError, match="stopping"):
        writer.write(b"late\n", nine)


def test_writer_closes_idle_files_after_rotate_seconds(tmp_path: Path) -> None:
    writer = SpanWriter(tmp_path, rotate_seconds=0)
    now = datetime.now(UTC)
    writer.write(b"x\n", now)
    writer.rotate_if_due(now)

    assert [p.name for p in writer.files_written] == [f"spans-{os.getpid()}-1.jsonl"]


def test_cogs_collect_command_serves_until_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("cogs")), "collect", "--port", "0", "--out", str(tmp_path / "spans")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/v1/traces", banner)[1])  # type: ignore[index]
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/traces", content=_json_request([_json_span(0)]), headers={"Content-Type": JSON}
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        process.kill()

    assert response.status_code == 200 and process.returncode == 0
    assert "stopped: 1 file(s) written" in output and "spans_accepted 1" in output
    assert _read_back(tmp_path / "spans").stats["genai_spans"] == 1
