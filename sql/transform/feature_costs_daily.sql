-- Build the feature_costs_daily mart for one billing period (:period) from cost_allocations and
-- inference_usage. Cost is EffectiveCost (amortized); billed_cost is kept for reconciliation.
-- Waste is the cost share of failed and retried requests.
DELETE FROM feature_costs_daily WHERE billing_period = :period;

INSERT INTO feature_costs_daily (
    date, billing_period, feature, cogs, direct_cost, shared_cost, billed_cost, waste_cost,
    requests, succeeded, failed, retried, useful_outputs, input_tokens, output_tokens, gpu_seconds,
    cost_per_useful_output, cost_per_request, cost_per_1k_tokens
)
WITH cost AS (
    SELECT
        charge_date AS date,
        feature,
        SUM(effective_cost) AS cogs,
        SUM(CASE WHEN allocation_kind = 'direct' THEN effective_cost ELSE 0 END) AS direct_cost,
        SUM(CASE WHEN allocation_kind = 'shared' THEN effective_cost ELSE 0 END) AS shared_cost,
        SUM(billed_cost) AS billed_cost
    FROM cost_allocations
    WHERE x_billing_period = :period
    GROUP BY charge_date, feature
),
used AS (
    SELECT
        CAST(hour AT TIME ZONE 'UTC' AS DATE) AS date,
        feature,
        SUM(requests) AS requests,
        SUM(succeeded) AS succeeded,
        SUM(failed) AS failed,
        SUM(retried) AS retried,
        SUM(useful_outputs) AS useful_outputs,
        SUM(input_tokens) AS input_tokens,
        SUM(output_tokens) AS output_tokens,
        SUM(gpu_seconds) AS gpu_seconds
    FROM inference_usage
    WHERE billing_period = :period
    GROUP BY CAST(hour AT TIME ZONE 'UTC' AS DATE), feature
),
joined AS (
    SELECT
        COALESCE(c.date, u.date) AS date,
        COALESCE(c.feature, u.feature) AS feature,
        COALESCE(c.cogs, 0) AS cogs,
        COALESCE(c.direct_cost, 0) AS direct_cost,
        COALESCE(c.shared_cost, 0) AS shared_cost,
        COALESCE(c.billed_cost, 0) AS billed_cost,
        COALESCE(u.requests, 0) AS requests,
        COALESCE(u.succeeded, 0) AS succeeded,
        COALESCE(u.failed, 0) AS failed,
        COALESCE(u.retried, 0) AS retried,
        COALESCE(u.useful_outputs, 0) AS useful_outputs,
        COALESCE(u.input_tokens, 0) AS input_tokens,
        COALESCE(u.output_tokens, 0) AS output_tokens,
        COALESCE(u.gpu_seconds, 0) AS gpu_seconds
    FROM cost AS c
    FULL OUTER JOIN used AS u ON c.date = u.date AND c.feature = u.feature
)
SELECT
    date,
    :period,
    feature,
    cogs,
    direct_cost,
    shared_cost,
    billed_cost,
    CAST(CASE WHEN requests > 0 THEN cogs * (failed + retried) / requests ELSE 0 END AS DECIMAL(38, 12)),
    requests,
    succeeded,
    failed,
    retried,
    useful_outputs,
    input_tokens,
    output_tokens,
    gpu_seconds,
    CAST(CASE WHEN useful_outputs > 0 THEN cogs / useful_outputs END AS DECIMAL(38, 12)),
    CAST(CASE WHEN requests > 0 THEN cogs / requests END AS DECIMAL(38, 12)),
    CAST(CASE WHEN input_tokens + output_tokens > 0 THEN cogs * 1000 / (input_tokens + output_tokens) END
         AS DECIMAL(38, 12))
FROM joined;
