"""AWS CUR 2.0 (Data Exports) connector and demo generator.

Deliveries are generated into a tmp folder in the Data Exports layout (Parquet or gzipped CSV chunks +
Manifest.json), read from the folder and from a real S3-compatible HTTP server (moto) through ``s3://``:
streaming, every line item type's amortization, net (EDP) columns, and bad input.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import boto3
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.aws_cur2 import TagSets, load, load_batches, load_file_batches, normalize
from connectors.base import BillingPeriod, LoadResult, SourceError
from models.config import AwsCur2Source, CogsConfig, parse_config
from models.focus import CHARGE_CATEGORIES, CHARGE_FREQUENCIES, MONEY_SCALE, SERVICE_CATEGORIES
from pipelines.demo import aws_cur2 as demo
from pipelines.demo.company import (
    AWS_CLUSTER,
    AWS_PAYER_ACCOUNT,
    P4D_ON_DEMAND,
    P4D_SP_RATE,
    SP_HOURLY_COMMITMENT,
    DemoMonth,
    aws_cluster_instances,
)
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

MONTH = DemoMonth("2025-03")
PERIOD = BillingPeriod("2025-03")
SEED = 7
NIGHT = datetime(2025, 3, 3, 2, tzinfo=UTC)  # Monday 02:00: 2 cluster nodes, SP commitment not all used
DAY = datetime(2025, 3, 3, 10, tzinfo=UTC)  # Monday 10:00: 3 nodes, the 3rd only partly covered

# The third node-hour at 10:00: the commitment left after two nodes (50 − 2 × 22.9408 = 4.1184) covers
# 4.1184 / 22.9408 = 0.1795229460 h of it (10 places), billed at on-demand 0.1795229460 × 32.7726.
PARTIAL_HOURS = Decimal("0.1795229460")
PARTIAL_ON_DEMAND = Decimal("5.8834337001")  # 5.88343370007960 rounded to 10 places
NIGHT_TOTAL = Decimal("50") + Decimal("5.672") + Decimal("0.10")  # SP fee + g5 + EKS
QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
DAY_TOTAL = Decimal("50") + (P4D_ON_DEMAND - PARTIAL_ON_DEMAND) + Decimal("5.672") + Decimal("0.10")


def source(path: Path | str, **options: str) -> AwsCur2Source:
    return AwsCur2Source(name="aws_prod", type="aws_cur2", path=str(path), **options)


def two_hours() -> list[dict]:
    return demo.hourly_line_items(MONTH, SEED, [NIGHT, DAY])


def deliver(root: Path, rows: list[dict], **options: object) -> list[Path]:
    return demo.write_delivery(rows, root, PERIOD.key, execution_id=demo.execution_id(SEED, PERIOD.key), **options)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = demo.export_root(tmp_path)
    deliver(root, two_hours(), rows_per_chunk=10)  # two chunks, as big exports are delivered
    return root


def lines(result: LoadResult, kind: str, start: datetime) -> pl.DataFrame:
    return result.frame.filter(pl.col("x_line_item_type") == kind, pl.col("ChargePeriodStart") == start).sort(
        "ResourceId", "BilledCost"
    )


def amounts(frame: pl.DataFrame, column: str) -> list[Decimal]:
    return [v.normalize() for v in frame.get_column(column).to_list()]


# --- totals and amortization -------------------------------------------------------------------------


def test_partial_coverage_constants_are_what_the_plan_implies() -> None:
    assert ((SP_HOURLY_COMMITMENT - 2 * P4D_SP_RATE) / P4D_SP_RATE).quantize(Decimal("1E-10")) == PARTIAL_HOURS
    assert (PARTIAL_HOURS * P4D_ON_DEMAND).quantize(Decimal("1E-10")) == PARTIAL_ON_DEMAND


def test_two_hours_bill_exact_totals(export: Path) -> None:
    result = load(source(export), PERIOD)

    # 02:00: 2 covered + fee + its unused part + g5 + EKS; 10:00: 3 covered + usage remainder + fee + g5 + EKS.
    # The 5 SavingsPlanNegation lines are folded into their covered usage (BilledCost 0), not emitted.
    assert result.frame.height == 13
    assert result.stats == {"files": 2, "rows": 17, "quarantined": 0, "savings_plan_negations_folded": 5}
    assert result.quarantine.height == 0
    assert len(result.files) == 2
    assert result.frame.get_column("BilledCost").sum() == NIGHT_TOTAL + DAY_TOTAL == Decimal("138.4331662999")
    assert result.frame.get_column("EffectiveCost").sum() == NIGHT_TOTAL + DAY_TOTAL
    assert result.source_total == NIGHT_TOTAL + DAY_TOTAL
    hourly = result.frame.group_by("ChargePeriodStart").agg(pl.col("BilledCost", "EffectiveCost").sum())
    assert sorted(hourly.rows()) == [(NIGHT, NIGHT_TOTAL, NIGHT_TOTAL), (DAY, DAY_TOTAL, DAY_TOTAL)]


def test_savings_plan_amortization_per_line_type(export: Path) -> None:
    result = load(source(export), PERIOD)

    covered = lines(result, "SavingsPlanCoveredUsage", DAY)
    # FOCUS: a row the commitment covers entirely bills 0 (CUR's on-demand amount and its negation cancel)
    assert amounts(covered, "BilledCost") == [0, 0, 0]
    assert sorted(amounts(covered, "EffectiveCost")) == [Decimal("4.1184"), P4D_SP_RATE, P4D_SP_RATE]
    assert sorted(amounts(covered, "ConsumedQuantity")) == [PARTIAL_HOURS, 1, 1]
    # ListCost/ContractedCost are unit price × PricingQuantity (FOCUS), kept to MONEY_SCALE places: for the
    # partial hour that differs from CUR's 10-place rounding of the same product (5.8834337001).
    for price, cost in (("ListUnitPrice", "ListCost"), ("ContractedUnitPrice", "ContractedCost")):
        priced = zip(amounts(covered, price), amounts(covered, "PricingQuantity"), strict=True)
        assert amounts(covered, cost) == [(p * q).quantize(QUANTUM).normalize() for p, q in priced]
        assert sorted(amounts(covered, price)) == [P4D_ON_DEMAND] * 3
    assert sorted(amounts(covered, "ContractedCost"))[0] == Decimal("5.883433700080")
    # the commitment consumed, in dollars of the plan (a spend commitment)
    assert sorted(amounts(covered, "CommitmentDiscountQuantity")) == [Decimal("4.1184"), P4D_SP_RATE, P4D_SP_RATE]
    assert covered.get_column("CommitmentDiscountUnit").to_list() == ["USD"] * 3
    assert result.frame.filter(pl.col("x_line_item_type") == "SavingsPlanNegation").height == 0

    remainder = lines(result, "Usage", DAY).filter(pl.col("SkuMeter") == "USE1-BoxUsage:p4d.24xlarge")
    assert amounts(remainder, "BilledCost") == amounts(remainder, "EffectiveCost") == [Decimal("26.8891662999")]
    assert amounts(remainder, "PricingQuantity") == [1 - PARTIAL_HOURS]
    assert remainder.get_column("CommitmentDiscountId").to_list() == [None]

    fee_lines = result.frame.filter(pl.col("x_line_item_type") == "SavingsPlanRecurringFee")
    fees = fee_lines.filter(pl.col("ChargeCategory") == "Purchase").sort("ChargePeriodStart")
    assert amounts(fees, "BilledCost") == amounts(fees, "ContractedCost") == amounts(fees, "ListCost") == [50, 50]
    assert amounts(fees, "EffectiveCost") == [0, 0]
    assert amounts(fees, "CommitmentDiscountQuantity") == [50, 50]  # the hour's commitment
    assert fees.get_column("CommitmentDiscountStatus").to_list() == [None, None]
    assert fees.get_column("ChargeFrequency").to_list() == ["Recurring", "Recurring"]
    assert fees.get_column("SubAccountType").to_list() == ["Payer Account", "Payer Account"]
    # at 02:00 the two nodes used 45.8816 of the 50.00 commitment: the rest is an Unused row of the same line
    [unused] = fee_lines.filter(pl.col("ChargeCategory") == "Usage").iter_rows(named=True)
    assert (unused["ChargePeriodStart"], unused["x_source_line"]) == (NIGHT, fees.row(0, named=True)["x_source_line"])
    assert [unused[c] for c in ("BilledCost", "EffectiveCost", "ContractedCost", "ListCost")] == [
        0, Decimal("4.1184"), 0, 0,
    ]  # fmt: skip
    assert [unused[c] for c in ("CommitmentDiscountStatus", "ChargeFrequency", "PricingCategory")] == [
        "Unused", "Usage-Based", "Committed",
    ]  # fmt: skip
    assert (unused["CommitmentDiscountQuantity"], unused["CommitmentDiscountUnit"]) == (Decimal("4.1184"), "USD")
    assert (unused["ConsumedQuantity"], unused["ConsumedUnit"], unused["PricingQuantity"]) == (None, None, 1)

    # FOCUS, per commitment and hour: EffectiveCost of its Usage rows (used + unused) = BilledCost of its purchase
    plan = result.frame.filter(pl.col("CommitmentDiscountId") == demo.SP_ARN)
    per_hour = plan.group_by("ChargePeriodStart", "ChargeCategory").agg(pl.col("EffectiveCost", "BilledCost").sum())
    assert sorted(per_hour.rows()) == [
        (NIGHT, "Purchase", 0, SP_HOURLY_COMMITMENT), (NIGHT, "Usage", SP_HOURLY_COMMITMENT, 0),
        (DAY, "Purchase", 0, SP_HOURLY_COMMITMENT), (DAY, "Usage", SP_HOURLY_COMMITMENT, 0),
    ]  # fmt: skip


def test_commitment_discount_columns(export: Path) -> None:
    frame = load(source(export), PERIOD).frame
    by_type = frame.group_by("x_line_item_type").agg(
        pl.col(c).unique().sort(nulls_last=True)
        for c in (
            "CommitmentDiscountId", "CommitmentDiscountCategory", "CommitmentDiscountType",
            "CommitmentDiscountStatus", "ChargeCategory", "ChargeFrequency", "PricingCategory",
        )
    )  # fmt: skip
    rows = {row["x_line_item_type"]: row for row in by_type.iter_rows(named=True)}
    sp = {"CommitmentDiscountId": [demo.SP_ARN], "CommitmentDiscountCategory": ["Spend"],
          "CommitmentDiscountType": ["Savings Plan"]}  # fmt: skip
    assert rows["SavingsPlanCoveredUsage"] == {
        "x_line_item_type": "SavingsPlanCoveredUsage", **sp, "CommitmentDiscountStatus": ["Used"],
        "ChargeCategory": ["Usage"], "ChargeFrequency": ["Usage-Based"], "PricingCategory": ["Committed"],
    }  # fmt: skip
    assert "SavingsPlanNegation" not in rows  # folded into the covered usage
    assert rows["SavingsPlanRecurringFee"] == {  # the Purchase rows and the unused commitment's Usage row
        "x_line_item_type": "SavingsPlanRecurringFee", **sp, "CommitmentDiscountStatus": ["Unused", None],
        "ChargeCategory": ["Purchase", "Usage"], "ChargeFrequency": ["Recurring", "Usage-Based"],
        "PricingCategory": ["Committed", "Standard"],
    }  # fmt: skip
    assert rows["Usage"] == {
        "x_line_item_type": "Usage", "CommitmentDiscountId": [None], "CommitmentDiscountCategory": [None],
        "CommitmentDiscountType": [None], "CommitmentDiscountStatus": [None], "ChargeCategory": ["Usage"],
        "ChargeFrequency": ["Usage-Based"], "PricingCategory": ["Standard"],
    }  # fmt: skip


def test_tags_are_flat_json_with_plain_user_keys(export: Path) -> None:
    frame = load(source(export), PERIOD).frame.filter(pl.col("ChargePeriodStart") == NIGHT)
    tags = {
        row["SkuMeter"]: (json.loads(row["Tags"]) if row["Tags"] else None, row["ResourceName"])
        for row in frame.filter(pl.col("x_line_item_type") != "SavingsPlanNegation").iter_rows(named=True)
    }
    assert tags["USE1-BoxUsage:g5.12xlarge"] == (
        {"feature": "doc_summaries", "name": "doc-summaries-g5"},
        "doc-summaries-g5",
    )
    node_tags = {"cluster": AWS_CLUSTER, "team": "ml-platform", "name": f"{AWS_CLUSTER}-p4d"}
    assert tags["USE1-BoxUsage:p4d.24xlarge"] == (
        {**node_tags, "aws_eks_cluster_name": AWS_CLUSTER},  # AWS-generated tag keeps its provider prefix
        f"{AWS_CLUSTER}-p4d",
    )
    control_plane = {"team": "ml-platform", "aws_eks_cluster_name": AWS_CLUSTER}
    assert tags["USE1-AmazonEKS-Hours:perCluster"] == (control_plane, AWS_CLUSTER)
    assert tags["ComputeSP:3yrNoUpfront"] == (None, "6b1f9d3e-2c47-4a8e-9f0d-5e7c1a2b3c4d")


def test_credit_refund_tax_and_net_unblended(tmp_path: Path) -> None:
    base = demo.hourly_line_items(MONTH, SEED, [NIGHT])
    g5 = next(r for r in base if r["line_item_usage_type"] == "USE1-BoxUsage:g5.12xlarge")
    edp = {**g5, "line_item_net_unblended_cost": Decimal("5.1048"), "line_item_net_unblended_rate": "5.1048"}
    credit = {**g5, "line_item_line_item_type": "Credit", "line_item_unblended_cost": Decimal("-25"),
              "line_item_usage_amount": Decimal(0), "line_item_line_item_description": "AWS Activate Credits",
              "resource_tags": {"user:Owner": "finance", "user_cost_center": ""},
              "cost_category": {"environment": "prod"}}  # fmt: skip
    refund = {**g5, "line_item_line_item_type": "Refund", "line_item_unblended_cost": Decimal("-5.672"),
              "bill_bill_type": "Refund", "line_item_usage_start_date": datetime(2025, 2, 10, tzinfo=UTC),
              "line_item_usage_end_date": datetime(2025, 2, 10, 1, tzinfo=UTC)}  # fmt: skip
    tax = {**g5, "line_item_line_item_type": "Tax", "line_item_unblended_cost": Decimal("0.35"),
           "line_item_tax_type": "Sales Tax", "resource_tags": {}, "product_sku": ""}  # fmt: skip
    root = demo.export_root(tmp_path)
    deliver(root, [edp, credit, refund, tax])

    result = load(source(root), PERIOD)
    rows = {row["x_line_item_type"]: row for row in result.frame.iter_rows(named=True)}
    assert (
        rows["Usage"]["BilledCost"]
        == rows["Usage"]["EffectiveCost"]
        == rows["Usage"]["ContractedCost"]
        == Decimal("5.1048")
    )
    assert rows["Usage"]["ContractedUnitPrice"] == Decimal("5.1048")
    assert rows["Usage"]["ListCost"] == Decimal("5.672")  # public on-demand, before the private rate
    assert [rows["Credit"][c] for c in ("ChargeCategory", "ChargeFrequency", "ChargeClass")] == [
        "Credit",
        "One-Time",
        None,
    ]
    assert {rows["Credit"][c] for c in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")} == {Decimal(-25)}
    assert rows["Credit"]["PricingQuantity"] is rows["Credit"]["ConsumedQuantity"] is None
    credit_tags = {"Owner": "finance", "cost_center": True, "costCategory/environment": "prod"}  # no value → true
    assert json.loads(rows["Credit"]["Tags"]) == credit_tags
    assert [rows["Refund"][c] for c in ("ChargeCategory", "ChargeClass")] == ["Usage", "Correction"]
    assert rows["Refund"]["EffectiveCost"] == Decimal("-5.672")
    assert [rows["Tax"][c] for c in ("ChargeCategory", "PricingQuantity", "PricingUnit", "SkuId")] == [
        "Tax",
        None,
        None,
        None,
    ]
    assert result.source_total == Decimal("5.1048") - 25 - Decimal("5.672") + Decimal("0.35")
    assert result.frame.get_column("BilledCost").sum() == result.source_total


# --- the same delivery from S3 -----------------------------------------------------------------------


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) on a free local port, with dummy credentials in the env."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def upload(root: Path, endpoint: str, bucket: str) -> str:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    prefix = f"{demo.EXPORT_PREFIX}/{root.name}"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())
    return f"s3://{bucket}/{prefix}"


def test_s3_delivery_reads_identically(export: Path, s3_endpoint: str) -> None:
    url = upload(export, s3_endpoint, "replica-billing")  # not the bucket the manifest names
    from_s3 = load(source(url, endpoint_url=s3_endpoint, region="us-east-1"), PERIOD)
    local = load(source(export), PERIOD)

    assert from_s3.files == [f"{url}/data/BILLING_PERIOD=2025-03/lumen-cur2-0000{n}.snappy.parquet" for n in (1, 2)]
    assert from_s3.source_total == local.source_total == NIGHT_TOTAL + DAY_TOTAL
    assert from_s3.frame.drop("x_source_file").equals(local.frame.drop("x_source_file"))
    assert from_s3.frame.get_column("x_source_file").str.starts_with(url).all()


def test_s3_object_named_in_the_manifest_but_missing(export: Path, s3_endpoint: str) -> None:
    url = upload(export, s3_endpoint, "gappy-billing")
    chunk = f"{demo.EXPORT_PREFIX}/{export.name}/data/BILLING_PERIOD=2025-03/lumen-cur2-00002.snappy.parquet"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").delete_object(
        Bucket="gappy-billing", Key=chunk
    )
    with pytest.raises(SourceError, match="data file named in the manifest is missing") as err:
        load(source(url, endpoint_url=s3_endpoint), PERIOD)
    assert err.value.where == f"s3://gappy-billing/{chunk}"


def test_s3_missing_export_names_the_manifest(s3_endpoint: str) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="empty-billing")
    with pytest.raises(SourceError, match=r"no CUR 2.0 manifest for billing period 2025-03") as err:
        load(source("s3://empty-billing/cur/lumen-cur2", endpoint_url=s3_endpoint), PERIOD)
    assert (
        err.value.where == "s3://empty-billing/cur/lumen-cur2/metadata/BILLING_PERIOD=2025-03/lumen-cur2-Manifest.json"
    )


# --- broken and restated deliveries ------------------------------------------------------------------


def test_manifest_naming_a_missing_file_is_an_error(export: Path) -> None:
    missing = export / "data/BILLING_PERIOD=2025-03/lumen-cur2-00002.snappy.parquet"
    missing.unlink()
    with pytest.raises(SourceError, match="data file named in the manifest is missing") as err:
        load(source(export), PERIOD)
    assert err.value.where == str(missing)
    assert "lumen-cur2-00002.snappy.parquet" in str(err.value)


@pytest.mark.parametrize(
    "dropped", ["line_item_unblended_cost", "savings_plan_used_commitment", "bill_payer_account_id"]
)
def test_missing_column_names_column_and_file(tmp_path: Path, dropped: str) -> None:
    root = demo.export_root(tmp_path)
    columns = [c for c in demo.CUR2_COLUMNS if c[0] != dropped]
    [path] = deliver(root, two_hours(), columns=columns)
    with pytest.raises(SourceError, match=f"missing required CUR 2.0 column '{dropped}'") as err:
        load(source(root), PERIOD)
    assert err.value.where == str(path)


def test_savings_plan_column_only_required_when_plan_lines_exist(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    on_demand = [r for r in two_hours() if r["line_item_line_item_type"] == "Usage"]
    deliver(root, on_demand, columns=[c for c in demo.CUR2_COLUMNS if not c[0].startswith("savings_plan_")])
    assert load(source(root), PERIOD).frame.height == 5  # g5 + EKS per hour, the partly uncovered node-hour


def test_unknown_line_item_type_is_quarantined_not_dropped(tmp_path: Path) -> None:
    rows = two_hours()
    odd = next(i for i, r in enumerate(rows) if r["line_item_usage_type"] == "USE1-AmazonEKS-Hours:perCluster")
    rows[odd] = {**rows[odd], "line_item_line_item_type": "FlatRateSubscription"}
    rows[0] = {**rows[0], "savings_plan_savings_plan_effective_cost": None}  # a covered line without its cost
    root = demo.export_root(tmp_path)
    [path] = deliver(root, rows)

    result = load(source(root), PERIOD)
    assert result.quarantine.sort("line").rows() == [
        (str(path), "1", "savings_plan_savings_plan_effective_cost is empty on a SavingsPlanCoveredUsage line"),
        (str(path), str(odd + 1), "unknown line_item_line_item_type 'FlatRateSubscription'"),
    ]
    # 17 lines − 2 quarantined − 5 folded negations + the unused commitment's row at 02:00
    assert result.frame.height == 11
    assert result.stats == {"files": 1, "rows": 17, "quarantined": 2, "savings_plan_negations_folded": 5}
    # the provider total still counts them, so reconciliation shows the gap instead of hiding it: the EKS
    # hour; the quarantined covered line would have billed 0 (its negation cancels its on-demand amount)
    assert result.source_total - result.frame.get_column("BilledCost").sum() == Decimal("0.10")


def test_restatement_in_create_new_mode_reads_only_the_latest_execution(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    first = deliver(root, demo.hourly_line_items(MONTH, SEED, [NIGHT]), create_new=True,
                    exported_at=datetime(2025, 3, 4, 3, 0, 0))  # fmt: skip
    latest = demo.write_delivery(
        two_hours(), root, PERIOD.key, execution_id=demo.execution_id(SEED, PERIOD.key, attempt=2),
        create_new=True, exported_at=datetime(2025, 4, 2, 3, 0, 0),
    )  # fmt: skip

    result = load(source(root), PERIOD)
    assert first[0].exists() and first[0].parent != latest[0].parent
    assert result.files == [str(latest[0])]
    assert latest[0].parent.name.startswith("20250402T030000Z-")
    assert result.source_total == result.frame.get_column("BilledCost").sum() == NIGHT_TOTAL + DAY_TOTAL
    execution_manifests = list((root / "metadata/BILLING_PERIOD=2025-03").glob("*/lumen-cur2-Manifest.json"))
    assert len(execution_manifests) == 2


def test_restatement_in_overwrite_mode_ignores_a_stale_chunk(export: Path) -> None:
    stale = export / "data/BILLING_PERIOD=2025-03/lumen-cur2-00002.snappy.parquet"
    night = demo.hourly_line_items(MONTH, SEED, [NIGHT])
    deliver(export, night)  # one chunk now; chunk 00002 of the earlier delivery is still there

    result = load(source(export), PERIOD)
    assert stale.exists()
    assert [Path(f).name for f in result.files] == ["lumen-cur2-00001.snappy.parquet"]
    assert len(night) == 7 and result.frame.height == 6  # − 2 folded negations + the unused commitment's row
    assert result.frame.get_column("BilledCost").sum() == result.source_total == NIGHT_TOTAL


def test_plain_manifest_name_and_other_encodings(export: Path) -> None:
    """``Manifest.json`` (the doc's other spelling), naive timestamps and maps as lists of key/value."""
    expected = load(source(export), PERIOD).frame
    metadata = export / "metadata/BILLING_PERIOD=2025-03"
    (metadata / "lumen-cur2-Manifest.json").rename(metadata / "Manifest.json")
    for path in (export / "data/BILLING_PERIOD=2025-03").glob("*.parquet"):
        table = pq.read_table(path)
        for i, field in enumerate(table.schema):
            if pa.types.is_timestamp(field.type):
                table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp("us")))
            elif pa.types.is_map(field.type):
                entries = pa.list_(pa.struct([("key", pa.string()), ("value", field.type.item_type)]))
                table = table.set_column(i, field.name, pa.array(table.column(i).to_pylist(), type=entries))
        pq.write_table(table, path)

    frame = load(source(export), PERIOD).frame
    assert frame.equals(expected)


def test_manifest_of_another_period_is_rejected(export: Path) -> None:
    manifest_path = export / "metadata/BILLING_PERIOD=2025-03/lumen-cur2-Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["dataFiles"][0] = manifest["dataFiles"][0].replace("BILLING_PERIOD=2025-03", "BILLING_PERIOD=2025-02")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SourceError, match=r"is not under data/BILLING_PERIOD=2025-03/"):
        load(source(export), PERIOD)


# --- the demo month ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_month(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoadResult]:
    root = demo.write(MONTH, tmp_path_factory.mktemp("demo"), seed=SEED)
    return root, load(source(root), PERIOD)


def test_demo_month_amortizes_to_what_is_billed(demo_month: tuple[Path, LoadResult]) -> None:
    root, result = demo_month
    frame = result.frame
    assert root == demo.export_root(root.parents[3])
    assert result.quarantine.height == 0
    assert frame.get_column("BilledCost").sum() == frame.get_column("EffectiveCost").sum() == result.source_total
    assert set(frame.get_column("ChargeCategory").unique()) == {"Usage", "Purchase", "Tax"} <= set(CHARGE_CATEGORIES)
    assert set(frame.get_column("ChargeFrequency").unique()) <= set(CHARGE_FREQUENCIES)
    assert set(frame.get_column("ServiceCategory").unique()) <= set(SERVICE_CATEGORIES)
    tax = frame.filter(pl.col("ChargeCategory") == "Tax")
    assert tax.height == 6 and tax.get_column("ServiceName").n_unique() == 6


def test_demo_month_bills_every_node_hour_once(demo_month: tuple[Path, LoadResult]) -> None:
    frame = demo_month[1].frame.filter(
        pl.col("SkuMeter") == "USE1-BoxUsage:p4d.24xlarge", pl.col("x_line_item_type") != "SavingsPlanNegation"
    )
    node_hours = sum(aws_cluster_instances(h) for h in MONTH.hours())
    assert frame.get_column("ConsumedQuantity").sum() == node_hours
    per_hour = frame.group_by("ChargePeriodStart").agg(pl.col("ResourceId").n_unique()).sort("ChargePeriodStart")
    assert per_hour.get_column("ResourceId").to_list() == [aws_cluster_instances(h) for h in MONTH.hours()]
    # the allocation pool's tag (cluster=inference-prod) selects exactly the GPU nodes' lines
    tagged = demo_month[1].frame.filter(pl.col("Tags").str.json_path_match("$.cluster") == AWS_CLUSTER)
    assert tagged.get_column("SkuMeter").unique().to_list() == ["USE1-BoxUsage:p4d.24xlarge"]
    assert tagged.get_column("ResourceType").unique().to_list() == ["Instance"]
    plan = demo_month[1].frame.filter(pl.col("CommitmentDiscountId") == demo.SP_ARN)
    assert plan.get_column("EffectiveCost").sum() == SP_HOURLY_COMMITMENT * len(MONTH.hours())
    assert plan.filter(pl.col("x_line_item_type") == "SavingsPlanRecurringFee").get_column(
        "SubAccountId"
    ).unique().to_list() == [AWS_PAYER_ACCOUNT]


def test_demo_is_deterministic_for_a_seed() -> None:
    hours = [NIGHT + timedelta(hours=h) for h in range(3)]
    same = demo.hourly_line_items(MONTH, SEED, hours)
    assert same == demo.hourly_line_items(MONTH, SEED, hours)
    other = demo.hourly_line_items(MONTH, SEED + 1, hours)
    assert {r["line_item_resource_id"] for r in other} != {r["line_item_resource_id"] for r in same}
    assert sum(r["line_item_unblended_cost"] for r in other) == sum(r["line_item_unblended_cost"] for r in same)


def test_s3_reader_lists_and_checks_objects(export: Path, s3_endpoint: str) -> None:
    from connectors.s3 import S3AccessError, S3Reader

    url = upload(export, s3_endpoint, "listing-billing")
    reader = S3Reader(endpoint_url=s3_endpoint, region="us-east-1")
    assert reader.list_urls(f"{url}/metadata/") == [f"{url}/metadata/BILLING_PERIOD=2025-03/lumen-cur2-Manifest.json"]
    assert reader.exists(f"{url}/data/BILLING_PERIOD=2025-03/lumen-cur2-00001.snappy.parquet")
    assert not reader.exists(f"{url}/data/BILLING_PERIOD=2025-03/lumen-cur2-00003.snappy.parquet")
    with pytest.raises(FileNotFoundError):
        reader.read_bytes(f"{url}/nothing-here")
    with pytest.raises(S3AccessError, match=r"s3://no-such-bucket/x: bucket does not exist"):
        reader.read_bytes("s3://no-such-bucket/x")


# --- streaming ------------------------------------------------------------------------------------------


def test_streaming_batches_are_bounded_and_add_up(export: Path) -> None:
    """Two chunks (10 + 7 lines) read 4 lines at a time: 3 + 2 batches, each with its own provider total."""
    batches = list(load_batches(source(export), PERIOD, batch_rows=4))
    whole = load_batches(source(export), PERIOD)  # default size: one batch per chunk

    chunks = [str(export / f"data/BILLING_PERIOD=2025-03/lumen-cur2-0000{n}.snappy.parquet") for n in (1, 2)]
    assert [b.stats["rows"] for b in batches] == [4, 4, 2, 4, 3]
    assert [b.files for b in batches] == [[chunks[0]], [], [], [chunks[1]], []]
    assert [b.stats.get("files", 0) for b in batches] == [1, 0, 0, 1, 0]
    # lines keep their number in the file across batches: batch k of a file holds lines 4k+1 … 4k+4
    for batch, first in zip(batches, [1, 5, 9, 1, 5], strict=True):
        numbers = {int(n) for n in batch.frame["x_source_line"]}
        assert numbers and numbers <= set(range(first, first + 4)), (first, numbers)
    assert sum(b.source_total for b in batches) == NIGHT_TOTAL + DAY_TOTAL
    assert sum(b.frame["BilledCost"].sum() for b in batches) == NIGHT_TOTAL + DAY_TOTAL
    key = ["x_source_file", "x_source_line", "ChargeCategory"]
    streamed = pl.concat([b.frame for b in batches]).sort(key)
    assert streamed.equals(pl.concat([b.frame for b in whole]).sort(key))
    assert load(source(export), PERIOD).frame.sort(key).equals(streamed)


def test_tags_built_once_per_load_match_per_batch_tags(export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tags are cached across the batches and files of a load; a cache that starts over gives the same rows."""
    key = ["x_source_file", "x_source_line", "ChargeCategory"]
    whole = load(source(export), PERIOD).frame.sort(key)
    one_by_one = pl.concat([b.frame for b in load_batches(source(export), PERIOD, batch_rows=1)]).sort(key)
    assert one_by_one.equals(whole)
    monkeypatch.setattr(TagSets, "max_sets", 2)  # every batch with a new set drops the cache
    small_cache = pl.concat([b.frame for b in load_batches(source(export), PERIOD, batch_rows=3)]).sort(key)
    assert small_cache.equals(whole)
    assert whole["Tags"].null_count() < whole.height  # the fixture does have tags


def test_one_file_streams_without_an_export(export: Path) -> None:
    path = export / "data/BILLING_PERIOD=2025-03/lumen-cur2-00002.snappy.parquet"
    batches = list(load_file_batches(path, PERIOD, batch_rows=3))
    assert [b.stats["rows"] for b in batches] == [3, 3, 1]
    assert {f for b in batches for f in b.frame["x_source_file"].unique()} == {str(path)}


# --- CUR 2.0 as gzipped CSV -------------------------------------------------------------------------------

ESCAPED_TAGS = {"user_owner": 'Zoë "Z" \\ ops', "user_name": "weird, name", "aws_created_by": "Root"}


def test_gzipped_csv_delivery_maps_like_parquet(tmp_path: Path) -> None:
    rows = two_hours()
    rows[0] = {**rows[0], "resource_tags": ESCAPED_TAGS, "cost_category": {"team": "a\nb"}}
    parquet_root = demo.export_root(tmp_path / "parquet")
    csv_root = demo.export_root(tmp_path / "csv")
    deliver(parquet_root, rows)
    [csv_path] = deliver(csv_root, rows, file_format="csv.gz")

    from_parquet, from_csv = load(source(parquet_root), PERIOD), load(source(csv_root), PERIOD)
    assert csv_path.name == "lumen-cur2-00001.csv.gz"
    assert from_csv.files == [str(csv_path)]
    assert from_csv.source_total == from_parquet.source_total == NIGHT_TOTAL + DAY_TOTAL
    assert from_csv.stats == from_parquet.stats
    where = ["x_source_file", "x_source_line"]
    assert from_csv.frame.drop(where).equals(from_parquet.frame.drop(where))
    # CSV lines are numbered as a spreadsheet shows them: the header is line 1
    numbers = sorted({int(n) for n in from_csv.frame["x_source_line"]})
    assert numbers[0] == 2 and numbers[-1] == 18
    first = from_csv.frame.filter(pl.col("x_source_line") == "2").row(0, named=True)
    assert json.loads(first["Tags"]) == {
        "owner": 'Zoë "Z" \\ ops', "name": "weird, name", "aws_created_by": "Root", "costCategory/team": "a\nb",
    }  # fmt: skip
    assert first["ResourceName"] == "weird, name"


def test_csv_map_columns_are_json_objects() -> None:
    """Escapes, empty objects, blanks and JSON nulls in a CSV map column."""
    table = pl.DataFrame({"resource_tags": ['{"user_a":"x\\"y","aws_b":""}', "{}", "", '{"user_c": null}', None]})
    entries = normalize(table, "f.csv", 2).get_column("resource_tags").to_list()
    assert entries == [
        [{"key": "user_a", "value": 'x"y'}, {"key": "aws_b", "value": ""}], [], [],
        [{"key": "user_c", "value": None}], [],
    ]  # fmt: skip


@given(
    st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=10, allow_nan=False, allow_infinity=False)
)
@settings(max_examples=300, deadline=None)
def test_doubles_are_read_as_the_decimal_they_were_written_from(value: Decimal) -> None:
    """CUR amounts are doubles: each must come back as its shortest decimal repr, rounded to 12 places."""
    frame = pl.DataFrame({"line_item_unblended_cost": [float(value)]})
    [read] = normalize(frame, "f", 1).get_column("line_item_unblended_cost").to_list()
    assert read == Decimal(repr(float(value))).quantize(QUANTUM)


# --- amortization: every line item type ------------------------------------------------------------------

RI_ARN = f"arn:aws:ec2:us-east-1:{AWS_PAYER_ACCOUNT}:reserved-instances/4f2c9a1e-77b0-4d3a-9c55-1e2f3a4b5c6d"
SP_ALL_UPFRONT = f"arn:aws:savingsplans::{AWS_PAYER_ACCOUNT}:savingsplan/0a1b2c3d-all-upfront"


def scenario(net: bool) -> list[dict]:
    """One hour (02:00) of the demo plus every other line item type, with or without net (EDP) columns.

    RI: 1 × m5.xlarge partial upfront, $306.60 upfront (0.035/h over 8,760 h) + $0.05/h; one hour used in
    March (744 h). A second, all-upfront Savings Plan used 0.60 of its $1.00 hour. 10% EDP when ``net``.
    """
    rows = demo.hourly_line_items(MONTH, SEED, [NIGHT])
    g5 = next(r for r in rows if r["line_item_usage_type"] == "USE1-BoxUsage:g5.12xlarge")
    fee = next(r for r in rows if r["line_item_line_item_type"] == "SavingsPlanRecurringFee")
    m5 = {**g5, "line_item_usage_type": "USE1-BoxUsage:m5.xlarge", "line_item_resource_id": "i-0m5aaaabbbbcccc",
          "product_sku": "6QCMYABX3D2XXKXQ", "pricing_public_on_demand_rate": "0.192", "resource_tags": {},
          "pricing_public_on_demand_cost": Decimal("0.192")}  # fmt: skip
    monthly = {"line_item_usage_start_date": MONTH.start, "line_item_usage_end_date": MONTH.end}
    extra = [
        {**m5, "line_item_line_item_type": "DiscountedUsage", "line_item_unblended_cost": Decimal(0),
         "line_item_unblended_rate": "0", "reservation_reservation_a_r_n": RI_ARN,
         "reservation_effective_cost": Decimal("0.085")},
        {**m5, **monthly, "line_item_line_item_type": "RIFee", "line_item_usage_amount": Decimal(744),
         "line_item_unblended_cost": Decimal("37.2"), "line_item_unblended_rate": "0.05",
         "line_item_resource_id": "", "reservation_reservation_a_r_n": RI_ARN,
         "reservation_total_reserved_units": "744", "reservation_unused_quantity": Decimal(743),
         "reservation_unused_recurring_fee": Decimal("37.15"),
         "reservation_amortized_upfront_fee_for_billing_period": Decimal("26.04"),
         "reservation_unused_amortized_upfront_fee_for_billing_period": Decimal("26.005"),
         "pricing_public_on_demand_rate": "", "pricing_public_on_demand_cost": None},
        {**m5, "line_item_line_item_type": "Fee", "bill_bill_type": "Purchase", "line_item_resource_id": "",
         "line_item_usage_amount": Decimal(1), "line_item_unblended_cost": Decimal("306.6"),
         "line_item_unblended_rate": "306.6", "reservation_reservation_a_r_n": RI_ARN,
         "pricing_public_on_demand_rate": "", "pricing_public_on_demand_cost": None},
        {**fee, "line_item_line_item_type": "SavingsPlanUpfrontFee", "bill_bill_type": "Purchase",
         "savings_plan_savings_plan_a_r_n": SP_ALL_UPFRONT, "line_item_unblended_cost": Decimal("8760"),
         "savings_plan_total_commitment_to_date": None, "savings_plan_used_commitment": None},
        {**fee, "savings_plan_savings_plan_a_r_n": SP_ALL_UPFRONT, "line_item_unblended_cost": Decimal(0),
         "savings_plan_total_commitment_to_date": Decimal(1), "savings_plan_used_commitment": Decimal("0.6")},
        {**g5, "line_item_line_item_type": "Credit", "line_item_unblended_cost": Decimal(-25),
         "line_item_usage_amount": None, "resource_tags": {}},
        {**g5, "line_item_line_item_type": "Refund", "line_item_unblended_cost": Decimal("-0.35"),
         "line_item_tax_type": "Sales Tax", "line_item_usage_amount": None},
        {**g5, **monthly, "line_item_line_item_type": "Tax", "line_item_unblended_cost": Decimal("0.35"),
         "line_item_tax_type": "Sales Tax", "product_sku": "", "line_item_usage_amount": None},
        {**g5, "line_item_line_item_type": "BundledDiscount", "line_item_unblended_cost": Decimal("-0.5"),
         "line_item_unblended_rate": "-0.5"},
    ]  # fmt: skip
    rows += extra
    if net:
        rows = [_with_net(r) for r in rows]
        rows.append({**g5, "line_item_line_item_type": "EdpDiscount", "line_item_unblended_cost": Decimal("-0.5672"),
                     "line_item_net_unblended_cost": Decimal(0)})  # fmt: skip
    return rows


def _with_net(row: dict) -> dict:
    """10% off everything (net = 0.9 × gross), as an EDP shows in the ``*_net_*`` columns."""

    def tenth_off(value: Decimal | None) -> Decimal | None:
        return None if value is None else (value * Decimal("0.9")).quantize(Decimal("1E-10"))

    net = {"line_item_net_unblended_cost": tenth_off(row["line_item_unblended_cost"])}
    if row["line_item_line_item_type"] == "BundledDiscount":
        net["line_item_net_unblended_cost"] = Decimal(0)  # a discount's amount is already in the usage's net
    if row.get("line_item_unblended_rate"):
        net["line_item_net_unblended_rate"] = str(tenth_off(Decimal(row["line_item_unblended_rate"])).normalize())
    pairs = [("savings_plan_net_savings_plan_effective_cost", "savings_plan_savings_plan_effective_cost"),
             ("reservation_net_effective_cost", "reservation_effective_cost"),
             ("reservation_net_unused_recurring_fee", "reservation_unused_recurring_fee"),
             ("reservation_net_unused_amortized_upfront_fee_for_billing_period",
              "reservation_unused_amortized_upfront_fee_for_billing_period"),
             ("savings_plan_net_recurring_commitment_for_billing_period",
              "savings_plan_recurring_commitment_for_billing_period"),
             ("savings_plan_net_amortized_upfront_commitment_for_billing_period",
              "savings_plan_amortized_upfront_commitment_for_billing_period")]  # fmt: skip
    net |= {n: tenth_off(row.get(g)) for n, g in pairs if row.get(g) is not None}
    return {**row, **net}


def summary(row: dict) -> tuple:
    return (
        row["ChargeCategory"], row["ChargeFrequency"], row["BilledCost"], row["EffectiveCost"],
        row["CommitmentDiscountStatus"], row["CommitmentDiscountQuantity"], row["CommitmentDiscountUnit"],
    )  # fmt: skip


def test_every_line_item_type_amortizes_and_bills_the_invoice(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    rows = scenario(net=False)
    deliver(root, rows)
    result = load(source(root), PERIOD)

    invoice = sum(r["line_item_unblended_cost"] for r in rows)
    assert result.quarantine.height == 0
    assert result.frame["BilledCost"].sum() == result.source_total == invoice == Decimal("9134.072")
    rows_by = {
        (r["x_line_item_type"], r["ChargeCategory"], r["CommitmentDiscountId"]): summary(r)
        for r in result.frame.filter(~pl.col("x_line_item_type").is_in(["Usage", "SavingsPlanCoveredUsage"])).iter_rows(
            named=True
        )
    }
    usd = "USD"
    assert rows_by == {
        ("SavingsPlanRecurringFee", "Purchase", demo.SP_ARN): (
            "Purchase",
            "Recurring",
            Decimal(50),
            0,
            None,
            Decimal(50),
            usd,
        ),
        ("SavingsPlanRecurringFee", "Usage", demo.SP_ARN): (
            "Usage",
            "Usage-Based",
            0,
            Decimal("4.1184"),
            "Unused",
            Decimal("4.1184"),
            usd,
        ),
        ("DiscountedUsage", "Usage", RI_ARN): (
            "Usage",
            "Usage-Based",
            0,
            Decimal("0.085"),
            "Used",
            Decimal(1),
            "Hours",
        ),
        ("RIFee", "Purchase", RI_ARN): ("Purchase", "Recurring", Decimal("37.2"), 0, None, Decimal(744), "Hours"),
        ("RIFee", "Usage", RI_ARN): ("Usage", "Usage-Based", 0, Decimal("63.155"), "Unused", Decimal(743), "Hours"),
        ("Fee", "Purchase", RI_ARN): ("Purchase", "One-Time", Decimal("306.6"), 0, None, Decimal(1), "Hours"),
        ("SavingsPlanUpfrontFee", "Purchase", SP_ALL_UPFRONT): (
            "Purchase",
            "One-Time",
            Decimal(8760),
            0,
            None,
            Decimal(8760),
            usd,
        ),
        ("SavingsPlanRecurringFee", "Purchase", SP_ALL_UPFRONT): ("Purchase", "Recurring", 0, 0, None, Decimal(1), usd),
        ("SavingsPlanRecurringFee", "Usage", SP_ALL_UPFRONT): (
            "Usage",
            "Usage-Based",
            0,
            Decimal("0.4"),
            "Unused",
            Decimal("0.4"),
            usd,
        ),
        ("Credit", "Credit", None): ("Credit", "One-Time", Decimal(-25), Decimal(-25), None, None, None),
        ("Refund", "Tax", None): ("Tax", "One-Time", Decimal("-0.35"), Decimal("-0.35"), None, None, None),
        ("Tax", "Tax", None): ("Tax", "One-Time", Decimal("0.35"), Decimal("0.35"), None, None, None),
        ("BundledDiscount", "Usage", None): (
            "Usage",
            "Usage-Based",
            Decimal("-0.5"),
            Decimal("-0.5"),
            None,
            None,
            None,
        ),
    }
    # per RI over March: EffectiveCost of its Usage rows = its recurring fee + the month's amortized upfront fee
    ri = result.frame.filter(pl.col("CommitmentDiscountId") == RI_ARN)
    assert ri.filter(pl.col("ChargeCategory") == "Usage")["EffectiveCost"].sum() == Decimal("37.2") + Decimal("26.04")
    assert ri.filter(pl.col("ChargeCategory") == "Purchase")["BilledCost"].sum() == Decimal("37.2") + Decimal("306.6")
    frame = result.frame.to_dicts()
    for row in frame:  # FOCUS: Purchase never Usage-Based; Tax has no PricingQuantity/Category; no Usage without one
        assert not (row["ChargeCategory"] == "Purchase" and row["ChargeFrequency"] == "Usage-Based")
        if row["ChargeCategory"] == "Tax":
            assert row["PricingQuantity"] is row["PricingCategory"] is None
        if row["ChargeCategory"] in ("Usage", "Purchase"):
            assert row["PricingQuantity"] is not None and row["PricingCategory"] is not None
        assert (row["CommitmentDiscountStatus"] is None) == (
            row["CommitmentDiscountId"] is None or row["ChargeCategory"] == "Purchase"
        )
    discounted = next(r for r in frame if r["x_line_item_type"] == "DiscountedUsage")
    assert [discounted[c] for c in ("ListCost", "ContractedCost", "ContractedUnitPrice", "PricingCategory")] == [
        Decimal("0.192"), Decimal("0.192"), Decimal("0.192"), "Committed",
    ]  # fmt: skip
    assert [discounted[c] for c in ("CommitmentDiscountType", "CommitmentDiscountCategory")] == [
        "Reserved Instance", "Usage",
    ]  # fmt: skip


def test_net_columns_bill_the_discounted_invoice_and_amortize_it(tmp_path: Path) -> None:
    """With an EDP the ``*_net_*`` columns are what is billed and amortized; discount lines' net is 0."""
    root = demo.export_root(tmp_path)
    rows = scenario(net=True)
    deliver(root, rows)
    result = load(source(root), PERIOD)

    invoice = sum(r["line_item_net_unblended_cost"] for r in rows)
    assert result.frame["BilledCost"].sum() == result.source_total == invoice
    rows_by = {
        (r["x_line_item_type"], r["ChargeCategory"], r["CommitmentDiscountId"]): (r["BilledCost"], r["EffectiveCost"])
        for r in result.frame.filter(pl.col("x_line_item_type") != "Usage").iter_rows(named=True)
        if r["x_line_item_type"] != "SavingsPlanCoveredUsage"
    }
    assert rows_by[("SavingsPlanRecurringFee", "Purchase", demo.SP_ARN)] == (45, 0)
    # unused = (50 − 45.8816) × net/gross commitment for the period (33,480 / 37,200)
    assert rows_by[("SavingsPlanRecurringFee", "Usage", demo.SP_ARN)] == (0, Decimal("3.70656"))
    assert rows_by[("DiscountedUsage", "Usage", RI_ARN)] == (0, Decimal("0.0765"))
    assert rows_by[("RIFee", "Purchase", RI_ARN)] == (Decimal("33.48"), 0)
    assert rows_by[("RIFee", "Usage", RI_ARN)] == (0, Decimal("33.435") + Decimal("23.4045"))
    assert rows_by[("Fee", "Purchase", RI_ARN)] == (Decimal("275.94"), 0)
    assert rows_by[("EdpDiscount", "Usage", None)] == rows_by[("BundledDiscount", "Usage", None)] == (0, 0)
    assert rows_by[("Credit", "Credit", None)] == (Decimal("-22.5"), Decimal("-22.5"))
    covered = result.frame.filter(pl.col("x_line_item_type") == "SavingsPlanCoveredUsage")
    assert amounts(covered, "BilledCost") == [0, 0]
    assert amounts(covered, "EffectiveCost") == [Decimal("20.64672")] * 2
    assert amounts(covered, "ContractedUnitPrice") == [Decimal("29.49534")] * 2  # the net (negotiated) rate
    # FOCUS per commitment: EffectiveCost of Usage (used + unused) = BilledCost of the purchase, after discount
    plan = result.frame.filter(pl.col("CommitmentDiscountId") == demo.SP_ARN)
    assert plan.filter(pl.col("ChargeCategory") == "Usage")["EffectiveCost"].sum() == 45
    usage = result.frame.filter(pl.col("x_line_item_type") == "Usage", pl.col("SkuMeter").str.contains("g5"))
    assert [usage.row(0, named=True)[c] for c in ("BilledCost", "ListCost", "ContractedCost")] == [
        Decimal("5.1048"), Decimal("5.672"), Decimal("5.1048"),
    ]  # fmt: skip


# --- bad input ------------------------------------------------------------------------------------------


def test_a_new_column_is_counted_not_fatal(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    columns = (*demo.CUR2_COLUMNS, ("line_item_carbon_grams", demo.DOUBLE), ("split_line_item_x", demo.STRING))
    deliver(root, two_hours(), columns=columns)
    result = load(source(root), PERIOD)
    assert result.stats["unknown_columns"] == 2
    assert (
        result.stats["unknown_column:line_item_carbon_grams"] == result.stats["unknown_column:split_line_item_x"] == 1
    )
    assert result.source_total == result.frame["BilledCost"].sum() == NIGHT_TOTAL + DAY_TOTAL


def test_missing_column_of_a_csv_delivery_names_column_and_file(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    columns = [c for c in demo.CUR2_COLUMNS if c[0] != "line_item_currency_code"]
    [path] = deliver(root, two_hours(), columns=columns, file_format="csv.gz")
    with pytest.raises(SourceError, match=r"missing required CUR 2\.0 column 'line_item_currency_code'") as err:
        load(source(root), PERIOD)
    assert err.value.where == str(path)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda data: b"PAR1 this is not parquet", "not a readable Parquet file"),
        (lambda data: data[: len(data) // 2], "not a readable Parquet file"),
    ],
    ids=["garbage", "truncated"],
)
def test_a_corrupt_parquet_file_names_the_file(export: Path, damage: object, problem: str) -> None:
    path = export / "data/BILLING_PERIOD=2025-03/lumen-cur2-00002.snappy.parquet"
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(SourceError, match=problem) as err:
        list(load_batches(source(export), PERIOD))
    assert err.value.where == str(path)


def test_a_corrupt_gzip_csv_names_the_file(tmp_path: Path) -> None:
    root = demo.export_root(tmp_path)
    [path] = deliver(root, two_hours(), file_format="csv.gz")
    path.write_bytes(path.read_bytes()[:200])  # cut mid-stream
    with pytest.raises(SourceError, match="not a readable CSV file") as err:
        load(source(root), PERIOD)
    assert err.value.where == str(path)


def test_negative_usage_is_quarantined_but_negative_credits_are_not(tmp_path: Path) -> None:
    rows = demo.hourly_line_items(MONTH, SEED, [NIGHT])
    g5 = next(i for i, r in enumerate(rows) if r["line_item_usage_type"] == "USE1-BoxUsage:g5.12xlarge")
    rows[g5] = {**rows[g5], "line_item_usage_amount": Decimal(-2)}
    credit = {**rows[g5], "line_item_line_item_type": "Credit", "line_item_unblended_cost": Decimal(-3),
              "line_item_usage_amount": Decimal(-1)}  # fmt: skip
    root = demo.export_root(tmp_path)
    [path] = deliver(root, [*rows, credit])

    result = load(source(root), PERIOD)
    assert result.quarantine.rows() == [
        (str(path), str(g5 + 1), "line_item_usage_amount is negative (-2.000000000000) on a Usage line")
    ]
    assert result.frame.filter(pl.col("ChargeCategory") == "Credit")["BilledCost"].to_list() == [-3]
    assert result.source_total - result.frame["BilledCost"].sum() == Decimal("5.672")  # the quarantined line


def test_mixed_currencies_load_but_ingest_refuses_them(tmp_path: Path, duckdb_warehouse: Warehouse) -> None:
    rows = two_hours()
    rows[-1] = {**rows[-1], "line_item_currency_code": "EUR"}
    root = demo.export_root(tmp_path)
    deliver(root, rows)
    assert set(load(source(root), PERIOD).frame["BillingCurrency"]) == {"EUR", "USD"}
    with pytest.raises(SourceError, match=r"mixed billing currencies in one period: \['EUR', 'USD'\]"):
        ingest(duckdb_warehouse, config_for(root), "aws_prod", PERIOD.key)


def config_for(root: Path) -> CogsConfig:
    return parse_config(f"start_month: '2025-01'\nsources: [{{name: aws_prod, type: aws_cur2, path: '{root}'}}]")


def test_a_broken_delivery_keeps_the_previous_one_in_the_warehouse(export: Path, duckdb_warehouse: Warehouse) -> None:
    query = 'SELECT COUNT(*) AS n, SUM("BilledCost") AS billed, SUM("EffectiveCost") AS effective FROM focus_costs'
    first = ingest(duckdb_warehouse, config_for(export), "aws_prod", PERIOD.key)
    before = duckdb_warehouse.read(query).row(0)
    assert (first.rows, first.source_total, first.loaded_billed_cost) == (13, NIGHT_TOTAL + DAY_TOTAL, before[1])
    assert before == (13, NIGHT_TOTAL + DAY_TOTAL, NIGHT_TOTAL + DAY_TOTAL)

    # AWS restates the period: the new manifest names a chunk that never arrived
    deliver(export, two_hours(), rows_per_chunk=5)
    (export / "data/BILLING_PERIOD=2025-03/lumen-cur2-00004.snappy.parquet").unlink()
    with pytest.raises(SourceError, match="data file named in the manifest is missing"):
        ingest(duckdb_warehouse, config_for(export), "aws_prod", PERIOD.key)
    assert duckdb_warehouse.read(query).row(0) == before
    assert duckdb_warehouse.read("SELECT COUNT(*) AS n FROM ingest_batches")["n"][0] == 1


def test_fee_and_tax_rows_name_their_region_and_price_their_purchases(export: Path) -> None:
    """FOCUS 1.2: RegionName MUST NOT be null when RegionId is not null (RegionName-C-005-C); Usage and
    Purchase rows carry List/ContractedUnitPrice with price × PricingQuantity = cost (ListUnitPrice-C-005-C,
    ContractedUnitPrice-C-006-C, ListCost-C-009-C)."""
    frame = load(source(export), PERIOD).frame
    regioned = frame.filter(pl.col("RegionId").is_not_null())
    assert regioned.filter(pl.col("RegionName").is_null()).height == 0
    fees = frame.filter(pl.col("x_line_item_type") == "SavingsPlanRecurringFee")
    assert set(fees["RegionName"].drop_nulls()) <= {"US East (N. Virginia)"}
    priced = frame.filter(pl.col("ChargeCategory").is_in(["Usage", "Purchase"]) & (pl.col("PricingQuantity") != 0))
    for price, cost in (("ListUnitPrice", "ListCost"), ("ContractedUnitPrice", "ContractedCost")):
        assert priced.filter(pl.col(price).is_null()).height == 0
        for p, q, c in priced.select(price, "PricingQuantity", cost).iter_rows():
            assert abs(p * q - c) <= Decimal("1e-9") * max(abs(c), 1)
    purchase = fees.filter(pl.col("ChargeCategory") == "Purchase")
    # the fee's own rate: one hour of the plan's hourly commitment
    assert set(amounts(purchase, "ListUnitPrice")) == {SP_HOURLY_COMMITMENT}
