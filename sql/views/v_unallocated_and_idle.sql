-- What the month could not attribute (unallocated) and capacity nobody used (idle), per rule, provider
-- and service: the list to work down (a missing tag, a pool without telemetry, an unused commitment).
-- feature is 'idle' / 'unallocated' for lines kept as such, or the feature idle capacity was spread to.
CREATE OR REPLACE VIEW v_unallocated_and_idle AS
SELECT
    x_billing_period AS billing_period,
    allocation_kind,
    rule_id,
    provider_name,
    service_name,
    feature,
    cost_class,
    COUNT(DISTINCT x_charge_id) AS charges,
    SUM(effective_cost) AS effective_cost,
    SUM(billed_cost) AS billed_cost
FROM cost_allocations
WHERE allocation_kind IN ('idle', 'unallocated')
GROUP BY x_billing_period, allocation_kind, rule_id, provider_name, service_name, feature, cost_class;
