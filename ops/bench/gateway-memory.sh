#!/usr/bin/env bash
# Gateway memory per registered host (issue 5, benchmark 2) and the full load (issue 12).
#
# RSS of `teletraan gateway` (from /proc/<pid>/status) once it has loaded a database seeded
# with HOSTS hosts (agent rows and host rows, ops/bench/sql/seed.sql), minus the RSS of an
# idle gateway on an empty database; for the first size also after one ping per host (the
# load generator, --once). Prints bytes per host for each, the time from the gateway's start
# to its readiness (/readyz polled every 50 ms), and its peak RSS during the load (VmHWM)
# over its RSS once loaded.
#
# Settings (environment): SIZES ("100000 1000000"), STAGES (100), SETTLE (5 s before reading),
# BASELINE (another build of `teletraan`, e.g. of an earlier commit: each size is then also
# loaded by it, from the same database, for a comparison in one run).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
SIZES=${SIZES:-"100000 1000000"} STAGES=${STAGES:-100} SETTLE=${SETTLE:-5} BASELINE=${BASELINE:-}

bench_prepare

now_ms() { date +%s%3N; }

# gateway_on BINARY DB NAME: starts a gateway on DB and waits until it has loaded; sets GW_PID,
# GW_URL and READY_MS (from its start to its readiness).
gateway_on() {
    new_namespace "memory-$3"
    local started
    started=$(now_ms)
    start "gw-$3" env $(server_env "$2" "$NS") "$1" gateway
    GW_PID=$START_PID
    GW_URL=$(line_after "gw-$3" "teletraan: gateway ")
    until curl -sf -o /dev/null "$GW_URL/readyz"; do
        kill -0 "$GW_PID" 2>/dev/null || { tail -n 20 "$WORK/gw-$3.log" >&2; exit 1; }
        sleep 0.05
    done
    READY_MS=$(($(now_ms) - started))
    sleep "$SETTLE"
}

new_db memory_idle
db=$DB
TELETRAAN_DATABASE_URL=$db RUST_LOG=warn "$BIN" migrate >/dev/null
gateway_on "$BIN" "$db" idle
idle=$(rss_kb "$GW_PID")
stop "$GW_PID"
drop_db "$db"
log "idle gateway: RSS $idle kB"

builds=("this:$BIN")
[ -n "$BASELINE" ] && builds+=("baseline:$BASELINE")
rows=()
first=1
for n in $SIZES; do
    new_db "memory_$n"
    db=$DB
    log "seeding $n hosts over $STAGES stages"
    seed "$db" "$n" "$STAGES"
    psql -qAt "$db" -c "VACUUM ANALYZE" >/dev/null 2>&1
    for b in "${builds[@]}"; do
        label=${b%%:*} bin=${b#*:}
        gateway_on "$bin" "$db" "$n-$label"
        rss=$(rss_kb "$GW_PID")
        hwm=$(rss_kb "$GW_PID" VmHWM)
        rows+=("$n|$label|loaded|$READY_MS|$rss|$hwm")
        log "$label: $n hosts loaded in $READY_MS ms: RSS $rss kB (peak $hwm kB)"
        if [ "$first" = 1 ] && [ "$label" = this ]; then
            "$BIN" bench load --url "$GW_URL" --token "$BENCH_AGENT_TOKEN" --hosts "$n" --stages "$STAGES" --once \
                --connections 32 --label "ping-$n" >"$WORK/ping-$n.out"
            cat "$WORK/ping-$n.out" >&2
            sleep "$SETTLE"
            rss=$(rss_kb "$GW_PID")
            hwm=$(rss_kb "$GW_PID" VmHWM)
            rows+=("$n|$label|after one ping per host||$rss|$hwm")
            log "$n hosts pinged: RSS $rss kB (peak $hwm kB)"
        fi
        stop "$GW_PID"
    done
    first=0
    drop_db "$db"
done

echo
echo "gateway memory: RSS from /proc, per host minus an idle gateway's ($idle kB); $STAGES stages;"
echo "target ≤ 1024 bytes per host; peak/RSS = VmHWM over VmRSS once loaded (target ≤ 1.3)"
printf "%10s  %-9s %-24s %9s %11s %11s %11s %8s\n" "hosts" "build" "when" "ready ms" "RSS kB" "peak kB" "bytes/host" "peak/RSS"
for r in "${rows[@]}"; do
    IFS='|' read -r n label when ready rss hwm <<<"$r"
    per=$(awk -v r="$rss" -v i="$idle" -v n="$n" 'BEGIN { printf "%.0f", (r - i) * 1024 / n }')
    ratio=$(awk -v r="$rss" -v h="$hwm" 'BEGIN { printf "%.2f", h / r }')
    printf "%10s  %-9s %-24s %9s %11s %11s %11s %8s\n" "$n" "$label" "$when" "${ready:--}" "$rss" "$hwm" "$per" "$ratio"
done
