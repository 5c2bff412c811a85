#!/usr/bin/env bash
# Scaling on this machine: what more processes buy, and which process runs out of CPU first.
#  - Drain: the queue is filled with N submissions through the ingress (grouped), then K worker
#    processes (K in WORKERS, default "1 2 4") drain it into one fresh schema together, timed from
#    the first to the last stored submission; the cores used by the workers (all K together),
#    PostgreSQL and RabbitMQ over that time.
#  - Ingress: `limits load` (N requests, concurrency C) against each of P ingress processes
#    (P in INGRESSES, default "1 2"), each on its own port, all at once; the sum of the requests/s
#    and the cores used by the ingresses, the load generators and RabbitMQ.
# Loopback only; own queue prefix and schemas; stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${N:-100000}
C=${C:-64}
WORKERS=${WORKERS:-"1 2 4"}
INGRESSES=${INGRESSES:-"1 2"}
PREFIX=benchscale$$
PSQL="psql -qtA -h 127.0.0.1 -U root test -v ON_ERROR_STOP=1"
export PGOPTIONS="-c client_min_messages=warning"

build_both
TICK=$(getconf CLK_TCK)
SCHEMAS=()
cleanup() {
    stop_started
    for s in "${SCHEMAS[@]}"; do $PSQL -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
    delete_topology "$PREFIX"
}
trap cleanup EXIT
ticks_of() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
cores() { python3 -c "print(f'{($2 - $1) / $TICK / $3:.2f}')"; }
export MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET"

start_ingress() { # port; sets STARTED to its pid
    MOKA_INGEST_LISTEN=127.0.0.1:$1 "$M" ingress >/dev/null 2>&1 &
    STARTED=$!
    PIDS+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && break; sleep 0.1; done
}

echo "## drain, N=$N"
start_ingress 18290
fill_pid=$STARTED
for k in $WORKERS; do
    rabbitmqctl -q purge_queue "$PREFIX.submissions" >/dev/null
    out=$("$L" load --url http://127.0.0.1:18290/api/v2/moka_candidates --secret "$SECRET" --access-key "$AK" \
        --n "$N" --concurrency 64 | tail -n 1)
    grep -q "codes=200:$N errors=0" <<<"$out" || { echo "fill failed: $out" >&2; exit 1; }
    schema=benchscale_$$_$k
    SCHEMAS+=("$schema")
    $PSQL -c "CREATE SCHEMA $schema"
    url="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$schema"
    DATABASE_URL=$url "$M" migrate >/dev/null 2>&1
    wpids=()
    for i in $(seq "$k"); do
        DATABASE_URL=$url MOKA_INGEST_WORKER_LISTEN=127.0.0.1:$((18300 + i)) MOKA_INGEST_ATTACHMENTS__FETCH=false \
            "$M" worker >/dev/null 2>&1 &
        wpids+=($!)
        PIDS+=($!)
    done
    urls=()
    for i in $(seq "$k"); do urls+=("http://127.0.0.1:$((18300 + i))/metrics"); done
    start_watch "$N" "${urls[@]}"
    watch_for started
    t0=$(date +%s%3N) w0=$(ticks_of "${wpids[@]}") pg0=$(cpu_ticks postgres) mq0=$(cpu_ticks beam.smp)
    watch_for done
    t1=$(date +%s%3N) w1=$(ticks_of "${wpids[@]}") pg1=$(cpu_ticks postgres) mq1=$(cpu_ticks beam.smp)
    stop_watch
    stored=$(stored_count "$schema.submissions")
    [ "$stored" -eq "$N" ] || { echo "$stored submissions stored, expected $N" >&2; exit 1; }
    kill "${wpids[@]}"; wait "${wpids[@]}" 2>/dev/null || true
    secs=$(python3 -c "print(($t1 - $t0) / 1000)")
    printf 'workers %d: %d msgs/s (%.1f s) | cores: workers %s, postgres %s, rabbitmq %s\n' "$k" $((N * 1000 / (t1 - t0))) \
        "$secs" "$(cores "$w0" "$w1" "$secs")" "$(cores "$pg0" "$pg1" "$secs")" "$(cores "$mq0" "$mq1" "$secs")"
    $PSQL -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
done
kill "$fill_pid"; wait "$fill_pid" 2>/dev/null || true

echo "## ingress, N=$N per process, c=$C"
for p in $INGRESSES; do
    ipids=()
    for i in $(seq "$p"); do start_ingress $((18290 + i)); ipids+=("$STARTED"); done
    rabbitmqctl -q purge_queue "$PREFIX.submissions" >/dev/null
    sleep 1
    outs=$(mktemp)
    i0=$(ticks_of "${ipids[@]}") mq0=$(cpu_ticks beam.smp) t0=$(date +%s%3N)
    lpids=()
    for i in $(seq "$p"); do
        "$L" load --url "http://127.0.0.1:$((18290 + i))/api/v2/moka_candidates" --secret "$SECRET" --access-key "$AK" \
            --n "$N" --concurrency "$C" | tail -n 1 >>"$outs" &
        lpids+=($!)
        PIDS+=($!)
    done
    wait "${lpids[@]}"
    t1=$(date +%s%3N) i1=$(ticks_of "${ipids[@]}") mq1=$(cpu_ticks beam.smp)
    secs=$(python3 -c "print(($t1 - $t0) / 1000)")
    python3 - "$outs" "$p" "$(cores "$i0" "$i1" "$secs")" "$(cores "$mq0" "$mq1" "$secs")" <<'PY'
import re, sys
runs = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.strip()]
rps = sum(float(r["req_per_s"]) for r in runs)
p99 = max(float(r["p99_ms"]) for r in runs)
load = sum(float(r["cores_self"]) for r in runs)
print(f"ingresses {sys.argv[2]}: {rps:.0f} req/s in all (worst p99 {p99:.2f} ms) | cores: ingresses {sys.argv[3]}, "
      f"load generators {load:.2f}, rabbitmq {sys.argv[4]} | codes {' '.join(r['codes'] for r in runs)}")
PY
    rm -f "$outs"
    kill "${ipids[@]}"; wait "${ipids[@]}" 2>/dev/null || true
done
