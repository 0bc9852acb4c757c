#!/usr/bin/env bash
# Gateway memory per registered host (issue 5, benchmark 2).
#
# RSS of `teletraan gateway` (from /proc/<pid>/status) once it has loaded a database seeded
# with HOSTS hosts (agent rows and host rows, ops/bench/sql/seed.sql), minus the RSS of an
# idle gateway on an empty database; for the first size also after one ping per host (the
# load generator, --once). Prints bytes per host for each.
#
# Settings (environment): SIZES ("100000 1000000"), STAGES (100), SETTLE (5 s before reading).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SIZES=${SIZES:-"100000 1000000"} STAGES=${STAGES:-100} SETTLE=${SETTLE:-5}

bench_prepare

# gateway_on DB NAME: starts a gateway on DB, waits until it has loaded; sets GW_PID and GW_URL.
gateway_on() {
    new_namespace "memory-$2"
    start "gw-$2" env $(server_env "$1" "$NS") "$BIN" gateway
    GW_PID=$START_PID
    GW_URL=$(line_after "gw-$2" "teletraan: gateway ")
    wait_ready "$GW_URL" 1200
    sleep "$SETTLE"
}

new_db memory_idle
db=$DB
TELETRAAN_DATABASE_URL=$db RUST_LOG=warn "$BIN" migrate >/dev/null
gateway_on "$db" idle
idle=$(rss_kb "$GW_PID")
stop "$GW_PID"
drop_db "$db"
log "idle gateway: RSS $idle kB"

rows=()
first=1
for n in $SIZES; do
    new_db "memory_$n"
    db=$DB
    log "seeding $n hosts over $STAGES stages"
    seed "$db" "$n" "$STAGES"
    started=$SECONDS
    gateway_on "$db" "$n"
    loaded_in=$((SECONDS - started - SETTLE))
    rss=$(rss_kb "$GW_PID")
    hwm=$(rss_kb "$GW_PID" VmHWM)
    rows+=("$n|loaded (${loaded_in} s to load)|$rss|$hwm")
    log "$n hosts loaded: RSS $rss kB (peak $hwm kB)"
    if [ "$first" = 1 ]; then
        "$BIN" bench load --url "$GW_URL" --token "$BENCH_AGENT_TOKEN" --hosts "$n" --stages "$STAGES" --once \
            --connections 32 --label "ping-$n" >"$WORK/ping-$n.out"
        cat "$WORK/ping-$n.out" >&2
        sleep "$SETTLE"
        rss=$(rss_kb "$GW_PID")
        hwm=$(rss_kb "$GW_PID" VmHWM)
        rows+=("$n|after one ping per host|$rss|$hwm")
        log "$n hosts pinged: RSS $rss kB (peak $hwm kB)"
        first=0
    fi
    stop "$GW_PID"
    drop_db "$db"
done

echo
echo "gateway memory: RSS from /proc, minus an idle gateway's ($idle kB); $STAGES stages; target ≤ 1024 bytes per host"
printf "%10s  %-28s %12s %12s %14s\n" "hosts" "when" "RSS kB" "peak kB" "bytes/host"
for r in "${rows[@]}"; do
    IFS='|' read -r n when rss hwm <<<"$r"
    per=$(awk -v r="$rss" -v i="$idle" -v n="$n" 'BEGIN { printf "%.0f", (r - i) * 1024 / n }')
    printf "%10s  %-28s %12s %12s %14s\n" "$n" "$when" "$rss" "$hwm" "$per"
done
