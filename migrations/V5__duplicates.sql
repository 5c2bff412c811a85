-- Issue 14: the ingress's replay cache is bounded, so a repeat it forgot reaches the worker. Each
-- submission records a digest of its request's signature (the first 16 bytes of its SHA-256; what
-- identifies a request), and a submission whose signature was already processed is recorded as
-- `duplicate` and changes nothing. Null for messages from before (envelope 1, or 2 without `sig`).
ALTER TABLE submissions ADD COLUMN signature bytea;
CREATE INDEX submissions_signature_idx ON submissions (signature) WHERE signature IS NOT NULL;
ALTER TABLE submissions DROP CONSTRAINT submissions_outcome_check;
ALTER TABLE submissions ADD CONSTRAINT submissions_outcome_check
    CHECK (outcome IN ('applied', 'stale', 'dead', 'duplicate'));
