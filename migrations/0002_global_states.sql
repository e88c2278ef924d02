-- Append-only snapshots of the one global state: the source of truth.
-- `offsets` holds the last applied offset per partition ({"0": 41, ...}),
-- written in the same transaction as the state it produced.
CREATE TABLE global_states (
    id               bigserial        PRIMARY KEY,
    -- The snapshot this one was folded from (0 = genesis). UNIQUE makes a
    -- second writer that folded from the same parent fail instead of
    -- forking the history (a paused reducer that wakes up after another
    -- took over, for instance).
    parent_id        bigint           NOT NULL UNIQUE CHECK (parent_id >= 0 AND parent_id < id),
    counter          bigint           NOT NULL CHECK (counter >= 0),
    phase            text             NOT NULL CHECK (phase IN ('CALM', 'WARM', 'HOT', 'CHAOS')),
    entropy          double precision NOT NULL CHECK (entropy >= 0 AND entropy <= 1),
    cooldown_ms      bigint           NOT NULL,
    reveal_until_ms  bigint           NOT NULL,
    last_press_ms    bigint,
    last_tick_ms     bigint,
    rules_hash       text             NOT NULL REFERENCES rulesets (hash),
    offsets          jsonb            NOT NULL,
    batch_size       bigint           NOT NULL CHECK (batch_size >= 0),
    first_event_ms   bigint,
    last_event_ms    bigint,
    committed_at     timestamptz      NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION global_states_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'global_states is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER global_states_append_only
    BEFORE UPDATE OR DELETE ON global_states
    FOR EACH ROW EXECUTE FUNCTION global_states_append_only();
