-- Detected anomalies (models/anomaly.py): one row per run of consecutive anomalous days of a series.
-- Partition: billing_period (recomputed whole when the month is re-run, e.g. after a restatement; a run is
-- kept by every month it touches). anomaly_id = series_id@start_date, stable across re-runs.
-- dimension: feature | provider_service; metric: spend | unit_cost (cost per unit: per useful output for a
-- feature, per pricing unit for a provider's service; unit names it). actual / expected: totals over the
-- run for spend, volume-weighted means for unit_cost; impact_usd: the excess cost over the run.
-- basis: what the expected value is the median of. drivers: JSON list of
-- {dimension, child, actual, expected, delta[, estimated]} ranked per child dimension. related: JSON list
-- of provider/service anomalies folded into this one (same incident).
CREATE TABLE IF NOT EXISTS cost_anomalies (
    anomaly_id VARCHAR NOT NULL,
    billing_period VARCHAR NOT NULL,
    series_id VARCHAR NOT NULL,
    dimension VARCHAR NOT NULL,
    dimension_value VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    unit VARCHAR,
    start_date DATE NOT NULL,
    end_date DATE NOT NULL,
    days BIGINT NOT NULL,
    actual DOUBLE PRECISION NOT NULL,
    expected DOUBLE PRECISION NOT NULL,
    impact_usd DOUBLE PRECISION NOT NULL,
    max_score DOUBLE PRECISION NOT NULL,
    relative_change DOUBLE PRECISION,
    basis VARCHAR,
    drivers JSON,
    related JSON,
    detected_at TIMESTAMPTZ NOT NULL
);
