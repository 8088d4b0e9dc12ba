"""LiteLLM spend logs, read from a real PostgreSQL holding the table as Prisma creates it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from psycopg.types.json import Jsonb

from connectors import connector
from connectors.base import BillingPeriod, SourceError
from connectors.litellm import PROMPT_COLUMNS, load, load_batches, spend_logs_query
from models.config import LiteLLMTelemetry
from models.usage import USAGE_KEYS, USAGE_MEASURES, hash_customer
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.postgres

DDL = Path(__file__).parent / "fixtures" / "request_logs" / "litellm_spend_logs.sql"
MARCH = BillingPeriod("2025-03")
URL_ENV, SALT_ENV, SALT = "METRICS_HELPER_LITELLM_URL", "METRICS_HELPER_LITELLM_SALT", "pepper-for-tests"
USEFUL = {"support_chat": "accepted@v2", "code_assist": "accepted", "doc_summaries": "succeeded"}
SECRET = "SECRET-PROMPT"
OPENAI_BASE, ANTHROPIC_BASE = "https://api.openai.com/v1", "https://api.anthropic.com/v1/messages"
VLLM_BASE = "http://vllm-llama70b.inference-prod.svc.cluster.local:8000/v1"
GPT41, MINI = "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14"
SONNET, LLAMA = "claude-sonnet-4-5-20250929", "meta-llama/Llama-3.1-70B-Instruct"


def _prompt_columns() -> dict[str, Any]:
    return {
        "messages": Jsonb([{"role": "user", "content": SECRET}]),
        "response": Jsonb({"choices": [{"message": {"role": "assistant", "content": "SECRET-ANSWER"}}]}),
        "proxy_server_request": Jsonb({"model": "gpt-4.1", "messages": [{"role": "user", "content": SECRET}]}),
    }


def _usage(cached: int | None = None, reasoning: int | None = 0, **anthropic: int) -> dict[str, Any]:
    """``additional_usage_values`` as LiteLLM writes it (OpenAI details objects, Anthropic cache counts)."""
    details = None if cached is None else {"cached_tokens": cached, "audio_tokens": None, "text_tokens": None}
    return {
        "prompt_tokens_details": details,
        "completion_tokens_details": None
        if reasoning is None
        else {"reasoning_tokens": reasoning, "audio_tokens": None},
        **anthropic,
    }


def _row(request_id: str, start: str, **values: Any) -> dict[str, Any]:
    begin = datetime.fromisoformat(start)
    return {
        "request_id": request_id,
        "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": 0.0,
        "total_tokens": values.get("prompt_tokens", 0) + values.get("completion_tokens", 0),
        "startTime": begin,
        "endTime": begin + timedelta(seconds=2),
        "completionStartTime": begin,
        "model_id": "b7f4c0ce2b3b43a4b2e4f1f3e1c2d3a4",
        "cache_key": "Cache OFF",
        "cache_hit": "False",
        "requester_ip_address": "10.0.7.12",
        "team_id": "team-lumen-apps",
        "session_id": str(uuid.uuid5(uuid.NAMESPACE_URL, request_id)),
        **_prompt_columns(),
        **values,
    }


ROWS = [
    _row("chatcmpl-A1", "2025-03-01T09:00:01.250", prompt_tokens=2600, completion_tokens=380, model=GPT41,
         model_group="gpt-4.1", custom_llm_provider="openai", api_base=OPENAI_BASE, status="success",
         end_user="cust_8812", request_duration_ms=2310, spend=0.00824,
         request_tags=Jsonb(["User-Agent: OpenAI/Python 1.99.9", "feature:support_chat", "env:production"]),
         metadata=Jsonb({"user_api_key_alias": "support-bot", "status": "success",
                         "spend_logs_metadata": {"user_accepted": True}, "additional_usage_values": _usage(1024),
                         "proxy_server_request": f'{{"messages": [{{"content": "{SECRET}"}}]}}'})),
    _row("chatcmpl-A2", "2025-03-01T09:20:00", prompt_tokens=14000, completion_tokens=900, model=SONNET,
         model_group="claude-sonnet", custom_llm_provider="anthropic", api_base=ANTHROPIC_BASE, status="success",
         end_user="cust_1001", request_tags=Jsonb([]),
         metadata=Jsonb({"status": "success", "spend_logs_metadata": {"feature": "doc_summaries", "retry_attempt": 1},
                         "additional_usage_values": _usage(None, None, cache_read_input_tokens=2000,
                                                           cache_creation_input_tokens=500)})),
    _row("chatcmpl-A3", "2025-03-01T09:40:00", model=GPT41, model_group="gpt-4.1", custom_llm_provider="openai",
         api_base=OPENAI_BASE, status="failure", end_user="cust_8812", request_tags=Jsonb(["feature:support_chat"]),
         metadata=Jsonb({"status": "failure",
                         "error_information": {"error_code": "429", "error_class": "RateLimitError"}})),
    _row("chatcmpl-A4", "2025-03-01T10:05:00", prompt_tokens=3800, completion_tokens=520, model=LLAMA,
         model_group="llama-70b", custom_llm_provider="hosted_vllm", api_base=VLLM_BASE, status="success",
         request_duration_ms=23850, request_tags=Jsonb(["feature:code_assist"]),
         metadata=Jsonb({"spend_logs_metadata": {"user_accepted": "true"}, "additional_usage_values": _usage(0, 12)})),
    _row("chatcmpl-A5", "2025-03-01T10:10:00", prompt_tokens=2600, completion_tokens=380, model=GPT41,
         model_group="gpt-4.1", custom_llm_provider="openai", api_base=OPENAI_BASE, status="success", cache_hit="True",
         end_user="cust_8812", request_tags=Jsonb(["feature:support_chat"]), metadata=Jsonb({"status": "success"})),
    _row("chatcmpl-A6", "2025-03-01T10:30:00", prompt_tokens=450, completion_tokens=55, model="",
         model_group=MINI, custom_llm_provider="openai", api_base="", status=None, metadata=Jsonb({})),
    _row("chatcmpl-A7", "2025-02-28T23:59:59.999", prompt_tokens=1, completion_tokens=1, model=GPT41,
         custom_llm_provider="openai", status="success", metadata=Jsonb({})),
    _row("chatcmpl-A8", "2025-04-01T00:00:00", prompt_tokens=1, completion_tokens=1, model=GPT41,
         custom_llm_provider="openai", status="success", metadata=Jsonb({})),
    _row("chatcmpl-A9", "2025-03-01T10:45:00", prompt_tokens=2000, completion_tokens=10, model=SONNET,
         custom_llm_provider="anthropic", api_base=ANTHROPIC_BASE, status="success",
         request_tags=Jsonb(["feature:doc_summaries"]),
         metadata=Jsonb({"additional_usage_values": {"cache_read_input_tokens": "lots"}})),
    _row("chatcmpl-A10", "2025-03-01T10:50:00", prompt_tokens=420, completion_tokens=60, model=MINI,
         custom_llm_provider="openai", api_base=OPENAI_BASE, status="success",
         request_tags=Jsonb(["feature:search_rewrite"]), metadata=Jsonb('{"status": "success"}')),
    _row("chatcmpl-A11", "2025-03-01T11:00:00.001", prompt_tokens=9000, completion_tokens=700, model=SONNET,
         custom_llm_provider="anthropic", api_base=ANTHROPIC_BASE, status="success", end_user="cust_1001",
         metadata=Jsonb({"spend_logs_metadata": {"feature": "doc_summaries", "retry_attempt": 0}})),
]  # fmt: skip
READABLE = [
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens", "startTime",
    "endTime", "completionStartTime", "model", "model_id", "model_group", "custom_llm_provider", "api_base", "user",
    "metadata", "cache_hit", "cache_key", "request_tags", "team_id", "organization_id", "end_user",
    "requester_ip_address", "session_id", "status", "mcp_namespaced_tool_name", "agent_id", "request_duration_ms",
]  # fmt: skip


@pytest.fixture(scope="module")
def litellm_db(postgres: PostgresServer) -> Iterator[str]:
    """LiteLLM's database with the spend logs, read by a role that may not read the prompt columns."""
    name = f"litellm_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    with psycopg.connect(postgres.url(name, driver=False), autocommit=True) as conn:
        conn.execute(DDL.read_text())
        for row in ROWS:
            columns = ", ".join(f'"{c}"' for c in row)
            conn.execute(f'INSERT INTO "LiteLLM_SpendLogs" ({columns}) VALUES ({", ".join(["%s"] * len(row))})',
                         list(row.values()))  # fmt: skip
        conn.execute("DROP ROLE IF EXISTS cogs_reader")
        conn.execute("CREATE ROLE cogs_reader LOGIN")
        granted = ", ".join(f'"{c}"' for c in READABLE)
        conn.execute(f'GRANT SELECT ({granted}) ON "LiteLLM_SpendLogs" TO cogs_reader')
    yield postgres.url(name, driver=False).replace("://cogs@", "://cogs_reader@")


@pytest.fixture
def source(litellm_db: str, monkeypatch: pytest.MonkeyPatch) -> LiteLLMTelemetry:
    monkeypatch.setenv(URL_ENV, litellm_db)
    monkeypatch.setenv(SALT_ENV, SALT)
    return LiteLLMTelemetry(
        name="litellm", type="litellm_spend_logs", url_env=URL_ENV, customer_column="end_user",
        customer_hash_salt_env=SALT_ENV, batch_size=2,
    )  # fmt: skip


def _h(hour: int) -> datetime:
    return datetime(2025, 3, 1, hour, tzinfo=UTC)


def test_spend_logs_become_hourly_usage_by_feature_with_outcomes(source: LiteLLMTelemetry) -> None:
    result = load(source, MARCH, USEFUL)
    frame = result.frame
    assert frame.schema == pl.Schema(USAGE_KEYS | USAGE_MEASURES)
    acme, globex = hash_customer("cust_8812", SALT.encode()), hash_customer("cust_1001", SALT.encode())
    keys = ["hour", "deployment", "provider", "model", "feature", "environment", "customer", "useful_output_rule"]
    measures = [m for m in USAGE_MEASURES if not m.startswith("gpu_seconds_")]
    assert frame.select(*keys, *measures).rows() == [
        (_h(9), "api.anthropic.com", "anthropic", SONNET, "doc_summaries", None, globex, "succeeded@v1",
         1, 1, 0, 1, 0, 0, 14000, 900, 2000, 500, 0, Decimal(0)),
        (_h(9), "api.openai.com", "openai", GPT41, "support_chat", "production", acme, "accepted@v2",
         1, 1, 0, 0, 1, 1, 2600, 380, 1024, 0, 0, Decimal(0)),
        (_h(9), "api.openai.com", "openai", GPT41, "support_chat", None, acme, "accepted@v2",
         1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, Decimal(0)),
        (_h(10), "api.openai.com", "openai", GPT41, "support_chat", None, acme, "accepted@v2",
         1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, Decimal(0)),  # a LiteLLM cache hit: no provider tokens
        (_h(10), "api.openai.com", "openai", MINI, "search_rewrite", None, None, "succeeded@v1",
         1, 1, 0, 0, 0, 1, 420, 60, 0, 0, 0, Decimal(0)),
        (_h(10), "openai", "openai", MINI, "unattributed", None, None, "succeeded@v1",
         1, 1, 0, 0, 0, 1, 450, 55, 0, 0, 0, Decimal(0)),
        (_h(10), "vllm-llama70b.inference-prod.svc.cluster.local", "hosted_vllm", LLAMA, "code_assist", None, None,
         "accepted@v1", 1, 1, 0, 0, 1, 1, 3800, 520, 0, 0, 12, Decimal("23.85")),
        (_h(11), "api.anthropic.com", "anthropic", SONNET, "doc_summaries", None, globex, "succeeded@v1",
         1, 1, 0, 0, 0, 1, 9000, 700, 0, 0, 0, Decimal(0)),
    ]  # fmt: skip
    assert set(frame["source"]) == {"litellm"}
    where = result.files[0]
    assert where.startswith("postgresql://127.0.0.1:") and where.endswith(" public.LiteLLM_SpendLogs")
    assert result.quarantine.rows() == [(where, "chatcmpl-A9", "cache_read is not a number: 'lots'")]
    assert result.stats == {
        "records_read": 9,  # A7 (February) and A8 (April) are outside the month's startTime bounds
        "rows_missing_feature": 1,
        "rows_without_status": 1,
        "cache_hit_requests": 1,
        "rows_unreadable_metadata": 1,  # A10's metadata is a JSON string, not an object
    }


def test_no_prompt_text_is_read_and_batches_emit_each_hour_once(source: LiteLLMTelemetry) -> None:
    # cogs_reader has no SELECT on messages/response/proxy_server_request: reading them would fail
    with psycopg.connect(os.environ[URL_ENV]) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute('SELECT "messages" FROM "LiteLLM_SpendLogs"')
    results = list(load_batches(source, MARCH, USEFUL))
    assert len(results) == 6  # 9 rows, 2 a batch, then the last hour
    emitted = pl.concat([r.frame for r in results])
    assert emitted.select("hour").to_series().to_list() == sorted(emitted["hour"].to_list())
    assert emitted.height == emitted.unique(list(USAGE_KEYS)).height == 8
    text = str(emitted.rows()) + str([r.quarantine.rows() for r in results])
    assert SECRET not in text and "SECRET-ANSWER" not in text
    columns = {c: "text" for c in (*READABLE, *PROMPT_COLUMNS)} | {"metadata": "jsonb"}
    query = spend_logs_query(source, columns, MARCH)[0].as_string()
    assert not any(f'"{c}"' in query for c in PROMPT_COLUMNS)
    assert '"metadata" #>>' in query and ' "metadata" AS' not in query


def test_an_older_litellm_without_status_and_duration_columns_still_loads(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"litellm_old_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    with psycopg.connect(postgres.url(name, driver=False), autocommit=True) as conn:
        ddl = DDL.read_text().split("-- Source migration")[0]
        conn.execute(
            ddl.replace('    "status" TEXT,\n', "").replace("    \"custom_llm_provider\" TEXT DEFAULT '',\n", "")
        )
        conn.execute(
            'INSERT INTO "LiteLLM_SpendLogs" ("request_id", "call_type", "startTime", "endTime", "model", '
            '"prompt_tokens", "completion_tokens", "request_tags", "metadata") '
            "VALUES ('r1', 'completion', '2025-03-02 08:00:00', '2025-03-02 08:00:01', 'gpt-4o', 10, 5, "
            """'["feature:support_chat"]', '{"status": "failure"}')"""
        )
    monkeypatch.setenv(URL_ENV, postgres.url(name, driver=False))
    result = connector("litellm_spend_logs").load(
        LiteLLMTelemetry(name="old", type="litellm_spend_logs", url_env=URL_ENV), MARCH
    )
    assert result.frame.select("deployment", "provider", "feature", "requests", "failed", "input_tokens").rows() == [
        ("unknown", "unknown", "support_chat", 1, 1, 10)
    ]
    assert {k for k in result.stats if k.startswith("column_missing:")} == {
        "column_missing:request_duration_ms",
        "column_missing:status",
        "column_missing:custom_llm_provider",
    }


def test_errors_name_the_environment_variable_or_the_table_never_the_password(
    litellm_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    source = LiteLLMTelemetry(name="litellm", type="litellm_spend_logs", url_env=URL_ENV)
    with pytest.raises(SourceError, match=f"environment variable {URL_ENV}: is not set"):
        load(source, MARCH)
    monkeypatch.setenv(URL_ENV, litellm_db.replace("cogs_reader@", "cogs_reader:hunter2@"))
    with pytest.raises(SourceError, match="table not found") as caught:
        load(source.model_copy(update={"table": "LiteLLM_SpendLogz"}), MARCH)
    assert "hunter2" not in str(caught.value) and "public.LiteLLM_SpendLogz" in str(caught.value)


def test_customer_ids_need_a_salt_or_an_explicit_raw_opt_in() -> None:
    with pytest.raises(ValueError, match="customer_column needs customer_hash_salt_env"):
        LiteLLMTelemetry(name="l", type="litellm_spend_logs", customer_column="end_user")
