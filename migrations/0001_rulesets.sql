-- Versioned game rules. `hash` is the SHA-256 of the canonical JSON of
-- `config` (keys sorted, no whitespace) as computed by button-domain's
-- Ruleset::hash; every snapshot names the ruleset that produced it.
CREATE TABLE rulesets (
    id          bigserial   PRIMARY KEY,
    version     bigint      NOT NULL UNIQUE,
    name        text        NOT NULL,
    config      jsonb       NOT NULL,
    hash        text        NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    active      boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- At most one active ruleset.
CREATE UNIQUE INDEX rulesets_one_active ON rulesets (active) WHERE active;

INSERT INTO rulesets (version, name, config, hash, active) VALUES (
    1,
    'seed',
    '{"cooldown_base_ms":{"calm":1000,"chaos":5000,"hot":5000,"warm":2000},"entropy_alpha":0.1,"entropy_floor":0.001,"max_rate_for_entropy":10.0,"reveal_ms":{"calm":5000,"chaos":30000,"hot":30000,"warm":10000},"thresholds":{"chaos":0.75,"hot":0.5,"warm":0.25},"tick_interval_ms":1000}',
    '53fa7269e2e28f1b91e020a40d7149e6b791cc08fd8d58e3b25e12000ee8aadd',
    true
);
