-- Billed and amortized (effective) spend per provider, service and billing period.
CREATE OR REPLACE VIEW v_spend_by_provider AS
SELECT
    x_billing_period AS billing_period,
    "ProviderName" AS provider_name,
    "ServiceName" AS service_name,
    "ChargeCategory" AS charge_category,
    SUM("BilledCost") AS billed_cost,
    SUM("EffectiveCost") AS effective_cost,
    SUM("ListCost") AS list_cost,
    COUNT(*) AS charge_rows
FROM focus_costs
GROUP BY x_billing_period, "ProviderName", "ServiceName", "ChargeCategory";
