-- Hourly inference usage per deployment × provider × model × feature × environment.
-- Partition: (source, billing_period). Counts are adjusted for trace sampling.
CREATE TABLE IF NOT EXISTS inference_usage (
    hour TIMESTAMPTZ NOT NULL,
    source VARCHAR NOT NULL,
    deployment VARCHAR,
    provider VARCHAR,
    model VARCHAR,
    feature VARCHAR NOT NULL,
    environment VARCHAR,
    requests BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    retried BIGINT NOT NULL,
    accepted BIGINT NOT NULL,
    useful_outputs BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    gpu_seconds DECIMAL(38, 6) NOT NULL,
    billing_period VARCHAR NOT NULL,
    batch_id VARCHAR NOT NULL
);
