"""Prometheus metrics, shared by the vLLM and DCGM connectors: text-format scrapes and the HTTP API.

Formats followed:

- "Exposition formats", Prometheus text format 0.0.4 (prometheus/docs
  ``content/docs/instrumenting/exposition_formats.md``; https://prometheus.io/docs/instrumenting/exposition_formats/):
  line oriented; ``# HELP`` / ``# TYPE`` comment lines; samples
  ``metric_name[{label="value",...}] value [timestamp]`` where tokens may be separated by any blanks,
  a trailing comma in the label set is allowed, label values escape backslash, double quote and line
  feed as ``\\\\``, ``\\"`` and ``\\n``; ``value`` is a Go float (``NaN``, ``+Inf``, ``-Inf`` allowed) and
  ``timestamp`` an int64 of **milliseconds** since the epoch. dcgm-exporter's own README shows label
  sets with a blank after the comma (``{gpu="0", UUID="GPU-…"}``), which this parser accepts.
- OpenMetrics 1.0 text (a file ending with ``# EOF``): the same sample lines, but timestamps are
  **seconds** (possibly fractional), and exemplars (`` # {trace_id="…"} 1.0``) may follow a sample.
- Files of timestamped scrapes: what Prometheus' ``/federate`` endpoint returns (text format, every
  sample with its timestamp), saved scrape after scrape; one file may hold many scrapes, so ``HELP`` /
  ``TYPE`` lines may repeat. A sample without a timestamp takes the scrape time from the file name
  (``…20250301T120000Z…``, as ``curl -o metrics-$(date -u +%Y%m%dT%H%M%SZ).prom`` writes); without one
  it is quarantined. ``.gz`` files are read too.
- HTTP API ``GET /api/v1/query_range`` (prometheus.io/docs/prometheus/latest/querying/api): response
  ``{"status":"success","data":{"resultType":"matrix","result":[{"metric":{…},"values":[[<unix seconds>,
  "<value>"],…]}]}}``; values are strings, timestamps float seconds. The API has no pagination; a query
  may return at most 11,000 points per series (``exceeded maximum resolution of 11,000 points per
  timeseries``), so ranges are cut into chunks of at most ``MAX_POINTS`` steps on a grid aligned to
  multiples of the step. The value at grid time t is the newest sample at or before t (within the
  5-minute lookback), so it describes the interval (t − step, t].

Rules: a line that is not a comment and not a sample, a malformed label set, a value that is not a
finite number, or a sample without any timestamp goes to the quarantine (file, line, reason). Samples
of metrics the caller does not want are only counted (``lines_other_metrics``); samples outside the
caller's time window are counted (``samples_outside_window``). ``records_read`` counts the samples
(lines or API points) of wanted metrics, good or quarantined. The same series is recognised whatever
the order of its labels.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import polars as pl

from connectors.base import QUARANTINE_SCHEMA, SourceError, find_files
from connectors.http import ApiClient

NAME_LABEL = "__name__"
MAX_POINTS = 11_000  # Prometheus' limit of points per series in one range query
VALUE = pl.Decimal(38, 12)
VALUE_QUANTUM = Decimal("1e-12")
VALUE_LIMIT = Decimal("1e26")  # Decimal(38, 12) holds 26 digits before the point
_WIDE = Context(prec=60)
READABLE_SUFFIXES = (".prom", ".txt", ".metrics", ".om")
SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "series": pl.Int64(),
    "ts_ms": pl.Int64(),
    "value": VALUE,
    "file": pl.String(),
    "line": pl.String(),
}

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_BLOCK = re.compile(r'\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\}')
_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_SCRAPE_TIME = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})T(\d{2})[:\-]?(\d{2})[:\-]?(\d{2})Z")


class _BadLine(ValueError):
    """A line that can't be read as a sample (goes to the quarantine)."""


@dataclass
class Samples:
    """Parsed samples of one load: ``frame`` rows point into ``series`` (each series' labels, name included)."""

    series: list[dict[str, str]] = field(default_factory=list)
    frames: list[pl.DataFrame] = field(default_factory=list)
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    _ids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = field(default_factory=dict)

    def series_id(self, labels: dict[str, str]) -> int:
        key = (labels.get(NAME_LABEL, ""), tuple(sorted(labels.items())))
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.series)
            self.series.append(labels)
        return found

    @property
    def frame(self) -> pl.DataFrame:
        return pl.concat([pl.DataFrame(schema=SAMPLE_SCHEMA), *self.frames], how="vertical")

    def quarantine_frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.quarantine, schema=QUARANTINE_SCHEMA, orient="row")


# --- text format ----------------------------------------------------------------------------------


@dataclass
class _FileRows:
    """One file's samples as read: series id, raw timestamp and value text, line number."""

    series: list[int] = field(default_factory=list)
    stamps: list[str | None] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


class ExpositionParser:
    """Reads text-format scrape files into ``Samples``, keeping only the metrics ``wanted`` names.

    ``window_ms`` ``[start, end)``: samples outside it are counted, not kept (bounded memory when a
    folder holds many months). Scrapes repeat the same label sets over and over, so a label set's text
    is parsed once and later lines only look it up.
    """

    def __init__(self, wanted: Callable[[str], bool], window_ms: tuple[int, int] | None = None) -> None:
        self.wanted = wanted
        self.window_ms = window_ms
        self.samples = Samples()
        self._series: dict[tuple[str, str], int] = {}  # (name, raw label text) → series id

    def parse_file(self, path: Path) -> None:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            self.parse_lines(fh, str(path), _scrape_time_ms(path.name))
        self.samples.files.append(str(path))

    def parse_lines(self, lines: Iterable[str], where: str, default_ts_ms: int | None = None) -> None:
        rows = _FileRows()
        openmetrics = False
        stats = self.samples.stats
        for line_no, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            if line[0] == "#":
                openmetrics = openmetrics or line.split()[1:2] == ["EOF"]
                continue
            stats["lines"] += 1
            try:
                self._sample(line, line_no, rows)
            except _BadLine as exc:
                self.samples.quarantine.append((where, str(line_no), str(exc)))
        self._finish(rows, where, default_ts_ms, openmetrics)

    def _sample(self, line: str, line_no: int, rows: _FileRows) -> None:
        name_match = _METRIC_NAME.match(line)
        if name_match is None:
            self.samples.stats["records_read"] += 1
            raise _BadLine(f"not a sample line: {line[:80]!r}")
        name = name_match.group()
        if not self.wanted(name):
            self.samples.stats["lines_other_metrics"] += 1
            return
        self.samples.stats["records_read"] += 1  # a sample of a wanted metric, good or quarantined
        rest = line[name_match.end() :]
        if rest and rest[0] not in " \t{":
            raise _BadLine(f"{name}: unexpected {rest[0]!r} after the metric name")
        rest = rest.lstrip(" \t")  # blanks may separate every token, the label set included
        sid, rest = self._series_id(name, rest)
        tokens = rest.split(" # ", 1)[0].split()  # OpenMetrics exemplars follow " # "
        if not 1 <= len(tokens) <= 2:
            raise _BadLine(f"{name}: expected 'value [timestamp]' after the labels, got {rest.strip()[:80]!r}")
        rows.series.append(sid)
        rows.stamps.append(tokens[1] if len(tokens) == 2 else None)
        rows.values.append(tokens[0])
        rows.lines.append(line_no)

    def _series_id(self, name: str, rest: str) -> tuple[int, str]:
        """The series of a sample line and what follows its label set."""
        if not rest.startswith("{"):
            sid = self._series.get((name, ""))
            if sid is None:
                sid = self._series[(name, "")] = self.samples.series_id({NAME_LABEL: name})
            return sid, rest
        close = rest.rfind("}")
        # A label set seen before (validated then): its closing brace is the line's last one, unless an
        # exemplar follows, whose text then never matches a cached label set and takes the slow path.
        sid = self._series.get((name, rest[1:close]))
        if sid is not None:
            return sid, rest[close + 1 :]
        block = _LABEL_BLOCK.match(rest)
        if block is None:
            raise _BadLine(f"{name}: unterminated label set")
        labels = _parse_labels(name, block.group(1))
        sid = self._series[(name, block.group(1))] = self.samples.series_id({NAME_LABEL: name, **labels})
        return sid, rest[block.end() :]

    def _finish(self, rows: _FileRows, where: str, default_ts_ms: int | None, openmetrics: bool) -> None:
        """Timestamps and values of the file's samples checked at once; the bad ones quarantined."""
        raw = pl.DataFrame(
            {"series": rows.series, "stamp": rows.stamps, "text": rows.values, "line": rows.lines},
            schema={"series": pl.Int64(), "stamp": pl.String(), "text": pl.String(), "line": pl.Int64()},
        )
        values = {text: _value_or_problem(text) for text in raw["text"].unique().to_list()}
        problems = {t: v for t, v in values.items() if isinstance(v, str)}
        numbers = {t: v for t, v in values.items() if isinstance(v, Decimal)}
        stamps = _stamps_ms(raw["stamp"], openmetrics, default_ts_ms)
        checked = raw.with_columns(
            ts_ms=stamps,
            problem=pl.col("text").replace_strict(problems, default=None, return_dtype=pl.String()),
        )
        bad = checked.filter(pl.col("problem").is_not_null() | pl.col("ts_ms").is_null())
        for sid, line, stamp, problem, ts in bad.select("series", "line", "stamp", "problem", "ts_ms").iter_rows():
            name = self.samples.series[sid][NAME_LABEL]
            reason = _stamp_problem(stamp, openmetrics) if ts is None else f"{name}: {problem}"
            self.samples.quarantine.append((where, str(line), reason))
        good = checked.filter(pl.col("problem").is_null() & pl.col("ts_ms").is_not_null())
        frame = good.select(
            "series",
            "ts_ms",
            pl.col("text").replace_strict(numbers, default=None, return_dtype=VALUE).alias("value"),
            pl.lit(where).alias("file"),
            pl.col("line").cast(pl.String()),
        )
        self.samples.frames.append(_in_window(frame, self.window_ms, self.samples.stats))


def _parse_labels(name: str, text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text) and not text[pos:].isspace():
        pair = _LABEL_PAIR.match(text, pos)
        if pair is None:
            raise _BadLine(f"{name}: malformed label set {{{text[:120]}}} at character {pos + 1}")
        label, value = pair.group(1), _unescape(name, pair.group(2))
        if label in labels:
            raise _BadLine(f"{name}: label {label!r} appears twice")
        labels[label] = value
        pos = pair.end()
        if not pair.group(3):
            break
    return labels


def _value_or_problem(text: str) -> Decimal | str:
    """A sample value as an exact decimal (12 places), or why it isn't one."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return f"value {text!r} is not a number"
    if not value.is_finite():
        return f"value {text} is not a finite number"
    if abs(value) >= VALUE_LIMIT:
        return f"value {text} is too large (at most 26 digits before the point)"
    return value.quantize(VALUE_QUANTUM, context=_WIDE)


def _stamps_ms(stamps: pl.Series, openmetrics: bool, default_ts_ms: int | None) -> pl.Series:
    """Milliseconds since the epoch; NULL where the timestamp can't be read."""
    if openmetrics:  # seconds, maybe fractional: exact through Decimal
        ms = [None if s is None else _openmetrics_ms(s) for s in stamps.to_list()]
        parsed = pl.Series(ms, dtype=pl.Int64())
    else:
        parsed = stamps.str.to_integer(strict=False)
    default = pl.Series([default_ts_ms] * len(stamps), dtype=pl.Int64())
    return pl.select(pl.when(stamps.is_null()).then(default).otherwise(parsed)).to_series()


def _openmetrics_ms(stamp: str) -> int | None:
    try:
        return int(Decimal(stamp) * 1000)
    except (InvalidOperation, ValueError, OverflowError):  # not a number, NaN, infinity
        return None


def _stamp_problem(stamp: str | None, openmetrics: bool) -> str:
    if stamp is None:
        return "sample has no timestamp and the file name carries no scrape time (…YYYYMMDDTHHMMSSZ…)"
    unit = "seconds (OpenMetrics)" if openmetrics else "integer milliseconds"
    return f"timestamp {stamp!r} is not {unit}"


def _unescape(name: str, value: str) -> str:
    if "\\" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        if char not in _ESCAPES:
            raise _BadLine(f'{name}: invalid escape \\{char} in a label value (only \\\\, \\" and \\n)')
        return _ESCAPES[char]

    return _ESCAPE.sub(replace, value)


def _finite(name: str, text: str) -> Decimal:
    value = _value_or_problem(text)
    if isinstance(value, str):
        raise _BadLine(f"{name}: {value}")
    return value


def _scrape_time_ms(file_name: str) -> int | None:
    match = _SCRAPE_TIME.search(file_name)
    if match is None:
        return None
    y, mo, d, h, mi, s = map(int, match.groups())
    return int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()) * 1000


def _in_window(frame: pl.DataFrame, window_ms: tuple[int, int] | None, stats: Counter[str]) -> pl.DataFrame:
    if window_ms is None:
        return frame
    inside = frame.filter(pl.col("ts_ms").is_between(window_ms[0], window_ms[1], closed="left"))
    stats["samples_outside_window"] += frame.height - inside.height
    return inside


def scrape_files(source_name: str, path: str) -> list[Path]:
    """The scrape files a folder (searched recursively), a glob or a file names, in a stable order."""
    candidates = find_files(source_name, path)
    files = [p for p in candidates if p.name.removesuffix(".gz").endswith(READABLE_SUFFIXES)]
    if not files:
        raise SourceError(
            source_name, path, f"no scrape files ({', '.join(READABLE_SUFFIXES)}, optionally .gz) found", "check `path`"
        )
    return files


def read_scrapes(
    source_name: str, path: str, wanted: Callable[[str], bool], window_ms: tuple[int, int] | None
) -> Samples:
    parser = ExpositionParser(wanted, window_ms)
    for file in scrape_files(source_name, path):
        parser.parse_file(file)
    return parser.samples


# --- HTTP API -------------------------------------------------------------------------------------


def grid(start_ms: int, end_ms: int, step_s: int) -> Iterator[tuple[int, int]]:
    """``[first, last]`` grid times (ms) of each query: at most ``MAX_POINTS`` points, none repeated."""
    step_ms = step_s * 1000
    first = start_ms - start_ms % step_ms
    while first <= end_ms:
        last = min(end_ms - (end_ms - first) % step_ms, first + (MAX_POINTS - 1) * step_ms)
        yield first, last
        first = last + step_ms


def query_range(client: ApiClient, samples: Samples, query: str, start_ms: int, end_ms: int, step_s: int) -> None:
    """Run ``query`` over ``[start_ms, end_ms]`` in chunks and add the matrix results to ``samples``."""
    for first, last in grid(start_ms, end_ms, step_s):
        params = {"query": query, "start": _seconds(first), "end": _seconds(last), "step": f"{step_s}s"}
        response = client.get_json("/api/v1/query_range", params)
        where = f"GET /api/v1/query_range?query={query} [{_seconds(first)}, {_seconds(last)}]"
        samples.stats["api_queries"] += 1
        samples.frames.append(_matrix(client.source, samples, response.body, where))
    samples.files.append(f"{client.provider} query_range {query}")


def _matrix(source_name: str, samples: Samples, body: Any, where: str) -> pl.DataFrame:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or body.get("status") != "success":
        raise SourceError(source_name, where, f"expected {{'status': 'success', 'data': …}}, got {str(body)[:200]}")
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise SourceError(
            source_name, where, f"expected resultType 'matrix' with a result list, got {data.get('resultType')!r}"
        )
    samples.stats["api_warnings"] += len(body.get("warnings") or [])
    series: list[int] = []
    stamps: list[int] = []
    values: list[Decimal] = []
    lines: list[str] = []
    for i, result in enumerate(data["result"]):
        metric = result.get("metric") if isinstance(result, dict) else None
        points = result.get("values") if isinstance(result, dict) else None
        if not isinstance(metric, dict) or not isinstance(points, list):
            samples.quarantine.append((where, f"series {i}", "result entry without 'metric' and 'values'"))
            continue
        sid = samples.series_id({str(k): str(v) for k, v in metric.items()})
        samples.stats["records_read"] += len(points)
        for point in points:
            try:
                stamp, value = _point(metric.get(NAME_LABEL, "?"), point)
            except _BadLine as exc:
                samples.quarantine.append((where, f"series {i} point {point!r}"[:200], str(exc)))
                continue
            series.append(sid)
            stamps.append(stamp)
            values.append(value)
            lines.append(f"series {i} @ {stamp}")
    return pl.DataFrame(
        {"series": series, "ts_ms": stamps, "value": values, "file": [where] * len(series), "line": lines},
        schema=SAMPLE_SCHEMA,
    )


def _point(name: str, point: Any) -> tuple[int, Decimal]:
    if not (isinstance(point, list) and len(point) == 2 and isinstance(point[1], str)):
        raise _BadLine('expected [<unix seconds>, "<value>"]')
    try:
        stamp = int(Decimal(str(point[0])) * 1000)
    except InvalidOperation:
        raise _BadLine(f"timestamp {point[0]!r} is not a number") from None
    return stamp, _finite(name, point[1])


def _seconds(ms: int) -> str:
    return str(Decimal(ms) / 1000)


def api_client(source: Any) -> ApiClient:
    """An API client for a metrics source with ``prometheus_url`` (bearer token from ``bearer_token_env``)."""
    return ApiClient(
        source=source.name,
        provider="Prometheus",
        base_url=source.prometheus_url,
        token_env=source.bearer_token_env,
        timeout_seconds=source.timeout_seconds,
        max_retries=source.max_retries,
    )


# --- series → deployments -------------------------------------------------------------------------


def deployment_of(labels: dict[str, str], label_names: list[str], patterns: dict[str, str]) -> str | None:
    """The first non-empty of ``label_names``, renamed by the first matching pattern (exact or glob)."""
    value = next((labels[n] for n in label_names if labels.get(n)), None)
    if value is None:
        return None
    for pattern, deployment in patterns.items():
        if value == pattern or fnmatchcase(value, pattern):
            return deployment
    return value


def selector_query(metric_matcher: str, selector: str) -> str:
    """A PromQL series selector: ``{__name__=~"…", job="x"}`` or ``name{job="x"}``."""
    extra = selector.strip().strip("{}").strip()
    if metric_matcher.startswith("__name__"):
        return "{" + ",".join(m for m in (metric_matcher, extra) if m) + "}"
    return f"{metric_matcher}{{{extra}}}" if extra else metric_matcher


def plain_number(column: str) -> pl.Expr:
    """A decimal value as text without trailing zeros (12.500000000000 → 12.5), for messages."""
    return pl.col(column).cast(pl.String()).str.replace(r"(\.\d*?)0+$", "$1").str.replace(r"\.$", "")
