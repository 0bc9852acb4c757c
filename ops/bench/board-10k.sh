#!/usr/bin/env bash
# The deploy board at 10,000 hosts (issue 10): a real `teletraan up` and 10,000 simulated
# hosts (`teletraan bench rollout --board`, plain polling every 2 s, maxParallelPct 10). Before
# and during the second deploy it fetches the stage page as a logged-in browser does (time to
# first byte, whole page, size) and counts the events of the board's live stream and of
# `GET /v1/events` for the stage.
#
# Settings (environment): HOSTS (10000), INTERVAL (2).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-10000} INTERVAL=${INTERVAL:-2}

bench_prepare
start_up board
log "rollout of $HOSTS hosts with the board watched"
"$BIN" bench rollout --admin-token "$BENCH_ADMIN_TOKEN" --agent-token "$BENCH_AGENT_TOKEN" \
    --api "$UP_API" --gateway "$UP_GATEWAY" --hosts "$HOSTS" --ping-interval "$INTERVAL" \
    --max-parallel-pct 10 --env bench-board --board | tee "$WORK/board.out" >&2
stop "$UP_PID"
drop_db "$UP_DB"

echo
echo "board: $HOSTS simulated hosts, maxParallelPct 10, ping interval $INTERVAL s"
grep '^board: ' "$WORK/board.out"
echo "target: the stage page's first view in under a second at $HOSTS hosts"
