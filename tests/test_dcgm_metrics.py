"""DCGM exporter: busy vs provisioned GPU-seconds per deployment and hour, from scrapes or the Prometheus API."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from connectors import connector, prometheus
from connectors.base import BillingPeriod
from connectors.dcgm_metrics import load
from connectors.prometheus import read_scrapes
from models.config import CogsConfig, DcgmMetricsTelemetry
from models.usage import USAGE_KEYS, USAGE_MEASURES
from pipelines.demo import metrics as demo_metrics
from pipelines.demo.company import DEPLOYMENT_AWS_LLAMA, GPU_CLOUD_VMS, DemoMonth, aws_cluster_instances
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse
from tests.test_prometheus import FakePrometheus

FIXTURES = Path(__file__).parent / "fixtures" / "metrics" / "dcgm"
MARCH = BillingPeriod("2025-03")
H0, H1 = datetime(2025, 3, 1, 0, tzinfo=UTC), datetime(2025, 3, 1, 1, tzinfo=UTC)
DEPLOYMENTS = {
    "vllm-llama70b-*": "llama",
    "embedder-*": "embedder",
    "ip-10-0-*": "eks-unassigned",
    "computeinstance-*": "qwen",
}
# Worked by hand from the fixtures (15-minute scrapes, each sample stands for 900 s):
# llama H0 = GPU x2x4q 40+60+80+100 % + GPU hv8sd (from 00:30) 90+90 %; H1 = 70+30+20 % (blank value at
# 01:30) + 50+50+50 % (missed scrape at 01:00); the embedder pod holds the time-sliced GPU (first by name);
# the node's free GPU is idle; the Nebius VM's two GPUs run 100 % and 10..40 %.
EXPECTED = [
    (H0, "eks-unassigned", "unattributed", Decimal("0"), Decimal("3600")),
    (H0, "embedder", "search_rewrite", Decimal("900"), Decimal("3600")),
    (H0, "llama", "unattributed", Decimal("4140"), Decimal("5400")),
    (H0, "qwen", "unattributed", Decimal("4500"), Decimal("7200")),
    (H1, "eks-unassigned", "unattributed", Decimal("0"), Decimal("3600")),
    (H1, "embedder", "search_rewrite", Decimal("900"), Decimal("3600")),
    (H1, "llama", "unattributed", Decimal("2430"), Decimal("5400")),
]


def _source(**overrides: Any) -> DcgmMetricsTelemetry:
    fields: dict[str, Any] = {
        "name": "gpus",
        "type": "dcgm_metrics",
        "path": str(FIXTURES),
        "scrape_interval_seconds": 900,
        "deployments": DEPLOYMENTS,
        "deployment_features": {"embedder": "search_rewrite"},
    } | overrides
    return DcgmMetricsTelemetry.model_validate(fields)


def _table(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return frame.select("hour", "deployment", "feature", "gpu_seconds_busy", "gpu_seconds_provisioned").rows()


def test_busy_and_provisioned_gpu_seconds_with_gaps_blanks_and_shared_gpus() -> None:
    result = load(_source(provider="aws", environment="production"), MARCH)
    assert _table(result.frame) == EXPECTED
    assert result.frame.schema == pl.Schema(USAGE_KEYS | USAGE_MEASURES)
    assert set(result.frame["provider"]) == {"aws"} and set(result.frame["environment"]) == {"production"}
    assert result.frame["model"].is_null().all() and result.frame["useful_output_rule"].is_null().all()
    assert result.frame.select("requests", "input_tokens", "output_tokens").sum().row(0) == (0, 0, 0)
    assert result.frame["gpu_seconds"].sum() == 0
    assert result.stats == {
        "lines": 71,
        "lines_other_metrics": 21,  # FB_USED, SM_CLOCK, MEMORY_TEMP
        "records_read": 50,
        "samples_outside_window": 0,
        "duplicate_samples": 1,
        "shared_gpu_samples": 9,  # the time-sliced GPU, reported for two pods
        "samples": 39,
        "gpus": 6,
        "gaps": 2,
        "gap_seconds_not_provisioned": 1800,  # hv8sd's missed 01:00 scrape, x2x4q's blank 01:30 value
        "series": 7,
    }
    assert result.quarantine.rows() == [
        (
            str(FIXTURES / "eks" / "federate-2025-03-01.prom"),
            "71",
            "DCGM_FI_DEV_GPU_UTIL value 2147483632 outside 0-100 (%)",
        )
    ]
    assert len(result.files) == 5


def test_the_prometheus_api_gives_the_same_rows_in_many_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = read_scrapes("gpus", str(FIXTURES), lambda name: name == "DCGM_FI_DEV_GPU_UTIL", None)
    monkeypatch.setattr(prometheus, "MAX_POINTS", 100)
    with FakePrometheus(samples) as server:
        source = _source(path=None, prometheus_url=server.base_url, selector='{job=~".*"}')
        result = connector("dcgm_metrics").load(source, MARCH)
    assert _table(result.frame) == EXPECTED
    assert result.stats["api_queries"] == 30  # 2,976 quarter-hours of March, 100 a query
    assert server.requests[0]["query"] == 'DCGM_FI_DEV_GPU_UTIL{job=~".*"}'
    assert (server.requests[0]["start"], server.requests[-1]["end"]) == ("1740787200", "1743464700")


def _write(folder: Path, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = "# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.\n"
    header += "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge\n"
    (folder / "scrapes.prom").write_text(header + "\n".join(lines) + "\n")


def _at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_jitter_hour_and_period_boundaries_and_the_engine_active_ratio(tmp_path: Path) -> None:
    gpu = 'DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-1",Hostname="box"}'
    _write(
        tmp_path,
        [
            f"{gpu} 0.5 {_at('2025-03-01T00:00:00')}",
            f"{gpu} 0.25 {_at('2025-03-01T00:01:00.400')}",  # 400 ms late: jitter, still one stretch
            f"{gpu} 1 {_at('2025-03-01T00:02:00.100')}",  # last: stands for one interval
            f"{gpu} 0.873421 {_at('2025-03-01T00:59:30')}",  # half in each hour
            f"{gpu} 0.0000005 {_at('2025-03-31T23:59:30')}",  # half in March, half in April
        ],
    )
    source = _source(path=str(tmp_path), scrape_interval_seconds=60, utilization_metric="DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    march = load(source, MARCH)
    end = datetime(2025, 3, 31, 23, tzinfo=UTC)
    assert _table(march.frame) == [
        # 0.5 × 60.4 + 0.25 × 59.7 + 1 × 60 + 0.873421 × 30
        (H0, "box", "unattributed", Decimal("131.327630"), Decimal("210.100")),
        (H1, "box", "unattributed", Decimal("26.202630"), Decimal("30")),
        (end, "box", "unattributed", Decimal("0.000015"), Decimal("30")),
    ]
    april = load(source, BillingPeriod("2025-04"))
    assert _table(april.frame) == [
        (datetime(2025, 4, 1, tzinfo=UTC), "box", "unattributed", Decimal("0.000015"), Decimal("30"))
    ]
    assert march.stats["gaps"] == 2  # 00:02 → 00:59 and 00:59 → 23:59 on the 31st


def test_busy_seconds_round_half_up_to_the_microsecond(tmp_path: Path) -> None:
    _write(
        tmp_path,
        [f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{UUID="GPU-1",Hostname="box"}} 0.0000005 {_at("2025-03-01T00:00:00")}'],
    )
    source = _source(path=str(tmp_path), scrape_interval_seconds=1, utilization_metric="DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    assert _table(load(source, MARCH).frame) == [(H0, "box", "unattributed", Decimal("0.000001"), Decimal("1"))]


def test_ratios_above_one_are_quarantined(tmp_path: Path) -> None:
    _write(tmp_path, [f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{UUID="GPU-1",Hostname="box"}} 1.5 {_at("2025-03-01T00:00:00")}'])
    source = _source(path=str(tmp_path), scrape_interval_seconds=60, utilization_metric="DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    result = load(source, MARCH)
    assert result.frame.is_empty()
    assert result.quarantine["reason"].to_list() == ["DCGM_FI_PROF_GR_ENGINE_ACTIVE value 1.5 outside 0-1 (ratio)"]


def test_max_gap_cannot_be_shorter_than_the_scrape_interval() -> None:
    with pytest.raises(ValidationError, match="max_gap_seconds must be at least scrape_interval_seconds"):
        _source(scrape_interval_seconds=60, max_gap_seconds=30)
    assert _source().deployment_labels == ["pod", "Hostname"] and _source().max_gap == 1350


# --- the demo's GPU metrics ----------------------------------------------------------------------


def test_the_demo_scrapes_measure_the_cluster_and_vm_that_company_py_runs(tmp_path: Path) -> None:
    month = DemoMonth("2025-03")
    days = [date(2025, 3, 7), date(2025, 3, 8)]  # a Friday (3 nodes by day) and a Saturday (2 nodes)
    folder = demo_metrics.write_days(month, days, tmp_path / "a", seed=7)
    again = demo_metrics.write_days(month, days, tmp_path / "b", seed=7)
    first = sorted((folder / "dcgm").iterdir())
    assert [f.name for f in first] == ["dcgm-2025-03-07.prom.gz", "dcgm-2025-03-08.prom.gz"]
    assert [f.read_bytes() for f in first] == [f.read_bytes() for f in sorted((again / "dcgm").iterdir())]
    head = gzip.decompress(first[0].read_bytes()).decode().splitlines()[:3]
    assert head[:2] == ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
    assert 'namespace="inference-prod",pci_bus_id=' in head[2] and head[2].endswith(" 1741305600000")

    source = DcgmMetricsTelemetry.model_validate(demo_metrics.telemetry_entry(folder))
    result = load(source, MARCH)
    assert result.quarantine.is_empty() and result.stats["gaps"] == 0
    assert result.stats["gpus"] == 8 * 3 + 8  # two long-lived nodes, Friday's day node, the VM
    rows = {(r["hour"], r["deployment"]): r for r in result.frame.iter_rows(named=True)}
    assert len(rows) == 48 * 2
    for (hour, deployment), row in rows.items():
        gpus = 8 * aws_cluster_instances(hour) if deployment == DEPLOYMENT_AWS_LLAMA else 8 * GPU_CLOUD_VMS
        assert row["gpu_seconds_provisioned"] == 3_600 * gpus
        busy = float(row["gpu_seconds_busy"] / row["gpu_seconds_provisioned"])
        assert abs(busy - demo_metrics.expected_busy_fraction(month, hour)[deployment]) < 0.02
    assert {r["feature"] for r in rows.values()} == {"unattributed"}


def test_ingest_writes_the_gpu_rows_to_inference_usage_on_both_engines(warehouse: Warehouse) -> None:
    config = CogsConfig.model_validate(
        {
            "telemetry": [_source(provider="aws").model_dump(exclude_none=True)],
            # ingest compares quarantined samples with hourly rows (see the report): 1 of 8 here
            "ingest": {"max_quarantined_share": 0.2},
        }
    )
    summary = ingest(warehouse, config, "gpus", "2025-03")
    assert (summary.rows, summary.quarantined) == (7, 1)
    totals = warehouse.read(
        "SELECT deployment, SUM(gpu_seconds_busy) AS busy, SUM(gpu_seconds_provisioned) AS held, SUM(requests) AS n "
        "FROM inference_usage WHERE source = 'gpus' GROUP BY deployment ORDER BY deployment"
    )
    assert [(d, Decimal(b), Decimal(h), int(n)) for d, b, h, n in totals.rows()] == [
        ("eks-unassigned", Decimal(0), Decimal(7200), 0),
        ("embedder", Decimal(1800), Decimal(7200), 0),
        ("llama", Decimal(6570), Decimal(10800), 0),
        ("qwen", Decimal(4500), Decimal(7200), 0),
    ]
