-- Per source and billing period: BilledCost in the warehouse vs the provider's own total from the
-- latest load (summed from the raw export before mapping). difference must be 0.
CREATE OR REPLACE VIEW v_reconciliation AS
WITH latest AS (
    SELECT source, billing_period, MAX(loaded_at) AS loaded_at
    FROM ingest_batches
    GROUP BY source, billing_period
),
loaded AS (
    SELECT x_source AS source, x_billing_period AS billing_period, SUM("BilledCost") AS warehouse_billed_cost
    FROM focus_costs
    GROUP BY x_source, x_billing_period
)
SELECT
    b.source,
    b.billing_period,
    b.batch_id,
    b.source_total AS provider_total,
    COALESCE(l.warehouse_billed_cost, 0) AS warehouse_billed_cost,
    COALESCE(l.warehouse_billed_cost, 0) - b.source_total AS difference,
    b.rows_loaded,
    b.rows_quarantined
FROM ingest_batches AS b
JOIN latest AS t ON t.source = b.source AND t.billing_period = b.billing_period AND t.loaded_at = b.loaded_at
LEFT JOIN loaded AS l ON l.source = b.source AND l.billing_period = b.billing_period
WHERE b.source_total IS NOT NULL;
