"""Prometheus text format parser and query_range client, against a local Prometheus-shaped HTTP server."""

from __future__ import annotations

import itertools
import json
import re
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors import prometheus
from connectors.base import SourceError
from connectors.http import ApiClient
from connectors.prometheus import NAME_LABEL, ExpositionParser, Samples, deployment_of, grid, query_range, read_scrapes

LOOKBACK_MS = 5 * 60 * 1000  # Prometheus' default query.lookback-delta
SERIES_KEY = tuple[tuple[str, str], ...]


# --- a local Prometheus HTTP API ------------------------------------------------------------------


class FakePrometheus:
    """Serves ``GET /api/v1/query_range`` over raw samples with Prometheus' semantics.

    A grid point t takes the newest sample at or before t within the 5-minute lookback; a series
    without any point is left out; more than 11,000 points per series is refused with HTTP 400 and
    Prometheus' error body. Selectors: ``name{l="v",...}`` or ``{__name__=~"re",l="v",...}``.
    """

    def __init__(self, samples: Samples) -> None:
        frame = samples.frame.sort("ts_ms")
        self.series: dict[SERIES_KEY, list[tuple[int, Decimal]]] = {}
        for sid, ts, value in frame.select("series", "ts_ms", "value").iter_rows():
            key = tuple(sorted(samples.series[sid].items()))
            self.series.setdefault(key, []).append((ts, value))
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakePrometheus:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append({"path": url.path, "auth": self.headers.get("Authorization"), **params})
                status, body = fake.answer(url.path, params)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path != "/api/v1/query_range":
            return 404, {"status": "error", "errorType": "not_found", "error": path}
        start, end = Decimal(params["start"]), Decimal(params["end"])
        step = Decimal(params["step"].removesuffix("s"))
        if (end - start) / step + 1 > 11_000:
            return 400, {
                "status": "error",
                "errorType": "bad_data",
                "error": "exceeded maximum resolution of 11,000 points per timeseries. "
                "Try decreasing the query resolution (?step=XX)",
            }
        matchers = _matchers(params["query"])
        times = [int((start + i * step) * 1000) for i in range(int((end - start) / step) + 1)]
        result = []
        for key, points in self.series.items():
            labels = dict(key)
            if not all(match(labels) for match in matchers):
                continue
            values = [[_number(t), _go_float(v)] for t in times if (v := _at(points, t)) is not None]
            if values:
                result.append({"metric": labels, "values": values})
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}


def _at(points: list[tuple[int, Decimal]], t: int) -> Decimal | None:
    found = None
    for ts, value in points:
        if ts > t:
            break
        found = (ts, value)
    return found[1] if found and found[0] > t - LOOKBACK_MS else None


def _matchers(query: str) -> list[Any]:
    head, _, body = query.partition("{")
    matchers: list[Any] = []
    if head:
        matchers.append(lambda labels, name=head: labels.get(NAME_LABEL) == name)
    for label, op, value in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', body):
        if op == "=~":
            matchers.append(lambda labels, lb=label, rx=value: re.fullmatch(rx, labels.get(lb, "")) is not None)
        else:
            matchers.append(lambda labels, lb=label, v=value: labels.get(lb, "") == v)
    return matchers


def _number(ms: int) -> int | float:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def _go_float(value: Decimal) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64), as Prometheus writes sample values."""
    text = format(value.normalize(), "f")
    return text


# --- the text format ------------------------------------------------------------------------------

SPEC_EXAMPLE = r"""# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
"""


def _parse(text: str, wanted: set[str] | None = None, default_ts_ms: int | None = None) -> Samples:
    parser = ExpositionParser(lambda name: wanted is None or name in wanted)
    parser.parse_lines(text.splitlines(keepends=True), "scrape.prom", default_ts_ms)
    return parser.samples


def _rows(samples: Samples) -> list[tuple[dict[str, str], int, Decimal]]:
    frame = samples.frame
    return [(samples.series[s], ts, v) for s, ts, v in frame.select("series", "ts_ms", "value").iter_rows()]


def test_the_spec_example_parses_with_its_escapes_and_quarantines_what_is_not_a_finite_number() -> None:
    samples = _parse(SPEC_EXAMPLE, default_ts_ms=1_700_000_000_000)
    rows = _rows(samples)
    assert rows[0] == ({NAME_LABEL: "http_requests_total", "method": "post", "code": "200"}, 1395066363000, 1027)
    assert rows[1][0]["code"] == "400" and rows[1][2] == 3
    msdos = rows[2][0]
    assert msdos["path"] == "C:\\DIR\\FILE.TXT"
    assert msdos["error"] == 'Cannot find file:\n"FILE.TXT"'
    assert rows[2][1:] == (1_700_000_000_000, Decimal("1458255915"))  # no timestamp: the scrape's time
    assert rows[3] == ({NAME_LABEL: "metric_without_timestamp_and_labels"}, 1_700_000_000_000, Decimal("12.47"))
    assert [r[0][NAME_LABEL] for r in rows[4:]] == ["http_request_duration_seconds_bucket"] * 2 + [
        "http_request_duration_seconds_sum"
    ]
    assert samples.quarantine == [("scrape.prom", "13", "something_weird: value +Inf is not a finite number")]
    assert samples.stats["lines"] == 8


def test_openmetrics_timestamps_are_seconds_and_exemplars_are_ignored() -> None:
    text = (
        "# TYPE vllm:prompt_tokens counter\n"
        "# HELP vllm:prompt_tokens Number of prefill tokens processed.\n"
        'vllm:prompt_tokens_total{model_name="m",engine="0"} 17.0 1740787200.250 # {trace_id="KOO5S4vxi0o"} 0.67\n'
        'vllm:prompt_tokens_created{model_name="m",engine="0"} 1.7407872e+09 1740787200.250\n'
        "# EOF\n"
    )
    samples = _parse(text, {"vllm:prompt_tokens_total"})
    assert _rows(samples) == [
        ({NAME_LABEL: "vllm:prompt_tokens_total", "model_name": "m", "engine": "0"}, 1740787200250, 17)
    ]
    assert samples.stats["lines_other_metrics"] == 1


def test_label_sets_with_blanks_trailing_commas_and_any_order_are_one_series() -> None:
    text = (
        'DCGM_FI_DEV_GPU_UTIL{gpu="0", UUID="GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52"} 139 1000\n'
        'DCGM_FI_DEV_GPU_UTIL{UUID="GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52",gpu="0",} 140 2000\n'
        'DCGM_FI_DEV_GPU_UTIL { gpu = "0" , UUID = "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52" } 141 3000\n'
    )
    samples = _parse(text)
    assert len(samples.series) == 1
    assert [r[1:] for r in _rows(samples)] == [(1000, 139), (2000, 140), (3000, 141)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('m{a="1",a="2"} 1 1000', "m: label 'a' appears twice"),
        ('m{a="x\\t"} 1 1000', 'm: invalid escape \\t in a label value (only \\\\, \\" and \\n)'),
        ('m{a="1" 1 1000', "m: unterminated label set"),
        ('m{a="1" b="2"} 1 1000', 'm: malformed label set {a="1" b="2"} at character 1'),
        ("m 1 1000 extra", "m: expected 'value [timestamp]' after the labels, got '1 1000 extra'"),
        ("m one 1000", "m: value 'one' is not a number"),
        ("m 1e30 1000", "m: value 1e30 is too large (at most 26 digits before the point)"),
        ("m Nan 1000", "m: value Nan is not a finite number"),
        ("m 1 1.5e12", "timestamp '1.5e12' is not integer milliseconds"),
        ("m 1", "sample has no timestamp and the file name carries no scrape time (…YYYYMMDDTHHMMSSZ…)"),
        ('{a="1"} 1 1000', "not a sample line: '{a=\"1\"} 1 1000'"),
    ],
)
def test_bad_lines_are_quarantined_with_the_line_and_why(line: str, reason: str) -> None:
    samples = _parse("# TYPE m gauge\n" + line + "\n")
    assert samples.quarantine == [("scrape.prom", "2", reason)]
    assert samples.frame.is_empty()


def test_a_scrape_without_timestamps_takes_the_time_in_its_file_name(tmp_path: Path) -> None:
    (tmp_path / "metrics-node1-20250301T001500Z.prom").write_text('DCGM_FI_DEV_GPU_UTIL{gpu="0"} 42\n')
    (tmp_path / "notes.md").write_text("not a scrape\n")
    samples = read_scrapes("gpus", str(tmp_path), lambda name: True, None)
    assert [r[1:] for r in _rows(samples)] == [(1740788100000, 42)]
    assert samples.files == [str(tmp_path / "metrics-node1-20250301T001500Z.prom")]


def test_samples_outside_the_window_are_counted_not_kept() -> None:
    parser = ExpositionParser(lambda name: True, window_ms=(2000, 3000))
    parser.parse_lines(["m 1 1000\n", "m 2 2000\n", "m 3 2999\n", "m 4 3000\n"], "f")
    assert [r[1] for r in _rows(parser.samples)] == [2000, 2999]
    assert parser.samples.stats["samples_outside_window"] == 2


def test_no_scrape_files_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no scrape files \(.prom, .txt, .metrics, .om, optionally .gz\) found"):
        read_scrapes("gpus", str(tmp_path), lambda name: True, None)


def test_deployments_come_from_the_first_non_empty_label_renamed_by_exact_value_or_glob() -> None:
    patterns = {"vllm-llama70b-*": "llama", "ip-10-0-12-34.ec2.internal": "node-34"}
    assert deployment_of({"pod": "vllm-llama70b-7c9d8f6b54-x2x4q"}, ["pod", "Hostname"], patterns) == "llama"
    assert (
        deployment_of({"pod": "", "Hostname": "ip-10-0-12-34.ec2.internal"}, ["pod", "Hostname"], patterns) == "node-34"
    )
    assert deployment_of({"Hostname": "gpu-box-7"}, ["pod", "Hostname"], patterns) == "gpu-box-7"
    assert deployment_of({"gpu": "0"}, ["pod", "Hostname"], patterns) is None


# --- query_range ----------------------------------------------------------------------------------


def test_the_grid_is_cut_into_queries_of_at_most_11000_points_without_overlap() -> None:
    step_s, start, end = 15, 1_740_787_200_000, 1_740_787_200_000 + 31 * 86_400_000
    chunks = list(grid(start, end, step_s))
    assert len(chunks) == 17  # 178,561 points / 11,000
    assert chunks[0][0] == start and chunks[-1][1] == end
    for (first, last), (following, _) in itertools.pairwise(chunks):
        assert (last - first) // (step_s * 1000) + 1 == 11_000
        assert following == last + step_s * 1000
    assert list(grid(1_000_500, 1_010_000, 5)) == [(1_000_000, 1_010_000)]  # aligned to multiples of the step


def _raw_samples() -> Samples:
    samples = Samples()
    parser = ExpositionParser(lambda name: True)
    parser.samples = samples
    lines = [f'up{{job="vllm",instance="a:8000"}} {i % 2} {1_740_787_200_000 + i * 60_000}\n' for i in range(40)]
    lines += [f'up{{job="dcgm",instance="b:9400"}} 1 {1_740_787_200_000 + i * 60_000}\n' for i in range(40)]
    parser.parse_lines(lines, "raw")
    return samples


def test_query_range_reads_every_chunk_of_a_matrix_and_sends_the_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_HELPER_PROM_TOKEN", "prom-token-123")
    monkeypatch.setattr(prometheus, "MAX_POINTS", 7)
    with FakePrometheus(_raw_samples()) as server:
        client = ApiClient(source="vllm", provider="Prometheus", base_url=server.base_url,
                           token_env="METRICS_HELPER_PROM_TOKEN", max_retries=0)  # fmt: skip
        samples = Samples()
        with client:
            query_range(client, samples, 'up{job="vllm"}', 1_740_787_200_000, 1_740_787_200_000 + 39 * 60_000, 60)
    assert samples.stats["api_queries"] == 6  # 40 points, 7 a query
    assert [r["start"] for r in server.requests[:2]] == ["1740787200", "1740787620"]
    assert {r["auth"] for r in server.requests} == {"Bearer prom-token-123"}
    rows = _rows(samples)
    assert len(rows) == 40 and {r[0]["instance"] for r in rows} == {"a:8000"}
    assert [r[2] for r in rows[:4]] == [0, 1, 0, 1]


def test_prometheus_errors_name_the_query_and_keep_prometheus_message() -> None:
    with FakePrometheus(_raw_samples()) as server:
        client = ApiClient(
            source="vllm", provider="Prometheus", base_url=server.base_url, token_env=None, max_retries=0
        )
        with client, pytest.raises(SourceError, match="exceeded maximum resolution of 11,000 points per timeseries"):
            client.get_json("/api/v1/query_range", {"query": "up", "start": "0", "end": "1000000", "step": "1s"})


def test_a_non_matrix_answer_is_an_error() -> None:
    with pytest.raises(SourceError, match="expected resultType 'matrix' with a result list, got 'vector'"):
        prometheus._matrix(
            "vllm", Samples(), {"status": "success", "data": {"resultType": "vector", "result": []}}, "q"
        )


def test_matrix_points_that_are_not_numbers_are_quarantined() -> None:
    samples = Samples()
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {NAME_LABEL: "up"}, "values": [[1740787200, "1"], [1740787260.5, "NaN"], [1740787320, 2]]},
    ]}}  # fmt: skip
    frame = prometheus._matrix("vllm", samples, body, "GET q")
    assert frame.select("ts_ms", "value").rows() == [(1740787200000, 1)]
    assert [q[2] for q in samples.quarantine] == [
        "up: value NaN is not a finite number",
        'expected [<unix seconds>, "<value>"]',
    ]
