-- The mart: cost per feature and day (features idle and unallocated included), by class and by kind.
-- effective_cost = cogs + rnd_cost + opex_cost
--                = direct_cost + shared_cost + idle_cost + overhead_cost + unallocated_cost.
-- Usage counts are those of the feature's COGS-class traffic (see cost_classes): unit costs are COGS
-- divided by them. waste_cost: the COGS share of failed and retried requests.
CREATE TABLE IF NOT EXISTS feature_costs_daily (
    date DATE NOT NULL,
    billing_period VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    effective_cost DECIMAL(38, 12) NOT NULL,
    cogs DECIMAL(38, 12) NOT NULL,
    rnd_cost DECIMAL(38, 12) NOT NULL,
    opex_cost DECIMAL(38, 12) NOT NULL,
    direct_cost DECIMAL(38, 12) NOT NULL,
    shared_cost DECIMAL(38, 12) NOT NULL,
    idle_cost DECIMAL(38, 12) NOT NULL,
    overhead_cost DECIMAL(38, 12) NOT NULL,
    unallocated_cost DECIMAL(38, 12) NOT NULL,
    billed_cost DECIMAL(38, 12) NOT NULL,
    waste_cost DECIMAL(38, 12) NOT NULL,
    requests BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    retried BIGINT NOT NULL,
    useful_outputs BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    gpu_seconds DECIMAL(38, 6) NOT NULL,
    cost_per_useful_output DECIMAL(38, 12),
    cost_per_request DECIMAL(38, 12),
    cost_per_1k_tokens DECIMAL(38, 12)
);
