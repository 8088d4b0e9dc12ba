-- Restatements of closed months: each cost line whose amounts differ between the month's latest close
-- (close_snapshots) and the warehouse now (cost_allocations), with both amounts and the difference.
-- change: restated (both sides), new (a line the close did not have), removed (gone since the close).
-- Empty when nothing moved. A month never closed has no rows.
CREATE OR REPLACE VIEW v_close_changes AS
WITH latest AS (
    SELECT billing_period, MAX(closed_at) AS closed_at
    FROM close_snapshots
    GROUP BY billing_period
),
closed AS (
    SELECT s.*
    FROM close_snapshots AS s
    JOIN latest AS l ON l.billing_period = s.billing_period AND l.closed_at = s.closed_at
),
current_lines AS (
    SELECT
        a.x_billing_period AS billing_period,
        a.x_source,
        a.provider_name,
        a.service_name,
        a.charge_category,
        a.feature,
        a.cost_class,
        a.allocation_kind,
        COUNT(DISTINCT a.x_charge_id) AS charges,
        SUM(a.effective_cost) AS effective_cost,
        SUM(a.billed_cost) AS billed_cost
    FROM cost_allocations AS a
    JOIN latest AS l ON l.billing_period = a.x_billing_period
    GROUP BY
        a.x_billing_period, a.x_source, a.provider_name, a.service_name, a.charge_category, a.feature,
        a.cost_class, a.allocation_kind
),
compared AS (
    SELECT
        COALESCE(c.billing_period, n.billing_period) AS billing_period,
        COALESCE(c.x_source, n.x_source) AS x_source,
        COALESCE(c.provider_name, n.provider_name) AS provider_name,
        COALESCE(c.service_name, n.service_name) AS service_name,
        COALESCE(c.charge_category, n.charge_category) AS charge_category,
        COALESCE(c.feature, n.feature) AS feature,
        COALESCE(c.cost_class, n.cost_class) AS cost_class,
        COALESCE(c.allocation_kind, n.allocation_kind) AS allocation_kind,
        CASE WHEN c.billing_period IS NULL THEN 'new' WHEN n.billing_period IS NULL THEN 'removed' ELSE 'restated' END
            AS change,
        COALESCE(c.charges, 0) AS closed_charges,
        COALESCE(n.charges, 0) AS current_charges,
        COALESCE(c.effective_cost, 0) AS closed_effective_cost,
        COALESCE(n.effective_cost, 0) AS current_effective_cost,
        COALESCE(c.billed_cost, 0) AS closed_billed_cost,
        COALESCE(n.billed_cost, 0) AS current_billed_cost
    FROM closed AS c
    FULL OUTER JOIN current_lines AS n
        ON n.billing_period = c.billing_period
        AND n.x_source = c.x_source
        AND n.provider_name = c.provider_name
        AND n.service_name = c.service_name
        AND n.charge_category = c.charge_category
        AND n.feature = c.feature
        AND n.cost_class = c.cost_class
        AND n.allocation_kind = c.allocation_kind
)
SELECT
    p.billing_period,
    l.closed_at,
    p.x_source,
    p.provider_name,
    p.service_name,
    p.charge_category,
    p.feature,
    p.cost_class,
    p.allocation_kind,
    p.change,
    p.closed_charges,
    p.current_charges,
    p.closed_effective_cost,
    p.current_effective_cost,
    p.current_effective_cost - p.closed_effective_cost AS effective_cost_change,
    p.closed_billed_cost,
    p.current_billed_cost,
    p.current_billed_cost - p.closed_billed_cost AS billed_cost_change
FROM compared AS p
JOIN latest AS l ON l.billing_period = p.billing_period
WHERE p.closed_effective_cost <> p.current_effective_cost
   OR p.closed_billed_cost <> p.current_billed_cost
   OR p.change <> 'restated';
