-- Durable alert delivery (pipelines/alerts.py): one row per (anomaly, channel), written before anything is
-- sent, so a failing channel is retried and an alert is never lost.
-- alert_id: <channel>:<anomaly_id as first queued>; anomaly_id: the anomaly the row follows now (a re-run
-- on restated data may move a run's first day; rows follow the series' overlapping run). event: what the
-- pending (or last sent) message says: new | changed | withdrawn. status: pending | retrying | sent |
-- cancelled (withdrawn before anything was sent). attempts: failed attempts of the current message;
-- deliveries: messages delivered so far; sent_impact_usd: the impact the last one told. anomaly: the
-- anomaly row the message is built from (JSON).
CREATE TABLE IF NOT EXISTS alert_outbox (
    alert_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    anomaly_id VARCHAR NOT NULL,
    series_id VARCHAR NOT NULL,
    start_date DATE NOT NULL,
    end_date DATE NOT NULL,
    impact_usd DOUBLE PRECISION NOT NULL,
    event VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    attempts BIGINT NOT NULL,
    deliveries BIGINT NOT NULL,
    last_error VARCHAR,
    next_attempt_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ,
    sent_impact_usd DOUBLE PRECISION,
    anomaly JSON NOT NULL
);
