#!/usr/bin/env bash
# Stops the local cluster of ops/cluster/start.sh (same BASE_PORT and DIR) and removes its data.
set -uo pipefail
BASE_PORT=${BASE_PORT:-5701}
DIR=${DIR:-${TMPDIR:-/tmp}/teletraan-mq-cluster}
for name in "tt-mq-$((BASE_PORT + 2))" "tt-mq-$((BASE_PORT + 1))" "tt-mq-$BASE_PORT"; do
    rabbitmqctl -q -n "$name@localhost" stop >/dev/null 2>&1 || true
done
rm -rf "$DIR"
