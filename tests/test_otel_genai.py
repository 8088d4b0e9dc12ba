"""OTel GenAI spans connector: collector-shaped fixtures, a conservation property, and the demo generator."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors import otel_genai
from connectors.base import BillingPeriod, SourceError
from connectors.otel_genai import load
from models.config import CogsConfig, FeatureConfig, OtelGenAITelemetry
from models.usage import USAGE_KEYS, USAGE_MEASURES, hash_customer
from pipelines.demo import otel_spans
from pipelines.demo.company import FEATURE_BY_NAME, FEATURES, SAMPLING_RATIO, DemoMonth, expected_requests
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

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
    """An expected row: the keys, no customer, the feature's rule, then the measures the fixtures fill."""
    rule = f"{USEFUL.get(feature, 'succeeded')}@v1"
    key_values = (datetime.fromisoformat(hour).replace(tzinfo=UTC), "otel", deployment, provider, model, feature, env)
    keys = dict(zip(USAGE_KEYS, (*key_values, None, rule), strict=True))
    counts = dict(zip(FILLED_MEASURES, m[:-1], strict=True))
    gpu = Decimal(m[-1]).quantize(Decimal("0.000001"))
    return (
        keys
        | {k: counts.get(k, 0) for k in USAGE_MEASURES}
        | {"gpu_seconds": gpu}
        | {k: Decimal("0.000000") for k in ("gpu_seconds_busy", "gpu_seconds_provisioned")}
    )


FILLED_MEASURES = (
    "requests",
    "succeeded",
    "failed",
    "retried",
    "accepted",
    "useful_outputs",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
)


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

HOUR_NS = 3_600 * 10**9
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
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(otel_genai, "BATCH_SPANS", 3):
        (Path(tmp) / "spans.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        result = load(_source(tmp), MARCH, {"a": "accepted"})  # duplicates found across 3-span batches
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


# --- attributes, outcomes, rules ---------------------------------------------------------------


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _write(
    folder: Path, spans: list[dict[str, Any]], resource: dict[str, Any] | None = None, name: str = "s.jsonl"
) -> Path:
    request = _request(spans)
    request["resourceSpans"][0]["resource"]["attributes"] = [_kv(k, v) for k, v in (resource or {}).items()]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "a") as fh:
        fh.write(json.dumps(request) + "\n")
    return folder


def _with(span: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    span["attributes"] += [_kv(k.replace("__", "."), v) for k, v in attrs.items()]
    return span


def test_cache_creation_and_reasoning_tokens_current_and_flat_names(tmp_path: Path) -> None:
    current = _with(
        _span(0, input_tokens=5_000, output_tokens=900),
        **{
            "gen_ai.usage.cache_read.input_tokens": 3_000,
            "gen_ai.usage.cache_creation.input_tokens": 1_500,
            "gen_ai.usage.reasoning.output_tokens": 700,
        },
    )
    flat = _with(
        _span(2, input_tokens=100, output_tokens=50),
        **{
            "gen_ai.usage.cache_read_input_tokens": 10,
            "gen_ai.usage.cache_creation_input_tokens": 20,
            "gen_ai.usage.reasoning_tokens": 30,
        },
    )
    frame = load(_source(_write(tmp_path, [current, flat])), MARCH).frame

    tokens = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens", "reasoning_tokens")
    assert frame.select(tokens).row(0) == (5_100, 950, 3_010, 1_520, 730)


def test_unknown_usage_attributes_are_counted_by_name_not_used(tmp_path: Path) -> None:
    span = _with(
        _span(0, input_tokens=10, output_tokens=5),
        **{
            "gen_ai.usage.total_tokens": 15,
            "gen_ai.usage.audio.input_tokens": 4,
            "gen_ai.usage.image_credits": 2,
            "app.unrelated": "x",
        },
    )
    only_total = _with(_span(2), **{"gen_ai.usage.total_tokens": 99})
    result = load(_source(_write(tmp_path, [span, only_total])), MARCH)

    assert {k: v for k, v in result.stats.items() if k.startswith("unknown")} == {
        "unknown_attribute:gen_ai.usage.total_tokens": 2,
        "unknown_attribute:gen_ai.usage.image_credits": 1,
    }
    assert result.stats["spans_missing_tokens"] == 1  # a total alone is not a usable count
    assert result.frame.select("requests", "input_tokens", "output_tokens").row(0) == (2, 10, 5)


def test_operations_deprecated_provider_and_unknown_operation(tmp_path: Path) -> None:
    embed = _span(0, input_tokens=7)
    embed["attributes"][0] = _kv("gen_ai.operation.name", "embeddings")
    embed["attributes"][1] = _kv("gen_ai.system", "cohere")
    rerank = _span(2, input_tokens=3)
    rerank["attributes"][0] = _kv("gen_ai.operation.name", "rerank")
    workflow = _span(4, input_tokens=1_000)
    workflow["attributes"][0] = _kv("gen_ai.operation.name", "invoke_workflow")
    result = load(_source(_write(tmp_path, [embed, rerank, workflow])), MARCH)

    assert result.frame.select("provider", "requests", "input_tokens").rows() == [("cohere", 1, 7), ("openai", 1, 3)]
    assert result.stats["spans_unknown_operation"] == 1 and result.stats["genai_non_inference_spans"] == 1


def test_feature_environment_customer_from_span_or_resource(tmp_path: Path) -> None:
    source = _source(tmp_path).model_copy(update={"customer_attribute": "app.customer.id", "store_raw_customer": True})
    on_span = _with(
        _span(0, feature="span_feature"), **{"deployment.environment.name": "staging", "app.customer.id": "cust-span"}
    )
    inherited = _span(2, feature="")  # empty value: falls back to the resource
    resource = {"app.feature": "resource_feature", "deployment.environment": "production", "app.customer.id": 42}
    frame = load(source.model_copy(update={"path": str(_write(tmp_path, [on_span, inherited], resource))}), MARCH).frame

    assert frame.select("feature", "environment", "customer").rows() == [
        ("resource_feature", "production", "42"),
        ("span_feature", "staging", "cust-span"),
    ]


def test_acceptance_from_the_latest_feedback_event(tmp_path: Path) -> None:
    def feedback(at: int, label: str, name: str = "user_acceptance") -> dict[str, Any]:
        attrs = [_kv("gen_ai.evaluation.name", name), _kv("gen_ai.evaluation.score.label", label)]
        return {"timeUnixNano": str(at), "name": "gen_ai.evaluation.result", "attributes": attrs}

    spans = [_span(2 * i, input_tokens=1) for i in range(5)]
    spans[0]["events"] = [feedback(2, "Accepted"), feedback(1, "rejected")]  # later verdict wins, any case
    spans[1]["events"] = [feedback(1, "accepted"), feedback(2, "rejected")]
    spans[2]["events"] = [feedback(1, "accepted", name="relevance")]  # another evaluation
    spans[3]["events"] = [
        {"name": "gen_ai.evaluation.result", "attributes": [_kv("gen_ai.evaluation.name", "user_acceptance")]}
    ]
    spans[4] = _with(spans[4], app__user_accepted=True)  # the attribute still counts
    source = _source(_write(tmp_path, spans)).model_copy(
        update={"feedback_event": "gen_ai.evaluation.result", "feedback_name": "user_acceptance"}
    )
    frame = load(source, MARCH, {"f": "accepted@v3"}).frame

    assert frame.select("accepted", "useful_outputs", "useful_output_rule").row(0) == (2, 2, "accepted@v3")


def test_useful_output_rule_is_versioned_and_recorded(tmp_path: Path) -> None:
    spans = [
        _span(0, feature="a", accepted=True, input_tokens=1),
        _span(2, feature="b", retried=True),
        _span(4, feature="c", failed=True),
    ]
    frame = load(_source(_write(tmp_path, spans)), MARCH, {"a": "accepted@v2", "b": "succeeded"}).frame

    assert frame.select("feature", "useful_output_rule", "useful_outputs", "retried", "failed").rows() == [
        ("a", "accepted@v2", 1, 0, 0),
        ("b", "succeeded@v1", 0, 1, 0),  # a retry: succeeded, but not a useful first answer (and still visible)
        ("c", "succeeded@v1", 0, 0, 1),  # no rule configured: the default, failures visible
    ]
    feature = FeatureConfig(useful_output="accepted", useful_output_version=4)
    assert feature.useful_output_rule == "accepted@v4"
    with pytest.raises(ValueError, match=r"useful_output must map features .* got \{'a': 'accepted@v0'\}"):
        load(_source(tmp_path), MARCH, {"a": "accepted@v0"})


def test_clock_skew_and_end_before_start(tmp_path: Path) -> None:
    hour = tmp_path / "date=2025-03-01" / "hour=10"
    on_time = _span(0, offset_ns=10 * HOUR_NS + 5 * 60 * 10**9, provider="vllm", duration_us=2_000_000)
    late_clock = _span(2, offset_ns=4 * 24 * HOUR_NS, provider="vllm", duration_us=1_000_000)  # days off
    backwards = _span(4, offset_ns=10 * HOUR_NS, provider="vllm", duration_us=0)
    backwards["endTimeUnixNano"] = str(int(backwards["startTimeUnixNano"]) - 1)
    _write(hour, [on_time, late_clock, backwards])
    _write(tmp_path / "date=2025-04-03" / "hour=00", [_span(6)])  # a partition April can't reach
    result = load(_source(tmp_path), MARCH)

    assert result.frame.select("hour", "requests", "gpu_seconds").rows() == [
        (datetime(2025, 3, 1, 10, tzinfo=UTC), 3, Decimal("3.000000"))  # the skewed span at its receive hour
    ]
    assert result.stats["clock_skewed_spans"] == 1 and result.stats["spans_end_before_start"] == 1
    assert result.stats["files_outside_period"] == 1 and result.stats["files"] == 2


def test_duplicates_across_files_and_batches(tmp_path: Path) -> None:
    spans = [_span(i, input_tokens=10) for i in range(0, 20, 2)]
    _write(tmp_path, spans[:6], name="a.jsonl")
    _write(tmp_path, spans[4:], name="b.jsonl")  # two re-sent
    _write(tmp_path, [_with(spans[0], gen_ai__usage__total_tokens=1)], name="b.jsonl")  # and one more, changed
    with mock.patch.object(otel_genai, "BATCH_SPANS", 2):
        batches = list(otel_genai.load_batches(_source(tmp_path), MARCH))

    assert [(b.files, b.frame.height) for b in batches] == [
        ([str(tmp_path / "a.jsonl")], 0),
        ([str(tmp_path / "b.jsonl")], 0),
        ([], 1),
    ]
    assert [b.stats.get("duplicate_spans", 0) for b in batches] == [0, 3, 0]
    assert batches[-1].frame.select("requests", "input_tokens").row(0) == (10, 100)


# --- a cogs collect partition, shaped like real instrumentations' spans ---------------------------

COLLECTED = Path(__file__).parent / "fixtures" / "otel" / "collected"
SALT = b"fixture-salt"


def test_collected_partition_with_feedback_cache_reasoning_skew_and_tenants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(COLLECTED, tmp_path / "spans")
    in_progress = tmp_path / "spans" / "date=2025-03-03" / "hour=14" / ".spans-4242-2.jsonl.tmp"
    in_progress.write_text("{half a line")  # the collector's open file: not read
    monkeypatch.setenv("COGS_FIXTURE_SALT", SALT.decode())
    source = _source(tmp_path / "spans").model_copy(
        update={
            "customer_attribute": "app.tenant.id",
            "customer_hash_salt_env": "COGS_FIXTURE_SALT",
            "feedback_event": "gen_ai.evaluation.result",
            "feedback_name": "user_acceptance",
        }
    )
    result = load(source, MARCH, {"support_chat": "accepted@v2"})

    acme, globex = hash_customer("tenant-acme", SALT), hash_customer("tenant-globex", SALT)
    columns = ("deployment", "model", "customer", "useful_output_rule", "requests", "succeeded", "failed", "retried")
    columns += ("accepted", "useful_outputs", "input_tokens", "output_tokens", "cached_input_tokens")
    columns += ("cache_creation_input_tokens", "reasoning_tokens")
    sonnet = "claude-sonnet-4-20250514"
    assert result.frame["hour"].unique().to_list() == [datetime(2025, 3, 3, 14, tzinfo=UTC)]
    assert result.frame.select(columns).rows() == [
        # the skewed span (clock a day behind: counted at its receive hour) and a failed retry
        ("anthropic", sonnet, acme, "accepted@v2", 2, 1, 1, 1, 0, 0, 700, 90, 0, 0, 0),
        # accepted through the evaluation event; cache reads and writes are parts of the input
        ("api.anthropic.com", sonnet, acme, "accepted@v2", 1, 1, 0, 0, 1, 1, 5120, 410, 4096, 512, 0),
        # the span's tenant overrides the resource's; rejected by the user: not useful
        ("api.openai.com", "o4-mini-2025-04-16", globex, "accepted@v2", 1, 1, 0, 0, 0, 0, 900, 2400, 0, 0, 1920),
    ]
    assert result.stats == {
        "files": 1,
        "lines": 2,
        "spans_read": 5,
        "genai_spans": 4,
        "duplicate_spans": 1,  # the exporter's retry of the first span
        "clock_skewed_spans": 1,
        "spans_end_before_start": 1,
        "spans_missing_tokens": 1,
        "unknown_attribute:gen_ai.usage.total_tokens": 1,
    }
    dumped = json.dumps([result.frame.to_dicts(), result.stats], default=str)
    assert "tenant-acme" not in dumped and "SECRET" not in dumped and "4111" not in dumped


# --- privacy: customer ids -------------------------------------------------------------------------

RAW_CUSTOMER = "alice@example.com"


def test_customer_ids_are_hashed_and_never_reach_the_warehouse(
    tmp_path: Path, duckdb_warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COGS_TEST_CUSTOMER_SALT", "pepper-123")
    spans = [
        _with(_span(i, feature="support_chat", input_tokens=5), app__customer__id=c)
        for i, c in enumerate([RAW_CUSTOMER, RAW_CUSTOMER, "bob"])
    ]
    spans.append(_span(99, feature="support_chat", input_tokens=5))  # no customer
    source = OtelGenAITelemetry(
        name="otel",
        type="otel_genai",
        path=str(_write(tmp_path / "spans", spans)),
        customer_attribute="app.customer.id",
        customer_hash_salt_env="COGS_TEST_CUSTOMER_SALT",
    )
    config = CogsConfig(telemetry=[source], features={"support_chat": {}}, warehouse=duckdb_warehouse.url)
    summary = ingest(duckdb_warehouse, config, "otel", "2025-03")

    usage = duckdb_warehouse.read("SELECT customer, requests FROM inference_usage ORDER BY requests DESC")
    alice, bob = hash_customer(RAW_CUSTOMER, b"pepper-123"), hash_customer("bob", b"pepper-123")
    assert usage.rows() == [(alice, 2), (bob, 1), (None, 1)] and len(alice) == 32
    assert summary.stats["spans_missing_customer"] == 1
    tables = duckdb_warehouse.read("SELECT table_name FROM information_schema.tables")["table_name"].to_list()
    everything = json.dumps([duckdb_warehouse.read(f'SELECT * FROM "{t}"').to_dicts() for t in tables], default=str)
    assert "inference_usage" in tables and RAW_CUSTOMER not in everything and "alice" not in everything
    assert "pepper" not in everything


def test_customer_ids_need_a_salt_or_an_explicit_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="customer_attribute needs customer_hash_salt_env"):
        OtelGenAITelemetry(name="o", type="otel_genai", path=".", customer_attribute="app.customer.id")
    monkeypatch.delenv("COGS_TEST_UNSET_SALT", raising=False)
    source = OtelGenAITelemetry(
        name="o",
        type="otel_genai",
        path=str(_write(tmp_path, [_span(0)])),
        customer_attribute="user.id",
        customer_hash_salt_env="COGS_TEST_UNSET_SALT",
    )
    with pytest.raises(SourceError, match=r"environment variable COGS_TEST_UNSET_SALT: is not set or empty"):
        load(source, MARCH)


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
    assert re.fullmatch(r"cust-\d{4}", attrs["app.customer.id"]["stringValue"])
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
