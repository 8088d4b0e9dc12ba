-- COGS, its make-up and unit costs per feature and billing period (idle and unallocated as their own
-- rows). Unit costs divide COGS by the feature's COGS-class usage; R&D and OpEx are shown beside.
CREATE OR REPLACE VIEW v_feature_cogs_monthly AS
SELECT
    billing_period,
    feature,
    SUM(cogs) AS cogs,
    SUM(direct_cost) AS direct_cost,
    SUM(shared_cost) AS shared_cost,
    SUM(idle_cost) AS idle_cost,
    SUM(overhead_cost) AS overhead_cost,
    SUM(unallocated_cost) AS unallocated_cost,
    SUM(waste_cost) AS waste_cost,
    SUM(rnd_cost) AS rnd_cost,
    SUM(opex_cost) AS opex_cost,
    SUM(effective_cost) AS effective_cost,
    SUM(billed_cost) AS billed_cost,
    SUM(requests) AS requests,
    SUM(useful_outputs) AS useful_outputs,
    SUM(input_tokens) AS input_tokens,
    SUM(output_tokens) AS output_tokens,
    CAST(CASE WHEN SUM(useful_outputs) > 0 THEN SUM(cogs) / SUM(useful_outputs) END AS DECIMAL(38, 12))
        AS cost_per_useful_output,
    CAST(CASE WHEN SUM(requests) > 0 THEN SUM(cogs) / SUM(requests) END AS DECIMAL(38, 12)) AS cost_per_request,
    CAST(
        CASE WHEN SUM(input_tokens + output_tokens) > 0 THEN SUM(cogs) * 1000 / SUM(input_tokens + output_tokens) END
        AS DECIMAL(38, 12)
    ) AS cost_per_1k_tokens
FROM feature_costs_daily
GROUP BY billing_period, feature;
