"""The allocation engine: pools, drivers, idle, exactness; helpers shared with test_allocation_scenarios."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.allocation import allocate, allocate_batches
from models.config import AllocationConfig, FeatureConfig
from models.focus import MONEY
from models.usage import INFERENCE_USAGE_SCHEMA, USAGE_MEASURES

T0 = datetime(2026, 10, 1, tzinfo=UTC)


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
    category: str = "Usage",
    service: str = "svc",
    account: str = "acct",
    sku: str | None = None,
) -> dict[str, object]:
    return {
        "x_charge_id": cid,
        "x_source": source,
        "x_billing_period": "2026-10",
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start + timedelta(hours=hours),
        "ChargeCategory": category,
        "CommitmentDiscountStatus": status,
        "EffectiveCost": Decimal(cost),
        "BilledCost": Decimal(billed if billed is not None else cost),
        "ResourceId": resource,
        "SubAccountId": account,
        "SkuId": sku,
        "ServiceName": service,
        "ProviderName": source.upper(),
        "Tags": tags,
    }


def charges(*rows: dict[str, object]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), infer_schema_length=None).with_columns(
        pl.col("EffectiveCost", "BilledCost").cast(MONEY)
    )


def use(
    hour: datetime,
    feature: str,
    *,
    deployment: str = "vllm",
    provider: str = "vllm",
    model: str = "m",
    env: str | None = "production",
    tokens: int = 0,
    output: int = 0,
    cached: int = 0,
    gpu: str = "0",
    requests: int = 1,
    provisioned: str = "0",
) -> dict[str, object]:
    return {
        "hour": hour,
        "source": "otel",
        "deployment": deployment,
        "provider": provider,
        "model": model,
        "feature": feature,
        "environment": env,
        "requests": requests,
        "succeeded": requests,
        "failed": 0,
        "retried": 0,
        "accepted": 0,
        "useful_outputs": requests,
        "input_tokens": tokens,
        "output_tokens": output,
        "cached_input_tokens": cached,
        "gpu_seconds": Decimal(gpu),
        "gpu_seconds_provisioned": Decimal(provisioned),
        "billing_period": "2026-10",
        "batch_id": "b",
    }


def usage(*rows: dict[str, object]) -> pl.DataFrame:
    """inference_usage rows; measures a row does not give are 0, as the connectors write them."""
    frame = pl.DataFrame(list(rows), schema=INFERENCE_USAGE_SCHEMA)
    return frame.with_columns(pl.col(m).fill_null(0) for m in USAGE_MEASURES)


def config(**allocation: Any) -> AllocationConfig:
    return AllocationConfig.model_validate(allocation)


def by_part(rows: pl.DataFrame, cid: str) -> dict[tuple[str, str], tuple[str, Decimal]]:
    """(feature, kind) → (rule id, effective cost) of one charge's rows."""
    mine = rows.filter(pl.col("x_charge_id") == cid)
    return {
        (r["feature"], r["allocation_kind"]): (r["rule_id"], r["effective_cost"]) for r in mine.iter_rows(named=True)
    }


def assert_conserved(bill: pl.DataFrame, rows: pl.DataFrame) -> None:
    """Every charge's parts add up to its EffectiveCost and BilledCost exactly; no charge is missing."""
    sums = rows.group_by("x_charge_id").agg(pl.col("effective_cost").sum(), pl.col("billed_cost").sum())
    expected = bill.select("x_charge_id", "EffectiveCost", "BilledCost")
    joined = expected.join(sums, on="x_charge_id", how="full", coalesce=True).sort("x_charge_id")
    assert joined.height == bill.height
    assert joined["effective_cost"].to_list() == joined["EffectiveCost"].to_list()
    assert joined["billed_cost"].to_list() == joined["BilledCost"].to_list()


GPU_POOL = {
    "name": "gpu_cluster",
    "charges": {"tags": {"cluster": "prod"}},
    "usage": {"deployments": ["vllm"]},
    "driver": "gpu_seconds",
    "gpus_per_resource": 8,
}
CONFIG = config(
    feature_tag_keys=["feature", "app"],
    pools=[
        GPU_POOL,
        {"name": "openai", "charges": {"source": "openai"}, "usage": {"providers": ["openai"]}, "driver": "tokens"},
    ],
)


def test_tagged_charge_goes_to_its_feature_first_key_wins() -> None:
    rows = allocate(charges(charge("c1", "12.5", tags='{"app":"search","feature":"chat"}')), usage(), CONFIG)
    assert by_part(rows, "c1") == {("chat", "direct"): ("tag:feature", Decimal("12.5"))}
    assert rows.row(0, named=True)["share"] == Decimal(1) and rows["driver"].to_list() == [None]


def test_shared_gpu_cluster_split_by_gpu_seconds_with_idle_kept_as_a_line() -> None:
    # one node of 8 GPUs for an hour = 28,800 GPU-seconds provisioned; 7,200 + 14,400 used
    u = usage(use(T0, "chat", gpu="7200"), use(T0, "code", gpu="14400"))
    rows = allocate(charges(charge("c1", "32.7726", tags='{"cluster":"prod"}')), u, CONFIG)
    assert by_part(rows, "c1") == {
        ("chat", "shared"): ("pool:gpu_cluster", Decimal("8.19315")),
        ("code", "shared"): ("pool:gpu_cluster", Decimal("16.3863")),
        ("idle", "idle"): ("pool:gpu_cluster", Decimal("8.19315")),
    }
    shown = rows.sort("feature").select("driver", "driver_quantity", "driver_total", "share").rows()
    assert shown == [
        ("gpu_seconds", Decimal(7200), Decimal(28800), Decimal("0.25")),
        ("gpu_seconds", Decimal(14400), Decimal(28800), Decimal("0.5")),
        ("gpu_seconds", Decimal(7200), Decimal(28800), Decimal("0.25")),
    ]


def test_idle_spread_over_the_pools_features_stays_visible_as_idle_rows() -> None:
    spread = config(pools=[GPU_POOL | {"idle": "spread"}])
    u = usage(use(T0, "chat", gpu="7200"), use(T0, "code", gpu="14400"))
    rows = allocate(charges(charge("c1", "32.7726", tags='{"cluster":"prod"}')), u, spread)
    assert by_part(rows, "c1") == {
        ("chat", "shared"): ("pool:gpu_cluster", Decimal("8.19315")),
        ("chat", "idle"): ("pool:gpu_cluster", Decimal("2.73105")),  # a third of the idle 8.19315
        ("code", "shared"): ("pool:gpu_cluster", Decimal("16.3863")),
        ("code", "idle"): ("pool:gpu_cluster", Decimal("5.4621")),
    }
    idle = rows.filter(pl.col("allocation_kind") == "idle").sort("feature")
    # the idle rows show the feature's use out of all use (what they were spread by)
    assert idle.select("driver_quantity", "driver_total").rows() == [
        (Decimal(7200), Decimal(21600)),
        (Decimal(14400), Decimal(21600)),
    ]
    assert idle["share"].to_list() == [Decimal("0.083333333333"), Decimal("0.166666666667")]


def test_a_period_nobody_used_is_all_idle_even_when_idle_spreads() -> None:
    spread = config(pools=[GPU_POOL | {"idle": "spread"}])
    rows = allocate(charges(charge("c1", "32.7726", tags='{"cluster":"prod"}')), usage(), spread)
    assert by_part(rows, "c1") == {("idle", "idle"): ("pool:gpu_cluster", Decimal("32.7726"))}


def test_capacity_from_gpu_metrics_in_the_usage() -> None:
    telemetry = config(
        pools=[{k: v for k, v in GPU_POOL.items() if k != "gpus_per_resource"} | {"capacity": "telemetry"}]
    )
    # DCGM says 16 GPUs were held for the hour (57,600 GPU-seconds); features used 14,400 of them
    u = usage(use(T0, "unattributed", provisioned="57600"), use(T0, "chat", gpu="14400"))
    rows = allocate(charges(charge("c1", "100", tags='{"cluster":"prod"}')), u, telemetry)
    assert by_part(rows, "c1") == {
        ("chat", "shared"): ("pool:gpu_cluster", Decimal(25)),
        ("idle", "idle"): ("pool:gpu_cluster", Decimal(75)),
    }


def test_daily_api_charge_uses_the_days_usage_and_a_pool_without_usage_is_unallocated() -> None:
    day2 = T0 + timedelta(days=1)
    u = usage(
        use(T0 + timedelta(hours=3), "chat", deployment="api", provider="openai", tokens=300),
        use(T0 + timedelta(hours=20), "docs", deployment="api", provider="openai", tokens=100),
    )
    bill = charges(
        charge("d1", "10.00", hours=24, source="openai"), charge("d2", "4.00", start=day2, hours=24, source="openai")
    )
    rows = allocate(bill, u, CONFIG)
    assert by_part(rows, "d1") == {
        ("chat", "shared"): ("pool:openai", Decimal("7.5")),
        ("docs", "shared"): ("pool:openai", Decimal("2.5")),
    }
    assert by_part(rows, "d2") == {("unallocated", "unallocated"): ("pool:openai:no_usage", Decimal(4))}


def test_unused_commitment_is_idle_and_unmatched_is_unallocated() -> None:
    bill = charges(charge("sp", "4.12", status="Unused", resource=None), charge("s3", "0.91", resource="bucket"))
    rows = allocate(bill, usage(), CONFIG)
    assert by_part(rows, "sp") == {("idle", "idle"): ("unused_commitment", Decimal("4.12"))}
    assert by_part(rows, "s3") == {("unallocated", "unallocated"): ("unmatched", Decimal("0.91"))}


def test_billed_cost_split_separately_from_effective_cost() -> None:
    # Savings-Plan-covered usage: billed at on-demand, effective at the SP rate; both must add back.
    u = usage(use(T0, "a", gpu="1"), use(T0, "b", gpu="1"), use(T0, "c", gpu="1"))
    pool = {k: v for k, v in GPU_POOL.items() if k != "gpus_per_resource"}
    rows = allocate(
        charges(charge("c", "22.9408", billed="32.7726", tags='{"cluster":"prod"}')), u, config(pools=[pool])
    )
    # running totals 1/3, 2/3 of the amount, each rounded to the 12th decimal
    assert rows["effective_cost"].to_list() == [
        Decimal("7.646933333333"),
        Decimal("7.646933333334"),
        Decimal("7.646933333333"),
    ]
    assert rows["billed_cost"].to_list() == [Decimal("10.9242")] * 3


def test_price_weighted_tokens_by_longest_model_prefix_cached_and_default_prices() -> None:
    priced = config(
        pools=[
            {
                "name": "api",
                "charges": {"source": "openai"},
                "usage": {"providers": ["openai"]},
                "driver": "priced_tokens",
            }
        ],
        token_prices={
            "models": {
                "gpt-4.1": {"input": "2.00", "cached_input": "0.50", "output": "8.00"},
                "gpt-4.1-mini": {"input": "0.40", "output": "1.60"},  # cached input priced as input
            }
        },
    )
    u = usage(
        # 1M input of which 400k cached, 100k output: 600k×2 + 400k×0.5 + 100k×8 = 2.2 USD at list
        use(
            T0, "chat", provider="openai", model="gpt-4.1-2025-04-14", tokens=1_000_000, cached=400_000, output=100_000
        ),
        # 1M input (200k cached, at the input price), 500k output: 1M×0.4 + 500k×1.6 = 1.2 USD
        use(
            T0,
            "docs",
            provider="openai",
            model="gpt-4.1-mini-2025-04-14",
            tokens=1_000_000,
            cached=200_000,
            output=500_000,
        ),
        # no price: the default (input 1, output 4 per 1M): 100k×1 + 100k×4 = 0.5
        use(T0, "search", provider="openai", model="o3", tokens=100_000, output=100_000),
    )
    rows = allocate(charges(charge("d", "39", source="openai")), u, priced)
    assert by_part(rows, "d") == {
        ("chat", "shared"): ("pool:api", Decimal(22)),
        ("docs", "shared"): ("pool:api", Decimal(12)),
        ("search", "shared"): ("pool:api", Decimal(5)),
    }
    assert rows.sort("feature")["driver_quantity"].to_list() == [Decimal("2.2"), Decimal("1.2"), Decimal("0.5")]


def test_requests_and_any_usage_measure_drive_a_pool() -> None:
    u = usage(
        use(T0, "chat", deployment="emb", requests=3, output=10),
        use(T0, "docs", deployment="emb", requests=1, output=30),
    )
    bill = charges(charge("e", "8", source="emb"))
    for driver, expected in (("requests", (Decimal(6), Decimal(2))), ("output_tokens", (Decimal(2), Decimal(6)))):
        pool = {"name": "emb", "charges": {"source": "emb"}, "usage": {"deployments": ["emb"]}, "driver": driver}
        rows = allocate(bill, u, config(pools=[pool])).sort("feature")
        assert tuple(rows["effective_cost"]) == expected, driver


def test_multi_day_charges_are_cut_into_days_by_time_exactly() -> None:
    # a 31-day tax line of 100: each day gets 100/31 (3.225806451613 or ...612), adding up to 100 exactly
    rows = allocate(charges(charge("tax", "100", hours=31 * 24, category="Tax", resource=None)), usage(), CONFIG)
    assert rows.height == 31 and rows["charge_date"].n_unique() == 31
    assert rows["effective_cost"].sum() == Decimal(100)
    assert set(rows["effective_cost"]) == {Decimal("3.225806451613"), Decimal("3.225806451612")}
    assert rows.sort("charge_date")["charge_period_start"][1] == T0 + timedelta(days=1)


def test_an_empty_month_allocates_nothing() -> None:
    rows = allocate(charges(charge("x", "1")).clear(), usage(), CONFIG)
    assert rows.height == 0 and rows.columns[-2:] == ["effective_cost", "billed_cost"]


def test_a_charge_reaching_outside_its_billing_month_is_kept_whole_on_a_day_of_that_month() -> None:
    late = charge("late", "48", start=T0 - timedelta(hours=2), hours=48, category="Tax", resource=None)
    rows = allocate(charges(late), usage(), CONFIG)
    assert rows.select("charge_date", "effective_cost").rows() == [(T0.date(), Decimal(48))]


money = st.decimals(
    min_value=Decimal("-5000"), max_value=Decimal("50000"), places=10, allow_nan=False, allow_infinity=False
)
FEATURES = ["chat", "code", "docs"]
rule_sets = st.fixed_dictionaries(
    {
        "idle": st.sampled_from(["keep", "spread"]),
        "unused_commitment": st.sampled_from(["keep", "spread"]),
        "overhead": st.sampled_from(["proportional", "even", "fixed", None]),
        "token_driver": st.sampled_from(["tokens", "priced_tokens", "requests"]),
        "direct": st.booleans(),
    }
)


def random_config(rules: dict[str, Any]) -> AllocationConfig:
    overhead = []
    if rules["overhead"]:
        split = {"name": "tax", "charges": {"charge_categories": ["Tax"]}, "split": rules["overhead"]}
        if rules["overhead"] == "fixed":
            split["percentages"] = {"chat": "33.333333", "code": "33.333333", "docs": "33.333334"}
        overhead.append(split)
    direct = (
        [{"name": "acct", "charges": {"sub_account_ids": ["team-docs"]}, "feature": "docs"}] if rules["direct"] else []
    )
    return config(
        unused_commitment=rules["unused_commitment"],
        direct=direct,
        pools=[
            GPU_POOL | {"idle": rules["idle"]},
            {
                "name": "openai",
                "charges": {"source": "openai"},
                "usage": {"providers": ["openai"]},
                "driver": rules["token_driver"],
            },
        ],
        overhead=overhead,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    costs=st.lists(
        st.tuples(
            money,
            money,
            st.integers(0, 47),
            st.sampled_from([1, 1, 1, 24, 72, 1000]),  # 1000 hours reach beyond the month: kept whole
            st.sampled_from(["aws", "openai"]),
            st.sampled_from([None, '{"cluster":"prod"}', '{"feature":"chat","environment":"staging"}']),
            st.sampled_from(["Usage", "Usage", "Tax"]),
            st.sampled_from([None, None, "Unused"]),
            st.sampled_from(["acct", "team-docs"]),
        ),
        min_size=1,
        max_size=25,
    ),
    used=st.lists(
        st.tuples(
            st.integers(0, 71),
            st.sampled_from(FEATURES),
            st.sampled_from(["production", "staging", None]),
            st.integers(0, 10**9),
            st.integers(0, 10**6),
        ),
        max_size=30,
    ),
    rules=rule_sets,
)
def test_conservation_for_any_bill_usage_and_rules(costs: list, used: list, rules: dict[str, Any]) -> None:
    bill = charges(
        *(
            charge(
                f"c{i:03d}",
                str(e),
                billed=str(b),
                start=T0 + timedelta(hours=h),
                hours=n,
                source=s,
                tags=t,
                resource=f"i-{i % 3}",
                category=c,
                status=u,
                account=a,
            )
            for i, (e, b, h, n, s, t, c, u, a) in enumerate(costs)
        )
    )
    u = usage(
        *(
            use(
                T0 + timedelta(hours=h),
                f,
                deployment=d,
                provider=d if d == "openai" else "vllm",
                model="gpt-4.1",
                env=env,
                tokens=tok,
                output=tok // 7,
                cached=tok // 3,
                gpu=str(g),
                requests=1 + tok % 5,
            )
            for h, f, env, tok, g in used
            for d in ("vllm", "openai")
        )
    )
    rules_config = random_config(rules)
    features = {f: FeatureConfig() for f in FEATURES}
    rows = allocate(bill, u, rules_config, features)
    assert_conserved(bill, rows)
    assert set(rows["cost_class"]) <= {"cogs", "rnd", "opex"}
    # the same rows for any order of the input rows, and however the days are batched
    assert allocate(bill.reverse(), u.reverse(), rules_config, features).equals(rows)
    shuffled = bill.sample(fraction=1, shuffle=True, seed=1)
    batched = pl.concat(list(allocate_batches(shuffled, u, rules_config, features, batch_rows=3)))
    assert batched.sort(rows.columns).equals(rows.sort(rows.columns))
    # batches computed in parallel come out in the order one worker gives
    one_by_one = allocate_batches(shuffled, u, rules_config, features, batch_rows=3, workers=1)
    assert pl.concat(list(one_by_one)).equals(batched)


def test_rules_reading_only_tags_keep_their_place_among_other_rules() -> None:
    """Tag-only rules are checked once per distinct Tags value; precedence is still the configured order."""
    rules = config(
        direct=[
            {"name": "team_x", "charges": {"tags": {"team": "x"}}, "feature": "a"},
            {"name": "acct2", "charges": {"sub_account_ids": ["acct2"]}, "feature": "b"},
            {"name": "any_team", "charges": {"tags": {"team": "*"}}, "feature": "c"},
            {"name": "y_acct3", "charges": {"tags": {"team": "y"}, "sub_account_ids": ["acct3"]}, "feature": "d"},
        ],
    )
    bill = charges(
        charge("1", "1", tags='{"team":"x"}', account="acct2"),
        charge("2", "1", tags='{"team":"y"}', account="acct2"),
        charge("3", "1", tags='{"team":"y"}', account="acct3"),
        charge("4", "1", tags='{"team":""}', account="acct3"),
        charge("5", "1", tags='{"feature":"chat","team":"x"}'),
        charge("6", "1"),
    )
    rows = allocate(bill, usage(), rules)
    got = dict(zip(rows["x_charge_id"], zip(rows["rule_id"], rows["feature"], strict=True), strict=True))
    assert got == {
        "1": ("direct:team_x", "a"),
        "2": ("direct:acct2", "b"),
        "3": ("direct:any_team", "c"),
        "4": ("unmatched", "unallocated"),
        "5": ("tag:feature", "chat"),
        "6": ("unmatched", "unallocated"),
    }
