"""OTel GenAI spans connector: collector-shaped fixtures, a conservation property, and the demo generator."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import BillingPeriod, SourceError
from connectors.otel_genai import load
from models.config import OtelGenAITelemetry
from models.usage import USAGE_KEYS, USAGE_MEASURES
from pipelines.demo import otel_spans
from pipelines.demo.company import FEATURE_BY_NAME, FEATURES, SAMPLING_RATIO, DemoMonth, expected_requests

FIXTURES = Path(__file__).parent / "fixtures" / "otel" / "collector"
MARCH = BillingPeriod("2025-03")
SECRETS = ("SECRET-PROMPT", "SECRET-ANSWER", "SECRET-INSTRUCTIONS", "4111-1111")
USEFUL = {"support_chat": "accepted", "code_assist": "accepted"}
QWEN, QWEN_HOST = "Qwen/Qwen2.5-Coder-32B-Instruct", "vllm-qwen-coder.nebius-eu-north1.internal"
LLAMA, LLAMA_HOST = "meta-llama/Llama-3.1-70B-Instruct", "vllm-llama70b.inference-prod.svc.cluster.local"
OPENAI = "api.openai.com"


def _source(path: Path | str) -> OtelGenAITelemetry:
    return OtelGenAITelemetry(name="otel", type="otel_genai", path=str(path))


@pytest.fixture
def span_folder(tmp_path: Path) -> Path:
    """The fixture folder as a collector leaves it: one day's file gzipped into a sub-folder, a stray file."""
    folder = tmp_path / "spans"
    (folder / "archive").mkdir(parents=True)
    shutil.copy(FIXTURES / "traces-2025-03-01.jsonl", folder)
    shutil.copy(FIXTURES / "single-request.json", folder)
    with gzip.open(folder / "archive" / "traces-2025-03-02.jsonl.gz", "wb") as gz:
        gz.write((FIXTURES / "traces-2025-03-02.jsonl").read_bytes())
    (folder / "collector.log").write_text("not spans\n")
    return folder


def _row(hour: str, deployment: str, provider: str, model: str, feature: str, env: str, *m: Any) -> dict[str, Any]:
    keys = dict(
        zip(
            USAGE_KEYS,
            (datetime.fromisoformat(hour).replace(tzinfo=UTC), "otel", deployment, provider, model, feature, env),
            strict=True,
        )
    )
    return keys | dict(zip(USAGE_MEASURES, (*m[:-1], Decimal(m[-1]).quantize(Decimal("0.000001"))), strict=True))


# requests, succeeded, failed, retried, accepted, useful_outputs, input, output, cached, gpu_seconds
EXPECTED_ROWS = [
    # span B: rate-limited, no tokens, no response model (request model used)
    _row("2025-03-01T10:00", OPENAI, "openai", "gpt-4.1", "support_chat", "production", 1, 0, 1, 0, 0, 0, 0, 0, 0, "0"),
    # spans A, C (a retry), E (with prompt content); A's re-sent copy counted once
    _row(
        "2025-03-01T10:00",
        OPENAI,
        "openai",
        "gpt-4.1-2025-04-14",
        "support_chat",
        "production",
        3,
        3,
        0,
        1,
        3,
        3,
        2700,
        600,
        400,
        "0",
    ),
    # span F: deprecated gen_ai.system, prompt/completion_tokens as JSON numbers, deployment.environment
    _row(
        "2025-03-01T11:00",
        OPENAI,
        "openai",
        "gpt-4.1-mini",
        "doc_summaries",
        "staging",
        1,
        1,
        0,
        0,
        0,
        1,
        14000,
        900,
        0,
        "0",
    ),
    # spans H, I: sampled 1 in 64 (ot=th:fc), 6.5 s + 5.5 s on the self-hosted deployment
    _row(
        "2025-03-01T11:00",
        QWEN_HOST,
        "vllm",
        QWEN,
        "code_assist",
        "production",
        128,
        128,
        0,
        0,
        64,
        64,
        256000,
        12800,
        0,
        "768",
    ),
    # span K: no feature attribute, unreadable th (weighs 1), 2.4 s
    _row(
        "2025-03-01T12:00", LLAMA_HOST, "vllm", LLAMA, "unattributed", "production", 1, 1, 0, 0, 0, 1, 420, 60, 0, "2.4"
    ),
    # span J: a 30 s timeout sampled at th:c (1 in 4) in a multi-vendor tracestate
    _row("2025-03-01T12:00", QWEN_HOST, "vllm", QWEN, "code_assist", "production", 4, 0, 4, 0, 0, 0, 0, 0, 0, "120"),
    # span P (gzipped file): th:8 (1 in 2), start time as a JSON number, output tokens as a double
    _row(
        "2025-03-02T00:00",
        OPENAI,
        "openai",
        "gpt-4.1-mini-2025-04-14",
        "search_rewrite",
        "production",
        2,
        2,
        0,
        0,
        0,
        2,
        900,
        110,
        0,
        "0",
    ),
    # span Q: a pretty-printed single-request .json file, text_completion operation
    _row(
        "2025-03-02T01:00",
        OPENAI,
        "openai",
        "gpt-4.1-mini-2025-04-14",
        "doc_summaries",
        "production",
        1,
        1,
        0,
        0,
        0,
        1,
        8000,
        700,
        0,
        "0",
    ),
]


def test_fixture_rows_per_hour_and_feature(span_folder: Path) -> None:
    result = load(_source(span_folder), MARCH, USEFUL)

    assert result.frame.schema == pl.Schema(USAGE_KEYS | USAGE_MEASURES)
    assert result.frame.to_dicts() == EXPECTED_ROWS


def test_fixture_counts_every_skipped_span(span_folder: Path) -> None:
    result = load(_source(span_folder), MARCH, USEFUL)

    assert result.stats == {
        "files": 3,
        "lines": 7,  # 5 + 1 + the single pretty-printed request
        "spans_read": 16,
        "genai_spans": 11,
        "duplicate_spans": 1,  # A re-sent with upper-case hex ids
        "non_genai_spans": 1,  # the HTTP span, despite its gen_ai.usage attribute
        "genai_non_inference_spans": 1,  # invoke_agent, whose tokens repeat its chat spans
        "spans_outside_period": 1,  # 2025-02-28T23:59:59.9
        "spans_missing_tokens": 2,  # B and J (failures)
        "spans_missing_feature": 1,  # K
        "sampled_spans": 4,  # H, I, J, P
        "invalid_sampling_thresholds": 1,  # K's "ot=th:"
    }
    assert result.repairs == {"integer_attribute_sent_as_double": 1}
    assert sorted(result.files) == sorted(str(p) for p in span_folder.rglob("*") if ".json" in p.name)


def test_fixture_quarantines_bad_lines_and_spans(span_folder: Path) -> None:
    quarantine = load(_source(span_folder), MARCH).quarantine
    day_file = str(span_folder / "traces-2025-03-01.jsonl")

    assert quarantine.to_dicts() == [
        {"file": day_file, "line": "3", "reason": "invalid JSON: Expecting ':' delimiter at column 182"},
        {"file": day_file, "line": "5", "reason": "span ?: missing traceId or spanId"},
    ]


def test_content_attributes_never_reach_the_output(span_folder: Path) -> None:
    assert any(s in (FIXTURES / "traces-2025-03-01.jsonl").read_text() for s in SECRETS)
    result = load(_source(span_folder), MARCH, USEFUL)

    dumped = json.dumps(
        [result.frame.to_dicts(), result.quarantine.to_dicts(), result.stats, result.repairs], default=str
    )
    assert not [s for s in SECRETS if s in dumped]


def test_useful_outputs_default_to_succeeded_first_attempts(span_folder: Path) -> None:
    frame = load(_source(span_folder), MARCH).frame
    by_model = dict(zip(frame["model"], frame["useful_outputs"], strict=False))

    assert by_model["gpt-4.1-2025-04-14"] == 2  # A and E; C is a retry
    assert frame.filter(pl.col("model") == QWEN)["useful_outputs"].to_list() == [128, 0]


def test_glob_and_period_select_spans(span_folder: Path) -> None:
    march = load(_source(span_folder / "**" / "*.jsonl.gz"), MARCH)
    february = load(_source(span_folder), BillingPeriod("2025-02"))

    assert march.frame["requests"].to_list() == [2]
    assert february.frame.height == 1 and february.frame["requests"].item() == 1  # span L
    assert february.frame["hour"].item() == datetime(2025, 2, 28, 23, tzinfo=UTC)


def test_unreadable_sources_raise_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"source 'otel': .*missing: no such file or folder"):
        load(_source(tmp_path / "missing"), MARCH)
    (tmp_path / "spans.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(SourceError, match=r"spans\.jsonl\.zst: zstd-compressed span files can't be read"):
        load(_source(tmp_path), MARCH)
    with pytest.raises(ValueError, match="useful_output must map features"):
        load(_source(FIXTURES), MARCH, {"support_chat": "liked"})


def test_non_power_of_two_threshold_rounds_the_adjusted_count(tmp_path: Path) -> None:
    # th:aaab is 1-in-3 at 4 digits of precision: adjusted count 3.00004577706569 (spec's table)
    span = _span(0, trace_state="ot=th:aaab", input_tokens=100_000)
    (tmp_path / "spans.jsonl").write_text(json.dumps(_request([span])) + "\n")
    frame = load(_source(tmp_path), MARCH).frame

    assert frame.select("requests", "input_tokens").row(0) == (3, 300_005)


def test_malformed_token_count_quarantines_the_span(tmp_path: Path) -> None:
    bad = _span(0, input_tokens=10)
    bad["attributes"][-1]["value"] = {"stringValue": "lots"}
    (tmp_path / "spans.jsonl").write_text(json.dumps(_request([bad, _span(2, output_tokens=7)])) + "\n")
    result = load(_source(tmp_path), MARCH)

    assert result.quarantine.rows() == [
        (
            str(tmp_path / "spans.jsonl"),
            "1",
            "span 0000000000000001: gen_ai.usage.input_tokens is not a non-negative integer: {'stringValue': 'lots'}",
        )
    ]
    assert result.frame["requests"].to_list() == [1]
    assert result.stats["genai_spans"] == 1 and result.stats["spans_missing_environment"] == 1


def test_deployment_falls_back_to_provider_and_environment_to_unknown(tmp_path: Path) -> None:
    (tmp_path / "spans.jsonl").write_text(json.dumps(_request([_span(0, provider="vllm", input_tokens=5)])) + "\n")
    frame = load(_source(tmp_path), MARCH).frame

    assert frame.select("deployment", "provider", "model", "feature", "environment").row(0) == (
        "vllm",
        "vllm",
        "m",
        "f",
        "unknown",
    )


# --- property: aggregation conserves requests, tokens and GPU time ------------------------------

THRESHOLDS = {"": 1, "0": 1, "8": 2, "c": 4, "fc": 64, "ff": 256}


def _span(i: int, trace_state: str = "", **m: Any) -> dict[str, Any]:
    start = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp()) * 10**9 + m.get("offset_ns", 0)
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.provider.name", "value": {"stringValue": m.get("provider", "openai")}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
        {"key": "app.feature", "value": {"stringValue": m.get("feature", "f")}},
    ]
    for key in ("input_tokens", "output_tokens"):
        if m.get(key) is not None:
            attrs.append({"key": f"gen_ai.usage.{key}", "value": {"intValue": str(m[key])}})
    if m.get("retried"):
        attrs.append({"key": "app.retry.attempt", "value": {"intValue": "2"}})
    if m.get("accepted"):
        attrs.append({"key": "app.user_accepted", "value": {"boolValue": True}})
    span = {
        "traceId": f"{i:032x}",
        "spanId": f"{i + 1:016x}",
        "name": "chat m",
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + m.get("duration_us", 0) * 1_000),
        "attributes": attrs,
        "status": {"code": 2} if m.get("failed") else {},
    }
    if trace_state:
        span["traceState"] = trace_state
    return span


def _request(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}


SPAN_PROPS = st.fixed_dictionaries(
    {
        "th": st.sampled_from(sorted(THRESHOLDS)),
        "feature": st.sampled_from(["a", "b", "c"]),
        "provider": st.sampled_from(["openai", "vllm"]),
        "offset_ns": st.integers(0, 3 * 24 * 3_600 * 10**9),
        "input_tokens": st.none() | st.integers(0, 10**6),
        "output_tokens": st.none() | st.integers(0, 10**5),
        "duration_us": st.integers(0, 120 * 10**6),
        "failed": st.booleans(),
        "retried": st.booleans(),
        "accepted": st.booleans(),
        "resent": st.booleans(),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SPAN_PROPS, max_size=40), st.integers(1, 10))
def test_aggregation_conserves_weighted_totals(props: list[dict[str, Any]], per_line: int) -> None:
    spans = [_span(i, f"ot=th:{p['th']}" if p["th"] else "", **p) for i, p in enumerate(props)]
    resent = [s for s, p in zip(spans, props, strict=True) if p["resent"]]
    lines = [_request(spans[i : i + per_line]) for i in range(0, len(spans), per_line)] + [_request(resent)]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spans.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        result = load(_source(tmp), MARCH, {"a": "accepted"})
    weights = [THRESHOLDS[p["th"]] for p in props]
    frame = result.frame

    def total(column: str) -> int | Decimal:
        return frame[column].sum() if frame.height else 0

    assert total("requests") == sum(weights)
    assert total("input_tokens") == sum(w * (p["input_tokens"] or 0) for w, p in zip(weights, props, strict=True))
    assert total("output_tokens") == sum(w * (p["output_tokens"] or 0) for w, p in zip(weights, props, strict=True))
    assert total("failed") == sum(w for w, p in zip(weights, props, strict=True) if p["failed"])
    assert total("succeeded") + total("failed") == total("requests")
    gpu_us = sum(w * p["duration_us"] for w, p in zip(weights, props, strict=True) if p["provider"] == "vllm")
    assert total("gpu_seconds") == Decimal(gpu_us) / 10**6
    assert (frame["useful_outputs"] <= frame["succeeded"]).all()
    assert result.stats.get("duplicate_spans", 0) == len(resent)


# --- the demo generator --------------------------------------------------------------------------

DEMO = DemoMonth("2025-03")
STORM_DAY = [DEMO.start + timedelta(days=DEMO.storm.day - 1, hours=h) for h in range(24)]


@pytest.fixture(scope="module")
def storm_day(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    folder = otel_spans.write_hours(DEMO, STORM_DAY, tmp_path_factory.mktemp("demo"), seed=11)
    assert [p.name for p in folder.iterdir()] == ["spans-2025-03-17.jsonl"]
    return load(_source(folder), MARCH, {f.name: f.useful_output for f in FEATURES}).frame


def test_demo_files_look_like_collector_output(tmp_path: Path) -> None:
    folder = otel_spans.write_hours(DEMO, STORM_DAY[:1], tmp_path, seed=3)
    request = json.loads((folder / "spans-2025-03-17.jsonl").read_text().splitlines()[0])
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attrs = {a["key"]: a["value"] for a in span["attributes"]}

    assert otel_spans.TRACE_STATE == "ot=th:fc" and span["traceState"] == "ot=th:fc"
    assert int(span["traceId"][-14:], 16) >= 0xFC << 48  # the trace's randomness passes the threshold
    assert span["kind"] == 3 and span["name"] == f"chat {attrs['gen_ai.request.model']['stringValue']}"
    assert isinstance(span["startTimeUnixNano"], str) and isinstance(span["endTimeUnixNano"], str)
    assert attrs["gen_ai.operation.name"] == {"stringValue": "chat"}
    assert all(isinstance(v["intValue"], str) for v in attrs.values() if "intValue" in v)


def test_demo_is_deterministic_per_seed(tmp_path: Path) -> None:
    def written(seed: int, name: str) -> str:
        return (
            otel_spans.write_hours(DEMO, STORM_DAY[9:10], tmp_path / name, seed) / "spans-2025-03-17.jsonl"
        ).read_text()

    assert written(5, "a") == written(5, "b")
    assert written(5, "a") != written(6, "c")


def test_demo_volume_matches_the_company_model(storm_day: pl.DataFrame) -> None:
    per_feature = dict(storm_day.group_by("feature").agg(pl.col("requests").sum()).iter_rows())
    for feature in FEATURES:
        expected = sum(expected_requests(feature, h, DEMO) for h in STORM_DAY)
        five_sigma = 5 * SAMPLING_RATIO * (expected / SAMPLING_RATIO) ** 0.5
        assert abs(per_feature[feature.name] - expected) < five_sigma, feature.name


def test_demo_storm_hours_show_the_retry_spike(storm_day: pl.DataFrame) -> None:
    storm = DEMO.storm
    support = storm_day.filter(pl.col("feature") == storm.feature).with_columns(
        in_storm=pl.col("hour").dt.hour().is_between(storm.start_hour, storm.end_hour - 1)
    )
    totals = {
        in_storm: row
        for in_storm, *row in support.group_by("in_storm")
        .agg(pl.col("requests", "retried", "failed").sum())
        .select("in_storm", "requests", "retried", "failed")
        .iter_rows()
    }
    storm_hours = [h for h in STORM_DAY if storm.start_hour <= h.hour < storm.end_hour]
    feature = FEATURE_BY_NAME[storm.feature]
    calm = sum(expected_requests(feature, h, DEMO) for h in storm_hours) / storm.request_multiplier

    requests, retried, failed = totals[True]
    assert requests > 5 * calm  # 7x planted
    assert retried / requests > 0.8 and 0.5 < failed / requests < 0.6
    calm_requests, calm_retried, calm_failed = totals[False]
    assert calm_retried / calm_requests < 0.05 and calm_failed / calm_requests < 0.03


@pytest.mark.slow
def test_demo_month_generates_and_parses_quickly(tmp_path: Path) -> None:
    import time

    began = time.perf_counter()
    folder = otel_spans.write(DEMO, tmp_path, seed=7)
    written = time.perf_counter()
    result = load(_source(folder), MARCH)
    parsed = time.perf_counter()

    assert len(list(folder.iterdir())) == 31
    assert written - began < 30 and parsed - written < 30
    assert 120_000 < result.stats["genai_spans"] < 160_000
    assert result.quarantine.height == 0
