#!/usr/bin/env bash
# Starts a local three-node RabbitMQ cluster (the Debian package's rabbitmq-server), for tests
# and benchmarks of the system on a cluster: nodes tt-mq-<port>@localhost on AMQP ports
# BASE_PORT, BASE_PORT+1, BASE_PORT+2 (default 5701-5703; Erlang distribution on the same
# plus 20000), each with its own data under
# DIR (default: a directory under ${TMPDIR:-/tmp}), no plugins (no management port to clash
# with a broker already running), sharing the user's Erlang cookie. Prints the
# TELETRAAN_AMQP_URL listing the three nodes. Stop it with ops/cluster/stop.sh (same DIR).
set -euo pipefail
BASE_PORT=${BASE_PORT:-5701}
DIR=${DIR:-${TMPDIR:-/tmp}/teletraan-mq-cluster}
NODES=("tt-mq-$BASE_PORT" "tt-mq-$((BASE_PORT + 1))" "tt-mq-$((BASE_PORT + 2))")

node_env() { # INDEX: the environment of one node
    local i=$1 name=${NODES[$1]}
    echo RABBITMQ_NODENAME="$name@localhost" RABBITMQ_NODE_PORT=$((BASE_PORT + i)) \
        RABBITMQ_DIST_PORT=$((BASE_PORT + 20000 + i)) RABBITMQ_MNESIA_BASE="$DIR/$name/mnesia" \
        RABBITMQ_LOG_BASE="$DIR/$name/log" RABBITMQ_PID_FILE="$DIR/$name/pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" RABBITMQ_CONFIG_FILE="$DIR/$name/rabbitmq"
}

ctl() { # NODE ARGS…
    local node=$1
    shift
    rabbitmqctl -q -n "$node@localhost" "$@"
}

command -v rabbitmq-server >/dev/null || { echo "cluster: rabbitmq-server is not installed" >&2; exit 1; }
mkdir -p "$DIR"
echo "[]." > "$DIR/enabled_plugins"
# Debian's rabbitmq-server runs the node as the rabbitmq user when started by root: the node's
# files must be that user's.
owner() {
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
        chown -R rabbitmq:rabbitmq "$DIR"
    fi
}
for i in 0 1 2; do
    name=${NODES[$i]}
    mkdir -p "$DIR/$name/mnesia" "$DIR/$name/log"
    # Quorum queues need no more than the defaults; the guest user may connect from localhost.
    printf 'listeners.tcp.default = %s\nloopback_users = none\n' $((BASE_PORT + i)) > "$DIR/$name/rabbitmq.conf"
    if ctl "$name" status >/dev/null 2>&1; then
        continue
    fi
    owner
    env $(node_env "$i") rabbitmq-server -detached >/dev/null 2>&1
done
for name in "${NODES[@]}"; do
    ctl "$name" await_startup --timeout 120
done
# The second and third nodes join the first (once).
for name in "${NODES[@]:1}"; do
    if ! ctl "$name" cluster_status --formatter json 2>/dev/null | grep -q "${NODES[0]}@localhost"; then
        ctl "$name" stop_app >/dev/null 2>&1
        ctl "$name" join_cluster "${NODES[0]}@localhost" >/dev/null 2>&1
        ctl "$name" start_app >/dev/null 2>&1
    fi
done
for name in "${NODES[@]}"; do
    ctl "$name" await_startup --timeout 120
done
urls=()
for i in 0 1 2; do
    urls+=("amqp://guest:guest@127.0.0.1:$((BASE_PORT + i))/%2f")
done
(IFS=,; echo "${urls[*]}")
