#!/usr/bin/env bash
# Console benchmark (issue 13): page latency on a large database, and a "replay all that match"
# of many dead letters without holding them in memory.
#
# 1. A schema of its own is filled with 1,000,000 `submissions` (30 days, by outcome), 200,000
#    candidates and 50,000 dead letters (indexed rows), then VACUUM ANALYZE.
# 2. A release console answers N requests of each page (overview, two dead-letter filters, a
#    candidate prefix search, a candidate page); p50/p95/max are printed (target: p95 < 150 ms).
# 3. REPLAY real dead letters (default 10,000: payloads without a name, dead-lettered by a real
#    worker, which is then stopped) are replayed with "replay all that match" from the console;
#    its progress is printed as the action page shows it, and the console's RSS is sampled.
# Needs RabbitMQ and PostgreSQL on 127.0.0.1; only loopback traffic; stops what it started by
# PID; deletes its queues and schema.
#   N=200 REPLAY=10000 scripts/bench-console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${N:-200}
REPLAY=${REPLAY:-10000}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin moka-ingest --example publish_payloads
M=$PWD/target/release/moka-ingest
P=$PWD/target/release/examples/publish_payloads
PREFIX=benchconsole$$
SCHEMA=bench_console_$$
PSQL="env PGOPTIONS=--client-min-messages=warning psql -qtA -h 127.0.0.1 -U root test"
PORT=18097
WPORT=18096
DIR=$(mktemp -d)

cleanup() {
    stop_started
    $PSQL -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    delete_topology "$PREFIX"
    rm -rf "$DIR"
}
trap cleanup EXIT

export DATABASE_URL="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$SCHEMA"
export MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" MOKA_INGEST_ATTACHMENTS__FETCH=false
export MOKA_INGEST_WORKER_LISTEN=127.0.0.1:$WPORT MOKA_INGEST_CONSOLE_LISTEN=127.0.0.1:$PORT
export MOKA_INGEST_LISTEN=127.0.0.1:18095 MOKA_INGEST_ATTACHMENTS_DIR=$DIR/files
PASSWORD=bench-console-password
echo "bench:operator:$(echo "$PASSWORD" | "$M" console hash-password)" > "$DIR/users"
export MOKA_INGEST_CONSOLE_USERS_FILE=$DIR/users

$PSQL -c "CREATE SCHEMA $SCHEMA" >/dev/null
"$M" migrate >/dev/null
t0=$(date +%s)
$PSQL <<SQL
SET search_path = $SCHEMA;
INSERT INTO candidates (moka_id, name, phone, phone_raw, email, job_title, raw_payload, source_tonce,
                        source_received_at, last_message_id, created_at, updated_at)
SELECT 'c' || lpad(i::text, 7, '0'),
       (ARRAY['张','李','王','刘','陈','Zhang','Li','Wang'])[1 + i % 8] || ' ' || i,
       '+86138' || lpad((i % 100000000)::text, 8, '0'), '138' || lpad((i % 100000000)::text, 8, '0'),
       'user' || i || '@example.com', '工程师',
       jsonb_build_object('id', 'c' || lpad(i::text, 7, '0'), 'name', 'n' || i, 'phone', '138', 'email', 'e'),
       1700000000 + i, now() - (i % 43200) * interval '1 minute', gen_random_uuid(),
       now() - (i % 43200) * interval '1 minute', now() - (i % 43200) * interval '1 minute'
FROM generate_series(1, 200000) i;
INSERT INTO submissions (message_id, moka_id, access_key, tonce, received_at, processed_at, outcome, attempts, error)
SELECT gen_random_uuid(), 'c' || lpad((1 + i % 200000)::text, 7, '0'), 'bench', 1700000000 + i,
       now() - (i % 2592000) * interval '1 second', now() - (i % 2592000) * interval '1 second',
       CASE WHEN i % 100 < 90 THEN 'applied' WHEN i % 100 < 97 THEN 'stale' ELSE 'dead' END, 1,
       CASE WHEN i % 100 >= 97 THEN '{"kind":"validation","message":"phone: is missing"}'::jsonb END
FROM generate_series(1, 1000000) i;
INSERT INTO dead_letters (message_id, source, moka_id, name, kind, message, fields, attempts, first_failed_at,
                          died_at, received_at, tonce, payload, state)
SELECT gen_random_uuid()::text, 'submission', 'c' || lpad((1 + i * 7 % 200000)::text, 7, '0'), 'n' || i,
       (ARRAY['validation','validation','database','attachment','envelope','delivery_limit'])[1 + i % 6],
       CASE WHEN i % 6 < 2 THEN (ARRAY['phone','email','name','id'])[1 + i % 4] || ': is missing'
            WHEN i % 6 = 3 THEN 'gave up after 6 retries: timeout reading the body'
            ELSE 'database refused the data (SQLSTATE 22021)' END,
       CASE WHEN i % 6 < 2 THEN jsonb_build_array(jsonb_build_object('field', (ARRAY['phone','email','name','id'])[1 + i % 4], 'problem', 'is missing')) ELSE '[]' END,
       3, now() - (i % 43200) * interval '1 minute', now() - (i % 43200) * interval '1 minute', now(), 1700000000 + i,
       '{"id":"c' || i || '","name":"n' || i || '","note":"' || repeat('x', 300) || '"}',
       CASE WHEN i % 10 = 0 THEN 'replayed' ELSE 'dead' END
FROM generate_series(1, 50000) i;
VACUUM ANALYZE;
SQL
echo "data: $($PSQL -c "SELECT (SELECT count(*) FROM $SCHEMA.submissions) || ' submissions, ' || (SELECT count(*) FROM $SCHEMA.candidates) || ' candidates, ' || (SELECT count(*) FROM $SCHEMA.dead_letters) || ' dead letters'") in $(( $(date +%s) - t0 ))s"

"$M" console >"$DIR/console.log" 2>&1 &
CPID=$!
PIDS+=("$CPID")
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
python3 scripts/console_bench.py latency "http://127.0.0.1:$PORT" bench "$PASSWORD" "$N"

[ "$REPLAY" -gt 0 ] || exit 0
echo
echo "replay all that match: $REPLAY real dead letters (payloads without a name)"
"$P" noname "$REPLAY" 2>&1 | tail -1
"$M" worker >"$DIR/worker.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
until [ "$($PSQL -c "SELECT count(*) FROM $SCHEMA.dead_letters WHERE moka_id LIKE 'bench-noname-%' AND state = 'dead'")" -ge "$REPLAY" ]; do
    kill -0 $WPID 2>/dev/null || { echo "the worker died" >&2; exit 1; }
    sleep 1
done
kill $WPID; wait $WPID 2>/dev/null || true
# The index's other validation rows are not in the queue: make them history, so that the
# filter selects exactly the real dead letters.
$PSQL -c "UPDATE $SCHEMA.dead_letters SET state = 'replayed' WHERE kind = 'validation' AND moka_id NOT LIKE 'bench-noname-%' AND state = 'dead'" >/dev/null
kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
before=$(kib $CPID VmRSS)
( peak=0; while kill -0 $CPID 2>/dev/null; do r=$(kib $CPID VmRSS); [ "$r" -gt "$peak" ] && peak=$r && echo $peak > "$DIR/peak"; sleep 0.1; done ) &
PIDS+=("$!")
python3 scripts/console_bench.py replay "http://127.0.0.1:$PORT" bench "$PASSWORD"
sleep 0.5
echo "console RSS: $((before / 1024)) MiB before, peak $(( $(cat "$DIR/peak") / 1024 )) MiB during, $(( $(kib $CPID VmRSS) / 1024 )) MiB after"
echo "submissions queue now: $(rabbitmqctl -q list_queues name messages 2>/dev/null </dev/null | awk -v q="$PREFIX.submissions" '$1 == q {print $2}') messages; dead-letter queue: $(rabbitmqctl -q list_queues name messages 2>/dev/null </dev/null | awk -v q="$PREFIX.dead" '$1 == q {print $2}')"
