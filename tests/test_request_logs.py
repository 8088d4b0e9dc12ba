"""Generic request logs: a gateway's CSV export and a typed Parquet table, mapped by cogs.yaml columns."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from connectors import connector
from connectors.base import BillingPeriod, SourceError
from connectors.request_logs import load, load_batches
from models.config import RequestLogsTelemetry
from models.usage import USAGE_KEYS, USAGE_MEASURES, hash_customer, useful_rules

FIXTURES = Path(__file__).parent / "fixtures" / "request_logs"
CSV = FIXTURES / "gateway-2025-03-01.csv"
MARCH = BillingPeriod("2025-03")
SALT_ENV, SALT = "METRICS_HELPER_LOG_SALT", "s3cret-salt"
USEFUL = {"support_chat": "accepted@v2", "code_assist": "accepted", "search_rewrite": "succeeded"}
GATEWAY_COLUMNS = {
    "timestamp": "request_ts",
    "feature": "app_feature",
    "model": "llm_model",
    "provider": "llm_provider",
    "deployment": "upstream_host",
    "status": "http_status",
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
    "cached_input_tokens": "cached_tokens",
    "latency": "duration_ms",
    "accepted": "user_accepted",
    "retry": "retry_attempt",
    "customer": "tenant_id",
    "environment": "env",
}
GPT41, MINI, LLAMA = "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "meta-llama/Llama-3.1-70B-Instruct"
LLAMA_HOST = "vllm-llama70b.inference-prod.svc.cluster.local"
QWEN_HOST = "vllm-qwen-coder.nebius-eu-north1.internal"
KEYS = ["hour", "deployment", "provider", "model", "feature", "environment", "customer", "useful_output_rule"]
MEASURES = ["requests", "succeeded", "failed", "retried", "accepted", "useful_outputs", "input_tokens", "output_tokens",
            "cached_input_tokens", "gpu_seconds"]  # fmt: skip


def _source(path: Path, **overrides: Any) -> RequestLogsTelemetry:
    fields = {
        "name": "gateway",
        "type": "request_logs",
        "path": str(path),
        "columns": GATEWAY_COLUMNS,
        "customer_hash_salt_env": SALT_ENV,
    } | overrides
    return RequestLogsTelemetry.model_validate(fields)


def _h(hour: int) -> datetime:
    return datetime(2025, 3, 1, hour, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SALT_ENV, SALT)


def test_a_gateway_csv_becomes_hourly_usage_and_bad_rows_are_quarantined_with_their_line() -> None:
    result = connector("request_logs").load(_source(CSV), MARCH, USEFUL)
    acme, globex, initech = (hash_customer(c, SALT.encode()) for c in ("acme-corp", "globex, inc.", "initech"))
    assert result.frame.schema == pl.Schema(USAGE_KEYS | USAGE_MEASURES)
    assert result.frame.select(*KEYS, *MEASURES).rows() == [
        # 09:00:01Z and 10:10+01:00 (= 09:10Z); the first one accepted
        (_h(9), "api.openai.com", "openai", GPT41, "support_chat", "production", acme, "accepted@v2",
         2, 2, 0, 0, 1, 1, 5100, 780, 1400, Decimal("0")),
        (_h(9), "api.openai.com", "openai", MINI, "unattributed", "production", None, "succeeded@v1",
         1, 1, 0, 0, 0, 1, 450, 55, 0, Decimal("0")),
        # "1840.0"/"60.0": a float column's integers; no upstream host: the provider is the deployment
        (_h(9), "openai", "openai", MINI, "search_rewrite", "staging", initech, "succeeded@v1",
         1, 1, 0, 0, 0, 1, 1840, 60, 0, Decimal("0")),
        # naive 09:30 read as UTC; the 503 at 09:45 is a failed retry; latency is GPU time on vLLM
        (_h(9), LLAMA_HOST, "vllm", LLAMA, "code_assist", "production", globex, "accepted@v1",
         2, 1, 1, 1, 1, 1, 7600, 520, 0, Decimal("25.200250")),
        (_h(10), "api.openai.com", "openai", GPT41, "support_chat", "production", acme, "accepted@v2",
         1, 0, 1, 1, 0, 0, 2600, 0, 0, Decimal("0")),
        (_h(10), LLAMA_HOST, "vllm", LLAMA, "code_assist", "production", initech, "accepted@v1",
         1, 1, 0, 0, 0, 0, 4000, 500, 0, Decimal("25.000125")),
    ]  # fmt: skip
    assert result.quarantine.rows() == [
        (str(CSV), "10", "request_ts: yesterday 10:06 is not an ISO 8601 timestamp"),
        (str(CSV), "11", "prompt_tokens: not a non-negative integer"),
        (str(CSV), "12", "http_status: unknown status throttled; add it to success_values or failure_values"),
        (str(CSV), "13", "user_accepted: not a boolean or a count"),
    ]
    assert result.stats == {
        "files": 1,
        "records_read": 13,
        "rows_quarantined": 4,
        "rows_outside_period": 1,
        "rows_missing_feature": 1,
        "rows_missing_tokens": 0,
    }
    assert result.frame["requests"].sum() == 13 - 4 - 1  # every row is counted, quarantined or skipped


def _parquet(path: Path) -> None:
    """A typed table, as a warehouse export writes it: timestamps, nullable ints, booleans, floats."""
    table = pa.table(
        {
            "ts": pa.array(
                [
                    datetime(2025, 3, 2, 8, 15),
                    datetime(2025, 3, 2, 8, 45),
                    datetime(2025, 3, 2, 9, 5),
                    datetime(2025, 3, 2, 9, 10),
                ],
                pa.timestamp("ms", tz="UTC"),
            ),
            "feature": ["doc_summaries", "doc_summaries", None, "doc_summaries"],
            "model": ["Qwen/Qwen2.5-Coder-32B-Instruct"] * 4,
            "provider": ["vllm"] * 4,
            "status": ["ok", "error", "ok", "ok"],
            "input_tokens": pa.array([9000, 8000, None, -1], pa.int64()),
            "output_tokens": pa.array([700, None, 100, 10], pa.int32()),
            "latency_s": pa.array([36.5, 2.25, 1.0, 1.0], pa.float64()),
            "accepted": pa.array([True, False, None, True], pa.bool_()),
        }
    )
    pq.write_table(table, path, row_group_size=2)


def test_a_typed_parquet_log_reads_with_row_numbers_and_defaults(tmp_path: Path) -> None:
    _parquet(tmp_path / "requests.parquet")
    columns = {"timestamp": "ts", "feature": "feature", "model": "model", "provider": "provider", "status": "status",
               "input_tokens": "input_tokens", "output_tokens": "output_tokens", "latency": "latency_s",
               "accepted": "accepted"}  # fmt: skip
    defaults = {"deployment": QWEN_HOST, "environment": "production"}
    source = _source(tmp_path, columns=columns, latency_unit="s", customer_hash_salt_env=None, defaults=defaults)
    result = load(source, MARCH, {"doc_summaries": "succeeded@v3"})
    keys = ["hour", "deployment", "feature", "environment", "useful_output_rule"]
    assert result.frame.select(*keys, *MEASURES).rows() == [
        (datetime(2025, 3, 2, 8, tzinfo=UTC), QWEN_HOST, "doc_summaries",
         "production", "succeeded@v3", 2, 1, 1, 0, 1, 1, 17000, 700, 0, Decimal("38.750000")),
        (datetime(2025, 3, 2, 9, tzinfo=UTC), QWEN_HOST, "unattributed",
         "production", "succeeded@v1", 1, 1, 0, 0, 0, 1, 0, 100, 0, Decimal("1.000000")),
    ]  # fmt: skip
    assert result.quarantine.rows() == [
        (str(tmp_path / "requests.parquet"), "row 4", "input_tokens: not a non-negative integer")
    ]
    assert result.stats["rows_missing_tokens"] == 0 and result.stats["rows_missing_feature"] == 1


def test_epoch_timestamps_and_one_result_per_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("t;tokens_in\n1740787200;5\n1740790800.5;7\n")
    (tmp_path / "b.csv.gz").write_bytes(__import__("gzip").compress(b"t;tokens_in\n1740787260;11\nnot-a-time;1\n"))
    source = _source(tmp_path, columns={"timestamp": "t", "input_tokens": "tokens_in"}, timestamp_format="epoch_s",
                     csv_separator=";", customer_hash_salt_env=None)  # fmt: skip
    batches = list(load_batches(source, MARCH))
    assert [b.files for b in batches] == [[str(tmp_path / "a.csv")], [str(tmp_path / "b.csv.gz")]]
    assert [b.frame["input_tokens"].to_list() for b in batches] == [[5, 7], [11]]
    merged = load(source, MARCH)
    assert merged.frame.select("hour", "deployment", "model", "provider", "input_tokens").rows() == [
        (_h(0), "unknown", "unknown", "unknown", 16),
        (_h(1), "unknown", "unknown", "unknown", 7),
    ]
    assert merged.quarantine["reason"].to_list() == ["t: not-a-time is not a timestamp in epoch seconds"]


def test_a_mapped_column_missing_from_a_file_is_an_error_naming_both(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("when,feature\n2025-03-01T00:00:00Z,a\n")
    source = _source(
        tmp_path, columns={"timestamp": "when", "input_tokens": "prompt_tokens"}, customer_hash_salt_env=None
    )
    with pytest.raises(SourceError, match=r"x.csv: mapped column\(s\) not in the file: input_tokens: 'prompt_tokens'"):
        load(source, MARCH)


def test_customers_are_hashed_with_the_salt_or_kept_raw_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "x.csv").write_text("when,who\n2025-03-01T00:00:00Z,cust_42\n")
    columns = {"timestamp": "when", "customer": "who"}
    monkeypatch.delenv(SALT_ENV)
    with pytest.raises(SourceError, match=f"environment variable {SALT_ENV}: is not set or empty"):
        load(_source(tmp_path, columns=columns), MARCH)
    raw = load(_source(tmp_path, columns=columns, customer_hash_salt_env=None, store_raw_customer=True), MARCH)
    assert raw.frame["customer"].to_list() == ["cust_42"]
    with pytest.raises(ValidationError, match=r"columns\.customer needs customer_hash_salt_env"):
        _source(tmp_path, columns=columns, customer_hash_salt_env=None)


def test_useful_output_rules_must_be_known() -> None:
    assert useful_rules({"a": "accepted@v2", "b": "succeeded"}) == {
        "a": ("accepted", "accepted@v2"),
        "b": ("succeeded", "succeeded@v1"),
    }
    with pytest.raises(ValueError, match="useful_output must map features to one of"):
        useful_rules({"a": "liked"})
