-- The CloudEvents subject of each event applied (for converge, the order it
-- is about), so that an order's deliveries can be found: its timeline reads
-- them.
ALTER TABLE inbox ADD COLUMN event_subject TEXT NOT NULL DEFAULT '';
CREATE INDEX inbox_by_subject ON inbox (event_subject);
