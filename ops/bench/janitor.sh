#!/usr/bin/env bash
# The host janitor at fleet scale (issue 8): HOSTS hosts seeded (ops/bench/sql/seed.sql), of
# which SILENT_PERMILLE per mille have not pinged for 20 minutes; then one janitor run (they are
# marked UNREACHABLE, their stages re-evaluated, then forgotten, being past both thresholds)
# and a run with nothing left to do, which is what every run costs in the steady state.
#
# Settings (environment): HOSTS (1000000), STAGES (100), SILENT_PERMILLE (10).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOSTS=${HOSTS:-1000000} STAGES=${STAGES:-100} SILENT_PERMILLE=${SILENT_PERMILLE:-10}

bench_prepare
new_db janitor
log "seeding $HOSTS hosts over $STAGES stages"
seed "$DB" "$HOSTS" "$STAGES"
silence="abs(hashtext(host_id)) % 1000 < $SILENT_PERMILLE"
psql -qAt "$DB" -c "UPDATE host_heartbeats SET last_seen = now() - interval '20 minutes' WHERE $silence;
    UPDATE hosts SET last_update = now() - interval '20 minutes' WHERE $silence;
    UPDATE agents SET last_update = now() - interval '20 minutes', report_at = NULL WHERE $silence;
    ANALYZE host_heartbeats, hosts, agents" >/dev/null
silent=$(psql -qAt "$DB" -c "SELECT count(*) FROM host_heartbeats WHERE last_seen < now() - interval '10 minutes'")
log "$silent hosts silent for 20 minutes"
TELETRAAN_DATABASE_URL=$DB "$BIN" bench janitor | tee "$WORK/janitor.out" >&2
result=$(grep '^result:' "$WORK/janitor.out")
echo "janitor with $HOSTS hosts ($silent silent): $result"
