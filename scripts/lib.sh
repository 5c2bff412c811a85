# Shared by the benchmark scripts (sourced, not run).

# Deletes every queue and exchange whose name starts with "$1." (what a run declared).
# rabbitmqctl has no delete_exchange; `eval` calls the broker's own function (RabbitMQ 3.10).
delete_topology() {
    local prefix=$1 name
    for name in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$prefix\."); do
        rabbitmqctl -q delete_queue "$name" >/dev/null 2>&1 || true
    done
    for name in $(rabbitmqctl -q list_exchanges name 2>/dev/null | grep "^$prefix\."); do
        rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$name\">>), false, <<\"moka-ingest-bench\">>)." >/dev/null 2>&1 || true
    done
}

# The access key both sides of a benchmark accept, and its secret.
AK=bench-access-key
SECRET=bench-secret-0123456789abcdef

# Builds the yardstick (into its own target dir: its folder may be read-only) and moka-ingest,
# one after the other; sets L and M to their binaries.
build_both() {
    local manifest=${LIMITS_MANIFEST:-../shared/tools/limits/Cargo.toml}
    local target=${LIMITS_TARGET:-/tmp/limits-target}
    CARGO_TARGET_DIR=$target cargo build --release --quiet --manifest-path "$manifest"
    cargo build --release --quiet
    L=$target/release/limits
    M=$PWD/target/release/moka-ingest
}

# The processes a script starts, by pid: `stop_started` stops them, and nothing else.
PIDS=()
stop_started() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# CPU time (clock ticks) used so far by the processes whose command name is exactly one of "$@"
# (their threads included): cores = ticks difference / CLK_TCK / seconds.
cpu_ticks() {
    local name pid total=0
    for name in "$@"; do
        for pid in $(pgrep -x "$name"); do
            total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
        done
    done
    echo "$total"
}

# The drain benchmarks' clock (the WATCH coprocess, started by `start_watch N METRICS_URL...`,
# stopped by `stop_watch`): `watch_for started` returns once the workers have committed their first
# submission, `watch_for done` once they have committed N. It reads the workers' /metrics
# (scripts/drain_watch.py) rather than polling `SELECT count(*)`, a scan of the growing table that
# took a quarter of a core from the PostgreSQL being measured. `stored_count TABLE` checks the table
# once, at the end. Needs $PSQL.
start_watch() {
    coproc WATCH { python3 scripts/drain_watch.py "$@"; }
    WATCHER=$WATCH_PID # (bash unsets WATCH_PID once the coprocess has ended)
    PIDS+=("$WATCHER")
}
watch_for() {
    local line
    # (In $(...): `exit` would leave only the subshell, so the script is stopped by signal.)
    read -r line <&"${WATCH[0]}" || { echo "the drain watch stopped before '$1'" >&2; kill $$; }
    [ "$line" = "$1" ] || { echo "the drain watch said '$line', expected '$1'" >&2; kill $$; }
}
stop_watch() {
    kill "$WATCHER" 2>/dev/null || true
    wait "$WATCHER" 2>/dev/null || true
}
stored_count() {
    $PSQL -c "SELECT count(*) FROM $1"
}

# Waits up to 30 s for URL $1 to answer 200; says which did not.
wait_200() {
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$1 did not answer 200" >&2
    return 1
}
