"""CoreWeave FOCUS usage export (quantities only), priced with the rate card from config."""

from __future__ import annotations

import gzip
import json
import shutil
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from connectors import connector, coreweave
from connectors.base import BillingPeriod, SourceError
from models.config import ConfigError, CoreWeaveSource, parse_config
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

FIXTURES = Path(__file__).parent / "fixtures" / "gpu_clouds" / "coreweave"
CSV = FIXTURES / "focus_usage_2025-06.csv"
JSON = FIXTURES / "focus_usage_2025-07.json"
RATES = {
    "gd-8xh100ib-i128": Decimal("4.76"),  # per GPU-hour
    "storage-distributed-file:on-demand": Decimal("0.00009589"),  # per GiB-hour, keyed by SkuPriceId
    "public-ip": Decimal("0.004"),  # per IP-hour
}
# 38.08 + 38.08 + 76.16 (H100) + 0.19638272 + 0.196430665 (storage) + 0.004 (IP)
TOTAL = Decimal("152.716813385")


def source(path: Path, **extra: object) -> CoreWeaveSource:
    return CoreWeaveSource(name="coreweave", type="coreweave_focus", path=str(path), rate_card=RATES, **extra)


def test_usage_rows_priced_with_the_rate_card_to_the_cent() -> None:
    result = coreweave.load(source(CSV), BillingPeriod("2025-06"))
    frame = result.frame
    assert frame.height == 6 and result.source_total == TOTAL
    for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert frame[column].sum() == TOTAL
    # the SKU without a rate is quarantined with its line and reason; May's row belongs to another load
    assert result.quarantine.rows() == [
        (
            str(CSV),
            "line 8",
            "no rate_card price for SkuPriceId 'cpu-epyc-genoa-96:on-demand' or SkuId 'cpu-epyc-genoa-96'",
        )
    ]
    assert result.stats == {"files": 1, "rows_outside_period": 1}
    assert result.repairs == {
        "filled_missing:ChargeDescription": 6,
        "filled_missing:RegionName": 6,
        "pricing_quantity_from_consumed_quantity": 1,
    }


def test_ingest_fills_focus_costs_and_reconciles(duckdb_warehouse: Warehouse) -> None:
    config = parse_config(
        f"sources:\n  - name: coreweave\n    type: coreweave_focus\n    path: '{CSV}'\n"
        "    rate_card: {gd-8xh100ib-i128: '4.76', 'storage-distributed-file:on-demand': '0.00009589',\n"
        "                public-ip: '0.004'}\n"
        "ingest: {max_quarantined_share: 0.5}\n"
    )
    summary = ingest(duckdb_warehouse, config, "coreweave", "2025-06")
    assert (summary.rows, summary.quarantined, summary.loaded_billed_cost) == (6, 1, TOTAL)
    recon = duckdb_warehouse.read("SELECT provider_total, difference FROM v_reconciliation").row(0)
    assert recon == (TOTAL, 0)


def test_each_row_carries_rate_quantity_and_the_export_s_own_columns() -> None:
    frame = coreweave.load(source(CSV), BillingPeriod("2025-06")).frame.sort("x_source_line")
    h100 = frame.filter(pl.col("x_source_line") == "line 4").row(0, named=True)
    assert (h100["SkuId"], h100["PricingQuantity"], h100["PricingUnit"]) == (
        "gd-8xh100ib-i128",
        Decimal(16),
        "GPU-Hours",
    )
    assert (h100["ListUnitPrice"], h100["ContractedUnitPrice"], h100["BilledCost"]) == (
        Decimal("4.76"), Decimal("4.76"), Decimal("76.16")
    )  # fmt: skip
    assert (h100["BillingAccountId"], h100["AvailabilityZone"], h100["RegionId"]) == (
        "org-7f3c2a91", "US-EAST-04A", "US-EAST-04"
    )  # fmt: skip
    assert h100["ResourceId"] is None  # blank in CoreWeave's export
    # blank in the export too, filled from the row's ids (FOCUS 1.2 RegionName-C-005-C, ChargeDescription-C-003-O)
    assert (h100["RegionName"], h100["ChargeDescription"]) == ("US-EAST-04", "CoreWeave gd-8xh100ib-i128 (GPU Hours)")
    storage = frame.filter(pl.col("x_source_line") == "line 6").row(0, named=True)
    assert (storage["PricingQuantity"], storage["PricingUnit"], storage["ConsumedQuantity"]) == (
        Decimal("2048.5"), "GiB-Hours", Decimal("2048.5")
    )  # fmt: skip
    assert storage["BilledCost"] == Decimal("0.196430665")  # 2048.5 × 0.00009589, the SkuPriceId rate
    ip = frame.filter(pl.col("SkuId") == "public-ip").row(0, named=True)
    assert (ip["SubAccountId"], ip["ServiceCategory"], ip["BilledCost"]) == (None, "Networking", Decimal("0.004"))
    assert set(frame["x_source_file"]) == {str(CSV)}


def test_json_answer_with_numbers_and_nulls() -> None:
    result = coreweave.load(source(JSON), BillingPeriod("2025-07"))
    assert result.frame.height == 6 and result.quarantine.height == 0
    assert result.source_total == result.frame["BilledCost"].sum() == TOTAL
    assert result.frame["x_source_line"].to_list() == [f"record {n}" for n in range(1, 7)]


def test_a_folder_of_gzip_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "2025-06.csv.gz").write_bytes(gzip.compress(CSV.read_bytes()))
    rows = json.loads(JSON.read_text())["data"]
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps({**r, "BillingCurrency": None}) for r in rows[:2]) + "\n")
    result = coreweave.load(source(tmp_path), BillingPeriod("2025-06"))
    assert result.source_total == TOTAL and result.stats["files"] == 2  # July's JSON lines are outside June
    july = coreweave.load(source(tmp_path), BillingPeriod("2025-07"))
    assert july.frame["BilledCost"].sum() == Decimal("76.16") and july.repairs["filled_missing:BillingCurrency"] == 2


def test_provider_costs_if_present_are_not_used(tmp_path: Path) -> None:
    text = CSV.read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("BilledCost")] = "999.99"
    (tmp_path / "with_cost.csv").write_text("\r\n".join([text[0], ",".join(row)]) + "\r\n")
    result = coreweave.load(source(tmp_path / "with_cost.csv"), BillingPeriod("2025-06"))
    assert result.frame["BilledCost"].to_list() == [Decimal("38.08")]
    assert result.stats["provider_cost_values_ignored"] == 1


def test_bad_values_and_missing_columns(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,SkuId,PricingQuantity,ConsumedQuantity\n"
        "2025-06-01T00:00:00Z,2025-07-01T00:00:00Z,2025-06-01T00:00:00Z,2025-06-01T01:00:00Z,public-ip,one,\n"
        "2025-06-01T00:00:00Z,2025-07-01T00:00:00Z,yesterday,2025-06-01T01:00:00Z,public-ip,1,\n"
        "2025-06-01T00:00:00Z,2025-07-01T00:00:00Z,2025-06-01T00:00:00Z,2025-06-01T01:00:00Z,public-ip,,\n"
    )
    result = coreweave.load(source(bad), BillingPeriod("2025-06"))
    assert [r[1:] for r in result.quarantine.rows()] == [
        ("line 2", "PricingQuantity: 'one' is not a decimal number"),
        ("line 3", "ChargePeriodStart: 'yesterday' is not a date/time"),
        ("line 4", "PricingQuantity and ConsumedQuantity are both NULL: nothing to price"),
    ]
    assert result.frame.height == 0
    (tmp_path / "nosku.csv").write_text("BillingPeriodStart,ChargePeriodStart,ChargePeriodEnd,ConsumedQuantity\n")
    with pytest.raises(
        SourceError, match=r"nosku\.csv: missing FOCUS column\(s\) BillingPeriodEnd, SkuId or SkuPriceId"
    ):
        coreweave.load(source(tmp_path / "nosku.csv"), BillingPeriod("2025-06"))
    with pytest.raises(SourceError, match=r"no \.csv, \.csv\.gz, \.parquet, \.json, \.jsonl files found"):
        coreweave.load(source(tmp_path / "nothing-*.csv"), BillingPeriod("2025-06"))


def test_rates_in_another_currency_than_the_export_are_refused(tmp_path: Path) -> None:
    shutil.copy(CSV, tmp_path / "usage.csv")
    with pytest.raises(SourceError, match=r"billed in another currency than the rate card's EUR"):
        coreweave.load(source(tmp_path, currency="EUR"), BillingPeriod("2025-06"))


def test_config_and_registry() -> None:
    config = parse_config(
        "sources:\n  - name: cw\n    type: coreweave_focus\n    path: exports/\n"
        "    rate_card: {gd-8xh100ib-i128: 4.76, public-ip: '0.004'}\n"
    )
    assert config.sources[0].rate_card == {"gd-8xh100ib-i128": Decimal("4.76"), "public-ip": Decimal("0.004")}
    with pytest.raises(ConfigError, match="rate_card"):
        parse_config("sources:\n  - {name: cw, type: coreweave_focus, path: x, rate_card: {}}\n")
    assert connector("coreweave_focus") is coreweave
