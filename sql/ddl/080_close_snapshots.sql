-- Month-end close: what the month's numbers were when finance closed it (pipelines/close.py).
-- A close never changes: a provider's later restatement of a closed month shows in v_close_changes
-- (and the close pack) line by line, and `cogs close --reclose` records a new close beside the old one.
-- The latest close of a month is the one with the greatest closed_at.
--
-- One row per close and cost line: source × provider × service × charge category × feature × class ×
-- kind of allocation, the grain at which a restatement is explained (which bill moved, whose cost).
CREATE TABLE IF NOT EXISTS close_snapshots (
    billing_period VARCHAR NOT NULL,
    closed_at TIMESTAMPTZ NOT NULL,
    closed_by VARCHAR NOT NULL,
    x_source VARCHAR NOT NULL,
    provider_name VARCHAR NOT NULL,
    service_name VARCHAR NOT NULL,
    charge_category VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    cost_class VARCHAR NOT NULL,
    allocation_kind VARCHAR NOT NULL,
    charges BIGINT NOT NULL,
    effective_cost DECIMAL(38, 12) NOT NULL,
    billed_cost DECIMAL(38, 12) NOT NULL
);

-- The usage behind the unit costs at the close: per feature, COGS-class requests and useful outputs,
-- and the COGS they divided (late telemetry restates unit costs as bills restate cost).
CREATE TABLE IF NOT EXISTS close_snapshot_usage (
    billing_period VARCHAR NOT NULL,
    closed_at TIMESTAMPTZ NOT NULL,
    feature VARCHAR NOT NULL,
    cogs DECIMAL(38, 12) NOT NULL,
    requests BIGINT NOT NULL,
    useful_outputs BIGINT NOT NULL
);
