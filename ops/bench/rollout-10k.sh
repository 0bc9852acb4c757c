#!/usr/bin/env bash
# A 10,000-host rollout, maxParallelPct 10, ping interval 2 s, instant hooks (issue 5,
# benchmark 3): simulated hosts (`teletraan bench rollout`, the fleet simulator in-process)
# against a real `teletraan up`, once with plain polling and once with long-poll, each on a
# fresh database and namespace. Times the second deploy from its POST to the last host
# serving it, and checks from the agents' side that no more than 10 % were ever out of
# service at once.
#
# Settings (environment): HOSTS (10000), INTERVAL (2), LONG_POLL (30; 0 skips that run).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-10000} INTERVAL=${INTERVAL:-2} LONG_POLL=${LONG_POLL:-30}

bench_prepare
modes=(plain)
[ "$LONG_POLL" != 0 ] && modes+=(longpoll)
for mode in "${modes[@]}"; do
    start_up "rollout_$mode"
    extra=()
    [ "$mode" = longpoll ] && extra=(--long-poll "$LONG_POLL")
    log "rollout of $HOSTS hosts, $mode"
    "$BIN" bench rollout --admin-token "$BENCH_ADMIN_TOKEN" --agent-token "$BENCH_AGENT_TOKEN" \
        --api "$UP_API" --gateway "$UP_GATEWAY" --hosts "$HOSTS" --ping-interval "$INTERVAL" \
        --max-parallel-pct 10 "${extra[@]}" | tee "$WORK/rollout-$mode.out" >&2
    stop "$UP_PID"
    drop_db "$UP_DB"
done

echo
echo "rollout: $HOSTS simulated hosts, maxParallelPct 10, ping interval $INTERVAL s, instant hooks"
printf "%-22s %16s %16s %10s %6s %8s\n" "mode" "first deploy s" "second deploy s" "max out" "cap" "errors"
for mode in "${modes[@]}"; do
    r=$(result "rollout-$mode")
    label=$mode
    [ "$mode" = longpoll ] && label="long-poll $LONG_POLL s"
    printf "%-22s %16s %16s %10s %6s %8s\n" "$label" "$(field "$r" first_deploy_s)" "$(field "$r" rollout_s)" \
        "$(field "$r" max_out)" "$(field "$r" cap)" "$(field "$r" errors)"
done
echo "targets: second deploy ≤ 30 s with plain polling, ≤ 10 s with long-poll, max out never above the cap"
