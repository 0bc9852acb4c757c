#!/usr/bin/env bash
# Latency from `POST …/deploys` to the first host receiving its goal (issue 5, benchmark 5),
# with plain polling and with long-poll: simulated hosts (`teletraan bench latency`) on a
# real `teletraan up`, a fresh database and namespace for each mode. Round 0 is a first
# deploy (the gateway starts new hosts itself); the other rounds need a worker's admission
# (maxParallel 1, so one host is admitted per deploy).
#
# Settings (environment): HOSTS (5), ROUNDS (5), INTERVAL (2), LONG_POLL (30; 0 skips it).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-5} ROUNDS=${ROUNDS:-5} INTERVAL=${INTERVAL:-2} LONG_POLL=${LONG_POLL:-30}

bench_prepare
modes=(plain)
[ "$LONG_POLL" != 0 ] && modes+=(longpoll)
for mode in "${modes[@]}"; do
    start_up "latency_$mode"
    extra=()
    [ "$mode" = longpoll ] && extra=(--long-poll "$LONG_POLL")
    log "deploy latency, $mode"
    "$BIN" bench latency --admin-token "$BENCH_ADMIN_TOKEN" --agent-token "$BENCH_AGENT_TOKEN" \
        --api "$UP_API" --gateway "$UP_GATEWAY" --hosts "$HOSTS" --rounds "$ROUNDS" --ping-interval "$INTERVAL" \
        "${extra[@]}" | tee "$WORK/latency-$mode.out" >&2
    stop "$UP_PID"
    drop_db "$UP_DB"
done

echo
echo "deploy latency: POST …/deploys → first host's goal; $HOSTS hosts, maxParallel 1, ping interval $INTERVAL s"
printf "%-22s %8s %10s %10s %10s\n" "mode" "rounds" "min ms" "median ms" "max ms"
for mode in "${modes[@]}"; do
    r=$(result "latency-$mode")
    label=$mode
    [ "$mode" = longpoll ] && label="long-poll $LONG_POLL s"
    printf "%-22s %8s %10s %10s %10s\n" "$label" "$(field "$r" rounds)" "$(field "$r" min_ms)" \
        "$(field "$r" median_ms)" "$(field "$r" max_ms)"
done
