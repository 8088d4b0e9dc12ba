-- The steps from provider bills to a feature's cost (cogs explain, the report's waterfall): per month,
-- feature, provider, kind of allocation and class. Sum over classes = the feature's cost; class cogs = COGS.
CREATE OR REPLACE VIEW v_feature_waterfall AS
SELECT
    x_billing_period AS billing_period,
    feature,
    provider_name,
    allocation_kind,
    cost_class,
    SUM(effective_cost) AS effective_cost,
    SUM(billed_cost) AS billed_cost,
    COUNT(DISTINCT x_charge_id) AS charges
FROM cost_allocations
GROUP BY x_billing_period, feature, provider_name, allocation_kind, cost_class;
