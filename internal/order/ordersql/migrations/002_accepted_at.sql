-- When the order service received the request that placed the order, before
-- it waited for a transaction (created_at is taken inside the transaction
-- that stores it). Orders placed before this column have none.
ALTER TABLE orders ADD COLUMN accepted_at BIGINT;
