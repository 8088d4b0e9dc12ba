-- Every charge row of focus_costs split to features, idle or unallocated, with the rule used
-- (models/allocation.py; docs/allocation.md is the rule reference).
-- One row per charge, UTC day of its charge period (charges spanning days are cut by time),
-- feature, environment and rule. For each x_charge_id: SUM(effective_cost) = EffectiveCost and
-- SUM(billed_cost) = BilledCost exactly. allocation_kind: direct | shared | idle | overhead | unallocated;
-- cost_class: cogs | rnd | opex. driver_quantity / driver_total: the part's and the split's driver
-- (tokens, GPU-seconds, USD at list price for priced_tokens, USD of attributed cost for overhead);
-- share: the part's fraction of the charge's amount that day.
CREATE TABLE IF NOT EXISTS cost_allocations (
    x_charge_id VARCHAR NOT NULL,
    x_source VARCHAR NOT NULL,
    x_billing_period VARCHAR NOT NULL,
    charge_period_start TIMESTAMPTZ NOT NULL,
    charge_date DATE NOT NULL,
    provider_name VARCHAR NOT NULL,
    service_name VARCHAR NOT NULL,
    charge_category VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    environment VARCHAR,
    cost_class VARCHAR NOT NULL,
    allocation_kind VARCHAR NOT NULL,
    rule_id VARCHAR NOT NULL,
    driver VARCHAR,
    driver_quantity DECIMAL(38, 12),
    driver_total DECIMAL(38, 12),
    share DECIMAL(38, 12) NOT NULL,
    effective_cost DECIMAL(38, 12) NOT NULL,
    billed_cost DECIMAL(38, 12) NOT NULL
);

-- The cost class of each (feature, environment) in the period's usage, from the same rules, so that
-- unit costs divide COGS by the usage that is COGS (production traffic), not by staging or evaluation.
CREATE TABLE IF NOT EXISTS cost_classes (
    billing_period VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    environment VARCHAR,
    cost_class VARCHAR NOT NULL
);
