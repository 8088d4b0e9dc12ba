-- Audit: what each rule took in a month (charges, parts, amounts), in the order finance reads rules.
-- rule_id: unused_commitment, tag:<key>, direct:<name>, pool:<name>[:no_usage],
-- overhead:<name>[:no_basis], unmatched (see docs/allocation.md).
CREATE OR REPLACE VIEW v_allocation_rules AS
SELECT
    x_billing_period AS billing_period,
    rule_id,
    allocation_kind,
    driver,
    COUNT(DISTINCT x_charge_id) AS charges,
    COUNT(*) AS parts,
    COUNT(DISTINCT feature) AS features,
    SUM(effective_cost) AS effective_cost,
    SUM(billed_cost) AS billed_cost
FROM cost_allocations
GROUP BY x_billing_period, rule_id, allocation_kind, driver;
