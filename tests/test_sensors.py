"""The CUR delivery sensor: one run per new delivery (manifest id) of the current and previous month.

Evaluated with ``dg.build_sensor_context`` against a local export folder, a legacy report folder and a
real S3-compatible server (moto), with the clock fixed to 2025-03-10.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import dagster as dg
import pytest

from models.config import AwsCur2Source, AwsCurLegacySource
from pipelines.demo import aws_cur2 as demo
from pipelines.demo.company import DemoMonth
from pipelines.partitions import monthly_partitions
from pipelines.sensors import delivery_sensor, watched_periods
from tests.test_aws_cur2 import moto_s3
from tests.test_aws_cur_legacy import ASSEMBLY_NEW, ASSEMBLY_OLD, deliver_report

NOW = datetime(2025, 3, 10, 6, tzinfo=UTC)


def deliver(root: Path, month: str, execution_id: str) -> None:
    hour = datetime(int(month[:4]), int(month[5:]), 3, 2, tzinfo=UTC)
    rows = demo.hourly_line_items(DemoMonth(month), 7, [hour])
    demo.write_delivery(rows, root, month, execution_id=execution_id)


def definitions(
    source: AwsCur2Source | AwsCurLegacySource, start_month: str = "2025-01", now: datetime = NOW
) -> tuple[dg.SensorDefinition, dg.Definitions]:
    @dg.asset(name=f"ingest_{source.name}", partitions_def=monthly_partitions(start_month))
    def ingest() -> None: ...

    job = dg.define_asset_job("cogs_month", selection=dg.AssetSelection.all())
    sensor = delivery_sensor(source, job, clock=lambda: now)
    return sensor, dg.Definitions(assets=[ingest], jobs=[job], sensors=[sensor])


def tick(sensor: dg.SensorDefinition, defs: dg.Definitions, cursor: str | None) -> tuple[list[tuple], str, str]:
    data = sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, definitions=defs))
    requests = [(r.partition_key, r.run_key, r.tags["cogs/delivery"]) for r in data.run_requests or []]
    return requests, data.cursor or "", data.skip_message or ""


def cur2(path: str, **options: str) -> AwsCur2Source:
    return AwsCur2Source(name="aws_prod", type="aws_cur2", path=path, **options)


def test_watches_the_current_and_previous_month() -> None:
    assert watched_periods(NOW) == ["2025-02", "2025-03"]
    assert watched_periods(datetime(2026, 1, 2, tzinfo=UTC)) == ["2025-12", "2026-01"]


def test_one_run_per_new_delivery_of_a_local_export(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    for month, execution in [("2025-01", "exec-jan"), ("2025-02", "exec-feb"), ("2025-03", "exec-mar-1")]:
        deliver(root, month, execution)
    sensor, defs = definitions(cur2(str(root)))
    assert sensor.name == "aws_prod_deliveries"

    requests, cursor, _ = tick(sensor, defs, None)
    assert requests == [("2025-02", "2025-02:exec-feb", "exec-feb"), ("2025-03", "2025-03:exec-mar-1", "exec-mar-1")]
    assert json.loads(cursor) == {"2025-02": "exec-feb", "2025-03": "exec-mar-1"}  # January is closed

    assert tick(sensor, defs, cursor) == ([], cursor, "no new delivery of aws_prod for 2025-02, 2025-03")

    deliver(root, "2025-03", "exec-mar-2")  # AWS refreshes the open month
    requests, cursor, _ = tick(sensor, defs, cursor)
    assert requests == [("2025-03", "2025-03:exec-mar-2", "exec-mar-2")]
    assert json.loads(cursor) == {"2025-02": "exec-feb", "2025-03": "exec-mar-2"}


def test_months_before_the_first_partition_are_not_requested(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    deliver(root, "2025-02", "exec-feb")
    deliver(root, "2025-03", "exec-mar-1")
    sensor, defs = definitions(cur2(str(root)), start_month="2025-03")
    requests, cursor, _ = tick(sensor, defs, "not json")  # an unreadable cursor starts afresh
    assert requests == [("2025-03", "2025-03:exec-mar-1", "exec-mar-1")]
    assert json.loads(cursor) == {"2025-02": "exec-feb", "2025-03": "exec-mar-1"}


def test_no_manifest_yet_is_a_skip(tmp_path: Path) -> None:
    sensor, defs = definitions(cur2(str(tmp_path / "nothing")))
    assert tick(sensor, defs, None) == ([], "{}", "no new delivery of aws_prod for any period")


def test_manifest_without_execution_id_falls_back_to_the_file_version(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    deliver(root, "2025-03", "exec-mar-1")
    manifest = root / "metadata/BILLING_PERIOD=2025-03/lumen-cur2-Manifest.json"
    content = json.loads(manifest.read_text())
    del content["executionId"]
    manifest.write_text(json.dumps(content))
    stat = manifest.stat()
    sensor, defs = definitions(cur2(str(root)))
    [(partition, run_key, delivery)] = tick(sensor, defs, None)[0]
    assert (partition, delivery) == ("2025-03", f"{stat.st_mtime_ns}-{stat.st_size}")
    assert run_key == f"2025-03:{delivery}"


def test_legacy_report_runs_per_assembly(tmp_path: Path) -> None:
    """A legacy report updated twice for November: the range folder's manifest names the latest assembly."""
    root = tmp_path / "cur" / "acme-legacy"
    source = AwsCurLegacySource(name="aws_legacy", type="aws_cur_legacy", path=str(root))
    sensor, defs = definitions(source, start_month="2023-01", now=datetime(2023, 12, 5, tzinfo=UTC))

    deliver_report(root, ASSEMBLY_OLD, parts=1)
    requests, cursor, _ = tick(sensor, defs, None)
    assert requests == [("2023-11", f"2023-11:{ASSEMBLY_OLD}", ASSEMBLY_OLD)]
    deliver_report(root, ASSEMBLY_NEW, parts=2)
    assert tick(sensor, defs, cursor)[0] == [("2023-11", f"2023-11:{ASSEMBLY_NEW}", ASSEMBLY_NEW)]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def test_deliveries_over_s3_by_execution_id_then_etag(tmp_path: Path, s3_endpoint: str) -> None:
    root = demo.export_root(tmp_path)
    deliver(root, "2025-03", "exec-mar-1")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="sensor-billing")
    prefix = f"{demo.EXPORT_PREFIX}/{root.name}"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.put_object(
            Bucket="sensor-billing", Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes()
        )
    sensor, defs = definitions(cur2(f"s3://sensor-billing/{prefix}", endpoint_url=s3_endpoint, region="us-east-1"))

    requests, cursor, _ = tick(sensor, defs, None)
    assert requests == [("2025-03", "2025-03:exec-mar-1", "exec-mar-1")]
    assert tick(sensor, defs, cursor)[0] == []

    # a manifest without executionId (an older or hand-made export): its ETag tells versions apart
    key = f"{prefix}/metadata/BILLING_PERIOD=2025-03/lumen-cur2-Manifest.json"
    manifest = json.loads((root / "metadata/BILLING_PERIOD=2025-03/lumen-cur2-Manifest.json").read_text())
    del manifest["executionId"]
    etag = s3.put_object(Bucket="sensor-billing", Key=key, Body=json.dumps(manifest).encode())["ETag"].strip('"')
    requests, cursor, _ = tick(sensor, defs, cursor)
    assert requests == [("2025-03", f"2025-03:{etag}", etag)]
    manifest["exportTime"] = "2025-03-11T03:15:12.000Z"
    etag2 = s3.put_object(Bucket="sensor-billing", Key=key, Body=json.dumps(manifest).encode())["ETag"].strip('"')
    assert etag2 != etag
    assert tick(sensor, defs, cursor)[0] == [("2025-03", f"2025-03:{etag2}", etag2)]
