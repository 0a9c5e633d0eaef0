-- The CloudEvents subject of each event (for converge, the order it is
-- about), so that an order's events can be found: its timeline reads them.
ALTER TABLE outbox ADD COLUMN event_subject TEXT NOT NULL DEFAULT '';
CREATE INDEX outbox_by_subject ON outbox (event_subject);
