-- Charge rows whose allocations do not add back to their EffectiveCost and BilledCost (must be empty).
CREATE OR REPLACE VIEW v_allocation_gaps AS
WITH parts AS (
    SELECT x_charge_id, SUM(effective_cost) AS effective_cost, SUM(billed_cost) AS billed_cost
    FROM cost_allocations
    GROUP BY x_charge_id
)
SELECT
    f.x_charge_id,
    f.x_source,
    f.x_billing_period,
    f."EffectiveCost" AS charge_effective_cost,
    p.effective_cost AS allocated_effective_cost,
    f."BilledCost" AS charge_billed_cost,
    p.billed_cost AS allocated_billed_cost
FROM focus_costs AS f
LEFT JOIN parts AS p ON p.x_charge_id = f.x_charge_id
WHERE p.x_charge_id IS NULL
   OR p.effective_cost <> f."EffectiveCost"
   OR p.billed_cost <> f."BilledCost";
