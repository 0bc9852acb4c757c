#!/usr/bin/env bash
# Runs every test against a real PostgreSQL and RabbitMQ (started, or installed, when needed).
# Each test creates its own database and queue namespace and removes them when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/services.sh
ensure_services
# The board's browser tests drive headless Chromium.
ensure_browser
# The alert rules and dashboards are checked against a real Prometheus.
ensure_prometheus
# A pool of gateways is tested behind HAProxy.
ensure_haproxy
# The end-to-end tests run the real binaries.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
    # nextest does not run doc tests.
    cargo test --workspace --doc
else
    cargo test --workspace --no-fail-fast "$@"
fi
