#!/usr/bin/env bash
# The shipped monitoring against the real thing: starts an ingress, a worker and a console (own
# queue prefix, own schema, own ports), a loopback file server for their résumés, a steady stream
# of signed candidates (one in ten with a wrong signature) and a real Prometheus (Debian's
# package) scraping the three every second with deploy/prometheus/alerts.yml loaded. Then every
# query of the Grafana dashboard must return data, and every alert rule must evaluate and each
# metric it reads must exist (scripts/prometheus_queries.py). Loopback only; stops what it
# started, by pid, and drops its schema and queues.
#
# On a healthy run no alert may fire but MokaIngressBadSignatures (the stream sends bad ones).
#
#   scripts/check-monitoring.sh          MOKA_BIN (default target/debug/moka-ingest, built if
#                                        missing), SECONDS_OF_LOAD (30), PORT_BASE (18290: ten
#                                        ports from it), KEEP=1 keeps the run dir
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export PATH="$PATH:/usr/sbin:/sbin"
PREFIX=mon$$
RUN=/tmp/moka-monitoring-$$
mkdir -p "$RUN/files" "$RUN/prometheus"
PSQL="psql -qtA -h 127.0.0.1 -U root test -v ON_ERROR_STOP=1"
export PGOPTIONS="-c client_min_messages=warning"
B=${PORT_BASE:-18290}
INGRESS=$B WORKER=$((B + 1)) CONSOLE=$((B + 2)) FILES=$((B + 3)) PROM=$((B + 9))

cleanup() {
    stop_started
    $PSQL -c "DROP SCHEMA IF EXISTS $PREFIX CASCADE" >/dev/null 2>&1 || true
    delete_topology "$PREFIX"
    if [ -n "${KEEP:-}" ]; then echo "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

command -v prometheus >/dev/null || { echo "prometheus is missing (apt-get install prometheus)" >&2; exit 1; }
M=${MOKA_BIN:-$PWD/target/debug/moka-ingest}
[ -x "$M" ] || cargo build --quiet

$PSQL -c "CREATE SCHEMA $PREFIX"
head -c 200000 /dev/urandom >"$RUN/files/resume.pdf"
python3 -m http.server "$FILES" --bind 127.0.0.1 --directory "$RUN/files" >"$RUN/files.log" 2>&1 &
PIDS+=($!)
echo "a passphrase for the monitoring check" | "$M" console hash-password >"$RUN/hash"
echo "ana:operator:$(cat "$RUN/hash")" >"$RUN/users"

export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f" MOKA_INGEST_QUEUE_PREFIX=$PREFIX \
    DATABASE_URL="postgres://root@127.0.0.1:5432/test?options=-c%20search_path%3D$PREFIX" \
    MOKA_INGEST_KEYS="$AK:$SECRET" MOKA_INGEST_ATTACHMENTS_ALLOW=127.0.0.0/8 \
    MOKA_INGEST_ATTACHMENTS_DIR=$RUN/store MOKA_INGEST_LISTEN=127.0.0.1:$INGRESS \
    MOKA_INGEST_WORKER_LISTEN=127.0.0.1:$WORKER MOKA_INGEST_CONSOLE_LISTEN=127.0.0.1:$CONSOLE \
    MOKA_INGEST_CONSOLE_USERS_FILE=$RUN/users
"$M" worker >"$RUN/worker.log" 2>&1 &
PIDS+=($!)
wait_200 "http://127.0.0.1:$WORKER/readyz"
"$M" ingress >"$RUN/ingress.log" 2>&1 &
PIDS+=($!)
"$M" console >"$RUN/console.log" 2>&1 &
PIDS+=($!)
wait_200 "http://127.0.0.1:$INGRESS/readyz"
wait_200 "http://127.0.0.1:$CONSOLE/readyz"

# The example scrape config, pointed at this run's ports and scraping every second.
cp deploy/prometheus/alerts.yml "$RUN/prometheus/alerts.yml"
sed -e "s/scrape_interval: 15s/scrape_interval: 1s/; s/evaluation_interval: 15s/evaluation_interval: 1s/" \
    -e "s/127.0.0.1:8080/127.0.0.1:$INGRESS/; s/127.0.0.1:8081/127.0.0.1:$WORKER/; s/127.0.0.1:8082/127.0.0.1:$CONSOLE/" \
    deploy/prometheus/prometheus.yml >"$RUN/prometheus/prometheus.yml"
promtool check config "$RUN/prometheus/prometheus.yml" >/dev/null
prometheus --config.file="$RUN/prometheus/prometheus.yml" --storage.tsdb.path="$RUN/prometheus/data" \
    --web.listen-address=127.0.0.1:$PROM >"$RUN/prometheus.log" 2>&1 &
PIDS+=($!)
wait_200 "http://127.0.0.1:$PROM/-/ready"

python3 scripts/stream.py --url "http://127.0.0.1:$INGRESS/api/v2/moka_candidates" --access-key "$AK" \
    --secret "$SECRET" --rate 50 --threads 4 --prefix "$PREFIX" --out "$RUN/answers.csv" --bad-every 10 \
    --attachment-url "http://127.0.0.1:$FILES/resume.pdf" &
STREAM=$!
PIDS+=($STREAM)
# One PromQL query's single value (empty when the result is empty).
value() {
    curl -fsS "http://127.0.0.1:$PROM/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
sleep "${SECONDS_OF_LOAD:-30}"
# Scrapes are every second: all three targets up within a few more.
for _ in $(seq 100); do
    up=$(value 'sum(up)')
    [ "$up" = 3 ] && break
    sleep 0.1
done
echo "targets up: $up of 3"
[ "$up" = 3 ]
python3 scripts/prometheus_queries.py --prometheus "http://127.0.0.1:$PROM" --wait 60 \
    --dashboard deploy/grafana/moka-ingest.json --rules deploy/prometheus/alerts.yml
# A healthy deployment under load: nothing fires but the bad signatures the stream sends.
firing=$(curl -fsS "http://127.0.0.1:$PROM/api/v1/query" \
    --data-urlencode 'query=ALERTS{alertstate="firing",alertname!="MokaIngressBadSignatures"}' |
    python3 -c 'import json,sys; print(" ".join(sorted({r["metric"]["alertname"] for r in json.load(sys.stdin)["data"]["result"]})))')
echo "alerts firing besides MokaIngressBadSignatures: ${firing:-none}"
[ -z "$firing" ]
kill -TERM "$STREAM"
wait "$STREAM" || true
echo "applied: $($PSQL -c "SELECT count(*) FROM $PREFIX.submissions WHERE outcome = 'applied'")," \
    "attachments stored: $($PSQL -c "SELECT count(*) FROM $PREFIX.candidate_attachments WHERE status = 'stored'")"
