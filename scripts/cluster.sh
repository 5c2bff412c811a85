#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, from Debian's rabbitmq-server, for the
# failover tests (scripts/chaos.sh). Every node listens on loopback only (AMQP and Erlang
# distribution), with its own node name, ports, data directory and config file; the system node
# (rabbit@localhost, 5672) is never touched.
#
#   scripts/cluster.sh up            start the three nodes and join them into one cluster
#   scripts/cluster.sh down          stop the nodes this script started (by node name and pid) and
#                                    remove their directory
#   scripts/cluster.sh status        the cluster's members, and which are running
#   scripts/cluster.sh stop N        stop node N (1-3) only, keeping its data (a clean stop)
#   scripts/cluster.sh kill N        kill node N's process (SIGKILL, by its pid file): a crash
#   scripts/cluster.sh start N       start node N again; it rejoins the cluster
#   scripts/cluster.sh urls          the AMQP_URL value for the three nodes
#   scripts/cluster.sh leader QUEUE  the node (1-3) that leads the quorum queue QUEUE
#
# Settings: CLUSTER_DIR (/tmp/moka-cluster), CLUSTER_PORT (5680: node N takes AMQP port
# CLUSTER_PORT + N and distribution port CLUSTER_PORT + 20000 + N).
set -euo pipefail
DIR=${CLUSTER_DIR:-/tmp/moka-cluster}
BASE=${CLUSTER_PORT:-5680}
BIN=/usr/lib/rabbitmq/bin
# The nodes and the CLI share the system installation's Erlang cookie (same machine, same user).
export HOME=/var/lib/rabbitmq ERL_EPMD_ADDRESS=127.0.0.1

node() { echo "moka-rmq$1@localhost"; }
port() { echo $((BASE + $1)); }

# The environment of node $1: everything that would otherwise come from /etc/rabbitmq.
node_env() {
    local d=$DIR/node$1
    echo RABBITMQ_NODENAME="$(node "$1")" \
        RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$d/mnesia" \
        RABBITMQ_LOG_BASE="$d/log" \
        RABBITMQ_PID_FILE="$d/pid" \
        RABBITMQ_DIST_PORT=$((BASE + 20000 + $1))
}

ctl() { local n=$1; shift; (cd /tmp && ERL_CRASH_DUMP=/dev/null "$BIN/rabbitmqctl" -q -n "$(node "$n")" "$@" </dev/null); }

write_config() {
    local d=$DIR/node$1
    mkdir -p "$d/mnesia" "$d/log"
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(port "$1")
loopback_users = none
# A node cut off from the majority pauses rather than serving a split brain.
cluster_partition_handling = pause_minority
EOF
    cat >"$d/rabbitmq-env.conf" <<EOF
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    echo '[].' >"$d/enabled_plugins"
    echo '[].' >"$d/advanced.config"
}

start_node() {
    [ -d "$DIR/node$1" ] || { echo "node $1 was never set up: run '$0 up'" >&2; exit 1; }
    # setsid: the node outlives the shell (and the process group) that started it.
    # Started from its own directory: a crash or Mnesia core dump lands there, not in the caller's.
    (cd "$DIR/node$1" && ERL_CRASH_DUMP="$DIR/node$1/erl_crash.dump" \
        setsid env $(node_env "$1") "$BIN/rabbitmq-server" -detached >>"$DIR/node$1/log/startup.log" 2>&1)
    # await_startup needs the node's runtime up first.
    for _ in $(seq 120); do ctl "$1" ping >/dev/null 2>&1 && break; sleep 0.5; done
    ctl "$1" await_startup --timeout 120 >/dev/null
}

stop_node() {
    local pidfile=$DIR/node$1/pid pid=""
    [ -f "$pidfile" ] && pid=$(cat "$pidfile")
    # With the pid file, `stop` returns once the node's process is gone (without one it would
    # wait for the file to appear).
    if [ -n "$pid" ]; then
        ctl "$1" stop "$pidfile" >/dev/null 2>&1 || true
    else
        ctl "$1" stop >/dev/null 2>&1 || true
    fi
    # The node's own pid (written by the node itself): only what this script started.
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

case ${1:-} in
up)
    if [ -d "$DIR" ]; then echo "$DIR exists: run '$0 down' first" >&2; exit 1; fi
    for n in 1 2 3; do write_config "$n"; done
    for n in 1 2 3; do start_node "$n"; done
    for n in 2 3; do
        ctl "$n" stop_app
        ctl "$n" join_cluster "$(node 1)"
        ctl "$n" start_app
    done
    ctl 1 await_online_nodes 3 --timeout 60 >/dev/null
    echo "cluster up: $(node 1) $(node 2) $(node 3) on ports $(port 1), $(port 2), $(port 3)"
    ;;
down)
    [ -d "$DIR" ] || exit 0
    for n in 3 2 1; do [ -d "$DIR/node$n" ] && stop_node "$n"; done
    rm -rf "$DIR"
    echo "cluster down"
    ;;
status)
    for n in 1 2 3; do
        if ctl "$n" ping >/dev/null 2>&1; then state=running; else state=stopped; fi
        echo "node $n $(node "$n") 127.0.0.1:$(port "$n") $state"
    done
    ;;
stop) stop_node "${2:?node number}" ;;
kill)
    pid=$(cat "$DIR/node${2:?node number}/pid")
    kill -9 "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$DIR/node$2/pid"
    ;;
start) start_node "${2:?node number}" ;;
urls) echo "amqp://guest:guest@127.0.0.1:$(port 1)/%2f?heartbeat=5,amqp://guest:guest@127.0.0.1:$(port 2)/%2f?heartbeat=5,amqp://guest:guest@127.0.0.1:$(port 3)/%2f?heartbeat=5" ;;
leader)
    # Ask any running node.
    for n in 1 2 3; do
        if out=$(ctl "$n" list_queues name leader 2>/dev/null); then
            leader=$(awk -v q="${2:?queue}" '$1 == q {print $2}' <<<"$out")
            [ -n "$leader" ] && { sed -E 's/^moka-rmq([0-9])@.*/\1/' <<<"$leader"; exit 0; }
        fi
    done
    echo "no running node knows the queue ${2}" >&2
    exit 1
    ;;
*)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
