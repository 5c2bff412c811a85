#!/usr/bin/env bash
# Replay-cache memory (issue 14): the ingress's RSS after N (default 3,000,000) accepted requests
# inside one tonce window. The window is widened to an hour so that every request stays in it;
# the cache's bound (ingress.replay_cache_entries, default 1,800,000) is what keeps memory flat.
# The yardstick's `load --live` signs each request as it sends it (pre-signing 3,000,000 bodies
# would take gigabytes); a loop empties the submissions queue every 2 s so that the broker does not
# keep them all. Needs RabbitMQ on 127.0.0.1; loopback only; stops what it started by PID.
#   N=3000000 scripts/bench-replay-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${N:-3000000}
C=${C:-64}
PREFIX=benchreplay$$
build_both

cleanup() {
    stop_started
    delete_topology "$PREFIX"
}
trap cleanup EXIT

MOKA_INGEST_LISTEN=127.0.0.1:18092 MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" \
    MOKA_INGEST_INGRESS__TONCE_WINDOW_SECS=3600 "$M" ingress >/dev/null 2>&1 &
IPID=$!
PIDS+=("$IPID")
for _ in $(seq 100); do curl -sf http://127.0.0.1:18092/readyz >/dev/null && break; sleep 0.1; done
kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
echo "ingress RSS idle: $(( $(kib $IPID VmRSS) / 1024 )) MiB"
( while kill -0 $IPID 2>/dev/null; do rabbitmqctl -q purge_queue "$PREFIX.submissions" >/dev/null 2>&1 </dev/null || true; sleep 2; done ) &
PIDS+=("$!")
start=$(date +%s)
"$L" load --live --url http://127.0.0.1:18092/api/v2/moka_candidates --secret "$SECRET" --access-key "$AK" \
    --n "$N" --concurrency "$C" | tail -n 1
echo "after $N requests in $(( $(date +%s) - start )) s: ingress RSS $(( $(kib $IPID VmRSS) / 1024 )) MiB, peak $(( $(kib $IPID VmHWM) / 1024 )) MiB (target < 100 MiB)"
curl -s http://127.0.0.1:18092/metrics | grep -E '^moka_ingress_requests_total' || true
