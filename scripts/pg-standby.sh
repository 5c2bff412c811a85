#!/usr/bin/env bash
# A PostgreSQL primary and its streaming standby on this one machine, for the database failover
# run (scripts/chaos.sh database). Both are clusters of the installed PostgreSQL (15) with their
# own data directories, ports and configuration, listening on 127.0.0.1 only; the system cluster
# (5432) is never touched. Replication is synchronous (remote flush): a commit the primary
# acknowledges is on the standby's disk too, so promoting the standby loses no acknowledged write.
#
#   scripts/pg-standby.sh up            initdb the primary, pg_basebackup the standby, start both
#   scripts/pg-standby.sh down          stop both (by their pid files) and remove their directory
#   scripts/pg-standby.sh status        which answers, and which is in recovery
#   scripts/pg-standby.sh kill-primary  stop the primary at once (immediate mode: a crash)
#   scripts/pg-standby.sh promote       promote the standby to primary
#   scripts/pg-standby.sh url           the DATABASE_URL naming both, target_session_attrs=read-write
#
# Settings: PG_DIR (/tmp/moka-pg), PG_PORT (5440: the primary; the standby takes PG_PORT + 1).
set -euo pipefail
DIR=${PG_DIR:-/tmp/moka-pg}
PRIMARY_PORT=${PG_PORT:-5440}
STANDBY_PORT=$((PRIMARY_PORT + 1))
BIN=/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -n | tail -n 1)/bin
# PostgreSQL refuses to run as root: everything runs as the postgres user.
as_pg() { runuser -u postgres -- "$@"; }
psql_at() { local port=$1; shift; psql -qtA -h 127.0.0.1 -p "$port" -U postgres postgres "$@"; }

case ${1:-} in
up)
    if [ -d "$DIR" ]; then echo "$DIR exists: run '$0 down' first" >&2; exit 1; fi
    mkdir -p "$DIR" && chown postgres: "$DIR"
    as_pg "$BIN/initdb" -D "$DIR/primary" -U postgres -A trust --no-sync >/dev/null
    cat >>"$DIR/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PRIMARY_PORT
unix_socket_directories = '$DIR'
wal_level = replica
max_wal_senders = 4
synchronous_commit = on
EOF
    echo "host replication postgres 127.0.0.1/32 trust" >>"$DIR/primary/pg_hba.conf"
    as_pg "$BIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w start >/dev/null
    psql_at "$PRIMARY_PORT" -c "CREATE ROLE root SUPERUSER LOGIN" -c "CREATE DATABASE test OWNER root"
    # The standby: a base backup with the replication settings written (-R), then its own port.
    # -R writes primary_conninfo into postgresql.auto.conf; the standby names itself (application
    # name) with -d, so that the primary can wait for it by name.
    as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DIR/standby" -R -X stream -c fast \
        -d "application_name=moka_standby"
    cat >>"$DIR/standby/postgresql.conf" <<EOF
port = $STANDBY_PORT
# Once promoted it stands alone: waiting for a standby of its own would hang every commit.
synchronous_standby_names = ''
EOF
    as_pg "$BIN/pg_ctl" -D "$DIR/standby" -l "$DIR/standby.log" -w start >/dev/null
    # Synchronous only now: before the standby existed, every commit would have waited for it.
    psql_at "$PRIMARY_PORT" -c "ALTER SYSTEM SET synchronous_standby_names = 'moka_standby'" -c "SELECT pg_reload_conf()" >/dev/null
    state=""
    for _ in $(seq 100); do
        state=$(psql_at "$PRIMARY_PORT" -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'moka_standby'")
        [ "$state" = sync ] && break
        sleep 0.1
    done
    [ "$state" = sync ] || { echo "the standby did not become synchronous (state: '$state'); see $DIR/*.log" >&2; exit 1; }
    echo "primary 127.0.0.1:$PRIMARY_PORT, synchronous standby 127.0.0.1:$STANDBY_PORT"
    ;;
down)
    [ -d "$DIR" ] || exit 0
    for c in standby primary; do
        [ -f "$DIR/$c/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DIR/$c" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$DIR"
    echo "primary and standby removed"
    ;;
status)
    for port in "$PRIMARY_PORT" "$STANDBY_PORT"; do
        if r=$(psql_at "$port" -c "SELECT pg_is_in_recovery()" 2>/dev/null); then
            [ "$r" = t ] && echo "127.0.0.1:$port standby" || echo "127.0.0.1:$port primary"
        else
            echo "127.0.0.1:$port down"
        fi
    done
    ;;
kill-primary) as_pg "$BIN/pg_ctl" -D "$DIR/primary" -m immediate -w stop >/dev/null ;;
promote) as_pg "$BIN/pg_ctl" -D "$DIR/standby" -w promote >/dev/null ;;
url) echo "postgres://root@127.0.0.1:$PRIMARY_PORT,127.0.0.1:$STANDBY_PORT/test?target_session_attrs=read-write" ;;
*)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
