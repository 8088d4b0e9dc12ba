"""vLLM counters: federated scrapes and the Prometheus API give the same hourly increases, resets included."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors import connector
from connectors.base import BillingPeriod
from connectors.prometheus import read_scrapes
from connectors.vllm_metrics import load
from models.config import VllmMetricsTelemetry, parse_config
from models.usage import USAGE_KEYS, USAGE_MEASURES
from tests.test_prometheus import FakePrometheus

FIXTURES = Path(__file__).parent / "fixtures" / "metrics" / "vllm"
MARCH = BillingPeriod("2025-03")
LLAMA, QWEN = "meta-llama/Llama-3.1-70B-Instruct", "Qwen/Qwen2.5-Coder-32B-Instruct"
H0, H1 = datetime(2025, 3, 1, 0, tzinfo=UTC), datetime(2025, 3, 1, 1, tzinfo=UTC)
MEASURES = ["requests", "succeeded", "failed", "input_tokens", "cached_input_tokens", "output_tokens"]
# Worked by hand from the fixture: pods x2x4q, hv8sd (resets at 00:45) and 9kq2m (starts at 01:15)
# serve llama; lt6wz serves qwen. Increases belong to the hour of the later sample.
EXPECTED = [
    (H0, "llama", LLAMA, "unattributed", 21, 20, 1, 2900, 1200, 340),
    (H0, "qwen", QWEN, "code_assist", 5, 5, 0, 1100, 200, 60),
    (H1, "llama", LLAMA, "unattributed", 23, 21, 2, 3200, 1100, 370),
    (H1, "qwen", QWEN, "code_assist", 5, 4, 1, 900, 300, 45),
]


def _source(**overrides: Any) -> VllmMetricsTelemetry:
    fields: dict[str, Any] = {
        "name": "vllm",
        "type": "vllm_metrics",
        "path": str(FIXTURES),
        "scrape_interval_seconds": 1800,
        "deployment_labels": ["pod"],
        "deployments": {"vllm-llama70b-*": "llama", "vllm-qwen-coder-*": "qwen"},
        "deployment_features": {"qwen": "code_assist"},
    } | overrides
    return VllmMetricsTelemetry.model_validate(fields)


def _table(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return frame.select("hour", "deployment", "model", "feature", *MEASURES).rows()


def test_hourly_increases_handle_resets_new_pods_and_duplicates() -> None:
    result = load(_source(), MARCH)
    assert _table(result.frame) == EXPECTED
    assert result.frame.schema == pl.Schema(USAGE_KEYS | USAGE_MEASURES)
    assert set(result.frame["provider"]) == {"vllm"} and set(result.frame["source"]) == {"vllm"}
    assert result.frame["environment"].is_null().all() and result.frame["useful_output_rule"].is_null().all()
    assert result.frame.select("retried", "accepted", "useful_outputs").sum().row(0) == (0, 0, 0)
    assert result.frame["gpu_seconds"].sum() == 0  # GPU time comes from DCGM, not from here
    assert result.stats == {
        "lines": 171,
        "lines_other_metrics": 49,  # gauges, *_created, histogram buckets, cache_config_info
        "records_read": 122,  # the counters' sample lines, the two quarantined ones included
        "samples_outside_window": 0,
        "samples": 119,
        "duplicate_samples": 1,
        "counter_resets": 6,  # every counter of pod hv8sd at 00:45
        "series_started_in_data": 7,  # pod 9kq2m's counters: their first values count
        "series_without_feature": 21,
        "series": 29,
    }
    file = str(FIXTURES / "federate-2025-03-01.prom")
    assert result.quarantine.rows() == [
        (file, "213", "vllm:prompt_tokens_total: unterminated label set"),
        (file, "138", "counter value 12.5 is not a non-negative integer"),
    ]
    assert result.files == [file]


def test_deployments_traced_by_spans_only_reach_the_stats() -> None:
    result = load(_source(deployments_with_spans=["llama"]), MARCH)
    assert [r[1] for r in _table(result.frame)] == ["qwen", "qwen"]
    assert {k: v for k, v in result.stats.items() if k.startswith("deployments_with_spans:")} == {
        "deployments_with_spans:requests": 44,
        "deployments_with_spans:input_tokens": 6100,
        "deployments_with_spans:cached_input_tokens": 2300,
        "deployments_with_spans:output_tokens": 710,
    }


def test_a_feature_label_names_the_feature_and_other_months_are_empty() -> None:
    result = load(_source(feature_label="namespace", deployment_features={}), MARCH)
    assert set(result.frame["feature"]) == {"inference-prod"}
    assert load(_source(), BillingPeriod("2025-04")).frame.is_empty()
    february = load(_source(), BillingPeriod("2025-02"))  # the 23:45 baseline is in February: no increase
    assert february.frame.is_empty()


def test_the_prometheus_api_gives_the_same_rows_as_the_scrape_files() -> None:
    samples = read_scrapes("vllm", str(FIXTURES), lambda name: True, None)
    with FakePrometheus(samples) as server:
        source = _source(path=None, prometheus_url=server.base_url, scrape_interval_seconds=900, selector='job="vllm"')
        result = connector("vllm_metrics").load(source, MARCH)
    assert _table(result.frame) == EXPECTED
    query = server.requests[0]["query"]
    assert (
        query
        == '{__name__=~"vllm:(prompt_tokens|prompt_tokens_cached|generation_tokens|request_success)_total",job="vllm"}'
    )
    assert server.requests[0]["start"] == "1740786300" and server.requests[0]["step"] == "900s"  # one step before March
    assert result.stats["api_queries"] == 1 and result.stats["series_started_in_data"] == 7


def test_config_needs_one_origin_and_a_step_dividing_the_hour() -> None:
    with pytest.raises(ValidationError, match="set exactly one of path"):
        VllmMetricsTelemetry(name="v", type="vllm_metrics")
    with pytest.raises(ValidationError, match="scrape_interval_seconds must divide 3600, got 7"):
        _source(scrape_interval_seconds=7)
    config = parse_config(
        "telemetry:\n  - {name: vllm, type: vllm_metrics, prometheus_url: 'http://prometheus:9090'}\n"
    )
    assert isinstance(config.telemetry[0], VllmMetricsTelemetry) and config.telemetry[0].max_gap == 90


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 50), st.booleans()),  # (requests finished in the interval, process restarted)
        min_size=1,
        max_size=30,
    )
)
def test_increases_add_up_to_what_was_counted_whatever_the_restarts(steps: list[tuple[int, bool]]) -> None:
    value, lines, counted = 100, [], 0
    t0 = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp()) * 1000
    lines.append(f'vllm:request_success_total{{finished_reason="stop",instance="a"}} {value} {t0}')
    for i, (finished, restarted) in enumerate(steps, start=1):
        if restarted and finished < value:  # a restart is only visible as a drop
            value = finished
        else:
            value += finished
        counted += finished
        lines.append(f'vllm:request_success_total{{finished_reason="stop",instance="a"}} {value} {t0 + i * 600_000}')
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "scrapes.prom").write_text("\n".join(lines) + "\n")
        result = load(_source(path=folder, scrape_interval_seconds=600, deployment_labels=["instance"]), MARCH)
    assert result.frame["requests"].sum() == counted
