-- DB A: orders. Ids are UUIDv7, so id order is creation order and inserts
-- land at the right edge of the primary key.
CREATE TABLE orders (
    id              TEXT   PRIMARY KEY,
    customer_id     TEXT   NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    reason          TEXT   NOT NULL DEFAULT '',
    items           TEXT   NOT NULL, -- JSON array of {"sku","quantity"}
    created_at      BIGINT NOT NULL, -- Unix microseconds, as every time column
    updated_at      BIGINT NOT NULL,
    left_pending_at BIGINT           -- when the order reached its first final state
);
CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_status ON orders (status, id);

CREATE TABLE idempotency_keys (
    key          TEXT   PRIMARY KEY,
    request_hash TEXT   NOT NULL,
    order_id     TEXT   NOT NULL REFERENCES orders (id),
    created_at   BIGINT NOT NULL
);
