#!/usr/bin/env bash
# The failover runs one after the other, for a figure of each (see scripts/chaos.sh for what is
# counted): the submissions queue's leader stopped cleanly, then killed (SIGKILL), on a three-node
# RabbitMQ cluster; a PostgreSQL primary killed and its standby promoted. Prints each run's
# summary; fails if any run lost, invented or doubled a candidate. About 3 minutes per run.
# RATE, DOWN as for chaos.sh. Loopback only; each run starts and stops its own nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for run in "broker stop" "broker kill" "database -"; do
    set -- $run
    echo "## $1 ($2)"
    FAULT=$2 scripts/chaos.sh "$1" | grep -E "^(requests|answered|ledger|dead-lettered|stop|kill|quorum)" || status=1
done
exit $status
