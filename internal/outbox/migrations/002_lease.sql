-- Which relay publishes this outbox, and until when. Several instances of a
-- service share one database; only the holder of the lease publishes, so
-- one order's events leave in the order written and no row goes out twice in normal
-- operation. expires_at is Unix microseconds by the holder's clock.
CREATE TABLE outbox_lease (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
