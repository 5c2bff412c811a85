#!/usr/bin/env bash
# Failover runs, counted the way Jepsen's RabbitMQ test counts: a steady stream of distinct
# candidates (scripts/stream.py, each sent once) goes through one ingress to two workers while
# nodes are stopped and started, then every request's answer is set against what the database
# holds once the queues have drained:
#   answered 200 and stored: ok; answered 200 and not stored: LOST;
#   not answered 200 but stored: recovered (a 503 or a timeout whose message got through: allowed);
#   stored but never sent: UNEXPECTED; a candidate applied twice: DUPLICATED.
# Lost, unexpected and duplicated must be 0 (the ledger may show `duplicate` outcomes: replays
# and redeliveries recorded and ignored). Also reported: the longest time without a 200 answer
# around each failure, and the longest pause in the workers' writes.
#
#   scripts/chaos.sh broker     a three-node RabbitMQ cluster (scripts/cluster.sh): the node that
#                               leads the submissions queue is stopped and later started again,
#                               then a second node. PostgreSQL: the system cluster, own schema.
#   scripts/chaos.sh database   a primary with a synchronous standby (scripts/pg-standby.sh): the
#                               primary is killed (immediate stop) and the standby promoted.
#                               RabbitMQ: the system node, own queue prefix.
#
# RATE (200 requests/s), DOWN (20 s a node stays down), FAULT (broker: `stop`, a clean stop, or
# `kill`, SIGKILL of the node's process). Loopback only; the script stops what it started (its
# processes by pid, its cluster, its PostgreSQL pair) and nothing else; KEEP=1 keeps the run's
# directory (answers, logs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODE=${1:?usage: $0 broker|database}
RATE=${RATE:-200}
DOWN=${DOWN:-20}
FAULT=${FAULT:-stop}
STARTED_NODES=""
PREFIX=chaos$$
RUN=/tmp/moka-chaos-$$
mkdir -p "$RUN"
EVENTS=$RUN/events
SYS_DB="postgres://root@127.0.0.1:5432/test"
PSQL_SYS="psql -qtA -h 127.0.0.1 -U root test -v ON_ERROR_STOP=1"
export PGOPTIONS="-c client_min_messages=warning"

cargo build --release --quiet
M=$PWD/target/release/moka-ingest
event() { echo "$(date +%s.%N | cut -c1-14) $*" | tee -a "$EVENTS"; }

cleanup() {
    stop_started
    # Only what this run brought up: a cluster or pair that was already there is someone else's.
    case $MODE in
    broker)
        $PSQL_SYS -c "DROP SCHEMA IF EXISTS $PREFIX CASCADE" >/dev/null 2>&1 || true
        [ -n "$STARTED_NODES" ] && scripts/cluster.sh down >/dev/null 2>&1 || true
        ;;
    database)
        delete_topology "$PREFIX"
        [ -n "$STARTED_NODES" ] && scripts/pg-standby.sh down >/dev/null 2>&1 || true
        ;;
    esac
    if [ -n "${KEEP:-}" ]; then echo "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

case $MODE in
broker)
    scripts/cluster.sh up
    STARTED_NODES=1
    AMQP=$(scripts/cluster.sh urls)
    $PSQL_SYS -c "CREATE SCHEMA $PREFIX"
    DB="$SYS_DB?options=-c%20search_path%3D$PREFIX"
    ;;
database)
    scripts/pg-standby.sh up
    STARTED_NODES=1
    AMQP="amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=5"
    DB=$(scripts/pg-standby.sh url)
    ;;
*) echo "usage: $0 broker|database" >&2; exit 2 ;;
esac
export AMQP_URL=$AMQP DATABASE_URL=$DB MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" \
    MOKA_INGEST_ATTACHMENTS__FETCH=false
"$M" migrate >/dev/null
MOKA_INGEST_LISTEN=127.0.0.1:18190 "$M" ingress >"$RUN/ingress.log" 2>&1 &
PIDS+=($!)
for w in 1 2; do
    MOKA_INGEST_WORKER_LISTEN=127.0.0.1:1819$w "$M" worker >"$RUN/worker$w.log" 2>&1 &
    PIDS+=($!)
done
for port in 18190 18191 18192; do
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "127.0.0.1:$port not ready" >&2; exit 1; }
done
if [ "$MODE" = broker ]; then
    echo "quorum queue members: $(HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -q -n moka-rmq1@localhost \
        list_queues name members </dev/null | awk -v q="$PREFIX.submissions" '$1 == q {$1 = ""; print}')"
fi

python3 scripts/stream.py --url http://127.0.0.1:18190/api/v2/moka_candidates --access-key "$AK" --secret "$SECRET" \
    --rate "$RATE" --prefix "$PREFIX" --out "$RUN/answers.csv" &
STREAM=$!
PIDS+=($STREAM)
event "stream started"
sleep 10
case $MODE in
broker)
    first=$(scripts/cluster.sh leader "$PREFIX.submissions")
    event "$FAULT node $first (leads $PREFIX.submissions)"
    scripts/cluster.sh "$FAULT" "$first"
    sleep "$DOWN"
    event "start node $first"
    scripts/cluster.sh start "$first"
    event "node $first running"
    sleep 15
    # A second node: the queue's leader now if that is another one, else the next.
    second=$(scripts/cluster.sh leader "$PREFIX.submissions")
    [ "$second" = "$first" ] && second=$((first % 3 + 1))
    event "$FAULT node $second"
    scripts/cluster.sh "$FAULT" "$second"
    sleep "$DOWN"
    event "start node $second"
    scripts/cluster.sh start "$second"
    event "node $second running"
    sleep 15
    ;;
database)
    event "kill the primary (immediate stop)"
    scripts/pg-standby.sh kill-primary
    sleep 5
    event "promote the standby"
    scripts/pg-standby.sh promote
    event "standby promoted"
    sleep 25
    ;;
esac
kill -TERM "$STREAM"
wait "$STREAM" || true
event "stream stopped"

# Drained: nothing left in the submissions queue or its delay queues, and the ledger stable.
case $MODE in
broker) DBQ() { $PSQL_SYS -c "SET search_path = $PREFIX; $1"; } ;;
database) DBQ() { psql -qtA -h 127.0.0.1 -p $((${PG_PORT:-5440} + 1)) -U root test -c "$1"; } ;;
esac
queued() {
    local node=()
    [ "$MODE" = broker ] && node=(-n moka-rmq1@localhost)
    HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -q "${node[@]}" list_queues name messages </dev/null |
        awk -v p="$PREFIX." 'index($1, p) == 1 && $1 !~ /\.dead$/ {n += $2} END {print n + 0}'
}
last=-1
for _ in $(seq 600); do
    now=$(DBQ "SELECT count(*) FROM submissions")
    [ "$(queued)" = 0 ] && [ "$now" = "$last" ] && break
    last=$now
    sleep 1
done
event "drained"

DBQ "SELECT moka_id FROM candidates" >"$RUN/stored"
DBQ "SELECT moka_id FROM submissions WHERE outcome = 'applied' GROUP BY moka_id HAVING count(*) > 1" >"$RUN/applied_twice"
DBQ "SELECT outcome, count(*) FROM submissions GROUP BY 1 ORDER BY 1" >"$RUN/outcomes"
DBQ "SELECT extract(epoch FROM processed_at) FROM submissions ORDER BY 1" >"$RUN/written_at"
DBQ "SELECT count(*) FROM submissions WHERE outcome = 'dead'" >"$RUN/dead"
python3 - "$RUN" "$MODE" <<'EOF'
import sys
run, mode = sys.argv[1], sys.argv[2]
rows = [l.strip().split(",") for l in open(f"{run}/answers.csv") if l.strip()]
sent = {r[0] for r in rows}
ok = {r[0] for r in rows if r[3] == "200"}
stored = {l.strip() for l in open(f"{run}/stored") if l.strip()}
twice = [l for l in open(f"{run}/applied_twice") if l.strip()]
lost, unexpected = ok - stored, stored - sent
recovered = (stored & sent) - ok
codes = {}
for r in rows:
    codes[r[3]] = codes.get(r[3], 0) + 1
events = [(float(l.split()[0]), " ".join(l.split()[1:])) for l in open(f"{run}/events")]
fails = [(t, e) for t, e in events if e.startswith(("stop node", "kill"))]
answers = sorted((float(r[2]), r[3]) for r in rows)
written = [float(l) for l in open(f"{run}/written_at") if l.strip()]

def longest_gap(times, lo, hi):
    # From the window's edges too: an outage that lasts past the window still counts whole.
    ts = [lo] + [t for t in times if lo <= t <= hi] + [hi]
    return max(b - a for a, b in zip(ts, ts[1:]))

print(f"requests {len(rows)}: answers {dict(sorted(codes.items()))}")
print(f"answered 200 {len(ok)}, stored {len(stored)}, lost {len(lost)}, recovered {len(recovered)}, "
      f"unexpected {len(unexpected)}, applied twice {len(twice)}")
print("ledger outcomes: " + ", ".join(l.strip().replace("|", " ") for l in open(f"{run}/outcomes")))
print(f"dead-lettered: {open(f'{run}/dead').read().strip()}")
stream_end = max(t for t, e in events if e == "stream stopped")
for t, e in fails:
    # Up to a minute after the failure, and not past the end of the stream.
    window = (t - 2, min(t + 60, stream_end))
    no_ok = longest_gap([a for a, s in answers if s == "200"], *window)
    pause = longest_gap(written, *window)
    not_ok = sum(1 for a, s in answers if s != "200" and window[0] <= a <= window[1])
    print(f"{e}: longest time without a 200 answer {no_ok:.1f} s ({not_ok} requests not answered 200), "
          f"longest pause in the workers' writes {pause:.1f} s")
if lost:
    print("LOST:", sorted(lost)[:20])
if unexpected:
    print("UNEXPECTED:", sorted(unexpected)[:20])
sys.exit(1 if lost or unexpected or twice else 0)
EOF
