#!/usr/bin/env bash
# Worker benchmark: drain N submissions from a pre-filled queue into PostgreSQL,
# with the yardstick's `ref-drain --schema full` and with `moka-ingest worker` (default settings),
# side by side in one run, ROUNDS times. Both queues are filled by `limits load` through the
# respective ingress. Needs RabbitMQ and PostgreSQL on 127.0.0.1.
# No attachments: the load's payload links to http://url.com/file, which must not be fetched
# (benchmarks talk to loopback only), so the worker runs with attachments.fetch = false, like
# ref-drain, which fetches nothing either.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${N:-20000}
ROUNDS=${ROUNDS:-3}
PREFIX=benchdrain$$
PSQL="psql -qtA -h 127.0.0.1 -U root test -v ON_ERROR_STOP=1 --set=client_min_messages=warning"

build_both

SCHEMAS=()
cleanup() {
    stop_started
    for s in "${SCHEMAS[@]}"; do $PSQL -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
    delete_topology "$PREFIX"
    rabbitmqctl -q purge_queue ref.candidates >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$L" ref-ingress --listen 127.0.0.1:18080 --secret "$SECRET" --access-key "$AK" 2>/dev/null &
PIDS+=($!)
MOKA_INGEST_LISTEN=127.0.0.1:18090 MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" "$M" ingress >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/readyz >/dev/null && break; sleep 0.1; done
# ref-ingress has no readiness endpoint: wait until it answers at all.
for _ in $(seq 100); do curl -s -o /dev/null -X POST http://127.0.0.1:18080/api/v2/moka_candidates && break; sleep 0.1; done

fill() {
    local out
    out=$("$L" load --url "$1" --secret "$SECRET" --access-key "$AK" --n "$N" --concurrency 64 | tail -n 1)
    grep -q "codes=200:$N errors=0" <<<"$out" || { echo "fill failed: $out" >&2; exit 1; }
}
now_ms() { date +%s%3N; }

for round in $(seq "$ROUNDS"); do
    # Reference: fill ref.candidates, drain with the four-table schema.
    rabbitmqctl -q purge_queue ref.candidates >/dev/null 2>&1 || true
    fill http://127.0.0.1:18080/api/v2/moka_candidates
    ref=$("$L" ref-drain --schema full --queue ref.candidates --n "$N" --prefetch 500 --batch 100 | tail -n 1)
    ref_rate=$(grep -o 'rows_per_s=[0-9]*' <<<"$ref" | cut -d= -f2)

    # moka-ingest: fill its queue, migrate a fresh schema, start the worker, time first to last row.
    rabbitmqctl -q purge_queue "$PREFIX.submissions" >/dev/null
    fill http://127.0.0.1:18090/api/v2/moka_candidates
    schema=bench_$$_$round
    SCHEMAS+=("$schema")
    $PSQL -c "CREATE SCHEMA $schema" >/dev/null
    url="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$schema"
    DATABASE_URL=$url "$M" migrate >/dev/null 2>&1
    DATABASE_URL=$url MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" MOKA_INGEST_WORKER_LISTEN=127.0.0.1:18091 MOKA_INGEST_ATTACHMENTS__FETCH=false \
        "$M" worker >/dev/null 2>&1 &
    wpid=$!
    PIDS+=($wpid)
    start_watch "$N" http://127.0.0.1:18091/metrics
    watch_for started
    t0=$(now_ms)
    w0=$(awk '{print $14 + $15}' /proc/$wpid/stat) pg0=$(cpu_ticks postgres) mq0=$(cpu_ticks beam.smp)
    watch_for done
    t1=$(now_ms)
    w1=$(awk '{print $14 + $15}' /proc/$wpid/stat) pg1=$(cpu_ticks postgres) mq1=$(cpu_ticks beam.smp)
    cores() { python3 -c "print(f'{($2 - $1) / $(getconf CLK_TCK) / (($t1 - $t0) / 1000):.2f}')"; }
    stop_watch
    stored=$(stored_count "$schema.submissions")
    [ "$stored" -eq "$N" ] || { echo "$stored submissions stored, expected $N" >&2; exit 1; }
    rss=$(awk '/VmHWM/ {print $2}' /proc/$wpid/status)
    kill -TERM "$wpid"; wait "$wpid" 2>/dev/null || true
    moka_rate=$(( N * 1000 / (t1 - t0) ))
    ref_cores=$(grep -o 'cores_self=.*' <<<"$ref")
    printf 'round %d: ref-drain --schema full %s msgs/s (%s) | moka-ingest worker %s msgs/s (peak RSS %s KiB; cores: worker %s, postgres %s, rabbitmq %s, %s s) | ratio %s\n' \
        "$round" "$ref_rate" "$ref_cores" "$moka_rate" "$rss" "$(cores "$w0" "$w1")" "$(cores "$pg0" "$pg1")" "$(cores "$mq0" "$mq1")" \
        "$(python3 -c "print(f'{($t1 - $t0) / 1000:.1f}')")" "$(python3 -c "print(f'{$moka_rate/$ref_rate:.2f}')")"
    $PSQL -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
done
