#!/usr/bin/env bash
# For contrast: the database-per-ping approach (issue 5). The statements Teletraan's server
# runs for a steady-state ping (reference teletraan-core.md §4.4: heartbeat read and touch,
# the stage type of the host's group, its group rows, its stages by host and by group
# capacity, its agent rows) as a pgbench script (ops/bench/sql/teletraan-ping.sql) against
# Teletraan's tables (ops/bench/sql/teletraan-schema.sql, same columns and indexes) holding
# HOSTS hosts, on this machine's Postgres, at several client counts. One pgbench transaction
# is one ping: transactions/s = pings/s.
#
# Settings (environment): HOSTS (100000), STAGES (100), CLIENTS ("1 2 4 8 16 32"),
# SECONDS_PER_RUN (15).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-100000} STAGES=${STAGES:-100} CLIENTS=${CLIENTS:-"1 2 4 8 16 32"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}

ensure_postgres >&2
command -v pgbench >/dev/null && pgbench --version >/dev/null 2>&1 || apt_install postgresql-contrib
new_db teletraan
db=$DB
log "creating Teletraan's tables with $HOSTS hosts over $STAGES stages"
psql -qAt "$db" -f ops/bench/sql/teletraan-schema.sql >/dev/null
psql -qAt "$db" -v hosts="$HOSTS" -v stages="$STAGES" -f ops/bench/sql/teletraan-seed.sql >/dev/null

rows=()
for c in $CLIENTS; do
    log "pgbench, $c client(s), $SECONDS_PER_RUN s"
    out=$(pgbench -n -M prepared -f ops/bench/sql/teletraan-ping.sql -D hosts="$HOSTS" -D stages="$STAGES" \
        -c "$c" -j "$c" -T "$SECONDS_PER_RUN" "$db" 2>&1)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -n 1)
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
    rows+=("$c|${tps%.*}|$lat|${failed:-0}")
done

echo
echo "Teletraan's steady-state ping as SQL (8 statements, each its own transaction), $HOSTS hosts, pgbench -M prepared"
printf "%8s %12s %18s %8s\n" "clients" "pings/s" "latency avg ms" "failed"
for r in "${rows[@]}"; do
    IFS='|' read -r c t l f <<<"$r"
    printf "%8s %12s %18s %8s\n" "$c" "$t" "$l" "$f"
done
