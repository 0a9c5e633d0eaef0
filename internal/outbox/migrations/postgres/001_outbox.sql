-- The outbox on PostgreSQL: as on SQLite, with an identity column for seq
-- and bytea for the payload.
CREATE TABLE outbox (
    seq          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     TEXT    NOT NULL UNIQUE,
    event_type   TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    payload      BYTEA   NOT NULL,
    traceparent  TEXT    NOT NULL DEFAULT '',
    created_at   BIGINT  NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
