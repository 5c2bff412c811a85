#!/usr/bin/env bash
# Attachment pipeline benchmark (issue 12): candidates with 2 links each, files served by a local
# tokio server that answers after 100 ms (examples/file_server.rs) on 4 loopback addresses.
# Side by side in one run, with one worker process and default settings:
#   1. baseline: drain N candidates without links;
#   2. drain N candidates with 2 links each: candidate rows per second (target >= 80% of 1),
#      files stored per second (target >= 1,000), files in flight, worker CPU and peak RSS
#      (target < 200 MiB);
#   3. latency: M candidates with links published at RATE/s while the worker runs: acceptance
#      (received_at) to commit (submissions.processed_at), 99th percentile (target <= 1 s).
# Needs RabbitMQ and PostgreSQL on 127.0.0.1. Traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${N:-20000}
M_LAT=${M_LAT:-5000}
RATE=${RATE:-500}
LATENCY_MS=${LATENCY_MS:-100}
SIZE=${SIZE:-51200}
HOSTS=127.0.0.1:18101,127.0.0.2:18101,127.0.0.3:18101,127.0.0.4:18101
PREFIX=benchpipe$$
PSQL="psql -qtA -h 127.0.0.1 -U root test -v ON_ERROR_STOP=1 --set=client_min_messages=warning"
WORK=$(mktemp -d)

cargo build --release --quiet --bin moka-ingest --example file_server --example publish_candidates
M=$PWD/target/release/moka-ingest
EX=$PWD/target/release/examples

SCHEMAS=()
cleanup() {
    stop_started
    for s in "${SCHEMAS[@]}"; do $PSQL -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
    for p in "${PREFIX}a" "${PREFIX}b"; do delete_topology "$p"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$EX/file_server" "$HOSTS" "$LATENCY_MS" "$SIZE" 2>"$WORK/files.log" &
FPID=$!
PIDS+=($FPID)
now_ms() { date +%s%3N; }

# A fresh schema, migrated (and dropped at exit).
new_schema() {
    SCHEMAS+=("$1")
    $PSQL -c "CREATE SCHEMA $1" >/dev/null
    DATABASE_URL="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$1" "$M" migrate >/dev/null 2>&1
}

# start_worker PREFIX SCHEMA: starts a worker with default settings (files from loopback allowed).
start_worker() {
    DATABASE_URL="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$2" \
    MOKA_INGEST_QUEUE_PREFIX=$1 MOKA_INGEST_KEYS="$AK:$SECRET" MOKA_INGEST_WORKER_LISTEN=127.0.0.1:18102 \
    MOKA_INGEST_ATTACHMENTS_ALLOW=127.0.0.0/8 MOKA_INGEST_ATTACHMENTS_DIR="$WORK/store-$1" \
        "$M" worker >"$WORK/worker-$1.log" 2>&1 &
    WPID=$!
    PIDS+=($WPID)
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
publish() { MOKA_INGEST_QUEUE_PREFIX=$1 "$EX/publish_candidates" "$2" "$3" "$HOSTS" "$4" "$5" 2>/dev/null; }
q() { $PSQL -c "$1" 2>/dev/null || echo 0; }

# 1. Baseline: no links.
sa=bench_pipe_$$_a
new_schema "$sa"
publish "${PREFIX}a" "$N" 0 0 base
start_worker "${PREFIX}a" "$sa"
until [ "$(q "SELECT count(*) FROM $sa.submissions")" -ge "$N" ]; do sleep 0.05; done
base_rate=$(q "SELECT round($N / extract(epoch FROM max(processed_at) - min(processed_at)))::int FROM $sa.submissions")
kill -TERM "$WPID"; wait "$WPID" 2>/dev/null || true

# 2. Two links each.
sb=bench_pipe_$$_b
new_schema "$sb"
publish "${PREFIX}b" "$N" 2 0 links
start_worker "${PREFIX}b" "$sb"
for _ in $(seq 100); do curl -sf http://127.0.0.1:18102/readyz >/dev/null && break; sleep 0.1; done
cpu0=$(cpu_ticks "$WPID"); t0=$(now_ms)
peak_in_flight=0
files=$((2 * N))
until [ "$(q "SELECT count(*) FROM $sb.candidate_attachments WHERE status = 'stored'")" -ge "$files" ]; do
    f=$(curl -s http://127.0.0.1:18102/metrics | awk '/^moka_worker_downloads_in_flight / {print int($2)}')
    [ -n "$f" ] && [ "$f" -gt "$peak_in_flight" ] && peak_in_flight=$f
    sleep 0.2
done
t1=$(now_ms); cpu1=$(cpu_ticks "$WPID")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$WPID/status")
cand_rate=$(q "SELECT round($N / extract(epoch FROM max(processed_at) - min(processed_at)))::int FROM $sb.submissions")
file_rate=$(q "SELECT round(count(*) / extract(epoch FROM max(fetched_at) - min(fetched_at)))::int FROM $sb.candidate_attachments WHERE status = 'stored'")
failed=$(q "SELECT count(*) FROM $sb.candidate_attachments WHERE status <> 'stored'")
ticks=$(getconf CLK_TCK)
cpu_pct=$(( (cpu1 - cpu0) * 100 * 1000 / ticks / (t1 - t0) ))

# 3. Latency at a steady rate, the same worker still running.
publish "${PREFIX}b" "$M_LAT" 2 "$RATE" steady
until [ "$(q "SELECT count(*) FROM $sb.submissions WHERE moka_id LIKE 'steady-%'")" -ge "$M_LAT" ]; do sleep 0.1; done
p99=$(q "SELECT round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at)))::int FROM $sb.submissions WHERE moka_id LIKE 'steady-%'")
p50=$(q "SELECT round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at)))::int FROM $sb.submissions WHERE moka_id LIKE 'steady-%'")
until [ "$(q "SELECT count(*) FROM $sb.candidate_attachments WHERE status = 'pending'")" -eq 0 ]; do sleep 0.2; done
kill -TERM "$WPID"; wait "$WPID" 2>/dev/null || true
kill -TERM "$FPID"; wait "$FPID" 2>/dev/null || true

echo "candidates without links: $base_rate rows/s (baseline)"
echo "candidates with 2 links:  $cand_rate rows/s = $(python3 -c "print(f'{$cand_rate/$base_rate:.2f}')")x baseline (target >= 0.80)"
echo "files stored:             $file_rate files/s from $LATENCY_MS ms hosts (target >= 1000); not stored: $failed"
echo "downloads in flight:      peak $peak_in_flight (scraped every 200 ms); $(tail -n 1 "$WORK/files.log")"
echo "worker:                   CPU $cpu_pct% of one core over the drain, peak RSS $((rss / 1024)) MiB (target < 200 MiB)"
echo "acceptance to commit:     p50 $p50 ms, p99 $p99 ms at $RATE candidates/s with links (target p99 <= 1000 ms)"
