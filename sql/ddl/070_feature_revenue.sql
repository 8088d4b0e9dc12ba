-- Revenue per feature and day in the billing currency, loaded by finance (optional).
-- v_feature_margin_monthly turns it into gross margin per feature.
CREATE TABLE IF NOT EXISTS feature_revenue (
    date DATE NOT NULL,
    feature VARCHAR NOT NULL,
    revenue DECIMAL(38, 12) NOT NULL
);
