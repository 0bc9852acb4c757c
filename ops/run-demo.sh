#!/usr/bin/env bash
# Runs the whole deploy system on this machine and shows a rollout: installs and starts
# PostgreSQL and RabbitMQ when needed, builds, and starts `teletraan up --demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/services.sh
ensure_services
cargo build --bins
export TELETRAAN_DATABASE_URL="${TELETRAAN_DATABASE_URL:-postgres://teletraan:teletraan@127.0.0.1:5432/teletraan}"
exec target/debug/teletraan up --demo "$@"
