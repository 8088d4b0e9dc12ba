"""Benchmark: aggregate N OpenTelemetry GenAI spans into hourly inference usage, against a DuckDB floor.

Data: one OTLP/JSON-lines file (the Collector file exporter's and ``cogs collect``'s format) of N distinct spans
over March 2025, written in chunks (never held in memory). The shapes are the demo generator's
(``pipelines.demo.otel_spans``: its spans for sample hours of every feature, route, outcome, retry, sampling
tracestate and self-hosted duration), re-stamped with fresh ids and start times spread over the month in time
order, 512 spans per ExportTraceServiceRequest line; 0.5 % of the lines are sent twice (exporter retries), so
the duplicates are part of the work. ``--compress gzip`` writes ``spans.jsonl.gz`` instead.

Contenders, each in its own child process on the same file:

- ours: ``connectors.otel_genai.load_batches`` (streaming, duplicate detection, every rule, sampling weights)
  down to the hourly ``inference_usage`` frame;
- floor: DuckDB alone, ``read_ndjson`` of the same file with an explicit schema, unnesting the spans and
  summing requests and tokens per hour, feature and model after ``DISTINCT`` on (traceId, spanId): the cost of
  reading and aggregating the same data without our rules.

Time is each child's clock around the work (interpreter start-up and imports excluded). Memory is the child's
peak RSS (``wait4``). The check: both agree on the distinct spans and tokens (ours are weighted by the
demo's 1-in-64 sampling, so ours = 64 × the floor's), and ours stays within the memory limit.

Usage: ``python benchmarks/bench_spans.py --spans 1000000`` (add ``--keep`` to keep the generated file).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
PERIOD = "2025-03"
SPANS_PER_LINE = 512
RESEND_SHARE = 0.005
SAMPLING_WEIGHT = 64  # the demo's ot=th:fc
MEMORY_LIMIT_MIB = 1_024  # ours must stay under this at any N: memory is bounded, not proportional to input
PLACEHOLDERS = ("@@TRACE@@", "@@SPAN@@", "@@START@@", "@@END@@")
ID_AND_TIME_FIELDS = ("traceId", "spanId", "startTimeUnixNano", "endTimeUnixNano")
LINE_HEAD = b'{"resourceSpans":[{"resource":'
SCOPE = b',"scopeSpans":[{"scope":{"name":"lumen.inference.client"},"spans":['
LINE_TAIL = b"]}]}]}\n"


# --- data ---------------------------------------------------------------------------------------------------


def _templates(seed: int) -> list[tuple[bytes, list[tuple[list[bytes], int]]]]:
    """Per feature: its resource JSON and its demo spans cut around the id and time placeholders."""
    sys.path.insert(0, str(ROOT))
    from pipelines.demo import otel_spans
    from pipelines.demo.company import FEATURES, DemoMonth

    month = DemoMonth(PERIOD)
    storm_day = month.start + timedelta(days=month.storm.day - 1)
    # a weekday, a weekend day and one hour of the planted retry storm, at night, morning, afternoon and evening
    hours = [month.start + timedelta(days=d, hours=h) for d in (2, 8) for h in (3, 10, 15, 20)]
    hours.append(storm_day + timedelta(hours=month.storm.start_hour))
    features = []
    for feature in FEATURES:
        resource, cut = b"", []
        for hour in hours:
            for request in otel_spans._export_requests(month, feature, hour, seed):
                resource_spans = request["resourceSpans"][0]
                resource = json.dumps(resource_spans["resource"], separators=(",", ":")).encode()
                for span in resource_spans["scopeSpans"][0]["spans"]:
                    start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
                    span |= dict(zip(ID_AND_TIME_FIELDS, PLACEHOLDERS, strict=True))
                    cut.append((_cut(json.dumps(span, separators=(",", ":")).encode()), end - start))
        features.append((resource, cut))
    return features


def _cut(text: bytes) -> list[bytes]:
    """The span's JSON split at the four placeholders, in order."""
    parts = []
    for placeholder in PLACEHOLDERS:
        head, _, text = text.partition(placeholder.encode())
        parts.append(head)
    return [*parts, text]


def _lines(spans: int, seed: int) -> Iterator[tuple[bytes, int]]:
    """(line, distinct spans in it); a re-sent line comes right after its original with 0 new spans."""
    rng = random.Random(seed)
    features = _templates(seed)
    weights = [len(cut) for _, cut in features]  # the demo's own traffic mix
    month_start = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
    hours = 31 * 24
    written = 0
    while written < spans:
        count = min(SPANS_PER_LINE, spans - written)
        resource, cut = rng.choices(features, weights)[0]
        hour_ns = (month_start + (written * hours // spans) * 3_600) * 10**9
        body = b",".join(_stamp(rng, cut, written + i, hour_ns) for i in range(count))
        line = (
            b'{"resourceSpans":[{"resource":' + resource + b',"scopeSpans":[{"scope":{"name":"lumen.inference.client"'
        )
        line += b'},"spans":[' + body + b"]}]}]}\n"
        yield line, count
        if rng.random() < RESEND_SHARE:
            yield line, 0
        written += count


def _stamp(rng: random.Random, cut: list[tuple[list[bytes], int]], n: int, hour_ns: int) -> bytes:
    parts, duration = cut[rng.randrange(len(cut))]
    start = hour_ns + rng.randrange(3_600 * 10**9)
    trace = f"{rng.getrandbits(72):018x}{0xFC << 48 | n:014x}"  # unique; randomness passes the th:fc threshold
    values = (trace.encode(), f"{n:016x}".encode(), str(start).encode(), str(start + duration).encode())
    return b"".join((parts[0], values[0], parts[1], values[1], parts[2], values[2], parts[3], values[3], parts[4]))


def ensure_data(spans: int, seed: int, compress: str) -> tuple[Path, dict[str, int]]:
    folder = OUT / f"spans-{spans}-seed{seed}"
    path = folder / ("spans.jsonl.gz" if compress == "gzip" else "spans.jsonl")
    meta = folder / f"{path.name}.meta.json"
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    began, lines, resent, resent_spans = time.perf_counter(), 0, 0, 0
    opener: Any = gzip.open if compress == "gzip" else open
    with opener(path.with_suffix(path.suffix + ".tmp"), "wb", **({"compresslevel": 1} if compress else {})) as fh:
        out: IO[bytes] = fh
        previous = 0
        for line, new in _lines(spans, seed):
            out.write(line)
            lines += 1
            if new == 0:
                resent, resent_spans = resent + 1, resent_spans + previous
            previous = new or previous
    path.with_suffix(path.suffix + ".tmp").rename(path)
    info = {"spans": spans, "lines": lines, "resent_lines": resent, "duplicate_spans": resent_spans}
    info["bytes"] = path.stat().st_size
    meta.write_text(json.dumps(info))
    print(
        f"generated {spans:,} spans in {time.perf_counter() - began:,.1f} s: {path} ({info['bytes'] / 2**30:.2f} GiB)"
    )
    return path, info


# --- children -----------------------------------------------------------------------------------------------


def child_ours(path: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import polars as pl

    from connectors.otel_genai import load_batches
    from models.config import OtelGenAITelemetry
    from models.period import BillingPeriod

    source = OtelGenAITelemetry(name="otel", type="otel_genai", path=str(path))
    began = time.perf_counter()
    stats: dict[str, int] = {}
    frame = pl.DataFrame()
    for batch in load_batches(source, BillingPeriod(PERIOD)):
        for key, value in batch.stats.items():
            stats[key] = stats.get(key, 0) + value
        frame = batch.frame
    seconds = time.perf_counter() - began
    totals = frame.select(pl.col("requests", "input_tokens", "output_tokens").sum()).row(0, named=True)
    return {"seconds": seconds, "rows": frame.height, "stats": stats, "totals": totals}


FLOOR_SQL = """
WITH spans AS (
    SELECT unnest(ss.spans) AS s
    FROM (SELECT unnest(rs.scopeSpans) AS ss
          FROM (SELECT unnest(resourceSpans) AS rs FROM read_ndjson(?, columns = {columns},
                maximum_object_size = 268435456, format = 'newline_delimited')))
), fields AS (
    SELECT DISTINCT ON (s.traceId, s.spanId)
        CAST(s.startTimeUnixNano AS HUGEINT) // 3600000000000 AS hour,
        list_filter(s.attributes, lambda a: a.key = 'app.feature')[1].value.stringValue AS feature,
        coalesce(list_filter(s.attributes, lambda a: a.key = 'gen_ai.response.model')[1].value.stringValue,
                 list_filter(s.attributes, lambda a: a.key = 'gen_ai.request.model')[1].value.stringValue) AS model,
        coalesce(CAST(list_filter(s.attributes, lambda a: a.key = 'gen_ai.usage.input_tokens')[1].value.intValue
                      AS BIGINT), 0) AS input_tokens,
        coalesce(CAST(list_filter(s.attributes, lambda a: a.key = 'gen_ai.usage.output_tokens')[1].value.intValue
                      AS BIGINT), 0) AS output_tokens
    FROM spans
)
SELECT hour, feature, model, count(*) AS requests, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens
FROM fields GROUP BY ALL
"""
ANY_VALUE = "STRUCT(stringValue VARCHAR, intValue VARCHAR, boolValue BOOLEAN, doubleValue DOUBLE)"
ATTRIBUTES = f"STRUCT(key VARCHAR, value {ANY_VALUE})[]"
SPAN = f"STRUCT(traceId VARCHAR, spanId VARCHAR, startTimeUnixNano VARCHAR, attributes {ATTRIBUTES})"
REQUEST = f"STRUCT(resource STRUCT(attributes {ATTRIBUTES}), scopeSpans STRUCT(spans {SPAN}[])[])[]"


def child_floor(path: Path) -> dict[str, Any]:
    import duckdb

    began = time.perf_counter()
    con = duckdb.connect()
    sql = FLOOR_SQL.replace("{columns}", "{'resourceSpans': '" + REQUEST + "'}")
    rows = con.execute(sql, [str(path)]).fetchall()
    seconds = time.perf_counter() - began
    totals = {
        "requests": sum(r[3] for r in rows),
        "input_tokens": sum(r[4] for r in rows),
        "output_tokens": sum(r[5] for r in rows),
    }
    return {"seconds": seconds, "rows": len(rows), "totals": totals}


def run_child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=("ours", "floor"), required=True)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args(argv)
    result = child_ours(args.file) if args.child == "ours" else child_floor(args.file)
    print(json.dumps(result), flush=True)
    return 0


def measure(child: str, path: Path) -> dict[str, Any]:
    """Run a contender in its own process; its JSON result plus its peak RSS and CPU from wait4."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", child, "--file", str(path)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{child} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result |= {"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime}
    result["peak_mib"] = usage.ru_maxrss / 1024
    return result


# --- the run ------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if "--child" in argv:
        return run_child(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--compress", choices=("none", "gzip"), default="none")
    parser.add_argument("--keep", action="store_true", help="keep the generated file under benchmarks/out/")
    parser.add_argument("--skip-floor", action="store_true")
    args = parser.parse_args(argv)

    path, info = ensure_data(args.spans, args.seed, "" if args.compress == "none" else "gzip")
    try:
        ours = measure("ours", path)
        floor = None if args.skip_floor else measure("floor", path)
    finally:
        if not args.keep:
            path.unlink()
            Path(f"{path}.meta.json").unlink()
    print(_report(args.spans, info, ours, floor))
    return 0 if _checks(args.spans, info, ours, floor) else 1


def _report(spans: int, info: dict[str, int], ours: dict[str, Any], floor: dict[str, Any] | None) -> str:
    read = spans + info["duplicate_spans"]
    lines = [
        f"{spans:,} distinct spans (+{info['duplicate_spans']:,} re-sent) in {info['lines']:,} lines, "
        f"{info['bytes'] / 2**30:.2f} GiB, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        f"{'contender':<8} {'seconds':>9} {'spans/s':>11} {'cpu s':>8} {'spans/cpu-s':>12} {'peak MiB':>9} {'rows':>7}",
    ]
    for name, m in (("ours", ours), ("floor", floor)):
        if m is not None:
            lines.append(
                f"{name:<8} {m['seconds']:>9.1f} {read / m['seconds']:>11,.0f} {m['cpu']:>8.1f} "
                f"{read / m['cpu']:>12,.0f} {m['peak_mib']:>9,.0f} {m['rows']:>7,}"
            )
    if floor is not None:
        lines.append(f"ours / floor: {ours['seconds'] / floor['seconds']:.1f}x the time")
    lines.append(f"ours stats: {json.dumps(ours['stats'], sort_keys=True)}")
    return "\n".join(lines)


def _checks(spans: int, info: dict[str, int], ours: dict[str, Any], floor: dict[str, Any] | None) -> bool:
    stats, ok = ours["stats"], True
    checks = [
        ("every distinct span counted once", stats.get("genai_spans") == spans),
        ("every re-sent span found", stats.get("duplicate_spans") == info["duplicate_spans"]),
        ("nothing quarantined", "quarantined" not in stats),
        (f"peak memory under {MEMORY_LIMIT_MIB} MiB", ours["peak_mib"] < MEMORY_LIMIT_MIB),
    ]
    if floor is not None:
        weighted = {k: SAMPLING_WEIGHT * v for k, v in floor["totals"].items()}
        checks.append(("requests and tokens = 64 x the floor's", ours["totals"] == weighted))
    for name, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}: {name}")
        ok &= passed
    return ok


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
