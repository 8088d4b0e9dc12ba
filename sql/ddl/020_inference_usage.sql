-- Hourly inference usage per deployment × provider × model × feature × environment (× customer).
-- Partition: (source, billing_period). Counts are adjusted for trace sampling.
-- customer: HMAC-SHA256 pseudonym of the customer id (raw only when the source config allows it); NULL
--   when the source names no customer. useful_output_rule: the versioned definition useful_outputs was
--   counted with (e.g. 'accepted@v2'); NULL for sources without outcomes (GPU metrics).
-- input_tokens include cached_input_tokens and cache_creation_input_tokens; output_tokens include
-- reasoning_tokens. gpu_seconds: GPU time of the row's requests; gpu_seconds_busy/_provisioned: GPU
-- metrics of the deployment (idle = provisioned - busy).
CREATE TABLE IF NOT EXISTS inference_usage (
    hour TIMESTAMPTZ NOT NULL,
    source VARCHAR NOT NULL,
    deployment VARCHAR,
    provider VARCHAR,
    model VARCHAR,
    feature VARCHAR NOT NULL,
    environment VARCHAR,
    customer VARCHAR,
    useful_output_rule VARCHAR,
    requests BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    retried BIGINT NOT NULL,
    accepted BIGINT NOT NULL,
    useful_outputs BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_creation_input_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    gpu_seconds DECIMAL(38, 6) NOT NULL,
    gpu_seconds_busy DECIMAL(38, 6) NOT NULL,
    gpu_seconds_provisioned DECIMAL(38, 6) NOT NULL,
    billing_period VARCHAR NOT NULL,
    batch_id VARCHAR NOT NULL
);
