#!/usr/bin/env bash
# Pings through a pool of two gateways behind HAProxy against one gateway directly, in the same
# run (issue 12).
#
# Seeds HOSTS hosts over STAGES stages with a rollout in progress (ops/bench/sql/seed.sql),
# starts two `teletraan gateway` processes and a `teletraan worker` on that database and a
# fresh namespace, and HAProxy (the Debian package) balancing round-robin over both gateways,
# as docs/operations.md configures it. Primes every host once through HAProxy; then runs the
# load generator (`teletraan bench load`) against the first gateway directly and against
# HAProxy, at the highest rate and at RATE pings/s, alternating targets, ROUNDS times. Prints
# pings/s, latency percentiles, CPU per ping (HAProxy's own for the pool) and the ratios.
#
# Settings (environment): HOSTS (100000), STAGES (100), CONNECTIONS (64), DURATION (10 s),
# RATE (20000), ROUNDS (2).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-100000} STAGES=${STAGES:-100} CONNECTIONS=${CONNECTIONS:-64} DURATION=${DURATION:-10}
RATE=${RATE:-20000} ROUNDS=${ROUNDS:-2}

bench_prepare
ensure_haproxy
new_db pool
db=$DB
new_namespace pool
ns=$NS
log "seeding $HOSTS hosts over $STAGES stages"
seed "$db" "$HOSTS" "$STAGES"
start gateway1 env $(server_env "$db" "$ns") "$BIN" gateway
g1_pid=$START_PID
g1=$(line_after gateway1 "teletraan: gateway ")
start gateway2 env $(server_env "$db" "$ns") "$BIN" gateway
g2_pid=$START_PID
g2=$(line_after gateway2 "teletraan: gateway ")
start worker env $(server_env "$db" "$ns") "$BIN" worker
worker_pid=$START_PID
wait_ready "$g1" 600
wait_ready "$g2" 600

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 90s
    timeout server 90s
frontend pings
    bind 127.0.0.1:$port
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /readyz
    retry-on conn-failure
    retries 2
    option redispatch
    server g1 ${g1#http://} check inter 2s fall 2 rise 1
    server g2 ${g2#http://} check inter 2s fall 2 rise 1
CFG
start haproxy haproxy -db -f "$WORK/haproxy.cfg"
haproxy_pid=$START_PID
pool="http://127.0.0.1:$port"
wait_ready "$pool"
log "gateways $g1, $g2; HAProxy $pool (pid $haproxy_pid)"

# ticks PID…: CPU time (user + system, 1/100 s) the processes have used.
ticks() {
    local t=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        t=$((t + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}
# Where a run's CPU went: each role's, HAProxy's, Postgres's and RabbitMQ's, in µs per ping.
cpu_groups() {
    echo "g1:$g1_pid g2:$g2_pid haproxy:$haproxy_pid worker:$worker_pid postgres:$(pgrep -d, -x postgres) rabbitmq:$(pgrep -d, beam.smp)"
}
load() { # NAME URL PID [extra flags…]
    local name=$1 url=$2 pid=$3 groups before=() after=() g i
    shift 3
    groups=($(cpu_groups))
    for g in "${groups[@]}"; do before+=("$(ticks $(tr , " " <<<"${g#*:}"))"); done
    "$BIN" bench load --url "$url" --token "$BENCH_AGENT_TOKEN" --hosts "$HOSTS" --stages "$STAGES" \
        --server-pid "$pid" --label "$name" "$@" >"$WORK/$name.out"
    cat "$WORK/$name.out" >&2
    for g in "${groups[@]}"; do after+=("$(ticks $(tr , " " <<<"${g#*:}"))"); done
    local answered split=""
    answered=$(field "$(result "$name")" answered)
    for i in "${!groups[@]}"; do
        split+=" ${groups[$i]%%:*}=$(awk -v a="${after[$i]}" -v b="${before[$i]}" -v n="$answered" \
            'BEGIN { printf "%.1f", (a - b) * 10000 / (n > 0 ? n : 1) }')"
    done
    echo "$split" >"$WORK/$name.cpu"
}

log "priming: one ping per host through HAProxy (first pings publish every host's facts)"
load prime "$pool" "$haproxy_pid" --once --connections 32
sleep 5
for round in $(seq "$ROUNDS"); do
    for kind in max rate; do
        extra=(--connections "$CONNECTIONS" --duration "$DURATION" --warmup 2)
        [ "$kind" = rate ] && extra+=(--rate "$RATE")
        load "direct-$kind-$round" "$g1" "$g1_pid" "${extra[@]}"
        load "pool-$kind-$round" "$pool" "$haproxy_pid" "${extra[@]}"
    done
done

for g in "$g1" "$g2"; do
    log "counters of the gateway at $g:"
    curl -sf "$g/metrics" | grep -E '^teletraan_gateway_[a-z_]*_total' | grep -v ' 0$' >&2 || true
done

row() { load_row 34 "$@"; }

echo
echo "gateway pool: $HOSTS hosts, $STAGES stages, rollout in progress; $CONNECTIONS connections, ${DURATION} s each"
load_header 34
for round in $(seq "$ROUNDS"); do
    row "one gateway directly, max, $round" "direct-max-$round"
    row "two behind HAProxy, max, $round" "pool-max-$round"
    row "one gateway directly, $RATE/s, $round" "direct-rate-$round"
    row "two behind HAProxy, $RATE/s, $round" "pool-rate-$round"
done
echo "(server µs: CPU per ping of the first gateway for direct runs, of HAProxy for pool runs; machine µs: every process)"
echo "CPU µs per answered ping by process (CPU over the whole run, warm-up included: compare runs, not with the figures above):"
for round in $(seq "$ROUNDS"); do
    for name in "direct-max-$round" "pool-max-$round" "direct-rate-$round" "pool-rate-$round"; do
        printf "  %-16s %s\n" "$name" "$(cat "$WORK/$name.cpu")"
    done
done
for round in $(seq "$ROUNDS"); do
    dm=$(result "direct-max-$round") pm=$(result "pool-max-$round")
    echo "round $round: pool/direct pings/s at max rate $(ratio "$(field "$pm" pings_per_s)" "$(field "$dm" pings_per_s)"), machine CPU per ping $(ratio "$(field "$pm" machine_cpu_us)" "$(field "$dm" machine_cpu_us)")"
done
