#!/usr/bin/env bash
# Gateway throughput and latency against a bare endpoint, in the same run (issue 5, benchmark 1).
#
# Seeds 100,000 hosts over 100 stages with a rollout in progress (ops/bench/sql/seed.sql),
# starts `teletraan gateway` and `teletraan worker` on that database and a fresh namespace,
# and `teletraan bench bare`; primes the gateway with one ping per host; then runs the same
# load generator (`teletraan bench load`) against both, at the highest rate and at 20,000
# pings/s, alternating targets. Prints pings/s, latency percentiles, server CPU per ping and
# the gateway/bare ratios.
#
# Settings (environment): HOSTS (100000), STAGES (100), CONNECTIONS (64), DURATION (10 s),
# RATE (20000), CLIENT (raw or reqwest).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-100000} STAGES=${STAGES:-100} CONNECTIONS=${CONNECTIONS:-64} DURATION=${DURATION:-10}
RATE=${RATE:-20000} CLIENT=${CLIENT:-raw}

bench_prepare
new_db throughput
db=$DB
new_namespace throughput
ns=$NS
log "seeding $HOSTS hosts over $STAGES stages"
seed "$db" "$HOSTS" "$STAGES"
start gateway env $(server_env "$db" "$ns") "$BIN" gateway
gateway_pid=$START_PID
gateway=$(line_after gateway "teletraan: gateway ")
start worker env $(server_env "$db" "$ns") "$BIN" worker
start bare "$BIN" bench bare --listen 127.0.0.1:0
bare_pid=$START_PID
bare=$(line_after bare "bench bare: listening ")
wait_ready "$gateway" 600
wait_ready "$bare"
log "gateway $gateway (pid $gateway_pid), bare $bare (pid $bare_pid)"

load() { # NAME URL PID [extra flags…]
    local name=$1 url=$2 pid=$3
    shift 3
    "$BIN" bench load --url "$url" --token "$BENCH_AGENT_TOKEN" --hosts "$HOSTS" --stages "$STAGES" \
        --client "$CLIENT" --server-pid "$pid" --label "$name" "$@" >"$WORK/$name.out"
    cat "$WORK/$name.out" >&2
}

log "priming: one ping per host (first pings publish every host's facts)"
load prime "$gateway" "$gateway_pid" --once --connections 32
sleep 5
for round in max rate; do
    extra=(--connections "$CONNECTIONS" --duration "$DURATION" --warmup 2)
    [ "$round" = rate ] && extra+=(--rate "$RATE")
    load "gateway-$round" "$gateway" "$gateway_pid" "${extra[@]}"
    load "bare-$round" "$bare" "$bare_pid" "${extra[@]}"
done

row() { load_row 24 "$@"; }

echo
echo "ping throughput: $HOSTS hosts, $STAGES stages, rollout in progress; $CONNECTIONS connections, ${DURATION} s each, $CLIENT client"
load_header 24
row "gateway, max rate" gateway-max
row "bare, max rate" bare-max
row "gateway, $RATE/s" gateway-rate
row "bare, $RATE/s" bare-rate
gm=$(result gateway-max) bm=$(result bare-max) gr=$(result gateway-rate) br=$(result bare-rate)
echo "gateway/bare at max rate: $(ratio "$(field "$gm" pings_per_s)" "$(field "$bm" pings_per_s)") of the pings/s (target ≥ 0.8)"
echo "gateway/bare CPU per ping at max rate: server $(ratio "$(field "$gm" server_cpu_us)" "$(field "$bm" server_cpu_us)"), machine $(ratio "$(field "$gm" machine_cpu_us)" "$(field "$bm" machine_cpu_us)") (µs per ping: server process alone; whole machine, generator, workers, Postgres and RabbitMQ included)"
echo "gateway p99 at $RATE pings/s: $(field "$gr" p99_ms) ms (target < 10 ms; achieved $(field "$gr" pings_per_s)/s); bare p99 $(field "$br" p99_ms) ms"
echo "share of NOOP answers from the gateway: $(field "$gm" noop_pct)% (the rest are goals of mid-deploy hosts)"
