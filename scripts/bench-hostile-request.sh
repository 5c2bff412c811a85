#!/usr/bin/env bash
# Worst-case request cost: 1 MiB bodies of hostile shapes, sent to `moka-ingest ingress` and, for
# comparison, to the yardstick's `ref-ingress`, one request at a time (curl), REPEAT times each.
# Prints the slowest and the median answer time per shape, and the status moka-ingest gave.
# Needs RabbitMQ on 127.0.0.1:5672; starts both services on 127.0.0.1 and stops them by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
REPEAT=${REPEAT:-5}
PREFIX=benchhostile$$
build_both

DIR=$(mktemp -d)
cleanup() {
    stop_started
    delete_topology "$PREFIX"
    rabbitmqctl -q purge_queue ref.candidates >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$L" ref-ingress --listen 127.0.0.1:18080 --secret "$SECRET" --access-key "$AK" 2>/dev/null &
PIDS+=($!)
MOKA_INGEST_LISTEN=127.0.0.1:18090 MOKA_INGEST_QUEUE_PREFIX=$PREFIX MOKA_INGEST_KEYS="$AK:$SECRET" \
    "$M" ingress >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/readyz >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -s -o /dev/null -X POST http://127.0.0.1:18080/api/v2/moka_candidates && break; sleep 0.1; done

# The shapes, each just under the 1 MiB body limit.
python3 - "$DIR" "$AK" <<'PY'
import json, sys, time, urllib.parse
d, ak = sys.argv[1], sys.argv[2]
MiB = 1024 * 1024 - 4096
now = str(int(time.time()))
def w(name, body): open(f"{d}/{name}", "wb").write(body[:MiB] if isinstance(body, bytes) else body)
w("many-names.form", b"".join(b"%x=&" % i for i in range(300000))[:MiB])
w("empty-pairs.form", b"&" * MiB)
w("escapes-bad-signature.form", ("access_key=%s&tonce=%s&signature=%s&payload=" % (ak, now, "0" * 64)).encode() + b"%E5%BC%A0" * (MiB // 9 - 20))
w("long-name.form", b"a" * (MiB - 2) + b"=1")
w("json-many-keys.json", ("{" + ",".join('"k%d":"v"' % i for i in range(100000)) + "}").encode()[:MiB - 1] + b"}")
w("json-nested.json", b'{"payload":' + b"[" * (MiB // 2 - 20) + b"]" * (MiB // 2 - 20) + b"}")
w("json-long-string-bad-signature.json", json.dumps({"access_key": ak, "tonce": now, "signature": "0" * 64, "payload": "张" * (MiB // 3 - 100)}, ensure_ascii=False).encode())
w("invalid-utf8.form", b"payload=" + b"%FF" * (MiB // 3 - 10))
# Payloads for signed requests: many keys, and a long string (signed below with moka-ingest sign).
open(f"{d}/payload-many-keys", "w").write("{" + '"id":"x",' + ",".join('"k%d":%d' % (i, i) for i in range(40000)) + "}")
open(f"{d}/payload-nested", "w").write('{"id":"x","a":' + "[" * 80000 + "]" * 80000 + "}")
PY
for p in many-keys nested; do
    "$M" sign --access-key "$AK" --secret "$SECRET" --payload-file "$DIR/payload-$p" | tr -d "\n" > "$DIR/signed-payload-$p.form"
done
ls -l "$DIR" | awk 'NR>1 {printf "%-40s %8d bytes\n", $9, $5}'
echo

time_one() { # url file content-type -> "seconds status"
    curl -s -o /dev/null -w '%{time_total} %{http_code}\n' -H "Content-Type: $3" --data-binary "@$2" "$1"
}
printf '%-40s %-12s %10s %10s %s\n' shape target "max ms" "median ms" status
for f in "$DIR"/*.form "$DIR"/*.json; do
    ct=application/x-www-form-urlencoded
    case "$f" in *.json) ct=application/json ;; esac
    for target in moka-ingest:18090 ref-ingress:18080; do
        name=${target%%:*}; port=${target##*:}
        times=(); status=
        for _ in $(seq "$REPEAT"); do
            read -r t s < <(time_one "http://127.0.0.1:$port/api/v2/moka_candidates" "$f" "$ct")
            times+=("$t"); status=$s
        done
        python3 - "$(basename "$f")" "$name" "$status" "${times[@]}" <<'PY'
import statistics, sys
shape, name, status, times = sys.argv[1], sys.argv[2], sys.argv[3], [float(t) * 1000 for t in sys.argv[4:]]
print(f"{shape:40} {name:12} {max(times):10.1f} {statistics.median(times):10.1f} {status}")
PY
    done
done
