"""Legacy AWS CUR (``lineItem/UnblendedCost`` CSV) connector.

The fixture ``tests/fixtures/aws_cur_legacy/sample-anonymous-aws-export-dataset.csv`` is the anonymized
legacy CUR export of finopsfoundation/focus_converters' tests (MIT, licence beside it): 1,281 lines of
November 2023, Usage and Tax only. Report folders are built from it in AWS's layout (date-range folder,
assembly folders, ``<report>-Manifest.json``) and read from disk and over the S3 protocol (moto).
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import boto3
import polars as pl
import pytest

from connectors.aws_cur_legacy import current_delivery, load, load_batches
from connectors.base import BillingPeriod, SourceError
from models.config import AwsCurLegacySource
from tests.test_aws_cur2 import moto_s3

FIXTURE = Path(__file__).parent / "fixtures/aws_cur_legacy/sample-anonymous-aws-export-dataset.csv"
PERIOD = BillingPeriod("2023-11")
TOTAL = Decimal("1.6823086974")  # sum of lineItem/UnblendedCost over the 1,281 lines
REPORT = "acme-legacy"
ASSEMBLY_OLD = "0b6d1c6e-1111-4a4a-9c9c-0123456789ab"
ASSEMBLY_NEW = "7e2f4a10-2222-4b4b-8d8d-ba9876543210"


def source(path: Path | str, **options: str) -> AwsCurLegacySource:
    return AwsCurLegacySource(name="aws_legacy", type="aws_cur_legacy", path=str(path), **options)


def fixture_rows() -> tuple[list[str], list[list[str]]]:
    with FIXTURE.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader)
        return header, list(reader)


def write_gz(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def deliver_report(root: Path, assembly: str, parts: int, key_prefix: str = "cur") -> list[Path]:
    """One report update in "create new report version" mode: gz parts in ``<range>/<assemblyId>/``, and the
    manifest both there and in the range folder (the range folder's copy is overwritten by each update)."""
    header, rows = fixture_rows()
    folder = root / "20231101-20231201"
    size = -(-len(rows) // parts)
    paths = [
        write_gz(folder / assembly / f"{root.name}-{n + 1}.csv.gz", header, rows[n * size : (n + 1) * size])
        for n in range(parts)
    ]
    manifest = {
        "assemblyId": assembly, "account": "123412340534",
        "columns": [{"category": h.split("/")[0], "name": h.split("/")[1]} for h in header],
        "charset": "UTF-8", "compression": "GZIP", "contentType": "text/csv", "reportId": "e3b0c44298fc1c14",
        "reportName": root.name, "billingPeriod": {"start": "20231101T000000.000Z", "end": "20231201T000000.000Z"},
        "bucket": "acme-billing-reports",
        "reportKeys": [f"{key_prefix}/{root.name}/{p.relative_to(root).as_posix()}" for p in paths],
        "additionalArtifactKeys": [],
    }  # fmt: skip
    for target in (folder / assembly, folder):
        (target / f"{root.name}-Manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return paths


@pytest.fixture
def report(tmp_path: Path) -> Path:
    root = tmp_path / "cur" / REPORT
    deliver_report(root, ASSEMBLY_OLD, parts=1)
    deliver_report(root, ASSEMBLY_NEW, parts=2)  # AWS's later update of the same month
    return root


def line(frame: pl.DataFrame, number: int) -> dict:
    return frame.filter(pl.col("x_source_line") == str(number)).row(0, named=True)


# --- the sample export -----------------------------------------------------------------------------------


def test_sample_export_exact_totals() -> None:
    result = load(source(FIXTURE), PERIOD)
    frame = result.frame

    assert frame.height == 1281
    assert result.quarantine.height == 0
    assert result.stats == {"files": 1, "rows": 1281, "quarantined": 0}
    assert result.files == [str(FIXTURE)]
    assert result.source_total == frame["BilledCost"].sum() == frame["EffectiveCost"].sum() == TOTAL
    by_category = frame.group_by("ChargeCategory").agg(pl.len(), pl.col("BilledCost").sum()).sort("ChargeCategory")
    assert by_category.rows() == [("Tax", 12, Decimal("0.08")), ("Usage", 1269, Decimal("1.6023086974"))]
    assert frame["BillingCurrency"].unique().to_list() == ["USD"]
    assert frame["CommitmentDiscountId"].null_count() == 1281
    # legacy CUR has no account name columns (CUR 2.0 added them): the ids name the accounts, counted
    assert result.repairs == {"filled_missing:BillingAccountName": 1281, "filled_missing:SubAccountName": 1281}
    assert frame.select("BillingAccountName", "SubAccountName").unique().rows() == [("123412340534", "123412340534")]


def test_aws_pricing_units_in_the_focus_unit_format() -> None:
    """FOCUS 1.2 UnitFormat (PricingUnit-C-003-O): AWS Glue's ``Obj-Month`` is the compound ``Object-Months``."""
    frame = load(source(FIXTURE), PERIOD).frame
    glue = frame.filter(pl.col("SkuMeter").str.ends_with("Catalog-Storage"))
    assert glue.height == 28
    assert glue.select("PricingUnit", "ConsumedUnit").unique().rows() == [("Object-Months", "Object-Months")]
    assert "Obj-Month" not in set(frame["PricingUnit"].drop_nulls())


def test_usage_and_tax_lines_map_right() -> None:
    frame = load(source(FIXTURE), PERIOD).frame
    usage = line(frame, 16)  # S3 data transfer to Frankfurt: 9.052E-7 GB at $0.02
    assert {k: usage[k] for k in (
        "ChargeCategory", "ChargeFrequency", "ChargeClass", "ServiceName", "ServiceCategory", "ServiceSubcategory",
        "RegionId", "RegionName", "SkuId", "SkuMeter", "SkuPriceId", "PricingUnit", "ConsumedUnit",
        "PricingCategory", "InvoiceIssuerName", "PublisherName", "SubAccountId", "SubAccountType", "x_line_item_type",
    )} == {
        "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based", "ChargeClass": None,
        "ServiceName": "Amazon Simple Storage Service", "ServiceCategory": "Storage",
        # a transfer line has no product/location: the region code's name (FOCUS 1.2 RegionName-C-005-C)
        "ServiceSubcategory": "Object Storage", "RegionId": "us-east-1", "RegionName": "US East (N. Virginia)",
        "SkuId": "2BG23xxxxxxBKVFW", "SkuMeter": "USE1-EUC1-AWS-Out-Bytes",
        "SkuPriceId": "2BG23N2FNX3BKxxx.xxxxxxxxxx.xxx6EN2CT7", "PricingUnit": "GB", "ConsumedUnit": "GB",
        "PricingCategory": "Standard", "InvoiceIssuerName": "Amazon Web Services Canada, Inc.",
        "PublisherName": "Amazon Web Services Canada, Inc.", "SubAccountId": "123412340534",
        "SubAccountType": "Payer Account", "x_line_item_type": "Usage",
    }  # fmt: skip
    assert usage["BilledCost"] == usage["EffectiveCost"] == Decimal("0.0000000181")  # 1.81E-8 as written
    assert usage["PricingQuantity"] == usage["ConsumedQuantity"] == Decimal("0.0000009052")
    assert usage["ListUnitPrice"] == usage["ContractedUnitPrice"] == Decimal("0.02")
    assert usage["ListCost"] == usage["ContractedCost"] == Decimal("0.000000018104")  # price × quantity
    assert (usage["ChargePeriodStart"], usage["ChargePeriodEnd"]) == (
        datetime(2023, 11, 4, 23, tzinfo=UTC), datetime(2023, 11, 5, tzinfo=UTC),
    )  # fmt: skip
    assert (usage["BillingPeriodStart"], usage["BillingPeriodEnd"]) == (
        datetime(2023, 11, 1, tzinfo=UTC), datetime(2023, 12, 1, tzinfo=UTC),
    )  # fmt: skip

    tax = line(frame, 6)  # Canada tax on KMS
    assert [tax[k] for k in ("ChargeCategory", "ChargeFrequency", "BilledCost", "EffectiveCost", "ListCost")] == [
        "Tax", "One-Time", Decimal("0.01"), Decimal("0.01"), Decimal("0.01"),
    ]  # fmt: skip
    assert [tax[k] for k in ("PricingQuantity", "PricingUnit", "PricingCategory", "ConsumedQuantity", "SkuId")] == [
        None, None, None, None, None,
    ]  # fmt: skip
    assert (tax["ServiceName"], tax["ServiceCategory"]) == ("AWS Key Management Service", "Security")
    assert tax["ChargeDescription"] == "Tax for product code awskms"


# --- the report folder layout ---------------------------------------------------------------------------


def test_report_folder_reads_only_the_latest_update(report: Path) -> None:
    result = load(source(report), PERIOD)
    new = report / "20231101-20231201" / ASSEMBLY_NEW
    assert result.files == [str(new / f"{REPORT}-1.csv.gz"), str(new / f"{REPORT}-2.csv.gz")]
    assert (report / "20231101-20231201" / ASSEMBLY_OLD / f"{REPORT}-1.csv.gz").exists()  # never read
    assert result.frame.height == 1281 and result.stats["files"] == 2
    assert result.source_total == result.frame["BilledCost"].sum() == TOTAL
    # lines are numbered within their part: part 2 starts again at line 2 (its header is line 1)
    assert line(result.frame.filter(pl.col("x_source_file").str.ends_with("-2.csv.gz")), 2)["x_line_item_type"]
    batches = list(load_batches(source(report), PERIOD, batch_rows=200))
    assert sum(b.source_total for b in batches) == TOTAL
    assert [b.stats["rows"] for b in batches] == [200, 200, 200, 41, 200, 200, 200, 40]  # 641 + 640 lines


def test_report_folder_over_s3(report: Path) -> None:
    with moto_s3() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="acme-billing-reports")
        for path in sorted(p for p in report.rglob("*") if p.is_file()):
            s3.put_object(Bucket="acme-billing-reports", Key=f"cur/{REPORT}/{path.relative_to(report).as_posix()}",
                          Body=path.read_bytes())  # fmt: skip
        url = f"s3://acme-billing-reports/cur/{REPORT}"
        result = load(source(url, endpoint_url=endpoint, region="us-east-1"), PERIOD)
        delivery = current_delivery(source(url, endpoint_url=endpoint), PERIOD)
    assert result.files == [f"{url}/20231101-20231201/{ASSEMBLY_NEW}/{REPORT}-{n}.csv.gz" for n in (1, 2)]
    assert result.source_total == result.frame["BilledCost"].sum() == TOTAL
    assert delivery is not None and delivery.delivery_id == ASSEMBLY_NEW
    assert delivery.manifest == f"{url}/20231101-20231201/{REPORT}-Manifest.json"


def test_overwrite_mode_layout_and_its_delivery_id(tmp_path: Path) -> None:
    root = tmp_path / REPORT
    header, rows = fixture_rows()
    part = write_gz(root / "20231101-20231201" / f"{REPORT}-1.csv.gz", header, rows)
    manifest = {"assemblyId": ASSEMBLY_OLD, "billingPeriod": {"start": "20231101T000000.000Z"},
                "reportKeys": [f"reports/{REPORT}/20231101-20231201/{REPORT}-1.csv.gz"]}  # fmt: skip
    (root / "20231101-20231201" / f"{REPORT}-Manifest.json").write_text(json.dumps(manifest))

    result = load(source(root), PERIOD)
    assert result.files == [str(part)] and result.source_total == TOTAL
    delivery = current_delivery(source(root), PERIOD)
    assert delivery is not None and delivery.delivery_id == ASSEMBLY_OLD
    assert current_delivery(source(root), BillingPeriod("2023-12")) is None


# --- legacy headers: tags, commitments, messages -----------------------------------------------------------

SP_ARN = "arn:aws:savingsplans::123412340534:savingsplan/5d0c0d3a-legacy"
BASE = {
    "bill/BillType": "Anniversary", "bill/PayerAccountId": "123412340534",
    "bill/BillingPeriodStartDate": "2023-11-01T00:00:00Z", "bill/BillingPeriodEndDate": "2023-12-01T00:00:00Z",
    "lineItem/UsageAccountId": "210987654321", "lineItem/UsageStartDate": "2023-11-02T05:00:00Z",
    "lineItem/UsageEndDate": "2023-11-02T06:00:00Z", "lineItem/ProductCode": "AmazonEC2",
    "lineItem/CurrencyCode": "USD", "lineItem/UsageType": "BoxUsage:c5.large", "product/ProductName":
    "Amazon Elastic Compute Cloud", "product/regionCode": "eu-west-1", "product/location": "EU (Ireland)",
    "product/locationType": "AWS Region", "pricing/unit": "Hrs", "pricing/publicOnDemandRate": "0.096",
    "lineItem/ResourceId": "i-0legacy00000001",
}  # fmt: skip


def legacy_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    header = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def savings_plan_hour(tags: dict[str, str]) -> list[dict[str, str]]:
    """One hour of a c5.large covered by a $0.10/h Savings Plan at $0.06, as legacy CUR writes it."""
    covered = {**BASE, **tags, "lineItem/LineItemType": "SavingsPlanCoveredUsage", "lineItem/UsageAmount": "1",
               "lineItem/UnblendedRate": "0.096", "lineItem/UnblendedCost": "0.096",
               "pricing/publicOnDemandCost": "0.096", "savingsPlan/SavingsPlanARN": SP_ARN,
               "savingsPlan/SavingsPlanRate": "0.06", "savingsPlan/SavingsPlanEffectiveCost": "0.06"}  # fmt: skip
    negation = {**BASE, "lineItem/LineItemType": "SavingsPlanNegation", "lineItem/UsageAmount": "1",
                "lineItem/UnblendedRate": "-0.096", "lineItem/UnblendedCost": "-0.096", "lineItem/ResourceId": "",
                "savingsPlan/SavingsPlanARN": SP_ARN}  # fmt: skip
    fee = {**BASE, "lineItem/LineItemType": "SavingsPlanRecurringFee", "lineItem/ProductCode": "ComputeSavingsPlans",
           "lineItem/UsageAmount": "1", "lineItem/UnblendedCost": "0.1", "lineItem/ResourceId": SP_ARN,
           "savingsPlan/SavingsPlanARN": SP_ARN, "savingsPlan/TotalCommitmentToDate": "0.1",
           "savingsPlan/UsedCommitment": "0.06", "lineItem/UsageAccountId": "123412340534"}  # fmt: skip
    return [covered, negation, fee]


def test_tags_and_savings_plans_from_legacy_headers(tmp_path: Path) -> None:
    tags = {"resourceTags/user:Name": "web-1", "resourceTags/user:CostCenter": "cc-42",
            "resourceTags/user:Empty": "", "resourceTags/aws:createdBy": "IAMUser:alice",
            "costCategory/Team": "payments"}  # fmt: skip
    path = legacy_csv(tmp_path / "cur.csv", savings_plan_hour(tags))
    result = load(source(path), PERIOD)
    frame = result.frame

    covered = frame.filter(pl.col("x_line_item_type") == "SavingsPlanCoveredUsage").row(0, named=True)
    # user tags lose their user: prefix and keep their case; a blank cell is no tag; AWS tags keep aws:
    assert json.loads(covered["Tags"]) == {
        "Name": "web-1", "CostCenter": "cc-42", "aws:createdBy": "IAMUser:alice", "costCategory/Team": "payments",
    }  # fmt: skip
    assert (covered["ResourceName"], covered["ResourceType"]) == ("web-1", "Instance")
    assert [covered[k] for k in ("BilledCost", "EffectiveCost", "ListCost", "CommitmentDiscountId")] == [
        0, Decimal("0.06"), Decimal("0.096"), SP_ARN,
    ]  # fmt: skip
    assert (covered["RegionId"], covered["RegionName"], covered["SubAccountType"]) == (
        "eu-west-1", "EU (Ireland)", "Linked Account",
    )  # fmt: skip
    unused = frame.filter(pl.col("CommitmentDiscountStatus") == "Unused").row(0, named=True)
    assert (unused["EffectiveCost"], unused["CommitmentDiscountQuantity"]) == (Decimal("0.04"), Decimal("0.04"))
    assert result.stats["savings_plan_negations_folded"] == 1
    assert frame["BilledCost"].sum() == result.source_total == Decimal("0.1")
    assert frame["EffectiveCost"].sum() == Decimal("0.1")


def test_missing_required_column_names_the_legacy_header(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "lineItem/UnblendedCost"} for r in savings_plan_hour({})]
    path = legacy_csv(tmp_path / "cur.csv", rows)
    with pytest.raises(SourceError, match=r"missing required legacy CUR column 'lineItem/UnblendedCost'") as err:
        load(source(path), PERIOD)
    assert err.value.where == str(path)

    plain = [{k: v for k, v in r.items() if not k.startswith("savingsPlan/TotalCommitment")}
             for r in savings_plan_hour({})]  # fmt: skip
    with pytest.raises(SourceError, match=r"column 'savingsPlan/TotalCommitmentToDate'"):
        load(source(legacy_csv(tmp_path / "cur2.csv", plain)), PERIOD)


def test_quarantine_reasons_name_legacy_headers(tmp_path: Path) -> None:
    rows = savings_plan_hour({})
    rows[0] = {**rows[0], "lineItem/LineItemType": "Weird"}
    rows[2] = {**rows[2], "lineItem/UsageAmount": "1", "lineItem/UnblendedCost": "n/a"}
    path = legacy_csv(tmp_path / "cur.csv", rows)
    result = load(source(path), PERIOD)
    assert result.quarantine.rows() == [
        (str(path), "2", "unknown lineItem/LineItemType 'Weird'"),
        (str(path), "4", "lineItem/UnblendedCost is empty or not a number"),
    ]


def test_plain_files_of_several_months_keep_the_period(tmp_path: Path) -> None:
    november = savings_plan_hour({})
    december = [{**r, "bill/BillingPeriodStartDate": "2023-12-01T00:00:00Z",
                 "bill/BillingPeriodEndDate": "2024-01-01T00:00:00Z"} for r in november]  # fmt: skip
    legacy_csv(tmp_path / "a.csv", november + december)
    write_gz(tmp_path / "b.csv.gz", *fixture_rows())

    result = load(source(tmp_path), PERIOD)
    assert result.stats["rows_of_other_periods"] == 3 and result.stats["files"] == 2
    assert result.source_total == result.frame["BilledCost"].sum() == TOTAL + Decimal("0.1")
    assert load(source(str(tmp_path / "*.csv")), BillingPeriod("2023-12")).source_total == Decimal("0.1")
    with pytest.raises(SourceError, match=r"no line item of billing period 2024-01 in 2 CSV file\(s\)"):
        load(source(tmp_path), BillingPeriod("2024-01"))


def test_manifest_naming_a_missing_report_file(report: Path) -> None:
    missing = report / "20231101-20231201" / ASSEMBLY_NEW / f"{REPORT}-2.csv.gz"
    missing.unlink()
    with pytest.raises(SourceError, match="report file named in the manifest is missing") as err:
        load(source(report), PERIOD)
    assert err.value.where == str(missing)


def test_a_report_folder_without_the_period(report: Path) -> None:
    with pytest.raises(SourceError, match="no legacy CUR manifest for billing period 2023-12") as err:
        load(source(report), BillingPeriod("2023-12"))
    assert err.value.where == str(report / "20231201-20240101" / f"{REPORT}-Manifest.json")
