-- Detected anomalies: one row per run of consecutive anomalous days of a series, with drivers (JSON).
CREATE TABLE IF NOT EXISTS cost_anomalies (
    anomaly_id VARCHAR NOT NULL,
    billing_period VARCHAR NOT NULL,
    series_id VARCHAR NOT NULL,
    dimension VARCHAR NOT NULL,
    dimension_value VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    start_date DATE NOT NULL,
    end_date DATE NOT NULL,
    days BIGINT NOT NULL,
    actual DOUBLE PRECISION NOT NULL,
    expected DOUBLE PRECISION NOT NULL,
    impact_usd DOUBLE PRECISION NOT NULL,
    max_score DOUBLE PRECISION NOT NULL,
    drivers JSON,
    detected_at TIMESTAMPTZ NOT NULL
);
