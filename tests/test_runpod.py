"""RunPod billing connector against a local server answering like the REST API v1 billing endpoints."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from connectors import connector, runpod
from connectors.base import BillingPeriod, SourceError
from connectors.runpod import Answer, map_answers
from models.config import RunPodSource, parse_config
from tests.fixtures.gpu_clouds.api_server import ApiServer, Reply, Request, malformed, rate_limited, server_error

KEY = "rpa_TESTKEY8X2LQ0Z9RUNPOD000000000000"
PERIOD = BillingPeriod("2025-06")
H100, A5000, L40S, A40 = "NVIDIA H100 80GB HBM3", "NVIDIA RTX A5000", "NVIDIA L40S", "NVIDIA A40"


def at(day: int, hour: int) -> datetime:
    return datetime(2025, 6, day, hour, tzinfo=UTC)


# (resource, GPU type or None for a CPU pod, hour, amount as RunPod sends it, timeBilledMs, diskSpaceBilledGb)
POD_USAGE: list[tuple[str, str | None, datetime, Any, int, int]] = [
    *[("p-h100a", H100, at(1, h), Decimal("2.99"), 3_600_000, 50) for h in range(6)],
    ("p-a5000", A5000, at(15, 10), Decimal("0.27"), 3_600_000, 20),
    ("p-a5000", A5000, at(15, 11), Decimal("0.135"), 1_800_000, 20),
    ("p-cpu", None, at(30, 23), "0.06", 3_600_000, 10),  # a proxy that sends amounts as strings
]
ENDPOINT_USAGE: list[tuple[str, str | None, datetime, Any, int, int]] = [
    ("ep-qwen", L40S, at(10, 12), Decimal("1.234567"), 1_234_567, 0),
    ("ep-qwen", L40S, at(10, 13), Decimal("0.8"), 1_800_000, 0),
    ("ep-qwen", A40, at(10, 12), Decimal("0.5"), 900_000, 0),  # fallback GPU type in the same hour
]
VOLUME_USAGE = [  # hour, amount, GB, high-performance amount, high-performance GB
    (at(1, 0), Decimal("0.0097"), 100, Decimal("0.0042"), 30),
    (at(1, 1), Decimal("0.0097"), 100, Decimal("0"), 0),
    (at(1, 2), Decimal("0.0097"), 100, Decimal("0"), 0),
]
TOTAL = Decimal("20.972867")  # 18.405 pods + 2.534567 serverless + 0.0333 volumes


def bucket_records(usage: list[tuple], query: Request, default_grouping: str, id_field: str) -> list[dict]:
    """What /billing/pods or /billing/endpoints answers: records per bucket and grouping key."""
    grouping = query.one("grouping") or default_grouping
    start = datetime.fromisoformat(query.one("startTime") or "2025-06-01T00:00:00Z")
    end = datetime.fromisoformat(query.one("endTime") or "2025-07-01T00:00:00Z")
    totals: dict[tuple[datetime, str | None], list[Any]] = defaultdict(lambda: [Decimal(0), 0, 0])
    for resource, gpu, hour, amount, ms, disk in usage:
        if not start <= hour <= end or (query.one("gpuTypeId") not in (None, gpu)):
            continue
        key = (hour, resource if grouping == id_field else gpu)
        entry = totals[key]
        entry[0] = entry[0] + Decimal(amount) if not isinstance(amount, str) or entry[0] else amount
        entry[1] += ms
        entry[2] = max(entry[2], disk)
    return [
        {"time": f"{hour:%Y-%m-%dT%H:%M:%SZ}", "amount": amount, "timeBilledMs": ms, "diskSpaceBilledGb": disk,
         grouping: key}
        for (hour, key), (amount, ms, disk) in sorted(totals.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
    ]  # fmt: skip


def route(request: Request) -> Reply:
    if request.path == "/v1/billing/pods":
        return Reply.json(bucket_records(POD_USAGE, request, "gpuTypeId", "podId"))
    if request.path == "/v1/billing/endpoints":
        return Reply.json(bucket_records(ENDPOINT_USAGE, request, "endpointId", "endpointId"))
    if request.path == "/v1/billing/networkvolumes":
        return Reply.json(
            [
                {
                    "time": f"{h:%Y-%m-%dT%H:%M:%SZ}",
                    "amount": a,
                    "diskSpaceBilledGb": gb,
                    "highPerformanceStorageAmount": hp,
                    "highPerformanceStorageDiskSpaceBilledGb": hp_gb,
                }
                for h, a, gb, hp, hp_gb in VOLUME_USAGE
            ]
        )
    return Reply.json({"error": "not found"}, 404)


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(route, token=KEY, unauthorized=Reply.json({"error": "Unauthorized"}, 401)) as srv:
        yield srv


@pytest.fixture
def source(server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> RunPodSource:
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    return RunPodSource(name="runpod", type="runpod", base_url=f"{server.base_url}/v1", max_retries=2)


def test_month_loads_every_bucket_with_exact_totals(source: RunPodSource, server: ApiServer) -> None:
    result = runpod.load(source, PERIOD, sleep=lambda s: None)
    frame = result.frame
    # pods: 6 H100 + 2 A5000 hours + 1 CPU pod hour; serverless: 2 L40S + 1 A40; volumes: 3 standard + 1 HP.
    assert frame.height == 16 and result.quarantine.height == 0
    assert result.source_total == TOTAL
    for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert frame[column].sum() == TOTAL
    assert result.repairs == {"amount_as_string": 1}
    assert result.stats == {"pods_without_gpu_type": 1}
    by_kind = frame.group_by("x_line_item_type").agg(pl.col("BilledCost").sum()).sort("x_line_item_type").rows()
    assert by_kind == [
        ("endpoints", Decimal("2.534567")), ("networkvolumes", Decimal("0.0333")), ("pods", Decimal("18.405"))
    ]  # fmt: skip
    assert len(server.requests) == 9


def test_rows_carry_resource_gpu_type_and_hours(source: RunPodSource) -> None:
    frame = runpod.load(source, PERIOD).frame
    pod = frame.filter((pl.col("ResourceId") == "p-a5000") & (pl.col("ChargePeriodStart") == at(15, 11))).row(
        0, named=True
    )
    assert (pod["SkuId"], pod["ResourceType"], pod["ServiceName"]) == (A5000, "Pod", "RunPod Pods")
    assert (pod["ServiceCategory"], pod["ServiceSubcategory"]) == ("Compute", "Containers")
    assert (pod["ConsumedQuantity"], pod["ConsumedUnit"], pod["PricingUnit"]) == (Decimal("0.5"), "Hours", "Hours")
    assert pod["ChargePeriodEnd"] == at(15, 12) and pod["BilledCost"] == Decimal("0.135")
    assert (pod["ChargeCategory"], pod["ChargeFrequency"], pod["PricingCategory"]) == (
        "Usage",
        "Usage-Based",
        "Standard",
    )
    assert (pod["BillingAccountId"], pod["BillingCurrency"], pod["ProviderName"]) == ("runpod", "USD", "RunPod")
    assert pod["ChargeDescription"] == "Pod p-a5000 on NVIDIA RTX A5000"
    assert pod["x_source_file"] == f"GET /v1/billing/pods?grouping=podId&gpuTypeId={A5000}"
    cpu = frame.filter(pl.col("ResourceId") == "p-cpu").row(0, named=True)
    assert (cpu["SkuId"], cpu["BilledCost"], cpu["ConsumedQuantity"]) == (None, Decimal("0.06"), Decimal(1))
    assert cpu["x_source_file"] == "GET /v1/billing/pods?grouping=podId"
    assert (cpu["SkuMeter"], pod["SkuMeter"]) == (None, "Pod Hours")  # FOCUS: SkuMeter is null when SkuId is null
    serverless = frame.filter(pl.col("ResourceId") == "ep-qwen").sort("ChargePeriodStart", "SkuId")
    assert serverless.select("SkuId", "BilledCost", "ConsumedQuantity").rows() == [
        (A40, Decimal("0.5"), Decimal("0.25")),
        (L40S, Decimal("1.234567"), Decimal("0.342935277778")),  # 1,234,567 ms in hours, 12 places
        (L40S, Decimal("0.8"), Decimal("0.5")),
    ]
    assert set(serverless["ServiceSubcategory"]) == {"Serverless Compute"}
    volumes = frame.filter(pl.col("x_line_item_type") == "networkvolumes").sort("ChargePeriodStart", "SkuId")
    assert set(volumes["x_source_file"]) == {"GET /v1/billing/networkvolumes"}
    assert volumes.select("SkuId", "BilledCost", "ConsumedQuantity", "ConsumedUnit", "ResourceId").rows() == [
        ("network-volume-high-performance", Decimal("0.0042"), Decimal(30), "GB-Hours", None),
        ("network-volume-standard", Decimal("0.0097"), Decimal(100), "GB-Hours", None),
        ("network-volume-standard", Decimal("0.0097"), Decimal(100), "GB-Hours", None),
        ("network-volume-standard", Decimal("0.0097"), Decimal(100), "GB-Hours", None),
    ]


def test_requests_follow_the_documented_query(source: RunPodSource, server: ApiServer) -> None:
    runpod.load(source, PERIOD)
    window = {"bucketSize": ["hour"], "startTime": ["2025-06-01T00:00:00Z"], "endTime": ["2025-06-30T23:59:59Z"]}
    assert [(r.path, r.query) for r in server.requests] == [
        ("/v1/billing/pods", {**window, "grouping": ["gpuTypeId"]}),
        ("/v1/billing/pods", {**window, "grouping": ["podId"], "gpuTypeId": [H100]}),
        ("/v1/billing/pods", {**window, "grouping": ["podId"], "gpuTypeId": [A5000]}),
        ("/v1/billing/pods", {**window, "grouping": ["podId"]}),
        ("/v1/billing/endpoints", {**window, "grouping": ["gpuTypeId"]}),
        ("/v1/billing/endpoints", {**window, "grouping": ["endpointId"], "gpuTypeId": [A40]}),
        ("/v1/billing/endpoints", {**window, "grouping": ["endpointId"], "gpuTypeId": [L40S]}),
        ("/v1/billing/endpoints", {**window, "grouping": ["endpointId"]}),
        ("/v1/billing/networkvolumes", window),
    ]
    assert all(r.authorized for r in server.requests)


def test_429_with_retry_after_then_500_then_success(source: RunPodSource, server: ApiServer) -> None:
    server.inject(rate_limited("7"), server_error())
    sleeps: list[float] = []
    result = runpod.load(source, PERIOD, sleep=sleeps.append)
    assert sleeps == [7.0, 2.0]  # Retry-After honoured, then exponential backoff (second attempt: 2 s)
    assert len(server.requests) == 11 and result.frame["BilledCost"].sum() == TOTAL


def test_persistent_500_fails_naming_provider_and_status(source: RunPodSource, server: ApiServer) -> None:
    server.inject(server_error(), server_error(), server_error())
    with pytest.raises(SourceError) as err:
        runpod.load(source, PERIOD, sleep=lambda s: None)
    assert str(err.value).startswith(
        f"source 'runpod': GET {server.base_url}/v1/billing/pods: HTTP 500 from RunPod after 3 attempt(s)"
    )


def test_expired_key_401_names_provider_never_the_key(source: RunPodSource, monkeypatch: pytest.MonkeyPatch) -> None:
    expired = "rpa_EXPIREDexpiredEXPIRED00000000001"
    monkeypatch.setenv("RUNPOD_API_KEY", expired)
    with pytest.raises(SourceError) as err:
        runpod.load(source, PERIOD, sleep=lambda s: None)
    message = str(err.value)
    assert "/v1/billing/pods: HTTP 401: credentials rejected by RunPod: Unauthorized" in message
    assert "check that the key in RUNPOD_API_KEY is valid" in message
    assert expired not in message and KEY not in message


def test_malformed_json_names_the_url(source: RunPodSource, server: ApiServer) -> None:
    server.inject(malformed())
    with pytest.raises(SourceError, match=r"/v1/billing/pods: response from RunPod is not valid JSON"):
        runpod.load(source, PERIOD)


def test_only_configured_resources_day_buckets(source: RunPodSource, server: ApiServer) -> None:
    daily = source.model_copy(update={"resources": ["networkvolumes"], "bucket_size": "day"})
    result = runpod.load(daily, PERIOD)
    assert [r.query["bucketSize"] for r in server.requests] == [["day"]]
    # the fixture answers hourly records whatever the bucket; each becomes a one-day charge of GB × 24 h
    first = result.frame.sort("ChargePeriodStart", "SkuId").row(1, named=True)
    assert first["ChargePeriodEnd"] - first["ChargePeriodStart"] == timedelta(days=1)
    assert first["ConsumedQuantity"] == Decimal(2400)


# --- mapping edge cases on hand-written answers ------------------------------------------------


def test_bad_records_are_quarantined_with_reasons() -> None:
    source = RunPodSource(name="rp", type="runpod", billing_account_id="user_2PyTJ")
    good = {"time": "2025-06-02T00:00:00Z", "amount": Decimal("1.5"), "timeBilledMs": 3_600_000, "podId": "p1"}
    records = [
        good,
        {"time": "2025-06-02T01:00:00Z", "amount": "n/a", "podId": "p1"},
        {"amount": Decimal(1), "podId": "p1"},
        {"time": "2025-06-02T02:00:00Z", "amount": Decimal(1), "timeBilledMs": Decimal("12.5"), "podId": "p1"},
        "garbage",
        {"time": "2025-07-01T00:00:00Z", "amount": Decimal(9), "podId": "p1"},
        {"time": "2025-06-03T00:00:00+02:00", "amount": Decimal("0.1234567890123"), "podId": "p1"},
    ]
    answers = {
        "pods": [
            Answer("/v1/billing/pods", "grouping=gpuTypeId", [{**good, "podId": None, "gpuTypeId": H100}]),
            Answer("/v1/billing/pods", "grouping=podId", records),
        ]
    }
    result = map_answers(source, PERIOD, answers)
    assert result.quarantine.rows() == [
        ("GET /v1/billing/pods?grouping=podId", "record 2", "field 'amount' 'n/a' is not a decimal number"),
        ("GET /v1/billing/pods?grouping=podId", "record 3", "field 'time' null is not an RFC 3339 date-time"),
        ("GET /v1/billing/pods?grouping=podId", "record 4",
         "field 'timeBilledMs' 12.5 is not a whole number of milliseconds"),
        ("GET /v1/billing/pods?grouping=podId", "record 5", "record is str, expected an object"),
    ]  # fmt: skip
    frame = result.frame
    assert frame["BilledCost"].to_list() == [Decimal("1.5"), Decimal("0.123456789012")]
    assert frame["ChargePeriodStart"].to_list() == [at(2, 0), at(2, 22)]  # +02:00 read as UTC
    assert set(frame["BillingAccountId"]) == {"user_2PyTJ"}
    assert result.repairs == {"amount_rounded_to_12_decimals": 1}
    assert result.stats == {"records_outside_period": 1, "pods_without_gpu_type": 2, "pods_gpu_type_total_differs": 1}
    # the provider total counts every readable amount in the month, quarantined rows included
    assert result.source_total == Decimal("1.5") + Decimal(1) + Decimal("0.1234567890123")


def test_an_answer_that_is_not_a_list_is_an_error(source: RunPodSource, server: ApiServer) -> None:
    server.route = lambda request: Reply.json({"records": [], "metadata": {}})  # the v2 shape on the v1 URL
    with pytest.raises(SourceError, match=r"expected a JSON array of billing records, got dict"):
        runpod.load(source, PERIOD)


def test_config_and_registry() -> None:
    config = parse_config("sources:\n  - {name: gpus, type: runpod, resources: [pods]}\n")
    assert isinstance(config.sources[0], RunPodSource) and config.sources[0].resources == ["pods"]
    assert connector("runpod") is runpod
