"""AWS CUR 2.0 (Data Exports) connector and demo generator.

Deliveries are generated into a tmp folder in the Data Exports layout (Parquet + Manifest.json), read
from the folder and from a real S3-compatible HTTP server (moto) through ``s3://``.
"""

from __future__ import annotations

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

from connectors.aws_cur2 import load
from connectors.base import BillingPeriod, LoadResult, SourceError
from models.config import AwsCur2Source
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

    # 02:00: 2×(covered+negation) + fee + its unused part + g5 + EKS; 10:00: 3×2 + usage remainder + fee + g5 + EKS
    assert result.frame.height == 18
    assert result.stats == {"files": 2, "rows": 17, "quarantined": 0}  # 17 CUR lines
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
    assert sorted(amounts(covered, "BilledCost")) == [PARTIAL_ON_DEMAND, P4D_ON_DEMAND, P4D_ON_DEMAND]
    assert sorted(amounts(covered, "EffectiveCost")) == [Decimal("4.1184"), P4D_SP_RATE, P4D_SP_RATE]
    assert sorted(amounts(covered, "ConsumedQuantity")) == [PARTIAL_HOURS, 1, 1]
    # ListCost is the public on-demand rate × quantity (FOCUS: ListUnitPrice × PricingQuantity), kept to
    # MONEY_SCALE places: for the partial hour it differs from CUR's 10-place rounding of the same product.
    list_prices = zip(amounts(covered, "ListUnitPrice"), amounts(covered, "PricingQuantity"), strict=True)
    assert amounts(covered, "ListCost") == [(p * q).quantize(QUANTUM).normalize() for p, q in list_prices]
    assert sorted(amounts(covered, "ListUnitPrice")) == [P4D_ON_DEMAND] * 3

    negation = lines(result, "SavingsPlanNegation", DAY)
    assert sorted(amounts(negation, "BilledCost")) == [-P4D_ON_DEMAND, -P4D_ON_DEMAND, -PARTIAL_ON_DEMAND]
    assert set(amounts(negation, "EffectiveCost") + amounts(negation, "ListCost")) == {0}
    assert set(amounts(negation, "ConsumedQuantity") + amounts(negation, "ContractedCost")) == {0}

    remainder = lines(result, "Usage", DAY).filter(pl.col("SkuMeter") == "USE1-BoxUsage:p4d.24xlarge")
    assert amounts(remainder, "BilledCost") == amounts(remainder, "EffectiveCost") == [Decimal("26.8891662999")]
    assert amounts(remainder, "PricingQuantity") == [1 - PARTIAL_HOURS]
    assert remainder.get_column("CommitmentDiscountId").to_list() == [None]

    fee_lines = result.frame.filter(pl.col("x_line_item_type") == "SavingsPlanRecurringFee")
    fees = fee_lines.filter(pl.col("ChargeCategory") == "Purchase").sort("ChargePeriodStart")
    assert amounts(fees, "BilledCost") == amounts(fees, "ContractedCost") == [50, 50]
    assert amounts(fees, "EffectiveCost") == [0, 0]
    assert fees.get_column("CommitmentDiscountStatus").to_list() == [None, None]
    assert fees.get_column("ChargeFrequency").to_list() == ["Recurring", "Recurring"]
    assert fees.get_column("SubAccountType").to_list() == ["Payer Account", "Payer Account"]
    # at 02:00 the two nodes used 45.8816 of the 50.00 commitment: the rest is an Unused row of the same line
    [unused] = fee_lines.filter(pl.col("ChargeCategory") == "Usage").iter_rows(named=True)
    assert (unused["ChargePeriodStart"], unused["x_source_line"]) == (NIGHT, fees.row(0, named=True)["x_source_line"])
    assert [unused[c] for c in ("BilledCost", "EffectiveCost", "ContractedCost", "ListCost")] == [
        0,
        Decimal("4.1184"),
        0,
        0,
    ]
    assert [unused[c] for c in ("CommitmentDiscountStatus", "ChargeFrequency", "PricingCategory")] == [
        "Unused", "Usage-Based", "Committed",
    ]  # fmt: skip
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
    assert rows["SavingsPlanNegation"] == {
        "x_line_item_type": "SavingsPlanNegation", **sp, "CommitmentDiscountStatus": ["Used"],
        "ChargeCategory": ["Usage"], "ChargeFrequency": ["Usage-Based"], "PricingCategory": ["Committed"],
    }  # fmt: skip
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


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
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
    assert result.frame.height == 16  # 17 lines − 2 quarantined + the unused commitment's row at 02:00
    assert result.stats == {"files": 1, "rows": 17, "quarantined": 2}
    # the provider total still counts them, so reconciliation shows the gap instead of hiding it
    assert result.source_total - result.frame.get_column("BilledCost").sum() == P4D_ON_DEMAND + Decimal("0.10")


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
    assert len(night) == 7 and result.frame.height == 8  # + the unused commitment's row
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
