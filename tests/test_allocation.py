from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from models.allocation import allocate
from models.config import AllocationConfig
from models.focus import MONEY
from models.usage import INFERENCE_USAGE_SCHEMA

T0 = datetime(2026, 10, 1, tzinfo=UTC)
CONFIG = AllocationConfig.model_validate(
    {
        "feature_tag_keys": ["feature", "app"],
        "pools": [
            {
                "name": "gpu_cluster",
                "charges": {"tags": {"cluster": "prod"}},
                "usage": {"deployments": ["vllm"]},
                "driver": "gpu_seconds",
                "gpus_per_resource": 8,
            },
            {"name": "openai", "charges": {"source": "openai"}, "usage": {"providers": ["openai"]}, "driver": "tokens"},
        ],
    }
)


def charge(
    cid: str,
    cost: str,
    *,
    start: datetime = T0,
    hours: int = 1,
    source: str = "aws",
    tags: str | None = None,
    resource: str | None = "i-1",
    status: str | None = None,
    billed: str | None = None,
) -> dict[str, object]:
    return {
        "x_charge_id": cid,
        "x_source": source,
        "x_billing_period": "2026-10",
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start + timedelta(hours=hours),
        "ChargeCategory": "Usage",
        "CommitmentDiscountStatus": status,
        "EffectiveCost": Decimal(cost),
        "BilledCost": Decimal(billed if billed is not None else cost),
        "ResourceId": resource,
        "SubAccountId": "acct",
        "ServiceName": "svc",
        "ProviderName": source.upper(),
        "Tags": tags,
    }


def charges(*rows: dict[str, object]) -> pl.DataFrame:
    return pl.DataFrame(list(rows)).with_columns(pl.col("EffectiveCost", "BilledCost").cast(MONEY))


def usage(*rows: tuple[datetime, str, str, str, int, str]) -> pl.DataFrame:
    """(hour, deployment, provider, feature, tokens, gpu_seconds)"""
    return pl.DataFrame(
        [
            {
                "hour": h,
                "source": "otel",
                "deployment": d,
                "provider": p,
                "model": "m",
                "feature": f,
                "environment": "prod",
                "requests": 1,
                "succeeded": 1,
                "failed": 0,
                "retried": 0,
                "accepted": 0,
                "useful_outputs": 1,
                "input_tokens": t,
                "output_tokens": 0,
                "cached_input_tokens": 0,
                "gpu_seconds": Decimal(g),
                "billing_period": "2026-10",
                "batch_id": "b",
            }
            for h, d, p, f, t, g in rows
        ],
        schema=INFERENCE_USAGE_SCHEMA,
    )


def by_feature(rows: pl.DataFrame, cid: str) -> dict[str, tuple[str, str, Decimal]]:
    return {
        r["feature"]: (r["allocation_kind"], r["rule_id"], r["effective_cost"])
        for r in rows.filter(pl.col("x_charge_id") == cid).iter_rows(named=True)
    }


def test_tagged_charge_goes_to_its_feature_first_key_wins() -> None:
    rows = allocate(charges(charge("c1", "12.5", tags='{"app":"search","feature":"chat"}')), usage(), CONFIG)
    assert by_feature(rows, "c1") == {"chat": ("direct", "tag:feature", Decimal("12.5"))}


def test_shared_gpu_cluster_split_by_gpu_seconds_with_idle_explicit() -> None:
    # one node of 8 GPUs for an hour = 28,800 GPU-seconds provisioned; 7,200 + 14,400 used
    u = usage((T0, "vllm", "vllm", "chat", 0, "7200"), (T0, "vllm", "vllm", "code", 0, "14400"))
    rows = allocate(charges(charge("c1", "32.7726", tags='{"cluster":"prod"}')), u, CONFIG)
    assert by_feature(rows, "c1") == {
        "chat": ("shared", "pool:gpu_cluster", Decimal("8.1931500000")),
        "code": ("shared", "pool:gpu_cluster", Decimal("16.3863000000")),
        "idle": ("idle", "pool:gpu_cluster", Decimal("8.1931500000")),
    }


def test_daily_api_charge_uses_the_days_usage_and_pool_without_usage_is_unallocated() -> None:
    day2 = T0 + timedelta(days=1)
    u = usage(
        (T0 + timedelta(hours=3), "api", "openai", "chat", 300, "0"),
        (T0 + timedelta(hours=20), "api", "openai", "docs", 100, "0"),
    )
    rows = allocate(
        charges(
            charge("d1", "10.00", hours=24, source="openai"),
            charge("d2", "4.00", start=day2, hours=24, source="openai"),
        ),
        u,
        CONFIG,
    )
    assert by_feature(rows, "d1") == {
        "chat": ("shared", "pool:openai", Decimal("7.5")),
        "docs": ("shared", "pool:openai", Decimal("2.5")),
    }
    assert by_feature(rows, "d2") == {"unallocated": ("unallocated", "pool:openai:no_usage", Decimal("4"))}


def test_unused_commitment_is_idle_and_unmatched_is_unallocated() -> None:
    rows = allocate(
        charges(charge("sp", "4.12", status="Unused", resource=None), charge("s3", "0.91", resource="bucket")),
        usage(),
        CONFIG,
    )
    assert by_feature(rows, "sp") == {"idle": ("idle", "unused_commitment", Decimal("4.12"))}
    assert by_feature(rows, "s3") == {"unallocated": ("unallocated", "unmatched", Decimal("0.91"))}


def test_billed_cost_split_separately_from_effective_cost() -> None:
    # Savings-Plan-covered usage: billed at on-demand, effective at the SP rate; both must add back.
    u = usage((T0, "vllm", "vllm", "a", 0, "1"), (T0, "vllm", "vllm", "b", 0, "1"), (T0, "vllm", "vllm", "c", 0, "1"))
    config = AllocationConfig.model_validate(
        {
            "pools": [
                {
                    "name": "p",
                    "charges": {"tags": {"cluster": "prod"}},
                    "usage": {"deployments": ["vllm"]},
                    "driver": "gpu_seconds",
                }
            ]
        }
    )
    rows = allocate(charges(charge("c", "22.9408", billed="32.7726", tags='{"cluster":"prod"}')), u, config)
    assert rows["effective_cost"].to_list() == [
        Decimal("7.646933333334"),
        Decimal("7.646933333333"),
        Decimal("7.646933333333"),
    ]
    assert rows["billed_cost"].to_list() == [Decimal("10.9242000000")] * 3


money = st.decimals(
    min_value=Decimal("-5000"), max_value=Decimal("50000"), places=10, allow_nan=False, allow_infinity=False
)


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(
        st.tuples(
            money,
            money,
            st.integers(0, 5),
            st.sampled_from(["aws", "openai"]),
            st.sampled_from([None, '{"cluster":"prod"}', '{"feature":"x"}']),
        ),
        min_size=1,
        max_size=25,
    ),
    used=st.lists(
        st.tuples(
            st.integers(0, 5), st.sampled_from(["chat", "code", "docs"]), st.integers(0, 10**9), st.integers(0, 10**6)
        ),
        max_size=30,
    ),
)
def test_conservation_for_any_bill_and_usage(costs: list, used: list) -> None:
    bill = charges(
        *(
            charge(
                f"c{i:03d}",
                str(e),
                billed=str(b),
                start=T0 + timedelta(hours=h),
                source=s,
                tags=t,
                resource=f"i-{i % 3}",
            )
            for i, (e, b, h, s, t) in enumerate(costs)
        )
    )
    u = usage(
        *(
            (T0 + timedelta(hours=h), d, d if d == "openai" else "vllm", f, tok, str(g))
            for h, f, tok, g in used
            for d in ("vllm", "openai")
        )
    )
    rows = allocate(bill, u, CONFIG)
    sums = (
        rows.group_by("x_charge_id")
        .agg(pl.col("effective_cost").sum(), pl.col("billed_cost").sum())
        .sort("x_charge_id")
    )
    expected = bill.select("x_charge_id", "EffectiveCost", "BilledCost").sort("x_charge_id")
    assert sums["x_charge_id"].to_list() == expected["x_charge_id"].to_list()
    assert sums["effective_cost"].to_list() == expected["EffectiveCost"].to_list()
    assert sums["billed_cost"].to_list() == expected["BilledCost"].to_list()
    # and the result does not depend on the order of the input rows
    again = allocate(bill.reverse(), u.reverse(), CONFIG)
    assert again.equals(rows)
