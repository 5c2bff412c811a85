#!/usr/bin/env bash
# Ingress benchmark: the yardstick's `ref-ingress` and `moka-ingest ingress`, side by side in one
# run, under the same `limits load` generator (n=20000, c=64), rounds interleaved, the order
# alternating from round to round. Prints each run's line (requests/s, latency, and the cores used
# by the generator, RabbitMQ and the machine: the ingress is the machine's rest), the medians, and
# the group sizes moka-ingest published.
# Needs RabbitMQ on 127.0.0.1:5672. Prints one line per run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${N:-20000}
C=${C:-64}
ROUNDS=${ROUNDS:-3}
PREFIX=bench$$

build_both

cleanup() {
    stop_started
    delete_topology "$PREFIX"
    rabbitmqctl -q purge_queue ref.candidates >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$L" ref-ingress --listen 127.0.0.1:18080 --secret "$SECRET" --access-key "$AK" 2>/dev/null &
PIDS+=($!)
RUST_LOG=${RUST_LOG:-info} MOKA_INGEST_LISTEN=127.0.0.1:18090 MOKA_INGEST_QUEUE_PREFIX=$PREFIX \
    MOKA_INGEST_KEYS="$AK:$SECRET" "$M" ingress >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/readyz >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -s -o /dev/null -X POST http://127.0.0.1:18080/api/v2/moka_candidates && break; sleep 0.1; done

OUT=$(mktemp)
run() { # name port
    # Both queues empty and the broker settled, so neither run inherits the other's backlog.
    rabbitmqctl -q purge_queue ref.candidates >/dev/null 2>&1 || true
    rabbitmqctl -q purge_queue "$PREFIX.submissions" >/dev/null
    sleep 1
    printf '%s\t%s\n' "$1" "$("$L" load --url "http://127.0.0.1:$2/api/v2/moka_candidates" --secret "$SECRET" --access-key "$AK" --n "$N" --concurrency "$C" | tail -n 1)" | tee -a "$OUT"
}
for round in $(seq "$ROUNDS"); do
    # The order alternates: whichever runs second in a round is not favoured every time.
    if [ $((round % 2)) = 1 ]; then run ref-ingress 18080; run moka-ingest 18090
    else run moka-ingest 18090; run ref-ingress 18080; fi
done
echo
python3 - "$OUT" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rest = line.rstrip("\n").split("\t", 1)
    kv = dict(re.findall(r"(\w+)=([\d.]+)", rest))
    rows.setdefault(name, []).append(kv)
med = {}
for name, runs in rows.items():
    rps = statistics.median(float(r["req_per_s"]) for r in runs)
    p99 = statistics.median(float(r["p99_ms"]) for r in runs)
    med[name] = (rps, p99)
    print(f"{name:12} median req/s {rps:8.0f}   median p99 {p99:6.2f} ms   ({len(runs)} runs)")
(r_rps, r_p99), (m_rps, m_p99) = med["ref-ingress"], med["moka-ingest"]
print(f"ratio: throughput {m_rps / r_rps:.2f}x (target >= 0.80), p99 {m_p99 / r_p99:.2f}x (target <= 1.50)")
per_round = [float(m["req_per_s"]) / float(r["req_per_s"]) for r, m in zip(rows["ref-ingress"], rows["moka-ingest"])]
print("throughput ratio per round:", " ".join(f"{x:.2f}" for x in per_round))
PY
rm -f "$OUT"
# Group publishing: how many requests went per broker message (the ingress's histogram, over
# every round; quantiles per process, as exported).
curl -s http://127.0.0.1:18090/metrics | awk '/^moka_ingress_group_size/ {
    if ($1 ~ /quantile="0.5"/) p50 = $2; if ($1 ~ /quantile="0.99"/) p99 = $2;
    if ($1 ~ /_sum/) sum = $2; if ($1 ~ /_count/) n = $2 }
    END { if (n > 0) printf "group size: median %s, p99 %s, mean %.1f over %d messages\n", p50, p99, sum / n, n }'

