"""FOCUS file connector: the official FOCUS 1.0 sample, renamed columns, CSV/gzip/Parquet, quarantine."""

from __future__ import annotations

import csv
import gzip
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from connectors import focus_file
from connectors.base import BillingPeriod, SourceError
from models.config import FocusFileSource
from models.focus import FOCUS_COLUMN_NAMES, MONEY, conform, null_violations
from pipelines.demo import gpu_cloud
from pipelines.demo.company import GPU_CLOUD_H100_HOURLY, DemoMonth

FIXTURES = Path(__file__).parent / "fixtures" / "focus"
SAMPLE = FIXTURES / "focus_sample_1000.csv"  # FinOps Foundation FOCUS-Sample-Data, CC BY 4.0


def source(path: Path | str) -> FocusFileSource:
    return FocusFileSource(name="focus", type="focus_file", path=str(path))


def test_official_sample_september() -> None:
    result = focus_file.load(source(FIXTURES), BillingPeriod("2024-09"))
    frame = result.frame
    # 1,000 rows: 999 bill September, one Oracle row bills October.
    assert frame.height == 999 and result.quarantine.height == 0
    # The provider total is exact, and so is the warehouse's: 7 BilledCost values carry an 11th decimal,
    # which the 12 places kept hold; only ConsumedQuantity has values with more.
    assert result.source_total == Decimal("20.28022672899")
    assert frame["BilledCost"].sum() == Decimal("20.28022672899")
    assert frame["EffectiveCost"].sum() == Decimal("14.97651418586")
    assert frame["ContractedCost"].null_count() == 6  # Oracle writes NULL in a NOT NULL column; kept NULL
    assert result.repairs == {
        "datetime_not_iso8601_utc": 3996,  # 999 rows × 4 "YYYY-MM-DD HH:MM:SS" columns
        "decimal_rounded_to_12_places:ConsumedQuantity": 7,
        "empty_string_as_null": 48,
        "null_literal": 8968,
        "value_casing:ChargeFrequency": 6,  # Oracle's "Usage-based"
    }
    assert result.stats == {"files": 1, "rows": 999, "rows_outside_period": 1, "unknown_column:Id": 1}
    assert "Id" not in frame.columns
    assert sorted(frame["ChargeFrequency"].unique().to_list()) == ["One-Time", "Usage-Based"]
    first = frame.row(0, named=True)
    assert first["ChargePeriodStart"] == datetime(2024, 9, 18, 22, tzinfo=UTC)
    assert first["BillingPeriodStart"] == datetime(2024, 9, 1, tzinfo=UTC)
    assert first["BilledCost"] == Decimal("0.0000008") and first["AvailabilityZone"] is None
    assert (first["x_source_file"], first["x_source_line"]) == (str(SAMPLE), "line 2")
    assert frame.schema["BilledCost"] == MONEY


def test_official_sample_october_has_the_one_oracle_row() -> None:
    result = focus_file.load(source(SAMPLE), BillingPeriod("2024-10"))
    assert result.frame.height == 1 and result.source_total == Decimal("0.24")
    assert result.frame["x_source_line"].to_list() == ["line 946"]
    assert result.frame["ProviderName"].to_list() == ["Oracle"]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


HEADER = ["BillingPeriodStart", "ChargePeriodStart", "BilledCost", "ChargeDescription", "ChargeCategory"]


def test_bad_values_are_quarantined_with_physical_line_and_reason(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "export.csv",
        HEADER,
        [
            ["2025-06-01T00:00:00Z", "2025-06-01T00:00:00Z", "1.25", "GPU hours,\nsecond line of a note", "usage"],
            ["2025-06-01T00:00:00Z", "2025-06-02T00:00:00Z", "1,5", "comma decimal", "Usage"],
            ["2025-06-01T00:00:00Z", "yesterday", "2.00", "bad date, good cost", "Usage"],
            ["NULL", "2025-06-03T00:00:00Z", "9.99", "no billing period", "Usage"],
            ["2025-05-01T00:00:00Z", "2025-05-03T00:00:00Z", "100", "last month", "Usage"],
            ["2025-06-01 00:00:00", "2025-06-04T00:00:00+02:00", "0", "zero stays", "Usage"],
        ],
    )
    result = focus_file.load(source(tmp_path), BillingPeriod("2025-06"))
    assert result.quarantine.rows() == [
        (str(path), "6", "BillingPeriodStart: NULL is not a date/time"),
        (str(path), "4", "BilledCost: '1,5' is not a decimal number"),
        (str(path), "5", "ChargePeriodStart: 'yesterday' is not a date/time"),
    ]
    assert result.frame["ChargeDescription"].to_list() == ["GPU hours,\nsecond line of a note", "zero stays"]
    assert result.frame["x_source_line"].to_list() == ["line 2", "line 8"]  # line 1 is the header
    assert result.frame["ChargeCategory"].to_list() == ["Usage", "Usage"]
    assert result.frame["ChargePeriodStart"][1] == datetime(2025, 6, 3, 22, tzinfo=UTC)
    # The file's own total counts every parseable June cost, quarantined-for-date rows included.
    assert result.source_total == Decimal("3.25")
    assert result.frame["BilledCost"].sum() == Decimal("1.25")
    assert result.repairs == {"datetime_not_iso8601_utc": 2, "value_casing:ChargeCategory": 1}
    assert result.stats == {"files": 1, "rows": 2, "rows_outside_period": 1}


def test_pre_1_2_and_1_3_column_names_are_renamed(tmp_path: Path) -> None:
    header = ["billingperiodstart", "ChargeType", "AmortizedCost", "BilledCost", "UsageQuantity", "UsageUnit",
              "Region", "ServiceProviderName", "ChargeSubcategory", "x_Team", "x_source"]  # fmt: skip
    row = ["2025-06-01T00:00:00Z", "Usage", "0.90", "1.00", "3", "Hours", "eu-north1", "Nebius", "On-Demand", "ml", "x"]
    write_csv(tmp_path / "old.csv", header, [row])
    result = focus_file.load(source(tmp_path / "*.csv"), BillingPeriod("2025-06"))
    assert result.frame.row(0, named=True) | {"x_source_file": None} == {
        "BillingPeriodStart": datetime(2025, 6, 1, tzinfo=UTC),
        "ChargeCategory": "Usage",
        "EffectiveCost": Decimal("0.9"),
        "BilledCost": Decimal("1"),
        "ConsumedQuantity": Decimal("3"),
        "ConsumedUnit": "Hours",
        "RegionId": "eu-north1",
        "ProviderName": "Nebius",
        "x_Team": "ml",
        "x_source_file": None,
        "x_source_line": "line 2",
    }
    assert result.repairs == {
        "column_name_casing:billingperiodstart": 1,
        "renamed_column:AmortizedCost->EffectiveCost": 1,
        "renamed_column:ChargeType->ChargeCategory": 1,
        "renamed_column:Region->RegionId": 1,
        "renamed_column:ServiceProviderName->ProviderName": 1,
        "renamed_column:UsageQuantity->ConsumedQuantity": 1,
        "renamed_column:UsageUnit->ConsumedUnit": 1,
    }
    # ChargeSubcategory was removed in 1.0; x_source is ours and may not be set by a provider.
    assert result.stats == {"files": 1, "rows": 1, "unknown_column:ChargeSubcategory": 1, "unknown_column:x_source": 1}


def test_gzip_and_parquet_read_the_same_rows_exactly(tmp_path: Path) -> None:
    with SAMPLE.open("rb") as raw, gzip.open(tmp_path / "part-0.csv.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    parquet = pl.DataFrame(
        {
            "BillingPeriodStart": [datetime(2024, 9, 1, tzinfo=UTC)] * 2,
            "ChargePeriodStart": [datetime(2024, 9, 2, 1), datetime(2024, 9, 2, 2)],  # naive = UTC
            "BilledCost": pl.Series([Decimal("1.123456789012"), Decimal("2.5")], dtype=pl.Decimal(38, 12)),
            "Tags": [{"team": "ml", "env": "prod"}, {"team": "search", "env": "dev"}],
        }
    )
    parquet.write_parquet(tmp_path / "part-1.parquet")
    result = focus_file.load(source(tmp_path), BillingPeriod("2024-09"))
    assert result.frame.height == 999 + 2
    assert result.source_total == Decimal("20.28022672899") + Decimal("3.623456789012")
    tail = result.frame.filter(pl.col("x_source_file").str.ends_with(".parquet"))
    assert tail["x_source_line"].to_list() == ["row 1", "row 2"]
    assert tail["ChargePeriodStart"].to_list() == [
        datetime(2024, 9, 2, 1, tzinfo=UTC),
        datetime(2024, 9, 2, 2, tzinfo=UTC),
    ]
    assert tail["BilledCost"].to_list() == [Decimal("1.123456789012"), Decimal("2.5")]
    assert tail["Tags"].to_list() == ['{"team":"ml","env":"prod"}', '{"team":"search","env":"dev"}']
    assert result.stats["files"] == 2


def test_no_files_and_non_focus_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no \.csv, \.csv\.gz, \.parquet files found"):
        focus_file.load(source(tmp_path / "missing"), BillingPeriod("2025-06"))
    path = write_csv(
        tmp_path / "cur.csv", ["lineItem/UnblendedCost", "bill/BillingPeriodStartDate"], [["1", "2025-06-01"]]
    )
    with pytest.raises(SourceError) as err:
        focus_file.load(source(path), BillingPeriod("2025-06"))
    assert str(err.value) == (
        f"source 'focus': {path}: missing FOCUS column(s) BilledCost, BillingPeriodStart. is this a FOCUS export?"
    )


def test_nebius_demo_export_round_trips_exactly(tmp_path: Path) -> None:
    month = DemoMonth("2025-06")
    path = gpu_cloud.write(month, tmp_path, seed=7)
    assert path.read_text().splitlines()[0].split(",") == list(FOCUS_COLUMN_NAMES)
    result = focus_file.load(source(path.parent), BillingPeriod("2025-06"))
    frame = result.frame
    # One VM × 720 hours, plus its boot disk and the bucket once a day.
    assert frame.height == 720 + 30 + 30 and result.quarantine.height == 0 and result.repairs == {}
    assert result.source_total == frame["BilledCost"].sum() == Decimal("17184.3234437040")
    vm = frame.filter(pl.col("ResourceId") == gpu_cloud.vm_resource_ids()[0])
    assert vm.height == 720 and vm["BilledCost"].unique().to_list() == [8 * GPU_CLOUD_H100_HOURLY]
    assert vm["ResourceId"][0].startswith("computeinstance-e00")
    assert (frame["ListUnitPrice"] * frame["PricingQuantity"] == frame["ListCost"]).all()
    assert frame["Tags"].null_count() == frame["SubAccountId"].null_count() == frame.height
    assert sorted(frame["ServiceName"].unique().to_list()) == ["Compute", "Object Storage"]
    ours = {c: pl.lit("demo") for c in ("x_source", "x_source_type", "x_billing_period", "x_batch_id", "x_charge_id")}
    assert null_violations(conform(frame.with_columns(**ours))) == {}
    assert gpu_cloud.write(month, tmp_path / "again", seed=7).read_bytes() == path.read_bytes()
