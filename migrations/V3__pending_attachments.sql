-- Downloads leave the candidate's critical path (issue 12): a candidate is committed with one
-- `pending` row per link, and the download settles it later as `stored` or `failed`. Rows that
-- exist keep their meaning; a pending row has no fetched_at yet.
ALTER TABLE candidate_attachments DROP CONSTRAINT candidate_attachments_status_check;
ALTER TABLE candidate_attachments ADD CONSTRAINT candidate_attachments_status_check
    CHECK (status IN ('pending', 'stored', 'failed'));
ALTER TABLE candidate_attachments ALTER COLUMN fetched_at DROP NOT NULL;
-- When the current submission asked for this link (for a pending row: since when it waits).
ALTER TABLE candidate_attachments ADD COLUMN requested_at timestamptz;
-- Operators and the worker look up what is still pending.
CREATE INDEX candidate_attachments_pending_idx ON candidate_attachments (moka_id) WHERE status = 'pending';
