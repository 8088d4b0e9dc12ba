-- The month's amortized cost by class (cogs, rnd, opex) and kind of allocation: the P&L split.
CREATE OR REPLACE VIEW v_cost_by_class_monthly AS
SELECT
    x_billing_period AS billing_period,
    cost_class,
    allocation_kind,
    SUM(effective_cost) AS effective_cost,
    SUM(billed_cost) AS billed_cost
FROM cost_allocations
GROUP BY x_billing_period, cost_class, allocation_kind;
