#!/usr/bin/env bash
# A long fuzzing run (docs/fuzzing.md): every fuzz target with many cases, one after the other,
# then the hostile-client tests; prints per target the cases run and the time taken.
#
#   bash ops/fuzz/run.sh                 # about ten minutes on two cores
#   FUZZ_SCALE=6 bash ops/fuzz/run.sh    # six times the cases (about an hour)
#   TELETRAAN_FUZZ_SEED=123 bash ops/fuzz/run.sh   # replay a run (each target prints its seed)
#   bash ops/fuzz/run.sh rest_api        # only the targets named
#
# CI runs the same targets with their short defaults as part of `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ops/lib/services.sh
ensure_services

scale=${FUZZ_SCALE:-1}
case $scale in '' | *[!0-9]*) echo "FUZZ_SCALE must be a whole number" >&2; exit 2 ;; esac

# target | cases at scale 1 | cargo test arguments
targets=(
    "template_render|30000|-p agent --test fuzz -- --exact fuzz_template_render"
    "script_config|50000|-p agent --test fuzz -- --exact fuzz_script_config"
    "template_build|12000|-p agent --test fuzz -- --exact fuzz_template_build"
    "agent_config|15000|-p agent --test fuzz -- --exact fuzz_agent_config"
    "extract_archives|4000|-p agent --test fuzz -- --exact fuzz_extract_archives"
    "extract_bytes|15000|-p agent --test fuzz -- --exact fuzz_extract_bytes"
    "server_config|30000|-p teletraan --bin teletraan -- --exact config::fuzz::fuzz_server_config"
    "gateway_ping|20000|-p api --test fuzz -- --exact fuzz_gateway_ping"
    "rest_api|4000|-p api --test fuzz -- --exact fuzz_rest_api"
)

# Whether target $1 is among the names given after it (every target when none is).
wanted() {
    local name=$1 w
    shift
    [ $# -eq 0 ] && return 0
    for w in "$@"; do [ "$w" = "$name" ] && return 0; done
    return 1
}

echo "fuzz: building the targets" >&2
cargo test -p agent --test fuzz --no-run -q
cargo test -p api --test fuzz --no-run -q
cargo test -p teletraan --bin teletraan --test hostile_clients --no-run -q

log=$(mktemp -d "${TMPDIR:-/tmp}/teletraan-fuzz.XXXXXX")
summary=()
failed=0
started=$SECONDS
for entry in "${targets[@]}"; do
    IFS='|' read -r name cases args <<<"$entry"
    wanted "$name" "$@" || continue
    total=$((cases * scale))
    echo "fuzz: $name, $total cases" >&2
    t0=$SECONDS
    # shellcheck disable=SC2086 # the arguments are split on purpose
    if TELETRAAN_FUZZ_CASES=$total cargo test -q $args --nocapture >"$log/$name.log" 2>&1; then
        outcome=ok
    else
        outcome=FAILED
        failed=1
    fi
    line=$(sed -n "s/.*fuzz $name: \(.*\)/\1/p" "$log/$name.log" | head -1)
    summary+=("$(printf '%-17s %-7s %s (wall %d s)' "$name" "$outcome" "$line" $((SECONDS - t0)))")
    if [ "$outcome" = FAILED ]; then
        grep -A 3 "failed:\|panicked" "$log/$name.log" | head -20 >&2 || true
    fi
done

if wanted hostile_clients "$@"; then
    echo "fuzz: hostile clients" >&2
    t0=$SECONDS
    if cargo test -q -p teletraan --test hostile_clients >"$log/hostile_clients.log" 2>&1; then
        outcome=ok
    else
        outcome=FAILED
        failed=1
        grep -A 3 "panicked" "$log/hostile_clients.log" | head -20 >&2 || true
    fi
    summary+=("$(printf '%-17s %-7s %d s' hostile_clients "$outcome" $((SECONDS - t0)))")
fi

echo
echo "target            outcome cases and time"
printf '%s\n' "${summary[@]}"
echo "total $((SECONDS - started)) s; logs in $log"
exit $failed
