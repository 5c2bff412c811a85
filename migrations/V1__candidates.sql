-- The CRM's view of Moka candidates. Column names are a contract: downstream CRM code reads them.

CREATE TABLE candidates (
    moka_id                 text PRIMARY KEY,
    name                    text NOT NULL,
    phone                   text NOT NULL,          -- normalized: mainland mobiles as +86…, others as given minus spaces/dashes
    phone_raw               text NOT NULL,
    email                   text NOT NULL,          -- trimmed, lower-cased
    gender                  text,                   -- 男 / 女
    birth_year              integer,
    source                  text,
    academic_degree         text,                   -- 本科, 硕士, 博士, 高中, 大专, 中专, MBA, 其他
    academic_degree_raw     text,
    married                 text,                   -- 已婚 / 未婚 / 离异
    job_title               text NOT NULL,
    operator_name           text,
    operator_email          text,
    operator_phone          text,
    resume_url              text,
    interview_feedback_url  text,
    offer_attachment_urls   jsonb NOT NULL DEFAULT '[]',
    offer_info              jsonb,                  -- null when Moka sent "" or nothing
    raw_payload             jsonb NOT NULL,         -- the submission's payload as received
    warnings                jsonb NOT NULL DEFAULT '[]',  -- [{field, message}]: what normalization could not interpret
    source_tonce            bigint NOT NULL,        -- tonce of the submission applied last
    source_received_at      timestamptz NOT NULL,   -- when the ingress received it
    last_message_id         uuid NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Child rows are written only by the worker, in the same transaction as their candidate, so
-- they carry no foreign key: its per-row trigger check cost more than a third of the write
-- throughput. (moka_id, position) is the key; a candidate's rows are replaced as a whole.
CREATE TABLE candidate_educations (
    moka_id              text NOT NULL,           -- candidates.moka_id
    position             integer NOT NULL,          -- order in the payload, from 0
    start_date           date,
    end_date             date,
    is_current           boolean NOT NULL DEFAULT false,
    start_raw            text,
    end_raw              text,
    school               text,
    speciality           text,
    academic_degree      text,
    academic_degree_raw  text,
    PRIMARY KEY (moka_id, position)
);

CREATE TABLE candidate_experiences (
    moka_id     text NOT NULL,                  -- candidates.moka_id
    position    integer NOT NULL,
    start_date  date,
    end_date    date,
    is_current  boolean NOT NULL DEFAULT false,
    start_raw   text,
    end_raw     text,
    company     text,
    title       text,
    PRIMARY KEY (moka_id, position)
);

-- One row per processed message: "did we get candidate X, when, and what happened".
CREATE TABLE submissions (
    message_id    uuid PRIMARY KEY,
    moka_id       text NOT NULL,
    access_key    text NOT NULL,
    tonce         bigint NOT NULL,
    received_at   timestamptz NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL CHECK (outcome IN ('applied', 'stale', 'dead')),
    attempts      integer NOT NULL DEFAULT 1,
    error         jsonb                              -- for dead: {kind, message, fields?}
);
CREATE INDEX submissions_moka_id_idx ON submissions (moka_id, received_at);
CREATE INDEX submissions_dead_idx ON submissions (processed_at) WHERE outcome = 'dead';
