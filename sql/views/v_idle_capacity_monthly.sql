-- Idle capacity per rule and month, whether kept as the `idle` line (feature = 'idle') or spread over
-- the features that used the pool (feature = the feature it was spread to).
CREATE OR REPLACE VIEW v_idle_capacity_monthly AS
SELECT
    x_billing_period AS billing_period,
    rule_id,
    CASE WHEN feature = 'idle' THEN 'kept' ELSE 'spread' END AS mode,
    feature,
    SUM(effective_cost) AS effective_cost,
    SUM(billed_cost) AS billed_cost
FROM cost_allocations
WHERE allocation_kind = 'idle'
GROUP BY x_billing_period, rule_id, CASE WHEN feature = 'idle' THEN 'kept' ELSE 'spread' END, feature;
