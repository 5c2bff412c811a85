#!/usr/bin/env bash
# Ingress benchmark: the yardstick's `ref-ingress` and `moka-ingest ingress`, side by side in one
# run, under the same `limits load` generator (n=20000, c=64), rounds interleaved, the order
# alternating from round to round. Prints each run's line (requests/s, latency, and the cores used
# by the generator, RabbitMQ and the machine: the ingress is the machine's rest), the medians, and
# the group sizes moka-ingest published.
# Needs RabbitMQ on 127.0.0.1:5672. Prints one line per run, the medians against issue 14's targets,
# and the group sizes.
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
# Group publishing: how many requests went per broker message, from the ingress's histogram
# (`moka_ingress_group_size`, over every round).
METRICS=$(mktemp)
curl -s http://127.0.0.1:18090/metrics >"$METRICS"
python3 - "$OUT" "$METRICS" "$C" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rest = line.rstrip("\n").split("\t", 1)
    kv = dict(re.findall(r"(\w+)=([\d.]+)", rest))
    rows.setdefault(name, []).append(kv)

def med(runs, key):
    return statistics.median(float(r[key]) for r in runs)

def own_cores(name, r):
    # `load` counts processes named `limits` as peers (so ref-ingress); for moka-ingest the
    # ingress is what is left of the machine's share after the generator and RabbitMQ.
    if name == "ref-ingress":
        return float(r["cores_peer"])
    return float(r["cores_all"]) - float(r["cores_self"]) - float(r["cores_rabbit"]) - float(r["cores_pg"])

m = {}
for name, runs in rows.items():
    m[name] = {k: med(runs, k) for k in ("req_per_s", "p50_ms", "p99_ms", "cores_rabbit")}
    m[name]["ingress"] = statistics.median(own_cores(name, r) for r in runs)
    x = m[name]
    print(f"{name:12} median req/s {x['req_per_s']:8.0f}   p50 {x['p50_ms']:6.2f} ms   p99 {x['p99_ms']:6.2f} ms   "
          f"cores: ingress {x['ingress']:.2f}, RabbitMQ {x['cores_rabbit']:.2f}   ({len(runs)} runs)")
r, k = m["ref-ingress"], m["moka-ingest"]
print(f"ratio: throughput {k['req_per_s'] / r['req_per_s']:.2f}x, p50 {k['p50_ms'] / r['p50_ms']:.2f}x, "
      f"p99 {k['p99_ms'] / r['p99_ms']:.2f}x")
if int(sys.argv[3]) == 1:
    print("targets (issue 14, c = 1): p50 within 10% of the reference's (ratio <= 1.10)")
else:
    print("targets (issue 14, c = 64 and 256): throughput >= 1.50x, p99 <= 1.00x")
per_round = [float(b["req_per_s"]) / float(a["req_per_s"]) for a, b in zip(rows["ref-ingress"], rows["moka-ingest"])]
print("throughput ratio per round:", " ".join(f"{x:.2f}" for x in per_round))

# The group sizes: quantiles interpolated within the histogram's buckets, as Prometheus's
# histogram_quantile does.
buckets, total, count = [], 0.0, 0.0
for line in open(sys.argv[2]):
    if line.startswith("moka_ingress_group_size_bucket"):
        le = re.search(r'le="([^"]+)"', line).group(1)
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    elif line.startswith("moka_ingress_group_size_sum"):
        total = float(line.split()[-1])
    elif line.startswith("moka_ingress_group_size_count"):
        count = float(line.split()[-1])

def quantile(q):
    # (Sizes are whole numbers of at least 1: the first bucket, le="1", holds only ones.)
    rank, lower, below = q * count, 1.0, 0.0
    for upper, cumulative in sorted(buckets):
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(cumulative - below, 1)
        lower, below = upper, cumulative
    return lower

if count:
    print(f"group size: median {quantile(0.5):.1f}, p99 {quantile(0.99):.1f}, mean {total / count:.1f} "
          f"over {count:.0f} messages")
PY
rm -f "$OUT" "$METRICS"
