-- Late telemetry in closed months: per feature, COGS-class usage and COGS at the latest close vs now,
-- with the cost per useful output on both sides. Only features where something moved.
CREATE OR REPLACE VIEW v_close_usage_changes AS
WITH latest AS (
    SELECT billing_period, MAX(closed_at) AS closed_at
    FROM close_snapshot_usage
    GROUP BY billing_period
),
closed AS (
    SELECT s.*
    FROM close_snapshot_usage AS s
    JOIN latest AS l ON l.billing_period = s.billing_period AND l.closed_at = s.closed_at
),
current_lines AS (
    SELECT d.billing_period, d.feature, SUM(d.cogs) AS cogs, SUM(d.requests) AS requests,
        SUM(d.useful_outputs) AS useful_outputs
    FROM feature_costs_daily AS d
    JOIN latest AS l ON l.billing_period = d.billing_period
    GROUP BY d.billing_period, d.feature
),
compared AS (
    SELECT
        COALESCE(c.billing_period, n.billing_period) AS billing_period,
        COALESCE(c.feature, n.feature) AS feature,
        COALESCE(c.cogs, 0) AS closed_cogs,
        COALESCE(n.cogs, 0) AS current_cogs,
        COALESCE(c.requests, 0) AS closed_requests,
        COALESCE(n.requests, 0) AS current_requests,
        COALESCE(c.useful_outputs, 0) AS closed_useful_outputs,
        COALESCE(n.useful_outputs, 0) AS current_useful_outputs
    FROM closed AS c
    FULL OUTER JOIN current_lines AS n ON n.billing_period = c.billing_period AND n.feature = c.feature
)
SELECT
    p.billing_period,
    l.closed_at,
    p.feature,
    p.closed_cogs,
    p.current_cogs,
    p.closed_requests,
    p.current_requests,
    p.closed_useful_outputs,
    p.current_useful_outputs,
    CAST(CASE WHEN p.closed_useful_outputs > 0 THEN p.closed_cogs / p.closed_useful_outputs END AS DECIMAL(38, 12))
        AS closed_cost_per_useful_output,
    CAST(CASE WHEN p.current_useful_outputs > 0 THEN p.current_cogs / p.current_useful_outputs END AS DECIMAL(38, 12))
        AS current_cost_per_useful_output
FROM compared AS p
JOIN latest AS l ON l.billing_period = p.billing_period
WHERE p.closed_cogs <> p.current_cogs
   OR p.closed_requests <> p.current_requests
   OR p.closed_useful_outputs <> p.current_useful_outputs;
