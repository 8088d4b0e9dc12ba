"""Lambda Cloud: sampling the instances API, the uptime log, the estimate, and invoices replacing it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import connector, lambda_cloud
from connectors.base import BillingPeriod, SourceError
from connectors.lambda_cloud import Observation, append_observations, month_share, sample_instances
from models.config import LambdaCloudSource, parse_config
from tests.fixtures.gpu_clouds.api_server import ApiServer, Reply, Request, malformed, rate_limited, server_error

FIXTURES = Path(__file__).parent / "fixtures" / "gpu_clouds" / "lambda_invoices"
KEY = "secret_lambda-test_4f1c2a9e8b7d6c5b4a3f2e1d0c9b8a7f.abCDefGHijKLmnOPqrSTuvWXyz012345"
PERIOD = BillingPeriod("2025-06")
H100_PCIE, A10, H100_SXM = (
    "0920582c7ff041399e34823a0be62549", "5b7d0e2a1c9f4e3b8a6d4c2e0f1a3b5c", "9c1f3a5e7b2d4f6a8c0e2b4d6f8a0c2e"
)  # fmt: skip


def instance(instance_id: str, status: str, type_name: str, cents: int, gpus: int, **extra: object) -> dict:
    """An ``Instance`` object as ``GET /api/v1/instances`` documents it (secrets and addresses included)."""
    return {
        "id": instance_id, "name": extra.get("name", "My Instance"), "ip": "198.51.100.2", "private_ip": "10.0.2.100",
        "status": status, "ssh_key_names": ["My SSH key"], "file_system_names": [],
        "region": {"name": "us-east-1", "description": "Virginia, USA"},
        "instance_type": {"name": type_name, "description": f"{gpus}x GPU", "gpu_description": "H100 (80 GB PCIe)",
                          "price_cents_per_hour": cents,
                          "specs": {"vcpus": 26, "memory_gib": 225, "storage_gib": 2816, "gpus": gpus}},
        "hostname": "headnode1", "jupyter_token": "03b7d30d9d3e4d8fa41657bc0d478c1b",
        "jupyter_url": "https://jupyter-249e.lambdaspaces.com/?token=03b7d30d9d3e4d8fa41657bc0d478c1b",
        "actions": {"migrate": {"available": False, "reason_code": "not-supported", "reason_description": "No"}},
        "tags": [{"key": "feature", "value": "code_review"}],
    }  # fmt: skip


def route(request: Request) -> Reply:
    if request.path != "/api/v1/instances":
        return Reply.json({"error": {"code": "global/object-does-not-exist", "message": "Not found."}}, 404)
    return Reply.json(
        {
            "data": [
                instance(H100_PCIE, "active", "gpu_1x_h100_pcie", 249, 1),
                instance(A10, "booting", "gpu_1x_a10", 110, 1),
            ]
        }
    )


UNAUTHORIZED = Reply.json(
    {"error": {"code": "global/invalid-api-key", "message": "API key was invalid, expired, or deleted.",
               "suggestion": "Check your API key or create a new one, then try again."}},
    401,
)  # fmt: skip


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(route, token=KEY, unauthorized=UNAUTHORIZED) as srv:
        yield srv


@pytest.fixture
def source(tmp_path: Path, server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> LambdaCloudSource:
    monkeypatch.setenv("LAMBDA_API_KEY", KEY)
    return LambdaCloudSource(
        name="lambda", type="lambda_cloud", base_url=server.base_url, uptime_log_dir=str(tmp_path / "uptime"),
        max_retries=2,
    )  # fmt: skip


# --- sampling ------------------------------------------------------------------------------------


def test_sample_keeps_what_prices_uptime_and_no_secret(source: LambdaCloudSource, server: ApiServer) -> None:
    now = datetime(2025, 6, 3, 14, 5, 7, tzinfo=UTC)
    observations = sample_instances(source, now=now)
    assert [(o.instance_id, o.status, o.instance_type, o.price_cents_per_hour, o.gpus) for o in observations] == [
        (H100_PCIE, "active", "gpu_1x_h100_pcie", 249, 1),
        (A10, "booting", "gpu_1x_a10", 110, 1),
    ]
    assert observations[0].tags == {"feature": "code_review"} and observations[0].region == "us-east-1"
    path = append_observations(source, observations, observed_at=now)
    assert path == Path(source.uptime_log_dir) / "2025-06.jsonl"
    text = path.read_text()
    assert text.count("\n") == 1 and json.loads(text)["observed_at"] == "2025-06-03T14:05:07.000000Z"
    for secret in ("jupyter", "03b7d30d", "198.51.100.2", "10.0.2.100", KEY):
        assert secret not in text
    assert server.requests[0].path == "/api/v1/instances" and server.requests[0].authorized


def test_an_empty_sample_is_still_written(source: LambdaCloudSource) -> None:
    at = datetime(2025, 7, 1, 0, 0, tzinfo=UTC)
    path = append_observations(source, [], observed_at=at)
    assert path.name == "2025-07.jsonl" and json.loads(path.read_text()) == {
        "instances": [], "observed_at": "2025-07-01T00:00:00.000000Z"
    }  # fmt: skip


def test_sampling_retries_429_and_500_then_succeeds(source: LambdaCloudSource, server: ApiServer) -> None:
    server.inject(rate_limited("2"), server_error({"error": {"code": "global/internal-error", "message": "x"}}))
    sleeps: list[float] = []
    assert len(sample_instances(source, sleep=sleeps.append)) == 2
    assert sleeps == [2.0, 2.0] and len(server.requests) == 3


def test_sampling_with_a_revoked_key_names_lambda(source: LambdaCloudSource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "secret_revoked_0000")
    with pytest.raises(SourceError) as err:
        sample_instances(source, sleep=lambda s: None)
    message = str(err.value)
    assert (
        "/api/v1/instances: HTTP 401: credentials rejected by Lambda: API key was invalid, expired, or deleted."
        in message
    )
    assert "(global/invalid-api-key)" in message and "secret_revoked_0000" not in message


def test_sampling_malformed_json_and_bad_instance(source: LambdaCloudSource, server: ApiServer) -> None:
    server.inject(malformed('{"data": [{"id": "0920'))
    with pytest.raises(SourceError, match=r"/api/v1/instances: response from Lambda is not valid JSON"):
        sample_instances(source)
    broken = instance(H100_PCIE, "active", "gpu_1x_h100_pcie", 249, 1)
    broken["instance_type"]["price_cents_per_hour"] = Decimal("2.49")
    server.route = lambda request: Reply.json({"data": [broken]})
    with pytest.raises(SourceError, match=r"data\[0\]\.instance_type\.price_cents_per_hour: expected a whole number"):
        sample_instances(source)


# --- the estimate --------------------------------------------------------------------------------


def observe(source: LambdaCloudSource, at: datetime, *running: tuple[str, str, str, int]) -> None:
    observations = [
        Observation(at, iid, status, kind, cents, name=f"{kind}-1", gpus=8 if "8x" in kind else 1,
                    region="us-east-1", region_description="Virginia, USA", tags={"feature": "code_review"})
        for iid, status, kind, cents in running
    ]  # fmt: skip
    append_observations(source, observations, observed_at=at)


def t(month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def month_of_samples(source: LambdaCloudSource) -> LambdaCloudSource:
    a10, pcie, sxm = (
        (A10, "active", "gpu_1x_a10", 110),
        (H100_PCIE, "active", "gpu_1x_h100_pcie", 249),
        (H100_SXM, "active", "gpu_8x_h100_sxm5", 2392),
    )
    observe(source, t(5, 31, 23, 58), a10)  # in May's file: the A10 runs into June for 3 minutes
    observe(source, t(6, 1, 0, 3))
    observe(source, t(6, 1, 10, 0), (H100_PCIE, "booting", "gpu_1x_h100_pcie", 249))  # not billed while booting
    for minute in range(5, 150, 5):  # 10:05 … 12:25 active
        observe(source, t(6, 1, 10, 0) + timedelta(minutes=minute), pcie)
    observe(source, t(6, 1, 12, 30))  # terminated: gone from the list
    observe(source, t(6, 30, 23, 50), sxm)
    observe(source, t(6, 30, 23, 55), sxm)
    observe(source, t(7, 1, 0, 20), sxm)  # the sensor was down 25 minutes: only 10 count after 23:55
    return source


ESTIMATE = Decimal("10.059166666676")  # 0.055 + 2.282500000001 + 2.49 + 1.245 + 3.986666666675


def test_estimate_prices_observed_uptime_per_hour(month_of_samples: LambdaCloudSource) -> None:
    result = lambda_cloud.load(month_of_samples, PERIOD)
    frame = result.frame.sort("ChargePeriodStart", "ResourceId")
    assert frame.select("ResourceId", "ChargePeriodStart", "PricingQuantity", "ListUnitPrice", "BilledCost").rows() == [
        (A10, t(6, 1, 0, 0), Decimal("0.05"), Decimal("1.10"), Decimal("0.055")),
        (H100_PCIE, t(6, 1, 10, 0), Decimal("0.916666666667"), Decimal("2.49"), Decimal("2.282500000001")),
        (H100_PCIE, t(6, 1, 11, 0), Decimal(1), Decimal("2.49"), Decimal("2.49")),
        (H100_PCIE, t(6, 1, 12, 0), Decimal("0.5"), Decimal("2.49"), Decimal("1.245")),
        (H100_SXM, t(6, 30, 23, 0), Decimal("0.166666666667"), Decimal("23.92"), Decimal("3.986666666675")),
    ]
    assert result.source_total == ESTIMATE == frame["BilledCost"].sum() == frame["EffectiveCost"].sum()
    assert result.quarantine.height == 0
    assert result.stats == {"estimate_rows": 5, "sample_gaps_longer_than_max": 3, "samples": 34}
    row = frame.row(1, named=True)
    assert (row["x_line_item_type"], row["InvoiceId"]) == ("Estimate", None)
    assert row["ChargeDescription"] == "Estimate: gpu_1x_h100_pcie uptime × list price (no invoice loaded yet)"
    assert (row["ServiceName"], row["ServiceCategory"], row["ServiceSubcategory"]) == (
        "Lambda On-Demand Cloud", "Compute", "Virtual Machines"
    )  # fmt: skip
    assert (row["RegionId"], row["RegionName"], row["SkuId"], row["SkuPriceId"]) == (
        "us-east-1", "Virginia, USA", "gpu_1x_h100_pcie", "gpu_1x_h100_pcie:249c"
    )  # fmt: skip
    assert json.loads(row["Tags"]) == {"feature": "code_review"}
    assert (row["ChargeCategory"], row["ChargeFrequency"], row["PricingUnit"], row["BillingCurrency"]) == (
        "Usage", "Usage-Based", "Hours", "USD"
    )  # fmt: skip
    for r in frame.iter_rows(named=True):  # the FOCUS price identity holds to the stored 12 places
        assert (r["ListUnitPrice"] * r["PricingQuantity"]).quantize(Decimal("1e-12")) == r["ListCost"]


def test_invoices_replace_the_estimate_where_they_cover(month_of_samples: LambdaCloudSource, tmp_path: Path) -> None:
    invoices = tmp_path / "invoices"
    shutil.copytree(FIXTURES, invoices)
    source = month_of_samples.model_copy(update={"invoice_path": str(invoices)})
    result = lambda_cloud.load(source, PERIOD)
    frame = result.frame.sort("x_source_file", "x_source_line")
    assert set(frame["x_line_item_type"]) == {"Invoice"}  # both invoiced weeks cover every estimated hour
    assert frame.select("InvoiceId", "ChargeCategory", "BilledCost", "PricingQuantity", "ChargePeriodStart").rows() == [
        ("INV-2025-0601", "Usage", Decimal("6.02"), Decimal("2.4167"), t(6, 1, 0, 0)),
        ("INV-2025-0601", "Usage", Decimal("0.06"), Decimal("0.05"), t(6, 1, 0, 0)),
        ("INV-2025-0601", "Tax", Decimal("0.48"), None, t(6, 1, 0, 0)),
        # one day of the 7-day line that straddles June and July: 1/7 of $4,018.56 and of 168 hours
        ("INV-2025-0706", "Usage", Decimal("574.08"), Decimal(24), t(6, 30, 0, 0)),
    ]
    assert result.source_total == Decimal("580.64") == frame["BilledCost"].sum() == frame["EffectiveCost"].sum()
    assert frame["ChargePeriodEnd"].to_list() == [t(6, 2, 0, 0)] * 3 + [t(7, 1, 0, 0)]
    # FOCUS 1.2 ListCost-C-009-C: ListCost = ListUnitPrice × PricingQuantity, not the invoice amount in cents
    assert frame.select("ListUnitPrice", "ListCost", "ContractedCost", "SkuPriceId").rows() == [
        (Decimal("2.49"), Decimal("6.017583"), Decimal("6.017583"), "gpu_1x_h100_pcie:249c"),
        (Decimal("1.10"), Decimal("0.055"), Decimal("0.055"), "gpu_1x_a10:110c"),
        (None, Decimal("0.48"), Decimal("0.48"), None),
        (Decimal("23.92"), Decimal("574.08"), Decimal("574.08"), "gpu_8x_h100_sxm5:2392c"),
    ]
    tax = frame.filter(pl.col("ChargeCategory") == "Tax").row(0, named=True)
    assert (tax["ChargeFrequency"], tax["PricingUnit"], tax["SkuId"]) == ("One-Time", None, None)
    assert result.quarantine.rows() == [
        (str(invoices / "week_2025-06-30.csv"), "line 3",
         "line_type 'refund' is not one of usage, tax, credit, adjustment"),
    ]  # fmt: skip


def test_a_partial_invoice_leaves_the_rest_estimated(month_of_samples: LambdaCloudSource) -> None:
    source = month_of_samples.model_copy(update={"invoice_path": str(FIXTURES / "week_2025-06-01.csv")})
    result = lambda_cloud.load(source, PERIOD)
    kinds = result.frame.group_by("x_line_item_type").agg(pl.col("BilledCost").sum(), pl.len()).sort("x_line_item_type")
    assert kinds.rows() == [("Estimate", Decimal("3.986666666675"), 1), ("Invoice", Decimal("6.56"), 3)]
    assert result.source_total == Decimal("10.546666666675")


def test_bad_log_lines_are_quarantined(source: LambdaCloudSource) -> None:
    observe(source, t(6, 2, 0, 0), (A10, "active", "gpu_1x_a10", 110))
    log = Path(source.uptime_log_dir) / "2025-06.jsonl"
    with log.open("a") as out:
        out.write('{"observed_at": "2025-06-02T00:05:00Z", "instances": [{"price_cents_per_hour": 1.5}]}\n')
        out.write('{"observed_at": "yesterday", "instances": []}\n')
        out.write('{"observed_at": "2025-06-02T00:00:00Z", "instances": []}\n')  # a repeated sample time
        out.write('{"observed_at": "2025-06-02T00:06:00Z", "instan')  # the sensor died mid-line
    observe(source, t(6, 2, 0, 6))
    result = lambda_cloud.load(source, PERIOD)
    assert [r[1:] for r in result.quarantine.rows()] == [
        ("line 2", "instances[0].price_cents_per_hour 1.5 is not a whole number of cents"),
        ("line 3", "observed_at 'yesterday' is not an ISO 8601 date-time"),
        ("line 5", "not valid JSON: Unterminated string starting at: line 1 column 41 (char 40)"),
    ]
    # the sample written after the torn line survives: 00:00 → 00:06 is 6 minutes of an A10
    assert result.frame["BilledCost"].to_list() == [Decimal("0.11")]
    assert result.stats["duplicate_samples"] == 1


def test_missing_log_folder_and_invoice_columns_are_clear_errors(source: LambdaCloudSource, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"uptime_log_dir does not exist\. start the Lambda uptime sensor"):
        lambda_cloud.load(source, PERIOD)
    Path(source.uptime_log_dir).mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("invoice,start,end,total\nI-1,2025-06-01,2025-06-07,10\n")
    with pytest.raises(
        SourceError, match=r"bad\.csv: missing invoice column\(s\) invoice_id, period_start, period_end"
    ):
        lambda_cloud.load(source.model_copy(update={"invoice_path": str(bad)}), PERIOD)
    assert lambda_cloud.load(source, PERIOD).frame.height == 0  # a folder without samples: nothing to estimate


@given(
    value=st.decimals(min_value=-(10**6), max_value=10**6, places=6, allow_nan=False, allow_infinity=False),
    start_offset=st.integers(min_value=0, max_value=60 * 24 * 40),
    length=st.integers(min_value=1, max_value=60 * 24 * 80),
)
def test_month_shares_add_back_exactly(value: Decimal, start_offset: int, length: int) -> None:
    start = datetime(2025, 5, 1, tzinfo=UTC) + timedelta(minutes=start_offset)
    end = start + timedelta(minutes=length)
    months = [BillingPeriod(k) for k in ("2025-05", "2025-06", "2025-07", "2025-08", "2025-09")]
    assert sum((month_share(value, start, end, m) for m in months), Decimal(0)) == value


def test_config_and_registry() -> None:
    config = parse_config("sources:\n  - {name: lam, type: lambda_cloud, uptime_log_dir: /var/lib/cogs/lambda}\n")
    source = config.sources[0]
    assert isinstance(source, LambdaCloudSource) and source.billable_statuses == ["active", "unhealthy"]
    assert connector("lambda_cloud") is lambda_cloud


def test_uptime_sensor_appends_one_sample_per_tick(source: LambdaCloudSource) -> None:
    import dagster as dg

    from pipelines.sensors import lambda_uptime_sensor

    moments = iter([datetime(2025, 6, 3, 14, 0, tzinfo=UTC), datetime(2025, 6, 3, 14, 5, tzinfo=UTC)])
    sensor = lambda_uptime_sensor(source, clock=lambda: next(moments))
    assert sensor.name == "lambda_uptime" and sensor.minimum_interval_seconds == 300
    for _ in range(2):
        data = sensor.evaluate_tick(dg.build_sensor_context())
        assert data.skip_message.startswith("sampled 2 instance(s) into ")
    lines = (Path(source.uptime_log_dir) / "2025-06.jsonl").read_text().splitlines()
    assert [json.loads(line)["observed_at"] for line in lines] == [
        "2025-06-03T14:00:00.000000Z",
        "2025-06-03T14:05:00.000000Z",
    ]
