#!/usr/bin/env bash
# Attachment memory benchmark: one submission with 8 offer attachments of 20 MiB each, fetched
# concurrently (attachments.concurrency = 8) from a local HTTP server on 127.0.0.1. Reports the
# worker's resident memory before, its peak during the downloads, and the growth.
# Needs RabbitMQ and PostgreSQL on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --quiet
M=$PWD/target/release/moka-ingest
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

mkdir -p "$WORK/www"
head -c 20971520 /dev/urandom > "$WORK/www/big.pdf"
python3 -m http.server 18095 --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)
$PSQL -c "CREATE SCHEMA $SCHEMA" >/dev/null
export DATABASE_URL="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$SCHEMA"
export MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" MOKA_INGEST_ATTACHMENTS_ALLOW=127.0.0.1
export MOKA_INGEST_ATTACHMENTS_DIR=$WORK/store MOKA_INGEST_LISTEN=127.0.0.1:18096 MOKA_INGEST_WORKER_LISTEN=127.0.0.1:18097
"$M" ingress >/dev/null 2>&1 &
PIDS+=($!)
"$M" worker >/dev/null 2>&1 &
WPID=$!
PIDS+=($WPID)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18097/readyz >/dev/null && curl -sf http://127.0.0.1:18096/readyz >/dev/null && break; sleep 0.1; done
sleep 1
before=$(awk '/VmRSS/ {print $2}' /proc/$WPID/status)

urls=$(python3 -c 'import json; print(json.dumps(["http://127.0.0.1:18095/big.pdf?copy=%d" % i for i in range(8)]))')
cat > "$WORK/payload.json" <<JSON
{"id":"bench-att","name":"张三","phone":"13203030303","email":"a@b.com","jobTitle":"dev","operator":{"name":"李四"},"offerAttachmentUrls":$urls}
JSON
start=$(date +%s%3N)
"$M" sign --access-key "$AK" --secret "$SECRET" --payload-file "$WORK/payload.json" --url http://127.0.0.1:18096/api/v2/moka_candidates --send >/dev/null
until [ "$($PSQL -c "SELECT count(*) FROM $SCHEMA.candidate_attachments WHERE status = 'stored'" 2>/dev/null || echo 0)" -ge 8 ]; do sleep 0.05; done
end=$(date +%s%3N)
peak=$(awk '/VmHWM/ {print $2}' /proc/$WPID/status)
stored=$(find "$WORK/store/sha256" -type f | wc -l)
echo "8 x 20 MiB downloads in $((end - start)) ms; files in storage: $stored (same content, stored once)"
echo "worker RSS before: $((before / 1024)) MiB, peak: $((peak / 1024)) MiB, growth: $(((peak - before) / 1024)) MiB (target < 64 MiB)"
