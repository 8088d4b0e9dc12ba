-- One row per load of a source partition: what was read, the provider's own total, what was quarantined.
CREATE TABLE IF NOT EXISTS ingest_batches (
    batch_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    source_type VARCHAR NOT NULL,
    billing_period VARCHAR NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    files BIGINT NOT NULL,
    source_total DECIMAL(38, 12),
    loaded_billed_cost DECIMAL(38, 12),
    repairs JSON
);

-- Rows that could not be parsed, with the file, line and reason (never silently dropped).
CREATE TABLE IF NOT EXISTS ingest_quarantine (
    batch_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    billing_period VARCHAR NOT NULL,
    file VARCHAR,
    line VARCHAR,
    reason VARCHAR NOT NULL
);
