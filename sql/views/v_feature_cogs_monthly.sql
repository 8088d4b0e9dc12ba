-- COGS and unit costs per feature and billing period (idle and unallocated shown as their own rows).
CREATE OR REPLACE VIEW v_feature_cogs_monthly AS
SELECT
    billing_period,
    feature,
    SUM(cogs) AS cogs,
    SUM(direct_cost) AS direct_cost,
    SUM(shared_cost) AS shared_cost,
    SUM(waste_cost) AS waste_cost,
    SUM(requests) AS requests,
    SUM(useful_outputs) AS useful_outputs,
    CAST(CASE WHEN SUM(useful_outputs) > 0 THEN SUM(cogs) / SUM(useful_outputs) END AS DECIMAL(38, 12))
        AS cost_per_useful_output,
    CAST(CASE WHEN SUM(requests) > 0 THEN SUM(cogs) / SUM(requests) END AS DECIMAL(38, 12)) AS cost_per_request
FROM feature_costs_daily
GROUP BY billing_period, feature;
