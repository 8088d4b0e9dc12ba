-- Build the feature_costs_daily mart for one billing period (:period) from cost_allocations,
-- inference_usage and cost_classes. Cost is EffectiveCost (amortized); billed_cost is kept for
-- reconciliation. Usage counts only the COGS-class traffic (a (feature, environment) missing from
-- cost_classes counts as COGS). Waste is the COGS share of failed and retried requests (at most all).
DELETE FROM feature_costs_daily WHERE billing_period = :period;

INSERT INTO feature_costs_daily (
    date, billing_period, feature, effective_cost, cogs, rnd_cost, opex_cost,
    direct_cost, shared_cost, idle_cost, overhead_cost, unallocated_cost, billed_cost, waste_cost,
    requests, succeeded, failed, retried, useful_outputs, input_tokens, output_tokens, gpu_seconds,
    cost_per_useful_output, cost_per_request, cost_per_1k_tokens
)
WITH cost AS (
    SELECT
        charge_date AS date,
        feature,
        SUM(effective_cost) AS effective_cost,
        SUM(CASE WHEN cost_class = 'cogs' THEN effective_cost ELSE 0 END) AS cogs,
        SUM(CASE WHEN cost_class = 'rnd' THEN effective_cost ELSE 0 END) AS rnd_cost,
        SUM(CASE WHEN cost_class = 'opex' THEN effective_cost ELSE 0 END) AS opex_cost,
        SUM(CASE WHEN allocation_kind = 'direct' THEN effective_cost ELSE 0 END) AS direct_cost,
        SUM(CASE WHEN allocation_kind = 'shared' THEN effective_cost ELSE 0 END) AS shared_cost,
        SUM(CASE WHEN allocation_kind = 'idle' THEN effective_cost ELSE 0 END) AS idle_cost,
        SUM(CASE WHEN allocation_kind = 'overhead' THEN effective_cost ELSE 0 END) AS overhead_cost,
        SUM(CASE WHEN allocation_kind = 'unallocated' THEN effective_cost ELSE 0 END) AS unallocated_cost,
        SUM(billed_cost) AS billed_cost
    FROM cost_allocations
    WHERE x_billing_period = :period
    GROUP BY charge_date, feature
),
used AS (
    SELECT
        CAST(u.hour AT TIME ZONE 'UTC' AS DATE) AS date,
        u.feature,
        SUM(u.requests) AS requests,
        SUM(u.succeeded) AS succeeded,
        SUM(u.failed) AS failed,
        SUM(u.retried) AS retried,
        SUM(u.useful_outputs) AS useful_outputs,
        SUM(u.input_tokens) AS input_tokens,
        SUM(u.output_tokens) AS output_tokens,
        SUM(u.gpu_seconds) AS gpu_seconds
    FROM inference_usage AS u
    LEFT JOIN cost_classes AS k
        ON k.billing_period = u.billing_period
        AND k.feature = u.feature
        AND (k.environment = u.environment OR (k.environment IS NULL AND u.environment IS NULL))
    WHERE u.billing_period = :period AND COALESCE(k.cost_class, 'cogs') = 'cogs'
    GROUP BY CAST(u.hour AT TIME ZONE 'UTC' AS DATE), u.feature
    -- GPU metrics rows (busy/provisioned GPU-seconds only) measure capacity, not a feature's use.
    HAVING SUM(u.requests) > 0 OR SUM(u.input_tokens + u.output_tokens) > 0 OR SUM(u.gpu_seconds) > 0
),
joined AS (
    SELECT
        COALESCE(c.date, u.date) AS date,
        COALESCE(c.feature, u.feature) AS feature,
        COALESCE(c.effective_cost, 0) AS effective_cost,
        COALESCE(c.cogs, 0) AS cogs,
        COALESCE(c.rnd_cost, 0) AS rnd_cost,
        COALESCE(c.opex_cost, 0) AS opex_cost,
        COALESCE(c.direct_cost, 0) AS direct_cost,
        COALESCE(c.shared_cost, 0) AS shared_cost,
        COALESCE(c.idle_cost, 0) AS idle_cost,
        COALESCE(c.overhead_cost, 0) AS overhead_cost,
        COALESCE(c.unallocated_cost, 0) AS unallocated_cost,
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
    effective_cost,
    cogs,
    rnd_cost,
    opex_cost,
    direct_cost,
    shared_cost,
    idle_cost,
    overhead_cost,
    unallocated_cost,
    billed_cost,
    CAST(
        CASE
            WHEN requests = 0 THEN 0
            WHEN failed + retried >= requests THEN cogs
            ELSE cogs * (failed + retried) / requests
        END AS DECIMAL(38, 12)
    ),
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
