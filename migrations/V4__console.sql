-- The operator console (issue 13). What it lists, filters and searches comes from here, through
-- indexes: never from reading the dead-letter queue message by message.

-- One row per message that went to the dead-letter queue, written when it dies (by the worker,
-- after the broker confirmed the dead letter; by `dlq`/the console when they park one), and
-- moved on by `dlq replay`/`purge` and the console. The queue stays the truth for what can be
-- replayed; this is its index, with the story of each message.
CREATE TABLE dead_letters (
    message_id       text PRIMARY KEY,           -- the AMQP message id
    source           text NOT NULL CHECK (source IN ('submission', 'download')),
    moka_id          text NOT NULL DEFAULT '',   -- '' when the message is not a readable envelope
    name             text,                       -- the payload's name, if any
    kind             text NOT NULL,              -- validation, envelope, database, attachment, delivery_limit, ...
    message          text NOT NULL,              -- what went wrong, naming every bad field
    fields           jsonb NOT NULL DEFAULT '[]', -- [{field, problem}] of a validation failure
    attempts         integer NOT NULL,
    first_failed_at  timestamptz,
    died_at          timestamptz NOT NULL DEFAULT now(),
    failed_by        text,
    received_at      timestamptz,
    tonce            bigint,
    payload          text NOT NULL,              -- the raw payload (a download: its job)
    state            text NOT NULL DEFAULT 'dead' CHECK (state IN ('dead', 'parked', 'replayed', 'purged')),
    changed_at       timestamptz,                -- when an operator last moved it (replay, purge, park)
    changed_by       text,
    indexed_at       timestamptz NOT NULL DEFAULT now()  -- when this row was last written as dead (database clock)
);
-- The dead-letter page: what is in the queue (dead or parked), newest first, by reason; and the
-- history (one state), newest first.
CREATE INDEX dead_letters_queue_died_idx ON dead_letters (died_at DESC) WHERE state IN ('dead', 'parked');
CREATE INDEX dead_letters_queue_kind_idx ON dead_letters (kind, died_at DESC) WHERE state IN ('dead', 'parked');
CREATE INDEX dead_letters_state_died_idx ON dead_letters (state, died_at DESC);
-- A candidate's dead letters (its timeline), and the field filter.
CREATE INDEX dead_letters_moka_id_idx ON dead_letters (moka_id, died_at DESC);
CREATE INDEX dead_letters_fields_idx ON dead_letters USING gin (fields jsonb_path_ops);

-- Every operator action: who, when, what filter, how many; a long replay writes its progress here.
CREATE TABLE console_audit (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    username     text NOT NULL,
    action       text NOT NULL CHECK (action IN ('replay', 'purge', 'park', 'reindex')),
    filter       jsonb NOT NULL DEFAULT '{}',   -- the selection as asked: ids, or the filter
    requested    integer NOT NULL,              -- messages the confirmation named
    done         integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    finished_at  timestamptz,
    detail       text
);
CREATE INDEX console_audit_at_idx ON console_audit (at DESC);

-- Console sessions, kept here so that several consoles behind a load balancer share them. The
-- cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE console_sessions (
    token_sha256  bytea PRIMARY KEY,
    username      text NOT NULL,
    csrf          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- Candidate search by prefix (name, phone, email, Moka id), whatever the database's collation.
CREATE INDEX candidates_name_prefix_idx ON candidates (name text_pattern_ops);
CREATE INDEX candidates_phone_prefix_idx ON candidates (phone text_pattern_ops);
CREATE INDEX candidates_email_prefix_idx ON candidates (email text_pattern_ops);
CREATE INDEX candidates_moka_id_prefix_idx ON candidates (moka_id text_pattern_ops);
-- The overview's charts: submissions by time and outcome, read from the index alone.
CREATE INDEX submissions_processed_idx ON submissions (processed_at) INCLUDE (outcome);
