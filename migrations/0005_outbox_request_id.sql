-- A press retried with the same Idempotency-Key carries the same request id;
-- on the outbox path it must find its first row rather than add a second
-- one for the relay to send again. Sent rows are pruned, so this holds while
-- the first row is kept; the reducer's dedup covers the rest.
CREATE UNIQUE INDEX outbox_request_id_key ON outbox (request_id);
