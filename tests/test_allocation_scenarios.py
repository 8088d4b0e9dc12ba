"""Rule scenarios finance can read: precedence, direct rules, overhead, classification, the FOCUS spec's
commitment examples, config errors, and the warehouse side (mart, views, ``cogs explain``)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from models.allocation import allocate, usage_classes, waterfall_steps
from models.config import ConfigError, FeatureConfig, parse_config
from models.focus import conform
from pipelines.cli import app
from pipelines.warehouse import Warehouse
from tests.test_allocation import GPU_POOL, T0, assert_conserved, by_part, charge, charges, config, usage, use

FIXTURES = Path(__file__).parent / "fixtures" / "focus_spec"
FEATURES = {
    "chat": FeatureConfig(),
    "code": FeatureConfig(),
    "trainer": FeatureConfig(workload="training"),
    "playground": FeatureConfig(workload="free_tier"),
    "copilot": FeatureConfig(workload="internal", cost_class="cogs"),  # finance books it as COGS anyway
}


# --- precedence --------------------------------------------------------------------------------------------


def test_the_first_rule_in_documented_precedence_takes_the_charge() -> None:
    rules = config(
        direct=[
            {"name": "docs_account", "charges": {"sub_account_ids": ["team-docs"]}, "feature": "docs"},
            {"name": "also_docs", "charges": {"sub_account_ids": ["team-docs"]}, "feature": "code"},
        ],
        pools=[GPU_POOL],
        overhead=[{"name": "tax", "charges": {"charge_categories": ["Tax"]}, "split": "even", "features": ["chat"]}],
    )
    everything = '{"feature":"chat","cluster":"prod"}'
    bill = charges(
        charge("1_unused", "1", status="Unused", tags=everything, account="team-docs", category="Tax"),
        charge("2_tag", "1", tags=everything, account="team-docs", category="Tax"),
        charge("3_direct", "1", tags='{"cluster":"prod"}', account="team-docs", category="Tax"),
        charge("4_pool", "1", tags='{"cluster":"prod"}', category="Tax"),
        charge("5_overhead", "1", category="Tax"),
        charge("6_nothing", "1"),
    )
    u = usage(use(T0, "chat", gpu="28800"))
    rows = allocate(bill, u, rules, {"chat": FeatureConfig(), "docs": FeatureConfig(), "code": FeatureConfig()})
    assert rows.select("x_charge_id", "rule_id", "feature").rows() == [
        ("1_unused", "unused_commitment", "idle"),
        ("2_tag", "tag:feature", "chat"),
        ("3_direct", "direct:docs_account", "docs"),  # the first of two matching direct rules
        ("4_pool", "pool:gpu_cluster", "chat"),
        ("5_overhead", "overhead:tax", "chat"),
        ("6_nothing", "unmatched", "unallocated"),
    ]


def test_direct_rules_match_accounts_skus_categories_prefixes_and_any_tag_value() -> None:
    rules = config(
        feature_tag_keys=[],
        direct=[
            {"name": "by_sku", "charges": {"sku_ids": ["gpt-4.1"], "source": "openai"}, "feature": "chat"},
            {"name": "by_prefix", "charges": {"resource_id_prefix": "arn:aws:s3:::code-"}, "feature": "code"},
            {"name": "any_owner", "charges": {"tags": {"owner": "*"}}, "feature": "chat", "environment": "staging"},
        ],
    )
    bill = charges(
        charge("sku", "1", source="openai", sku="gpt-4.1"),
        charge("sku_elsewhere", "1", source="aws", sku="gpt-4.1"),  # source must match too
        charge("prefix", "1", resource="arn:aws:s3:::code-artifacts"),
        charge("owner", "1", tags='{"owner":"ana"}'),
        charge("owner_empty", "1", tags='{"owner":""}'),  # an empty tag value names nothing
    )
    rows = allocate(bill, usage(), rules, FEATURES)
    assert rows.select("x_charge_id", "rule_id", "feature", "environment", "cost_class").rows() == [
        ("owner", "direct:any_owner", "chat", "staging", "rnd"),
        ("owner_empty", "unmatched", "unallocated", None, "cogs"),
        ("prefix", "direct:by_prefix", "code", None, "cogs"),
        ("sku", "direct:by_sku", "chat", None, "cogs"),
        ("sku_elsewhere", "unmatched", "unallocated", None, "cogs"),
    ]


# --- overhead ------------------------------------------------------------------------------------------------


def day_of_costs() -> pl.DataFrame:
    """A day with chat 30 (production), code 10 (staging), trainer 60 attributed, and overhead to spread."""
    return charges(
        charge("chat", "30", tags='{"feature":"chat"}'),
        charge("code", "10", tags='{"feature":"code","environment":"staging"}'),
        charge("train", "60", tags='{"feature":"trainer"}', start=T0 + timedelta(hours=5)),
        charge("nat", "5", service="NAT Gateway", start=T0 + timedelta(hours=12)),
        charge("support", "9", service="Support", resource=None),
        charge("tax", "31", category="Tax", resource=None, hours=31 * 24),
    )


def test_overhead_proportional_to_each_features_cost_that_day_keeps_its_class() -> None:
    rules = config(overhead=[{"name": "network", "charges": {"service_names": ["NAT Gateway"]}}])
    rows = allocate(day_of_costs(), usage(), rules, FEATURES)
    nat = rows.filter(pl.col("x_charge_id") == "nat").sort("feature")
    # 5 × (30, 10, 60) / 100; code's share is staging, so R&D like code's own cost
    assert nat.select("feature", "environment", "cost_class", "allocation_kind", "effective_cost").rows() == [
        ("chat", None, "cogs", "overhead", Decimal("1.5")),
        ("code", "staging", "rnd", "overhead", Decimal("0.5")),
        ("trainer", None, "rnd", "overhead", Decimal(3)),
    ]
    assert nat.select("driver", "driver_quantity", "driver_total").rows()[0] == ("cost", Decimal(30), Decimal(100))


def test_overhead_restricted_to_features_even_and_fixed_splits() -> None:
    rules = config(
        overhead=[
            {"name": "network", "charges": {"service_names": ["NAT Gateway"]}, "features": ["chat", "code"]},
            {
                "name": "support",
                "charges": {"service_names": ["Support"]},
                "split": "even",
                "features": ["chat", "code", "playground"],
            },
            {
                "name": "tax",
                "charges": {"charge_categories": ["Tax"]},
                "split": "fixed",
                "percentages": {"chat": 70, "copilot": 30},
            },
        ]
    )
    rows = allocate(day_of_costs(), usage(), rules, FEATURES)
    got = {
        cid: dict(
            rows.filter(pl.col("x_charge_id") == cid).group_by("feature").agg(pl.col("effective_cost").sum()).rows()
        )
        for cid in ("nat", "support", "tax")
    }
    assert got["nat"] == {"chat": Decimal("3.75"), "code": Decimal("1.25")}
    assert got["support"] == {"chat": Decimal(3), "code": Decimal(3), "playground": Decimal(3)}
    assert got["tax"] == {"chat": Decimal("21.7"), "copilot": Decimal("9.3")}  # over 31 days
    assert rows.filter(pl.col("x_charge_id") == "tax")["charge_date"].n_unique() == 31
    classes = dict(rows.filter(pl.col("x_charge_id") == "support").select("feature", "cost_class").rows())
    assert classes == {"chat": "cogs", "code": "cogs", "playground": "opex"}  # even/fixed: no environment


def test_overhead_by_basis_rule_and_without_basis_is_unallocated() -> None:
    rules = config(
        pools=[GPU_POOL],
        overhead=[
            {"name": "cluster_net", "charges": {"service_names": ["NAT Gateway"]}, "basis": ["pool:gpu_cluster"]}
        ],
    )
    bill = charges(
        charge("node", "80", tags='{"cluster":"prod"}'),
        charge("chat", "1000", tags='{"feature":"chat"}'),  # direct cost is not the cluster's: ignored
        charge("nat", "4", service="NAT Gateway"),
        charge("nat_day2", "4", service="NAT Gateway", start=T0 + timedelta(days=1)),  # no pool cost that day
    )
    u = usage(use(T0, "code", gpu="7200"), use(T0, "trainer", gpu="21600"))
    rows = allocate(bill, u, rules, FEATURES)
    assert by_part(rows, "nat") == {
        ("code", "overhead"): ("overhead:cluster_net", Decimal(1)),
        ("trainer", "overhead"): ("overhead:cluster_net", Decimal(3)),
    }
    assert by_part(rows, "nat_day2") == {("unallocated", "unallocated"): ("overhead:cluster_net:no_basis", Decimal(4))}


def test_unused_commitment_spread_by_the_days_cost_is_idle_on_each_feature() -> None:
    rules = config(unused_commitment="spread")
    bill = charges(
        charge("chat", "30", tags='{"feature":"chat"}'),
        charge("code", "10", tags='{"feature":"code"}'),
        charge("sp", "8", status="Unused", resource=None, billed="0"),
    )
    rows = allocate(bill, usage(), rules, FEATURES)
    assert by_part(rows, "sp") == {
        ("chat", "idle"): ("unused_commitment", Decimal(6)),
        ("code", "idle"): ("unused_commitment", Decimal(2)),
    }


# --- classification ------------------------------------------------------------------------------------------


def test_staging_share_of_a_pool_is_rnd_and_workloads_decide_the_rest() -> None:
    rules = config(
        pools=[
            GPU_POOL,
            GPU_POOL | {"name": "train_cluster", "charges": {"tags": {"cluster": "train"}}, "cost_class": "rnd"},
        ]
    )
    u = usage(
        use(T0, "chat", gpu="7200"),
        use(T0, "chat", gpu="7200", env="Staging"),  # environments match case-insensitively
        use(T0, "playground", gpu="7200"),
        use(T0, "copilot", gpu="7200"),
    )
    bill = charges(
        charge("node", "40", tags='{"cluster":"prod"}'),
        charge("train", "20", tags='{"cluster":"train"}', resource="i-2"),
    )
    rows = allocate(bill, u, rules, FEATURES)
    node = rows.filter(pl.col("x_charge_id") == "node").sort("feature", "environment")
    assert node.select("feature", "environment", "cost_class", "effective_cost").rows() == [
        ("chat", "Staging", "rnd", Decimal(10)),
        ("chat", "production", "cogs", Decimal(10)),
        ("copilot", "production", "cogs", Decimal(10)),  # internal, but the feature's cost_class says cogs
        ("playground", "production", "opex", Decimal(10)),  # free tier
    ]
    train = rows.filter(pl.col("x_charge_id") == "train")
    assert set(train["cost_class"]) == {"rnd"}  # the pool's class, idle included
    assert usage_classes(u, rules, FEATURES).rows() == [
        ("chat", "Staging", "rnd"),
        ("chat", "production", "cogs"),
        ("copilot", "production", "cogs"),
        ("playground", "production", "opex"),
    ]


def test_idle_and_unallocated_take_the_configured_classes() -> None:
    rules = config(classification={"idle": "opex", "unallocated": "rnd", "environments": {"perf": "rnd"}})
    bill = charges(
        charge("sp", "1", status="Unused"),
        charge("s3", "2"),
        charge("t", "3", tags='{"feature":"chat","environment":"perf"}'),
    )
    rows = allocate(bill, usage(), rules, FEATURES)
    assert rows.select("x_charge_id", "cost_class").rows() == [("s3", "rnd"), ("sp", "opex"), ("t", "rnd")]


# --- the FOCUS spec's commitment discount examples ----------------------------------------------------------


def spec_bill(name: str) -> pl.DataFrame:
    """A FOCUS 1.2 spec example as focus_costs rows (its blank lines dropped, "null" read as null)."""
    raw = pl.read_csv(FIXTURES / f"{name}.csv", null_values=["null"], infer_schema=False)
    raw = raw.filter(~pl.all_horizontal(pl.all().is_null()))
    required = {
        "BillingAccountId": "acct", "BillingCurrency": "USD", "InvoiceIssuerName": "Cloud", "ProviderName": "Cloud",
        "PublisherName": "Cloud", "ServiceCategory": "Compute", "ServiceName": "VMs",
    }  # fmt: skip
    filled = raw.with_columns(pl.lit(v).alias(k) for k, v in required.items() if k not in raw.columns)
    filled = filled.with_columns(
        pl.col("^.*(Start|End)$").str.to_datetime(time_zone="UTC"),
        ContractedCost=pl.col("BilledCost"),
        ListCost=pl.col("BilledCost") if "ListCost" not in raw.columns else pl.col("ListCost"),
    )
    return conform(
        filled.with_columns(
            x_charge_id=pl.format("{}:{}", pl.lit(name), pl.int_range(pl.len()).cast(pl.String)),
            x_source=pl.lit("cloud"),
            x_source_type=pl.lit("focus_file"),
            x_billing_period=pl.lit("2023-01"),
            x_batch_id=pl.lit("spec"),
        )
    )


SPEC_RULES = config(
    direct=[
        {"name": "vms", "charges": {"resource_id_prefix": "<my-", "charge_categories": ["Usage"]}, "feature": "chat"}
    ]
)
SPEC_CASES = {
    # scenario: (feature → effective, feature → billed) per the spec's totals
    "commitment_discount_usage_scenario_1": ({"chat": "1.00"}, {"chat": "0.00"}),
    "commitment_discount_usage_scenario_2": ({"idle": "1.00"}, {"idle": "0.00"}),
    "commitment_discount_usage_scenario_3": ({"chat": "0.75", "idle": "0.25"}, {"chat": "0.00", "idle": "0.00"}),
    "commitment_discount_usage_scenario_4": ({"chat": "1.50"}, {"chat": "0.50"}),
    "one_hundred_percent_utilization_without_commitment_discount_flexibility": (
        {"chat": "1.50", "unallocated": "0.00"},
        {"chat": "0.00", "unallocated": "1.50"},
    ),
    "one_hundred_percent_utilization_with_commitment_discount_flexibility_with_1_resource": (
        {"chat": "2.75", "unallocated": "0.00"},  # 0.50 covered + 2.25 on demand for the rest of the large VM
        {"chat": "2.25", "unallocated": "0.50"},
    ),
    "one_hundred_percent_utilization_with_commitment_discount_flexibility_with_2_resources": (
        {"chat": "2.00", "unallocated": "0.00"},
        {"chat": "0.00", "unallocated": "2.00"},
    ),
    "zero_percent_utilization_without_commitment_discount_flexibility": (
        {"chat": "2.00", "idle": "1.50", "unallocated": "0.00"},
        {"chat": "2.00", "idle": "0.00", "unallocated": "1.50"},
    ),
}


@pytest.mark.parametrize("scenario", sorted(SPEC_CASES))
def test_focus_spec_commitment_scenarios_allocate_to_their_totals(scenario: str) -> None:
    bill = spec_bill(scenario)
    rows = allocate(bill, usage(), SPEC_RULES, FEATURES)
    assert_conserved(bill, rows)
    per_commitment = (
        rows.join(bill.select("x_charge_id", "CommitmentDiscountId"), on="x_charge_id")
        .group_by("CommitmentDiscountId")
        .agg(pl.col("effective_cost").sum(), pl.col("billed_cost").sum())
    )
    expected = bill.group_by("CommitmentDiscountId").agg(pl.col("EffectiveCost").sum(), pl.col("BilledCost").sum())
    assert sorted(per_commitment.rows(), key=str) == sorted(expected.rows(), key=str)
    effective, billed = SPEC_CASES[scenario]
    by_feature = rows.group_by("feature").agg(pl.col("effective_cost").sum(), pl.col("billed_cost").sum())
    assert {f: e for f, e, _ in by_feature.rows()} == {f: Decimal(v) for f, v in effective.items()}
    assert {f: b for f, _, b in by_feature.rows()} == {f: Decimal(v) for f, v in billed.items()}


def test_focus_spec_one_year_upfront_purchase_stays_in_the_month_that_billed_it() -> None:
    bill = spec_bill("commitment_discount_purchase_scenario_1")  # BilledCost 8760 for all of 2023, EffectiveCost 0
    rows = allocate(bill, usage(), SPEC_RULES, FEATURES)
    # its period reaches beyond its billing month: not cut by day, dated on the purchase day
    assert rows.select("charge_date", "feature", "rule_id", "effective_cost", "billed_cost").rows() == [
        (date(2023, 1, 1), "unallocated", "unmatched", Decimal(0), Decimal(8760))
    ]
    assert rows["charge_period_start"].to_list() == bill["ChargePeriodStart"].to_list()


# --- configuration errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allocation", "message"),
    [
        (
            {"direct": [{"name": "d", "charges": {"source": "aws"}, "feature": "ghost"}]},
            "direct rule 'd' names unknown feature 'ghost'; features: ['chat']",
        ),
        (
            {"overhead": [{"name": "o", "charges": {"source": "aws"}, "split": "fixed", "percentages": {"chat": 60}}]},
            "overhead rule 'o': percentages must sum to 100, they sum to 60",
        ),
        (
            {"overhead": [{"name": "o", "charges": {"source": "aws"}, "split": "even", "features": ["chat", "x"]}]},
            "overhead rule 'o' names unknown features ['x']",
        ),
        (
            {"overhead": [{"name": "o", "charges": {"source": "aws"}, "percentages": {"chat": 100}}]},
            "overhead rule 'o': percentages are only used with split: fixed",
        ),
        (
            {"overhead": [{"name": "o", "charges": {"source": "aws"}, "basis": ["pool:nope"]}]},
            "overhead rule 'o': basis names unknown rules ['pool:nope']",
        ),
        (
            {
                "direct": [{"name": "same", "charges": {"source": "aws"}, "feature": "chat"}],
                "overhead": [{"name": "same", "charges": {"source": "aws"}}],
            },
            "allocation rule names must be unique across direct, pools and overhead: ['same']",
        ),
        ({"direct": [{"name": "d", "charges": {}, "feature": "chat"}]}, "rule 'd': charges matches every charge"),
        (
            {"direct": [{"name": "d", "charges": {"charge_categories": ["Fee"]}, "feature": "chat"}]},
            "unknown ChargeCategory ['Fee']; FOCUS allows ['Usage', 'Purchase', 'Tax', 'Credit', 'Adjustment']",
        ),
        (
            {"pools": [{"name": "p", "charges": {"source": "aws"}, "usage": {}, "driver": "latency"}]},
            "unknown driver 'latency'",
        ),
        (
            {
                "pools": [
                    {"name": "p", "charges": {"source": "aws"}, "usage": {}, "driver": "gpu_seconds", "idle": "spread"}
                ]
            },
            "pool 'p': idle: spread needs gpus_per_resource or capacity: telemetry",
        ),
        (
            {"token_prices": {"models": {"m": {"input": "0.0000001", "output": 1}}}},
            "token prices take at most 6 decimals, got 1E-7",
        ),
        (
            {"direct": [{"name": "d", "charges": {"source": "gcp"}, "feature": "chat"}]},
            "allocation rule 'd' names unknown source 'gcp'",
        ),
    ],
)
def test_invalid_rules_are_refused_naming_the_rule(allocation: dict[str, object], message: str) -> None:
    text = yaml.safe_dump(
        {
            "sources": [{"name": "aws", "type": "focus_file", "path": "x"}],
            "features": {"chat": {}},
            "allocation": allocation,
        }
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert message in str(info.value)


# --- warehouse: the mart, the views and cogs explain ----------------------------------------------------------


def month_in_warehouse(wh: Warehouse) -> None:
    """A small month: chat on a shared GPU node (prod + staging), trainer tagged, NAT overhead, revenue."""
    rules = config(
        pools=[GPU_POOL | {"idle": "spread"}],
        overhead=[{"name": "network", "charges": {"service_names": ["NAT Gateway"]}}],
    )
    bill = charges(
        charge("node", "64", tags='{"cluster":"prod"}'),
        charge("trainer", "20", tags='{"feature":"trainer"}', resource="i-9"),
        charge("nat", "6.4", service="NAT Gateway", resource=None),
    )
    u = usage(
        use(T0, "chat", gpu="10800", requests=900),
        use(T0, "chat", gpu="3600", requests=300, env="staging"),
    ).with_columns(failed=pl.lit(90), useful_outputs=pl.lit(600))
    rows = allocate(bill, u, rules, FEATURES)
    classes = usage_classes(u, rules, FEATURES).with_columns(billing_period=pl.lit("2026-10"))
    with wh.transaction() as conn:
        wh.insert("cost_allocations", rows, conn)
        wh.insert("inference_usage", u, conn)
        wh.insert("cost_classes", classes, conn)
        wh.insert(
            "feature_revenue",
            pl.DataFrame({"date": [date(2026, 10, 1)], "feature": ["chat"], "revenue": [Decimal(100)]}),
            conn,
        )
    wh.run_sql_file("transform/feature_costs_daily.sql", period="2026-10")


def test_mart_splits_cogs_rnd_and_kinds_and_divides_cogs_by_production_usage(warehouse: Warehouse) -> None:
    month_in_warehouse(warehouse)
    mart = warehouse.read(
        "SELECT feature, effective_cost, cogs, rnd_cost, direct_cost, shared_cost, idle_cost, overhead_cost, "
        "requests, useful_outputs, waste_cost, cost_per_useful_output FROM feature_costs_daily ORDER BY feature"
    )
    # The node's 64: 28,800 GPU-s provisioned, chat used 10,800 in production and 3,600 in staging, so
    # shared 24 + 8 and the idle 32 spread 24 + 8: production 48 (COGS), staging 16 (R&D). The NAT's 6.4
    # follows the day's cost: chat production 48, chat staging 16, trainer 20 (out of 84).
    assert mart.rows() == [
        (
            "chat",
            Decimal("68.876190476190"),  # 64 + 3.657142857143 + 1.219047619047
            Decimal("51.657142857143"),  # 48 + 6.4 × 48/84
            Decimal("17.219047619047"),  # 16 + 6.4 × 16/84
            Decimal(0),
            Decimal(32),
            Decimal(32),
            Decimal("4.876190476190"),
            900,  # production requests only: staging is R&D
            600,
            Decimal("5.165714285714"),  # 90 failed of 900 × COGS
            Decimal("0.086095238095"),  # COGS / 600 useful outputs
        ),
        (
            "trainer",
            Decimal("21.523809523810"),
            Decimal(0),
            Decimal("21.523809523810"),  # a training workload is R&D
            Decimal(20),
            Decimal(0),
            Decimal(0),
            Decimal("1.523809523810"),
            0,
            0,
            Decimal(0),
            None,
        ),
    ]


def test_views_show_margin_classes_idle_rules_and_the_waterfall(warehouse: Warehouse) -> None:
    month_in_warehouse(warehouse)
    margin = warehouse.read(
        "SELECT feature, revenue, cogs, gross_margin, gross_margin_pct FROM v_feature_margin_monthly"
    )
    assert margin.rows() == [
        ("chat", Decimal(100), Decimal("51.657142857143"), Decimal("48.342857142857"), Decimal("0.483428571429"))
    ]
    idle = warehouse.read(
        "SELECT mode, feature, SUM(effective_cost) AS cost FROM v_idle_capacity_monthly GROUP BY 1, 2 ORDER BY 2"
    )
    assert idle.rows() == [("spread", "chat", Decimal(32))]
    rules = warehouse.read(
        "SELECT rule_id, SUM(charges) AS charges, SUM(effective_cost) AS cost FROM v_allocation_rules "
        "GROUP BY rule_id ORDER BY rule_id"
    )
    assert rules.rows() == [
        ("overhead:network", 1, Decimal("6.4")),
        ("pool:gpu_cluster", 2, Decimal(64)),  # one charge, counted once per kind (shared, idle)
        ("tag:feature", 1, Decimal(20)),
    ]
    classes = warehouse.read(
        "SELECT cost_class, SUM(effective_cost) AS cost FROM v_cost_by_class_monthly GROUP BY 1 ORDER BY 1"
    )
    assert classes.rows() == [("cogs", Decimal("51.657142857143")), ("rnd", Decimal("38.742857142857"))]
    steps = warehouse.read(
        "SELECT allocation_kind, SUM(effective_cost) AS cost FROM v_feature_waterfall WHERE feature = 'chat' "
        "GROUP BY 1 ORDER BY 1"
    )
    assert steps.rows() == [("idle", Decimal(32)), ("overhead", Decimal("4.876190476190")), ("shared", Decimal(32))]


def test_cogs_explain_prints_the_waterfall_from_bills_to_unit_cost(duckdb_warehouse: Warehouse, tmp_path: Path) -> None:
    month_in_warehouse(duckdb_warehouse)
    path = tmp_path / "cogs.yaml"
    path.write_text(yaml.safe_dump({"warehouse": duckdb_warehouse.url}))
    result = CliRunner().invoke(
        app, ["explain", "--feature", "chat", "--month", "2026-10", "--config", str(path)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "│" in line]
    steps = [[cell.strip() for cell in line.split("│")[1:4]] for line in lines[:6]]
    assert steps == [
        ["AWS bill · shared", "$32.00", "$32.00"],
        ["AWS bill · idle", "$32.00", "$64.00"],
        ["AWS bill · overhead", "$4.88", "$68.88"],
        ["= attributed cost", "$68.88", ""],
        ["− R&D (non-production, training, evaluation)", "-$17.22", "$51.66"],
        ["= COGS", "$51.66", ""],
    ]
    assert "÷ 600 useful outputs = per useful output" in result.output and "$0.0861" in result.output
    assert "pool:gpu_cluster" in result.output and "overhead:network" in result.output  # the rules behind it
    missing = CliRunner().invoke(app, ["explain", "--feature", "nope", "--month", "2026-10", "--config", str(path)])
    assert missing.exit_code == 1 and "no cost for feature 'nope' in 2026-10" in missing.output


def test_waterfall_steps_subtract_rnd_and_opex_to_reach_cogs() -> None:
    parts = pl.DataFrame(
        {
            "provider_name": ["AWS", "AWS", "OpenAI"],
            "allocation_kind": ["shared", "overhead", "shared"],
            "cost_class": ["cogs", "opex", "rnd"],
            "cost": [Decimal(50), Decimal(5), Decimal(20)],
        }
    )
    steps = waterfall_steps(parts, {"useful_outputs": 1000, "cost_per_useful_output": Decimal("0.05")})
    assert steps == [
        ("AWS bill · shared", Decimal(50), Decimal(50)),
        ("AWS bill · overhead", Decimal(5), Decimal(55)),
        ("OpenAI bill · shared", Decimal(20), Decimal(75)),
        ("= attributed cost", Decimal(75), None),
        ("− R&D (non-production, training, evaluation)", Decimal(-20), Decimal(55)),
        ("− OpEx (free tier, internal)", Decimal(-5), Decimal(50)),
        ("= COGS", Decimal(50), None),
        ("÷ 1,000 useful outputs = per useful output", Decimal("0.05"), None),
    ]


def test_changing_a_rule_changes_the_numbers_and_keeps_every_charge_whole() -> None:
    bill = charges(charge("api", "100", source="openai", hours=24), charge("node", "32", tags='{"cluster":"prod"}'))
    u = usage(
        use(T0, "chat", provider="openai", model="gpt-4.1", tokens=1_000, output=3_000),  # expensive output
        use(T0, "code", provider="openai", model="gpt-4.1", tokens=3_000, output=1_000),
        use(T0, "chat", gpu="7200"),
    )
    api = {"name": "api", "charges": {"source": "openai"}, "usage": {"providers": ["openai"]}}
    prices = {"models": {"gpt-4.1": {"input": "2", "output": "8"}}}
    before = allocate(bill, u, config(pools=[api, GPU_POOL]), FEATURES)
    after = allocate(
        bill,
        u,
        config(pools=[api | {"driver": "priced_tokens"}, GPU_POOL | {"idle": "spread"}], token_prices=prices),
        FEATURES,
    )
    assert dict(by_part(before, "api").values()) != dict(by_part(after, "api").values())
    assert by_part(before, "api")[("chat", "shared")][1] == Decimal(50)  # tokens: 4k each
    assert by_part(after, "api")[("chat", "shared")][1] == Decimal(65)  # priced: 2k + 24k of 26k + 14k
    assert ("idle", "idle") in by_part(before, "node") and ("chat", "idle") in by_part(after, "node")
    assert_conserved(bill, before)
    assert_conserved(bill, after)
