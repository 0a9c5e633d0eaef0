-- The inbox: one row per event a consumer has applied, written in the same
-- transaction as the event's effects, so a redelivery changes nothing.
CREATE TABLE inbox (
    consumer   TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    event_type TEXT   NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
