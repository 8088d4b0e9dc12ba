-- The mart: COGS, idle, waste and unit costs per feature and day (features idle and unallocated included).
CREATE TABLE IF NOT EXISTS feature_costs_daily (
    date DATE NOT NULL,
    billing_period VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    cogs DECIMAL(38, 12) NOT NULL,
    direct_cost DECIMAL(38, 12) NOT NULL,
    shared_cost DECIMAL(38, 12) NOT NULL,
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
