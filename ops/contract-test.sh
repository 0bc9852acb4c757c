#!/usr/bin/env bash
# Checks the running server against its own contract: starts `teletraan up` on a database and
# broker namespace of its own, then runs schemathesis (PyPI) on `/openapi.json` with an admin
# token. It fails on any 5xx and on any answer whose status, content type, headers or body the
# contract does not describe. Installs schemathesis when missing.
#
#   bash ops/contract-test.sh            # the CI form (a bounded number of examples per route)
#   EXAMPLES=200 bash ops/contract-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/services.sh
ensure_services
# schemathesis' `st`: on the PATH, or installed with pip (which apt provides when missing).
st="$(command -v st || true)"
if [ -z "$st" ]; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --quiet --break-system-packages 'schemathesis>=4,<5' ||
        python3 -m pip install --quiet 'schemathesis>=4,<5'
    st="$(command -v st || true)"
    # A fresh console script may not be on the PATH yet (pyenv shims, ~/.local/bin).
    [ -n "$st" ] || st="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/st"
    [ -x "$st" ] || st="$HOME/.local/bin/st"
fi
cargo build --bin teletraan

examples="${EXAMPLES:-25}"
suffix="contract_$$"
db="teletraan_${suffix}"
admin="contract-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
api_port="${API_PORT:-18080}"
gateway_port="${GATEWAY_PORT:-18081}"
worker_port="${WORKER_PORT:-18082}"
log="$(mktemp)"

PGPASSWORD=teletraan psql -qh 127.0.0.1 -U teletraan -d postgres -c "CREATE DATABASE $db"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    PGPASSWORD=teletraan psql -qh 127.0.0.1 -U teletraan -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    rm -f "$log"
}
trap cleanup EXIT

TELETRAAN_DATABASE_URL="postgres://teletraan:teletraan@127.0.0.1:5432/$db" \
TELETRAAN_NAMESPACE="$suffix" \
TELETRAAN_ADMIN_TOKEN="$admin" \
TELETRAAN_AGENT_TOKEN="contract-agent-token" \
TELETRAAN_API_LISTEN="127.0.0.1:$api_port" \
TELETRAAN_GATEWAY_LISTEN="127.0.0.1:$gateway_port" \
TELETRAAN_WORKER_LISTEN="127.0.0.1:$worker_port" \
    target/debug/teletraan up >"$log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$api_port/readyz" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "the server exited" >&2; exit 1; }
    sleep 0.5
done

# Something to find: the stage the contract's examples name, a build, and a deploy of it.
call() {
    local out
    out=$(curl -sS --fail-with-body -X "$1" -H "Authorization: token $admin" -H 'Content-Type: application/json' \
        "http://127.0.0.1:$api_port$2" ${3:+-d "$3"}) || { echo "$1 $2: $out" >&2; return 1; }
}
call POST /v1/envs '{"envName": "contract", "stageName": "prod", "maxParallel": 2}'
sha=0000000000000000000000000000000000000000000000000000000000000000
call POST /v1/builds "{\"name\": \"contract\", \"artifactUrl\": \"https://artifacts.example.com/contract/1.tgz\", \"artifactSha256\": \"$sha\", \"repo\": \"org/contract\", \"branch\": \"main\", \"commit\": \"abcdef1234\"}"
build=$(curl -fsS -H "Authorization: token $admin" "http://127.0.0.1:$api_port/v1/builds?name=contract" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
call POST "/v1/envs/contract/prod/deploys?buildId=$build"

# The ping and the enrollment live on the gateway's listener; they are checked against it.
# `GET /v1/events` answers a stream of server-sent events that ends only when the client
# leaves: schemathesis reads a whole body, so it would wait for it forever (api/tests/events.rs
# covers the route instead).
status=0
"$st" run "http://127.0.0.1:$api_port/openapi.json" \
    --header "Authorization: token $admin" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$examples" \
    --exclude-path /v1/system/ping --exclude-path /v1/system/enroll --exclude-path /v1/events \
    --seed 1 \
    || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- server log (last 50 lines)" >&2
    tail -50 "$log" >&2
fi
exit "$status"
