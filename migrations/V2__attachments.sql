-- Files linked from submissions (resume, interview feedback, offer), one row per candidate, kind
-- and URL. Column names are a contract: downstream CRM code reads them.
CREATE TABLE candidate_attachments (
    moka_id       text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('resume', 'interview_feedback', 'offer')),
    url           text NOT NULL,
    status        text NOT NULL CHECK (status IN ('stored', 'failed')),
    sha256        text,             -- hex; the file's identity in storage
    size_bytes    bigint,
    content_type  text,             -- from the bytes (application/pdf, image/png, ...), the header only as a hint
    file_name     text,             -- from Content-Disposition, else the URL
    storage_key   text,             -- sha256/ab/cd/<sha256> in the configured backend
    error         text,             -- why it failed (permanent failures only)
    fetched_at    timestamptz NOT NULL,
    PRIMARY KEY (moka_id, kind, url)
);
CREATE INDEX candidate_attachments_sha256_idx ON candidate_attachments (sha256);
