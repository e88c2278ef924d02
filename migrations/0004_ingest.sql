-- The two ingest paths that keep presses in PostgreSQL (see the README's
-- "Three ways in"). `kafka`, the default, uses neither table.

-- `outbox`: the transactional outbox. The service inserts a press and
-- answers 202 with the row's id; `button-relay` claims pending rows
-- (FOR UPDATE SKIP LOCKED, so several relays share the work), produces
-- them to the topic, and marks them sent in the same transaction. A relay
-- killed between the broker's ack and its commit leaves the rows pending,
-- so they are sent again: the reducer drops the repeated request id.
-- Claiming by state, never by "id above the last one sent", is what keeps
-- a row whose transaction commits after a higher id from being stepped over.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    request_id      text        NOT NULL,
    -- The topic record, byte for byte (button-domain's PressRecord).
    payload         bytea       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- A failed row waits until then (exponential backoff).
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz,
    -- Where the broker stored it (the last send, when it was sent twice).
    sent_partition  integer,
    sent_offset     bigint
);

-- The relay's claim reads pending rows in id order; the partial index
-- stays as small as the backlog.
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
-- Pruning reads sent rows by age.
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE state = 'sent';

-- `direct`: no broker. The service inserts a press here (a repeated
-- request id returns the first row's id) and the reducer folds rows in id
-- order, keeping the last id it applied in the snapshot's offsets under
-- partition "0". The reader takes a SHARE lock before each read, which
-- waits for every insert in flight, so no id below what it reads can still
-- commit later (store::read_presses).
CREATE TABLE presses (
    id          bigserial   PRIMARY KEY,
    request_id  text        NOT NULL UNIQUE,
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Wakes the relay and the direct reader; both also poll, so a notification
-- lost (or sent while they were away) only costs the poll interval.
CREATE FUNCTION notify_ingest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_NAME, '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ingest();
CREATE TRIGGER presses_notify AFTER INSERT ON presses
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ingest();
