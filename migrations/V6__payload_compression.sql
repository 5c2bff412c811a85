-- Issue 14: a candidate's raw payload (a 2.2 KB resume is about 1.4 KB once compressed) is the one
-- value of its row large enough for PostgreSQL to compress, and with the default method, pglz,
-- that compression was 14% of PostgreSQL's CPU while the worker drained (`perf record`, 200,000
-- submissions). lz4 compresses about as small in less than half the time. New values only: rows
-- already stored keep pglz until they are next written. A server built without lz4 keeps pglz,
-- and says so.
DO $$
BEGIN
    ALTER TABLE candidates ALTER COLUMN raw_payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE WARNING 'this PostgreSQL was built without lz4: candidates.raw_payload keeps pglz (%)', SQLERRM;
END $$;
