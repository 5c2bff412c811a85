#!/usr/bin/env bash
# Attachment memory benchmark: the worker's resident memory while downloads are in flight.
#   1. one submission with 8 offer attachments of about 20 MiB each, from a local server;
#   2. 128 downloads of 2 MiB in flight at once (8 submissions of 16 links over 4 loopback
#      hosts, each answering after 500 ms, so that all of them overlap).
# Reports the RSS before, the peak (VmHWM) after each phase, and the growth (target < 64 MiB).
# Files come from examples/file_server.rs on loopback. Needs RabbitMQ and PostgreSQL on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --quiet --bin moka-ingest --example file_server --example publish_candidates
M=$PWD/target/release/moka-ingest
EX=$PWD/target/release/examples
PREFIX=benchatt$$
SCHEMA=bench_att_$$
WORK=$(mktemp -d)
PSQL="psql -qtA -h 127.0.0.1 -U root test"

cleanup() {
    stop_started
    $PSQL -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    delete_topology "$PREFIX"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$EX/file_server" 127.0.0.1:18095 0 20000000 2>/dev/null &
PIDS+=($!)
HOSTS=127.0.0.1:18098,127.0.0.2:18098,127.0.0.3:18098,127.0.0.4:18098
"$EX/file_server" "$HOSTS" 500 2097152 2>"$WORK/files.log" &
FPID=$!
PIDS+=($FPID)
$PSQL -c "CREATE SCHEMA $SCHEMA" >/dev/null
export DATABASE_URL="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$SCHEMA"
export MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" MOKA_INGEST_ATTACHMENTS_ALLOW=127.0.0.0/8
export MOKA_INGEST_ATTACHMENTS_DIR=$WORK/store MOKA_INGEST_LISTEN=127.0.0.1:18096 MOKA_INGEST_WORKER_LISTEN=127.0.0.1:18097
"$M" ingress >/dev/null 2>&1 &
PIDS+=($!)
"$M" worker >/dev/null 2>&1 &
WPID=$!
PIDS+=($WPID)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18097/readyz >/dev/null && curl -sf http://127.0.0.1:18096/readyz >/dev/null && break; sleep 0.1; done
sleep 1
before=$(awk '/VmRSS/ {print $2}' /proc/$WPID/status)
stored() { $PSQL -c "SELECT count(*) FROM $SCHEMA.candidate_attachments WHERE status = 'stored'" 2>/dev/null || echo 0; }

urls=$(python3 -c 'import json; print(json.dumps(["http://127.0.0.1:18095/big-%d.pdf" % i for i in range(8)]))')
cat > "$WORK/payload.json" <<JSON
{"id":"bench-att","name":"张三","phone":"13203030303","email":"a@b.com","jobTitle":"dev","operator":{"name":"李四"},"offerAttachmentUrls":$urls}
JSON
start=$(date +%s%3N)
"$M" sign --access-key "$AK" --secret "$SECRET" --payload-file "$WORK/payload.json" --url http://127.0.0.1:18096/api/v2/moka_candidates --send >/dev/null
until [ "$(stored)" -ge 8 ]; do sleep 0.05; done
end=$(date +%s%3N)
peak1=$(awk '/VmHWM/ {print $2}' /proc/$WPID/status)

start2=$(date +%s%3N)
"$EX/publish_candidates" 8 16 "$HOSTS" 0 many 2>/dev/null
until [ "$(stored)" -ge 136 ]; do sleep 0.05; done
end2=$(date +%s%3N)
peak2=$(awk '/VmHWM/ {print $2}' /proc/$WPID/status)
kill -TERM "$FPID"; wait "$FPID" 2>/dev/null || true
echo "8 x 20 MB downloads in $((end - start)) ms; worker RSS before: $((before / 1024)) MiB, peak: $((peak1 / 1024)) MiB, growth: $(((peak1 - before) / 1024)) MiB (target < 64 MiB)"
echo "128 x 2 MiB downloads (500 ms hosts) in $((end2 - start2)) ms; $(tail -n 1 "$WORK/files.log"); worker peak: $((peak2 / 1024)) MiB, growth: $(((peak2 - before) / 1024)) MiB (target < 64 MiB)"
leftover=$(find "$WORK/store/.tmp" -type f 2>/dev/null | wc -l)
echo "temporary files left: $leftover"
