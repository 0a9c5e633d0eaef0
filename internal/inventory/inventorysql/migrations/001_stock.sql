-- DB B: stock and reservations. The CHECKs are the last line of defence:
-- whatever the code does, stock cannot go negative or be over-reserved.
CREATE TABLE stock (
    sku        TEXT   PRIMARY KEY,
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    updated_at BIGINT NOT NULL -- Unix microseconds, as every time column
);

-- One row per order inventory has heard of: active, released, rejected, or
-- cancelled (the cancel arrived before the order).
CREATE TABLE reservations (
    order_id   TEXT   PRIMARY KEY,
    status     TEXT   NOT NULL CHECK (status IN ('active', 'released', 'rejected', 'cancelled')),
    reason     TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE reservation_items (
    order_id TEXT    NOT NULL REFERENCES reservations (order_id),
    sku      TEXT    NOT NULL REFERENCES stock (sku),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX reservation_items_by_sku ON reservation_items (sku);
