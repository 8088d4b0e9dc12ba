-- Gross margin per feature and month where finance loaded revenue into feature_revenue:
-- gross_margin = revenue - COGS; gross_margin_pct = gross_margin / revenue (null without revenue).
CREATE OR REPLACE VIEW v_feature_margin_monthly AS
WITH revenue AS (
    SELECT SUBSTRING(CAST(date AS VARCHAR), 1, 7) AS billing_period, feature, SUM(revenue) AS revenue
    FROM feature_revenue
    GROUP BY SUBSTRING(CAST(date AS VARCHAR), 1, 7), feature
),
cogs AS (
    SELECT billing_period, feature, SUM(cogs) AS cogs, SUM(useful_outputs) AS useful_outputs
    FROM feature_costs_daily
    GROUP BY billing_period, feature
)
SELECT
    r.billing_period,
    r.feature,
    r.revenue,
    COALESCE(c.cogs, 0) AS cogs,
    r.revenue - COALESCE(c.cogs, 0) AS gross_margin,
    CAST(CASE WHEN r.revenue <> 0 THEN (r.revenue - COALESCE(c.cogs, 0)) / r.revenue END AS DECIMAL(38, 12))
        AS gross_margin_pct,
    CAST(CASE WHEN c.useful_outputs > 0 THEN r.revenue / c.useful_outputs END AS DECIMAL(38, 12))
        AS revenue_per_useful_output
FROM revenue AS r
LEFT JOIN cogs AS c ON c.billing_period = r.billing_period AND c.feature = r.feature;
