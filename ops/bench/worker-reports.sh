#!/usr/bin/env bash
# Worker report throughput (issue 5, benchmark 4), with the calibration figures the issue
# quotes, measured on this machine:
#   * Postgres: agent-row updates/s as single-row UPDATEs and as one UPDATE … FROM unnest(…)
#     of 1,000 rows (pgbench on the seeded database, CLIENTS concurrent clients);
#   * RabbitMQ: persistent 300-byte messages/s into a quorum queue with publisher confirms
#     (`teletraan bench amqp`, one at a time and in windows of 1,000);
#   * the workers' report path: BATCHES report batches of 1,000 agent updates each published as
#     a gateway does (each stage's updates to its report partition), then W in-process report
#     consumers (the real handler and stage refresher, each consuming its share of the
#     partitions) apply them; updates/s until every batch is acknowledged, for each W in
#     WORKERS, in ROUNDS interleaved rounds, reported as medians. MODES may add "shared": the same batches through the one shared queue every
#     consumer takes from (the path before partitions), for comparison. The rows are then
#     counted in Postgres.
#
# Settings (environment): HOSTS (100000), STAGES (100), BATCHES (400), WORKERS ("1 2 4"),
# MODES ("partitioned shared"), ROUNDS (3: each consumer count runs this many times, in turn,
# after one warm-up run), PREFETCH (batches each consumer handles at once, 8 as a
# worker's default), CLIENTS ("1 4"; empty skips the Postgres calibration),
# SECONDS_PER_RUN (10).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-100000} STAGES=${STAGES:-100} BATCHES=${BATCHES:-400} WORKERS=${WORKERS:-"1 2 4"}
MODES=${MODES:-"partitioned shared"} ROUNDS=${ROUNDS:-3} PREFETCH=${PREFETCH:-8} CLIENTS=${CLIENTS-"1 4"} SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}

bench_prepare
command -v pgbench >/dev/null && pgbench --version >/dev/null 2>&1 || apt_install postgresql-contrib
new_db reports
db=$DB
log "seeding $HOSTS hosts over $STAGES stages"
seed "$db" "$HOSTS" "$STAGES"

pgbench_rows() { # SCRIPT CLIENTS ROWS_PER_TRANSACTION: rows updated per second
    local tps
    tps=$(pgbench -n -M prepared -f "ops/bench/sql/$1" -D hosts="$HOSTS" -D stages="$STAGES" -c "$2" -j "$2" \
        -T "$SECONDS_PER_RUN" "$db" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)
    awk -v t="$tps" -v r="$3" 'BEGIN { printf "%.0f", t * r }'
}
pg_rows=()
for c in $CLIENTS; do
    log "postgres calibration, $c client(s)"
    single=$(pgbench_rows pg-update-single.sql "$c" 1)
    batch=$(pgbench_rows pg-update-batch.sql "$c" 1000)
    pg_rows+=("$c|$single|$batch")
done

amqp_rows=()
for window in 1 1000; do
    log "rabbitmq calibration, $window message(s) per confirm wait"
    n=$([ "$window" = 1 ] && echo 5000 || echo 50000)
    new_namespace "amqp-$window"
    "$BIN" bench amqp --namespace "$NS" --messages "$n" --size 300 --window "$window" \
        >"$WORK/amqp-$window.out"
    cat "$WORK/amqp-$window.out" >&2
    amqp_rows+=("$window|$(field "$(result "amqp-$window")" msgs_per_s)")
done

# One run of the report path: MODE CONSUMERS TAG. Before it, the agents table is vacuumed and a
# checkpoint taken, so that no run inherits the last one's dead rows or its dirty pages.
report_run() {
    local mode=$1 w=$2 tag=$3 flag=()
    psql -qAt "$db" -c "VACUUM agents" -c "CHECKPOINT" >/dev/null 2>&1 || psql -qAt "$db" -c "VACUUM agents" >/dev/null
    new_namespace "reports-$tag"
    [ "$mode" = shared ] && flag=(--shared)
    "$BIN" bench reports --database-url "$db" --namespace "$NS" --hosts "$HOSTS" --stages "$STAGES" \
        --batches "$BATCHES" --batch-size 1000 --workers "$w" --prefetch "$PREFETCH" "${flag[@]}" >"$WORK/reports-$tag.out"
    cat "$WORK/reports-$tag.out" >&2
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

report_rows=()
for mode in $MODES; do
    log "report path, $mode: warm-up run, not counted"
    report_run "$mode" "${WORKERS%% *}" "$mode-warmup"
    declare -A runs=() cpu=() own=()
    for round in $(seq "$ROUNDS"); do
        for w in $WORKERS; do
            log "report path, $mode, $w consumer(s), round $round"
            report_run "$mode" "$w" "$mode-$w-$round"
            r=$(result "reports-$mode-$w-$round")
            stored=$(psql -qAt "$db" -c "SELECT count(*) FROM agents WHERE report_at >= to_timestamp($(field "$r" base_ms) / 1000.0)")
            [ "$stored" = "$(field "$r" distinct)" ] || { log "only $stored of $(field "$r" distinct) records stored"; exit 1; }
            runs[$w]="${runs[$w]:-} $(field "$r" updates_per_s)"
            cpu[$w]="${cpu[$w]:-} $(field "$r" machine_us_per_update)"
            own[$w]="${own[$w]:-} $(field "$r" own_us_per_update)"
        done
    done
    one=$(median <<<"${runs[${WORKERS%% *}]}")
    for w in $WORKERS; do
        m=$(median <<<"${runs[$w]}")
        ratio=$(awk -v a="$m" -v b="$one" 'BEGIN { printf "%.2f", a / b }')
        c=$(median <<<"${cpu[$w]}")
        o=$(median <<<"${own[$w]}")
        report_rows+=("$mode|$w|$m|$ratio|$c|$o|$(echo ${runs[$w]} | sed 's/ /, /g')")
    done
    unset runs cpu own
done

echo
echo "calibration, Postgres ($HOSTS agent rows; ${SECONDS_PER_RUN} s per run): agent-row updates/s"
printf "%8s %22s %28s\n" "clients" "single-row UPDATE" "UPDATE … FROM unnest (1,000)"
for r in "${pg_rows[@]}"; do IFS='|' read -r c s b <<<"$r"; printf "%8s %22s %28s\n" "$c" "$s" "$b"; done
echo "calibration, RabbitMQ: persistent 300-byte messages/s into a quorum queue with confirms"
for r in "${amqp_rows[@]}"; do IFS='|' read -r w m <<<"$r"; printf "  %5s per confirm wait: %8s messages/s\n" "$w" "$m"; done
echo "worker report path: $BATCHES batches × 1,000 agent updates (random hosts over $STAGES stages), every record stored;"
echo "target ≥ 20,000/s, and with 2 and 4 consumers ≥ 0.9 × one. $ROUNDS rounds of the consumer counts in turn;"
echo "the median of each, and its ratio to the median of the first count of the same mode"
echo "(CPU: µs of busy CPU per update, median; machine: every process on both cores; consumers: the consuming process)"
printf "%12s %10s %14s %7s %13s %15s   %s\n" "mode" "consumers" "median upd/s" "ratio" "CPU machine" "CPU consumers" "runs (updates/s, in order)"
for r in "${report_rows[@]}"; do
    IFS='|' read -r m w u x c o all <<<"$r"
    printf "%12s %10s %14s %7s %13s %15s   %s\n" "$m" "$w" "$u" "$x" "$c" "$o" "$all"
done
