-- Every charge row of focus_costs split to features, idle or unallocated, with the rule used.
-- For each x_charge_id: SUM(effective_cost) = EffectiveCost and SUM(billed_cost) = BilledCost.
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
    allocation_kind VARCHAR NOT NULL,
    rule_id VARCHAR NOT NULL,
    driver VARCHAR,
    driver_quantity DECIMAL(38, 6),
    driver_total DECIMAL(38, 6),
    effective_cost DECIMAL(38, 12) NOT NULL,
    billed_cost DECIMAL(38, 12) NOT NULL
);
