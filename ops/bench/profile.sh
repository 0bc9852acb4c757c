#!/usr/bin/env bash
# A CPU profile of the gateway under the ping load (issue 5: profile before optimising).
#
# Seeds HOSTS hosts over STAGES stages with a rollout in progress, runs `teletraan worker`
# and `teletraan gateway` on them, and records the gateway while `teletraan bench load`
# pings it for DURATION seconds: with perf when this machine counts instructions
# (`perf stat -e instructions true`), else with valgrind's callgrind (instrumentation switched
# on only during the load; everything runs about 50 times slower under it, so the load is
# lighter). Prints the top functions by their own cost and by inclusive cost, and leaves the
# raw profile in PROFILE_DIR (default: a temporary directory that is kept).
#
# Settings (environment): HOSTS (20000), STAGES (100), DURATION (20), CONNECTIONS (8),
# PROFILER (perf or callgrind: overrides the choice), TOP (30).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-20000} STAGES=${STAGES:-100} DURATION=${DURATION:-20} CONNECTIONS=${CONNECTIONS:-8} TOP=${TOP:-30}
PROFILE_DIR=${PROFILE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/teletraan-profile.XXXXXX")}
mkdir -p "$PROFILE_DIR"

if [ -z "${PROFILER:-}" ]; then
    if perf stat -e instructions true 2>&1 | grep -q 'not supported'; then PROFILER=callgrind; else PROFILER=perf; fi
    command -v perf >/dev/null || PROFILER=callgrind
fi
case $PROFILER in
perf) command -v perf >/dev/null || apt_install linux-perf ;;
callgrind) command -v valgrind >/dev/null || apt_install valgrind ;;
*) echo "profile: PROFILER must be perf or callgrind" >&2; exit 2 ;;
esac

bench_prepare
new_db profile
db=$DB
new_namespace profile
ns=$NS
log "seeding $HOSTS hosts over $STAGES stages"
seed "$db" "$HOSTS" "$STAGES"
start worker env $(server_env "$db" "$ns") "$BIN" worker
if [ "$PROFILER" = callgrind ]; then
    start gateway env $(server_env "$db" "$ns") valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$PROFILE_DIR/callgrind.out" "$BIN" gateway
else
    start gateway env $(server_env "$db" "$ns") "$BIN" gateway
fi
gateway_pid=$START_PID
gateway=$(line_after gateway "teletraan: gateway " 900)
wait_ready "$gateway" 1800
log "gateway $gateway ready; profiling with $PROFILER for $DURATION s"

load() { # LABEL [flags…]
    local label=$1
    shift
    "$BIN" bench load --url "$gateway" --token "$BENCH_AGENT_TOKEN" --hosts "$HOSTS" --stages "$STAGES" \
        --connections "$CONNECTIONS" --label "$label" "$@" >"$WORK/$label.out"
    cat "$WORK/$label.out" >&2
}
# top_functions FILE: the first TOP function lines of a callgrind_annotate listing, without
# source paths.
top_functions() {
    grep -E '^ *[0-9,]+ \( *[0-9.]+%\) ' "$1" | grep -v 'PROGRAM TOTALS' | head -n "$TOP" |
        sed -E 's#^( *[0-9,]+ \( *[0-9.]+%\))  [^:]*:#\1  #; s# \[[^]]*\]$##' || true
}
# First pings publish every host's facts: out of the profile, like the benchmark's priming.
load prime --once
if [ "$PROFILER" = callgrind ]; then
    callgrind_control -i on "$gateway_pid" >/dev/null
    load profiled --duration "$DURATION" --warmup 0
    callgrind_control -i off "$gateway_pid" >/dev/null
    stop "$gateway_pid"
    for _ in $(seq 100); do [ -s "$PROFILE_DIR/callgrind.out" ] && break; sleep 0.2; done
    callgrind_annotate --inclusive=no "$PROFILE_DIR/callgrind.out" >"$PROFILE_DIR/self.txt" 2>/dev/null || true
    callgrind_annotate --inclusive=yes "$PROFILE_DIR/callgrind.out" >"$PROFILE_DIR/inclusive.txt" 2>/dev/null || true
    echo
    echo "gateway profile (callgrind, instructions), $HOSTS hosts, $DURATION s of load: top $TOP by own cost"
    top_functions "$PROFILE_DIR/self.txt"
    echo
    echo "top $TOP by inclusive cost"
    top_functions "$PROFILE_DIR/inclusive.txt"
else
    perf record -F 999 -g -o "$PROFILE_DIR/perf.data" -p "$gateway_pid" -- sleep "$DURATION" 2>/dev/null &
    perf_pid=$!
    load profiled --duration "$DURATION" --warmup 0
    wait "$perf_pid" || true
    perf report -i "$PROFILE_DIR/perf.data" --no-children --sort symbol --stdio >"$PROFILE_DIR/self.txt" 2>/dev/null || true
    perf report -i "$PROFILE_DIR/perf.data" --children --sort symbol --stdio >"$PROFILE_DIR/inclusive.txt" 2>/dev/null || true
    echo
    echo "gateway profile (perf, cpu samples), $HOSTS hosts, $DURATION s of load: top $TOP by own cost"
    grep -E '^ +[0-9.]+%' "$PROFILE_DIR/self.txt" | head -n "$TOP" || true
    echo
    echo "top $TOP by inclusive cost"
    grep -E '^ +[0-9.]+%' "$PROFILE_DIR/inclusive.txt" | head -n "$TOP" || true
fi
echo
echo "raw profile kept in $PROFILE_DIR"
