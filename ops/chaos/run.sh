#!/usr/bin/env bash
# The chaos suite, full form: a rollout of 1,000 simulated hosts per fault, on separate role
# processes (an API, two gateways behind HAProxy, two workers) over a Postgres and a
# three-node RabbitMQ cluster of the suite's own; each fault in turn, then all together.
# Prints the table (fault, time to recover, each invariant held or not) and writes it to
# target/chaos-report.md. CI runs the short form (100 hosts, a cap of 20 %) as part of
# ops/test.sh.
#
# Settings (environment): CHAOS_HOSTS (1000), CHAOS_CAP_PCT (10), CHAOS_HOLD_SECS (10: how long
# each fault lasts), CHAOS_FAULTS (a comma list; default every fault: see ops/tests/chaos.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ops/lib/services.sh
ensure_services >&2
ensure_haproxy >&2
export CHAOS_HOSTS=${CHAOS_HOSTS:-1000} CHAOS_CAP_PCT=${CHAOS_CAP_PCT:-10} CHAOS_HOLD_SECS=${CHAOS_HOLD_SECS:-10}
export CHAOS_REPORT=${CHAOS_REPORT:-$PWD/target/chaos-report.md}
cargo build -q -p teletraan --bins --tests
cargo test -q -p teletraan --test chaos -- --nocapture rollouts_survive
echo "report: $CHAOS_REPORT"
