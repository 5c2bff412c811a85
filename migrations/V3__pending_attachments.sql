-- Downloads leave the candidate's critical path (issue 12): a candidate is committed with one
-- `pending` row per link, and the download settles it later as `stored` or `failed`. Rows that
-- exist keep their meaning; a pending row has no fetched_at yet.
ALTER TABLE candidate_attachments DROP CONSTRAINT candidate_attachments_status_check;
ALTER TABLE candidate_attachments ADD CONSTRAINT candidate_attachments_status_check
    CHECK (status IN ('pending', 'stored', 'failed'));
ALTER TABLE candidate_attachments ALTER COLUMN fetched_at DROP NOT NULL;
-- When the current submission asked for this link (for a pending row: since when it waits).
ALTER TABLE candidate_attachments ADD COLUMN requested_at timestamptz;
-- A pending or failed row has no hash: index only the rows that have one (a lookup by hash, the
-- index's use, is unchanged).
DROP INDEX candidate_attachments_sha256_idx;
CREATE INDEX candidate_attachments_sha256_idx ON candidate_attachments (sha256) WHERE sha256 IS NOT NULL;
