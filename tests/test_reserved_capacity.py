"""Reserved GPU capacity: purchases, hourly amortization, Used/Unused from telemetry, against the FOCUS spec."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from connectors import connector, reserved_capacity
from connectors.base import BillingPeriod
from connectors.reserved_capacity import commitment_rows
from models.config import ConfigError, ReservedCapacitySource, ReservedContract, parse_config
from pipelines.ingest import ingest
from pipelines.warehouse import Warehouse

SPEC = Path(__file__).parent / "fixtures" / "gpu_clouds" / "focus_spec_commitment"
JAN = BillingPeriod("2023-01")
SERVING = "vllm-qwen-coder.lambda-us-east-1.internal"


def contract(**overrides: object) -> ReservedContract:
    fields = {"id": "rc-2023-001", "provider": "Lambda", "gpu_type": "H100 SXM", "gpu_count": 4,
              "start": "2023-01-01", "end": "2024-01-01", "deployments": [SERVING]}  # fmt: skip
    return ReservedContract.model_validate({**fields, **overrides})


def spec_rows(name: str) -> list[dict[str, str]]:
    with (SPEC / f"{name}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def busy(hour: datetime, gpu_seconds: str, deployment: str = SERVING) -> pl.DataFrame:
    return pl.DataFrame({"hour": [hour], "deployment": [deployment], "gpu_seconds": [Decimal(gpu_seconds)]})


def as_spec(row: dict, commitment: str, resource: str = SERVING) -> dict[str, str]:
    """Our row in the spec example's columns and spelling (money with 2 places, ids as placeholders)."""
    ids = {commitment: "<my-commitment-discount-id>", resource: "<my-resource-id>"}
    out = {}
    for column in ("ChargeCategory", "ChargeFrequency", "PricingCategory", "BilledCost", "EffectiveCost",
                   "CommitmentDiscountStatus", "ResourceId", "CommitmentDiscountId", "ConsumedQuantity"):  # fmt: skip
        value = row[column]
        if isinstance(value, Decimal):
            value = f"{value:.2f}"
        out[column] = "null" if value is None else ids.get(value, value)
    return out


PARTIAL_UPFRONT = {"hourly_rate_total": "0.50", "upfront": "4380"}  # purchase scenario 3: $1/h, half upfront


def test_partial_upfront_purchase_matches_the_spec_scenario() -> None:
    rows = commitment_rows(contract(**PARTIAL_UPFRONT), JAN, None).filter(pl.col("ChargeCategory") == "Purchase")
    upfront, recurring = rows.sort("ChargeFrequency").iter_rows(named=True)
    spec_upfront, *spec_hourly = spec_rows("commitment_discount_purchase_scenario_3")
    assert (upfront["ChargeFrequency"], upfront["PricingCategory"]) == (
        spec_upfront["ChargeFrequency"], spec_upfront["PricingCategory"]
    )  # fmt: skip
    assert upfront["BilledCost"] == Decimal(spec_upfront["BilledCost"]) and upfront["EffectiveCost"] == 0
    assert f"{upfront['ChargePeriodStart']:%Y-%m-%dT%H:%M:%SZ}" == spec_upfront["ChargePeriodStart"]
    assert f"{upfront['ChargePeriodEnd']:%Y-%m-%dT%H:%M:%SZ}" == spec_upfront["ChargePeriodEnd"]
    assert upfront["CommitmentDiscountQuantity"] == 4 * 8760 and upfront["CommitmentDiscountStatus"] is None
    # the spec bills the fee hourly; here January's 744 hourly fees are one Recurring purchase
    assert {r["ChargeFrequency"] for r in spec_hourly} == {recurring["ChargeFrequency"]} == {"Recurring"}
    assert recurring["BilledCost"] == 744 * Decimal(spec_hourly[0]["BilledCost"]) == Decimal(372)
    assert recurring["EffectiveCost"] == 0 and recurring["CommitmentDiscountQuantity"] == 4 * 744
    assert (recurring["ContractedUnitPrice"], recurring["PricingUnit"]) == (Decimal("0.125"), "GPU-Hours")
    assert recurring["ContractedUnitPrice"] * recurring["PricingQuantity"] == recurring["ContractedCost"]


@pytest.mark.parametrize(
    ("scenario", "gpu_seconds"),
    [
        ("commitment_discount_usage_scenario_1", "14400"),  # all 4 GPUs busy the whole hour
        ("commitment_discount_usage_scenario_2", "0"),  # nothing ran
        ("commitment_discount_usage_scenario_3", "10800"),  # 3 of 4 GPUs: 75 % used, 25 % unused
    ],
)
def test_usage_hours_match_the_spec_scenarios(scenario: str, gpu_seconds: str) -> None:
    hour = datetime(2023, 1, 1, tzinfo=UTC)
    rows = commitment_rows(contract(**PARTIAL_UPFRONT), JAN, busy(hour, gpu_seconds))
    first_hour = rows.filter((pl.col("ChargeCategory") == "Usage") & (pl.col("ChargePeriodStart") == hour))
    ours = [
        as_spec(r, "rc-2023-001")
        for r in first_hour.sort("CommitmentDiscountStatus", descending=True).iter_rows(named=True)
    ]
    # The spec's commitment is in USD and consumes "1 Hour" of a resource; ours consumes GPU-Hours of the
    # reserved GPUs: the quantities' units differ, so only whether ConsumedQuantity is set is compared.
    expected = [
        {k: r[k] for k in ours[0] if k in r} | {"CommitmentDiscountId": "<my-commitment-discount-id>"}
        for r in spec_rows(scenario)
    ]
    for row in (*ours, *expected):
        row["ConsumedQuantity"] = "null" if row["ConsumedQuantity"] == "null" else "set"
    assert [{k: o[k] for k in e} for o, e in zip(ours, expected, strict=True)] == expected


def test_all_upfront_amortizes_to_the_hourly_rate() -> None:
    rows = commitment_rows(contract(hourly_rate_total="0", upfront="8760"), JAN, None)
    (purchase,) = spec_rows("commitment_discount_purchase_scenario_1")
    purchases = rows.filter(pl.col("ChargeCategory") == "Purchase")
    assert purchases.select("ChargeFrequency", "BilledCost", "EffectiveCost").rows() == [
        (purchase["ChargeFrequency"], Decimal(purchase["BilledCost"]), Decimal(0))
    ]
    usage = rows.filter(pl.col("ChargeCategory") == "Usage")
    assert usage.height == 744 and set(usage["EffectiveCost"]) == {Decimal(1)}
    assert set(usage["CommitmentDiscountStatus"]) == {"Unused"} and set(usage["ResourceId"]) == {"rc-2023-001"}


def test_a_term_across_months_conserves_every_cent() -> None:
    # 64 H100 at $2.10/GPU-hour, $100,000 upfront, from mid-March 06:00 to mid-June 06:00 (2,208 hours)
    term = contract(gpu_count=64, hourly_rate_per_gpu="2.10", upfront="100000", start="2025-03-15T06:00:00Z",
                    end="2025-06-15T06:00:00Z", deployments=[SERVING, "embedder"])  # fmt: skip
    rng = random.Random(11)
    hours = [datetime(2025, 3, 15, 6, tzinfo=UTC) + timedelta(hours=h) for h in range(2208)]
    usage = pl.DataFrame(
        {
            "hour": hours * 2 + [hours[5]],
            "deployment": [SERVING] * 2208 + ["embedder"] * 2208 + ["someone-else"],
            "gpu_seconds": [Decimal(rng.randint(0, 160_000)) / 7 for _ in range(4416)] + [Decimal(999_999)],
        },
        schema_overrides={"gpu_seconds": pl.Decimal(38, 6)},
    )
    source = ReservedCapacitySource(name="reserved", type="reserved_capacity", contracts=[term])
    months = [
        reserved_capacity.load(source, BillingPeriod(m), usage=usage)
        for m in ("2025-03", "2025-04", "2025-05", "2025-06")
    ]
    frame = pl.concat([m.frame for m in months])
    purchases = frame.filter(pl.col("ChargeCategory") == "Purchase")["BilledCost"].sum()
    usage_cost = frame.filter(pl.col("ChargeCategory") == "Usage")["EffectiveCost"].sum()
    assert purchases == usage_cost == Decimal(100_000) + 64 * Decimal("2.10") * 2208 == Decimal("396755.2")
    for month in months:  # each month bills what the terms say, and nothing is billed on usage rows
        assert month.frame["BilledCost"].sum() == month.source_total
    assert [m.source_total for m in months] == [
        Decimal(100_000) + 64 * Decimal("2.10") * 402, 64 * Decimal("2.10") * 720, 64 * Decimal("2.10") * 744,
        64 * Decimal("2.10") * 342,
    ]  # fmt: skip
    per_hour = (
        frame.filter(pl.col("ChargeCategory") == "Usage")
        .group_by("ChargePeriodStart")
        .agg(pl.col("EffectiveCost").sum(), pl.col("CommitmentDiscountQuantity").sum(), pl.len())
    )
    assert per_hour.height == 2208
    assert set(per_hour["CommitmentDiscountQuantity"]) == {Decimal(64)}  # used + unused GPU-hours, every hour
    amounts = set(per_hour["EffectiveCost"])  # the fee + 100,000/2,208 (45.289855072463…) rounded cumulatively
    assert amounts == {Decimal("134.4") + Decimal("45.289855072464"), Decimal("134.4") + Decimal("45.289855072463")}
    assert "someone-else" not in set(frame["ResourceId"])  # only the contract's deployments use it
    assert sum(Counter(frame["x_line_item_type"]).values()) == frame.height


def test_busy_beyond_capacity_is_all_used_shared_in_proportion() -> None:
    hour = datetime(2023, 1, 1, 5, tzinfo=UTC)
    usage = pl.concat([busy(hour, "12000"), busy(hour, "6000", "embedder")])  # 5 GPU-hours on 4 GPUs
    stats: Counter[str] = Counter()
    rows = commitment_rows(contract(hourly_rate_total="1", deployments=[SERVING, "embedder"]), JAN, usage, stats=stats)
    hour_rows = rows.filter(pl.col("ChargePeriodStart") == hour).sort("ResourceId")
    assert hour_rows.select("ResourceId", "CommitmentDiscountStatus", "EffectiveCost", "ConsumedQuantity").rows() == [
        ("embedder", "Used", Decimal("0.333333333333"), Decimal("1.333333333333")),
        (SERVING, "Used", Decimal("0.666666666667"), Decimal("2.666666666667")),
    ]
    assert stats["hours_busier_than_provisioned"] == 1 and stats["contract_hours"] == 744


def test_load_without_usage_is_all_unused_and_says_so() -> None:
    source = ReservedCapacitySource(
        name="reserved", type="reserved_capacity", contracts=[contract(hourly_rate_per_gpu="2")]
    )
    result = reserved_capacity.load(source, JAN)
    usage = result.frame.filter(pl.col("ChargeCategory") == "Usage")
    assert set(usage["CommitmentDiscountStatus"]) == {"Unused"} and usage["ConsumedQuantity"].null_count() == 744
    assert result.stats == {"contract_hours": 744, "hours_fully_idle": 744, "months_without_usage_data": 1}
    assert result.source_total == Decimal(5952) == result.frame["BilledCost"].sum()
    assert set(result.frame["BillingAccountId"]) == {"reserved"} and result.files == ["contract rc-2023-001"]
    assert reserved_capacity.load(source, BillingPeriod("2024-01")).frame.height == 0  # after the term


def test_rows_follow_focus_rules_for_commitments() -> None:
    hour = datetime(2023, 1, 2, 3, tzinfo=UTC)
    rows = commitment_rows(contract(**PARTIAL_UPFRONT, region="us-east-1"), JAN, busy(hour, "3600"))
    usage = rows.filter(pl.col("ChargeCategory") == "Usage")
    purchase = rows.filter(pl.col("ChargeCategory") == "Purchase")
    assert set(usage["BilledCost"]) == {Decimal(0)} and set(purchase["EffectiveCost"]) == {Decimal(0)}
    assert "Usage-Based" not in set(purchase["ChargeFrequency"])
    assert purchase["CommitmentDiscountStatus"].null_count() == purchase["CapacityReservationStatus"].null_count() == 2
    assert set(usage["PricingCategory"]) == {"Committed"}
    unused = usage.filter(pl.col("CommitmentDiscountStatus") == "Unused")
    assert unused["ConsumedQuantity"].null_count() == unused["ConsumedUnit"].null_count() == unused.height
    used = usage.filter(pl.col("CommitmentDiscountStatus") == "Used").row(0, named=True)
    assert (used["ResourceId"], used["ConsumedQuantity"], used["CapacityReservationStatus"]) == (
        SERVING,
        Decimal(1),
        "Used",
    )
    assert (used["CommitmentDiscountCategory"], used["CommitmentDiscountType"], used["CommitmentDiscountUnit"]) == (
        "Usage", "Reserved GPU Capacity", "GPU-Hours"
    )  # fmt: skip
    assert (used["ServiceName"], used["ServiceCategory"], used["RegionId"]) == (
        "Lambda Reserved GPU Capacity", "Compute", "us-east-1"
    )  # fmt: skip
    assert used["ChargeDescription"] == f"Reserved 4 × H100 SXM (rc-2023-001): used by {SERVING}"
    for column in ("CommitmentDiscountId", "CapacityReservationId", "SkuPriceId"):
        assert set(rows[column]) == {"rc-2023-001"}


def test_usage_from_inference_usage_rows() -> None:
    usage = pl.DataFrame(
        {
            "hour": [datetime(2023, 1, 1, 0, tzinfo=UTC)] * 3,
            "source": ["otel"] * 3,
            "deployment": [SERVING, SERVING, "api.openai.com"],
            "provider": ["vllm", "vllm", "openai"],
            "model": ["qwen", "qwen", "gpt-4.1"],
            "feature": ["code_review", "search", "support_chat"],
            "environment": ["prod"] * 3,
            "gpu_seconds": [Decimal("1800.5"), Decimal("1799.5"), Decimal("0")],
        },
        schema_overrides={"gpu_seconds": pl.Decimal(38, 6)},
    )
    rows = commitment_rows(contract(hourly_rate_total="4"), JAN, usage)
    first = rows.filter(pl.col("ChargePeriodStart") == datetime(2023, 1, 1, tzinfo=UTC)).filter(
        pl.col("ChargeCategory") == "Usage"
    )
    assert first.sort("CommitmentDiscountStatus", descending=True).select("ResourceId", "EffectiveCost").rows() == [
        (SERVING, Decimal(1)), ("rc-2023-001", Decimal(3))
    ]  # fmt: skip


def test_ingest_loads_and_reconciles(duckdb_warehouse: Warehouse) -> None:
    config = parse_config(
        "sources:\n  - name: reserved\n    type: reserved_capacity\n    contracts:\n"
        "      - {id: rc-1, provider: Lambda, gpu_type: H100, gpu_count: 64, start: 2023-01-01, end: 2024-01-01,\n"
        "         hourly_rate_per_gpu: 2.10, upfront: 100000, deployments: [vllm]}\n"
    )
    summary = ingest(duckdb_warehouse, config, "reserved", "2023-01")
    assert summary.rows == 2 + 744 and summary.loaded_billed_cost == Decimal("199993.6")
    assert duckdb_warehouse.read("SELECT difference FROM v_reconciliation").row(0) == (0,)


def test_config_validation() -> None:
    def reserved(contract_yaml: str) -> str:
        return f"sources:\n  - name: r\n    type: reserved_capacity\n    contracts:\n      - {contract_yaml}\n"

    base = "id: a, provider: X, gpu_type: H100, gpu_count: 8, start: 2025-01-01, end: 2026-01-01"
    assert connector("reserved_capacity") is reserved_capacity
    source = parse_config(reserved(f"{{{base}, hourly_rate_total: 16.8}}")).sources[0]
    assert isinstance(source, ReservedCapacitySource) and source.contracts[0].hourly_total == Decimal("16.8")
    with pytest.raises(ConfigError, match="set exactly one of hourly_rate_per_gpu or hourly_rate_total"):
        parse_config(reserved(f"{{{base}}}"))
    late = base.replace("start: 2025-01-01", "start: '2025-01-01T00:30:00Z'")
    with pytest.raises(ConfigError, match="is not on the hour"):
        parse_config(reserved(f"{{{late}, hourly_rate_total: 1}}"))
    backwards = base.replace("start: 2025-01-01, end: 2026-01-01", "start: 2026-01-01, end: 2025-01-01")
    with pytest.raises(ConfigError, match="end must be after start"):
        parse_config(reserved(f"{{{backwards}, hourly_rate_total: 1}}"))
    with pytest.raises(ConfigError, match=r"contract ids must be unique; repeated: \['a'\]"):
        parse_config(reserved(f"{{{base}, hourly_rate_total: 1}}\n      - {{{base}, hourly_rate_total: 2}}"))


def test_demo_contract_is_valid_and_bills_its_terms() -> None:
    from pipelines.demo import reserved as demo
    from pipelines.demo.company import DemoMonth

    config = parse_config(json.dumps({"sources": [demo.source_config(DemoMonth("2025-06"))],
                                      "allocation": {"pools": [demo.pool_config()]}}))  # fmt: skip
    source = config.sources[0]
    assert isinstance(source, ReservedCapacitySource)
    assert source.contracts[0].deployments == [demo.DEPLOYMENT_RESERVED_QWEN]
    june = reserved_capacity.load(source, BillingPeriod("2025-06"))
    january = reserved_capacity.load(source, BillingPeriod("2025-01"))
    assert june.source_total == 4 * Decimal("2.10") * 720 == june.frame["BilledCost"].sum()
    assert january.source_total == Decimal(12_000) + 4 * Decimal("2.10") * 744
    assert june.frame.filter(pl.col("ChargeCategory") == "Usage").height == 720


def test_rows_carry_account_region_names_and_unit_prices() -> None:
    """FOCUS 1.2: BillingAccountType-C-005-C, BillingAccountName-C-003-C, RegionName-C-005-C, and unit prices
    on every Usage/Purchase row (ListUnitPrice-C-005-C, ContractedUnitPrice-C-006-C) that × PricingQuantity
    match the costs (ListCost-C-009-C; the validator allows 1e-9 relative)."""
    hour = datetime(2023, 1, 1, tzinfo=UTC)
    term = contract(**PARTIAL_UPFRONT, region="eu-north1", region_name="Finland", billing_account_name="Lumen")
    rows = commitment_rows(term, JAN, busy(hour, "10800"), billing_account_id="reserved")
    assert set(rows["BillingAccountName"]) == {"Lumen"} and set(rows["BillingAccountType"]) == {"Billing Account"}
    assert set(rows["RegionName"]) == {"Finland"}
    for price, cost in (("ListUnitPrice", "ListCost"), ("ContractedUnitPrice", "ContractedCost")):
        assert rows[price].null_count() == 0
        for p, q, c in rows.select(price, "PricingQuantity", cost).iter_rows():
            assert abs(p * q - c) <= Decimal("1e-9") * max(abs(c), 1)
    defaults = commitment_rows(contract(**PARTIAL_UPFRONT, region="eu-north1"), JAN, None, billing_account_id="rc")
    assert set(defaults["BillingAccountName"]) == {"rc"} and set(defaults["RegionName"]) == {"eu-north1"}
