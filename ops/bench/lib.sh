# Shared by ops/bench/*.sh: services, a release build, databases and namespaces of the run's
# own (removed at exit, with every process the script started), seeding, and reading results.
# Sourced, not run.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$BENCH_ROOT"
. ops/lib/services.sh

BIN=target/release/teletraan
PG_BASE=${TELETRAAN_BENCH_PG:-postgres://teletraan:teletraan@127.0.0.1:5432}
export RUST_LOG=${RUST_LOG:-warn}
export TELETRAAN_AMQP_URL=${TELETRAAN_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
# Tokens of the servers the scripts start (the load generator and simulator use them).
export BENCH_ADMIN_TOKEN=bench-admin-token
export BENCH_AGENT_TOKEN=bench-agent-token
RUN_ID=$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/teletraan-bench.XXXXXX")
BENCH_PIDS=()
BENCH_DBS=()
BENCH_NAMESPACES=()

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

bench_cleanup() {
    local pid db ns
    for pid in "${BENCH_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for ns in "${BENCH_NAMESPACES[@]}"; do
        "$BIN" bench drop-namespace --namespace "$ns" >/dev/null 2>&1 || true
    done
    for db in "${BENCH_DBS[@]}"; do
        psql -qAt "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# Starts the services if needed and builds the release binary.
bench_prepare() {
    ensure_services >&2
    log "building target/release/teletraan"
    cargo build --release -q -p teletraan >&2
}

# new_db NAME: creates database bench_NAME_<pid> (dropped at exit) and sets DB to its URL.
# (It sets a variable rather than printing: in a $(…) subshell the name would not be
# remembered for the clean-up.)
new_db() {
    local db="bench_${1}_${RUN_ID}"
    BENCH_DBS+=("$db")
    psql -qAt "$PG_BASE/postgres" -c "CREATE DATABASE $db" >/dev/null
    DB="$PG_BASE/$db"
}

# drop_db URL: drops a database made by new_db before the end of the run.
drop_db() {
    psql -qAt "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS ${1##*/} WITH (FORCE)" >/dev/null
}

# new_namespace NAME: sets NS to a broker namespace bench-NAME-<pid> (deleted at exit).
new_namespace() {
    NS="bench-${1}-${RUN_ID}"
    BENCH_NAMESPACES+=("$NS")
}

# seed URL HOSTS STAGES: migrates the database and writes the fleet of ops/bench/sql/seed.sql.
seed() {
    TELETRAAN_DATABASE_URL=$1 RUST_LOG=warn "$BIN" migrate >/dev/null
    psql -qAt "$1" -v hosts="$2" -v stages="$3" -f ops/bench/sql/seed.sql >/dev/null
}

# start NAME COMMAND…: runs a command in the background (stdout and stderr to $WORK/NAME.log);
# sets START_PID.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    START_PID=$!
    BENCH_PIDS+=("$START_PID")
}

# stop PID: SIGTERM, then wait for it (SIGKILL after 10 s).
stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}

# line_after NAME PREFIX [SECONDS]: waits for a line starting with PREFIX in $WORK/NAME.log and
# prints the rest of it.
line_after() {
    local deadline=$((SECONDS + ${3:-120})) line
    while [ $SECONDS -lt $deadline ]; do
        line=$(grep -m1 "^$2" "$WORK/$1.log" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "${line#"$2"}"
            return 0
        fi
        sleep 0.2
    done
    echo "bench: no '$2' line from $1 within ${3:-120} s; its log:" >&2
    tail -n 20 "$WORK/$1.log" >&2
    return 1
}

# wait_ready URL [SECONDS]: waits until URL/readyz answers 200.
wait_ready() {
    local deadline=$((SECONDS + ${2:-300}))
    until curl -sf -o /dev/null "$1/readyz"; do
        if [ $SECONDS -ge $deadline ]; then
            echo "bench: $1 not ready within ${2:-300} s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# server_env DB NAMESPACE: the environment of a server started by a script.
server_env() {
    echo TELETRAAN_DATABASE_URL="$1" TELETRAAN_NAMESPACE="$2" TELETRAAN_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" \
        TELETRAAN_AGENT_TOKEN="$BENCH_AGENT_TOKEN" TELETRAAN_API_LISTEN=127.0.0.1:0 \
        TELETRAAN_GATEWAY_LISTEN=127.0.0.1:0 TELETRAAN_WORKER_LISTEN=127.0.0.1:0 RUST_LOG=warn
}

# start_up NAME: `teletraan up` on a fresh database and namespace; sets UP_PID, UP_API,
# UP_GATEWAY, UP_DB.
start_up() {
    new_db "$1"
    UP_DB=$DB
    new_namespace "$1"
    start "up-$1" env $(server_env "$UP_DB" "$NS") "$BIN" up
    UP_PID=$START_PID
    UP_API=$(line_after "up-$1" "teletraan: api ")
    UP_GATEWAY=$(line_after "up-$1" "teletraan: gateway ")
    wait_ready "$UP_GATEWAY"
    wait_ready "$UP_API"
}

# field LINE KEY: the value of KEY=value in a `result:` line.
field() {
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"
}

# result NAME: the last `result:` line of $WORK/NAME.out.
result() {
    grep '^result:' "$WORK/$1.out" | tail -n 1
}

# rss_kb PID [FIELD]: VmRSS (or another /proc status field, e.g. VmHWM) in kB.
rss_kb() {
    awk -v f="${2:-VmRSS}:" '$1 == f { print $2 }' "/proc/$1/status"
}

# ratio A B: A / B to two decimals ("-" when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# load_header WIDTH: the header of the rows `load_row` prints.
load_header() {
    printf "%-${1}s %9s %8s %8s %9s %7s %11s %12s\n" "run" "pings/s" "p50 ms" "p99 ms" "p99.9 ms" "errors" \
        "server µs" "machine µs"
}

# load_row WIDTH LABEL NAME: one row of the `result:` line of the load generator's run NAME.
load_row() {
    local r
    r=$(result "$3")
    printf "%-${1}s %9s %8s %8s %9s %7s %11s %12s\n" "$2" "$(field "$r" pings_per_s)" "$(field "$r" p50_ms)" \
        "$(field "$r" p99_ms)" "$(field "$r" p999_ms)" "$(field "$r" errors)" "$(field "$r" server_cpu_us)" \
        "$(field "$r" machine_cpu_us)"
}
