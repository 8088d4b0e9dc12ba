-- Amortized and billed spend per UTC day and provider (multi-day charges cut by time, as allocated):
-- the spend trend of the close pack and the weekly flash.
CREATE OR REPLACE VIEW v_spend_daily_by_provider AS
SELECT
    charge_date AS date,
    x_billing_period AS billing_period,
    provider_name,
    SUM(effective_cost) AS effective_cost,
    SUM(billed_cost) AS billed_cost
FROM cost_allocations
GROUP BY charge_date, x_billing_period, provider_name;
