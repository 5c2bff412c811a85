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

# Polls `SELECT count(*) FROM $1` through one psql session (the POLL coprocess, started by
# `start_poll TABLE`, stopped by `stop_poll`; `count` answers): starting psql (and a backend) 50
# times a second costs about a third of a core on a two-core machine, taken from the processes a
# benchmark measures. Needs $PSQL.
start_poll() {
    POLL_TABLE=$1
    coproc POLL { $PSQL 2>/dev/null; }
    PIDS+=("$POLL_PID")
}
count() {
    local n
    echo "SELECT count(*) FROM $POLL_TABLE;" >&"${POLL[1]}"
    # (In $(...): `exit` would leave only the subshell, so the script is stopped by signal.)
    read -r -t 10 n <&"${POLL[0]}" || { echo "the poll's psql stopped answering" >&2; kill $$; }
    echo "$n"
}
stop_poll() {
    kill "$POLL_PID" 2>/dev/null || true
    wait "$POLL_PID" 2>/dev/null || true
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
