#!/usr/bin/env bash
# Payload memory benchmark: the worker's memory against worst-case payloads. For each kind (see
# examples/publish_payloads.rs: 1 MiB of `{}` education entries, long strings, a large offerInfo,
# a flood of warnings) it fills the queue with N payloads of about 1 MiB, then starts a fresh
# worker (own queue prefix, own schema, attachments.fetch = false) that drains them, and reports
# its resident memory: peak (VmHWM) while draining, and after (and, once, an idle worker's). Filling the queue
# first is the worst case: the broker then hands each lane a full prefetch at once.
# Needs RabbitMQ and PostgreSQL on 127.0.0.1; sends traffic only to loopback; stops what it
# started by PID and deletes its queues and schema.
#   N=100 KINDS="entries strings" PREFETCH=500 scripts/bench-payload-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${N:-100}
KINDS=${KINDS:-entries strings offerinfo warnings}
# SKIP_BUILD=1: the release binary and example are already built.
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin moka-ingest --example publish_payloads
M=$PWD/target/release/moka-ingest
P=$PWD/target/release/examples/publish_payloads
PREFIX=benchmem$$
SCHEMA=bench_mem_$$
PSQL="env PGOPTIONS=--client-min-messages=warning psql -qtA -h 127.0.0.1 -U root test"
PORT=18098

WPID=
cleanup() {
    if [ -n "$WPID" ]; then kill "$WPID" 2>/dev/null || true; wait "$WPID" 2>/dev/null || true; fi
    $PSQL -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    delete_topology "$PREFIX"
}
trap cleanup EXIT

export DATABASE_URL="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$SCHEMA"
export MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" MOKA_INGEST_ATTACHMENTS__FETCH=false
export MOKA_INGEST_WORKER_LISTEN=127.0.0.1:$PORT
[ -n "${PREFETCH:-}" ] && export MOKA_INGEST_WORKER__PREFETCH=$PREFETCH
kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }

# Idle: a worker on an empty queue, once ready.
$PSQL -c "CREATE SCHEMA $SCHEMA" >/dev/null
"$M" worker >/dev/null 2>&1 &
WPID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
sleep 1
idle=$(kib $WPID VmRSS)
kill $WPID; wait $WPID 2>/dev/null || true
WPID=
echo "worker RSS idle: $((idle / 1024)) MiB; prefetch ${PREFETCH:-500} per lane, 2 lanes"

printf '%-10s %5s %9s %10s %10s %9s\n' kind n payload peak "RSS after" drain
for kind in $KINDS; do
    $PSQL -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA" >/dev/null
    delete_topology "$PREFIX"
    out=$("$P" "$kind" "$N" 2>&1)
    mib=$(echo "$out" | sed -n 's/.*, \([0-9]*\) MiB of payload/\1/p')
    "$M" worker >/dev/null 2>&1 &
    WPID=$!
    start=$(date +%s%3N)
    until [ "$($PSQL -c "SELECT count(*) FROM $SCHEMA.submissions" 2>/dev/null || echo 0)" -ge "$N" ]; do
        kill -0 $WPID 2>/dev/null || { echo "the worker died" >&2; exit 1; }
        sleep 0.2
    done
    end=$(date +%s%3N)
    sleep 2
    peak=$(kib $WPID VmHWM)
    after=$(kib $WPID VmRSS)
    kill $WPID; wait $WPID 2>/dev/null || true
    WPID=
    printf '%-10s %5s %5s MiB %6s MiB %6s MiB %6s ms\n' "$kind" "$N" "$mib" $((peak / 1024)) $((after / 1024)) $((end - start))
done
