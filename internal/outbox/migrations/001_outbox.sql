-- The outbox: events written in the same transaction as the change they
-- describe, published by the relay afterwards. seq orders them; a row is
-- never deleted before it is published.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    event_type   TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    traceparent  TEXT    NOT NULL DEFAULT '',
    created_at   BIGINT  NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
