-- Presses per country, coarse and derived from the client's address by the
-- service (the address itself is never stored). Updated by the reducer in
-- the same transaction as the snapshot of the batch, so it counts each
-- press exactly once, as the snapshot does.
CREATE TABLE country_counts (
    country text PRIMARY KEY CHECK (country ~ '^([A-Z]{2}|unknown)$'),
    presses bigint NOT NULL CHECK (presses >= 0)
);
