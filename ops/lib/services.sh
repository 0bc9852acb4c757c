# Shared by ops/run-demo.sh, ops/test.sh and .ci/run: make sure PostgreSQL and RabbitMQ are
# installed and running on this machine, and that the `teletraan` database role exists.
# Installs from the distribution's packages (Debian/Ubuntu) when something is missing.

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sudo -u postgres sh -c "$1"; fi
}

apt_install() {
    echo "services: installing $* from the distribution's packages" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # seconds, description, command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "services: $what did not come up in time" >&2
            return 1
        fi
        sleep 1
    done
}

ensure_build_deps() {
    if ! command -v cc >/dev/null || ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl 2>/dev/null; then
        apt_install build-essential pkg-config libssl-dev
    fi
}

ensure_postgres() {
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
    fi
    if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        wait_for 60 "PostgreSQL" pg_isready -h 127.0.0.1 -p 5432 -q
    fi
    # The role the system and the tests use: it may create (and drop) databases.
    as_postgres "psql -qAtc \"SELECT 1 FROM pg_roles WHERE rolname = 'teletraan'\"" | grep -q 1 ||
        as_postgres "psql -qc \"CREATE ROLE teletraan LOGIN CREATEDB PASSWORD 'teletraan'\""
}

# Each broker connection takes a file descriptor: at the usual soft limit of 1,024 a day of
# parallel test runs exhausts them and new connections hang. The server is started through
# `su`, which resets limits, so the limit is raised in the file its start script sources as
# the rabbitmq user (up to the hard limit, which that user may do).
raise_rabbitmq_open_files() {
    local conf=/etc/rabbitmq/rabbitmq-env.conf
    local line='ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # teletraan tests: open files'
    if ! grep -qF "teletraan tests: open files" "$conf" 2>/dev/null; then
        printf '%s\n' "$line" | as_root tee -a "$conf" >/dev/null
    fi
}

ensure_rabbitmq() {
    if ! command -v rabbitmq-server >/dev/null; then
        apt_install rabbitmq-server
    fi
    raise_rabbitmq_open_files
    if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
        as_root rabbitmq-server -detached || true
        wait_for 120 "RabbitMQ" as_root rabbitmqctl -q await_startup
    fi
}

# The private CA of the TLS tests and the certificate PostgreSQL and RabbitMQ serve with it,
# kept outside the repository. The tests read `ca.pem` there (ops/tests/tls.rs, the store's
# TLS tests); another directory can be chosen with TELETRAAN_TEST_TLS_DIR.
TELETRAAN_TEST_TLS_DIR=${TELETRAAN_TEST_TLS_DIR:-/var/lib/teletraan-test-tls}
export TELETRAAN_TEST_TLS_DIR

# Makes (once) a CA and a certificate for localhost and 127.0.0.1 signed by it, with a copy
# of the key for each service that reads it (owned by it, mode 0600).
ensure_test_certificates() {
    local dir=$TELETRAAN_TEST_TLS_DIR
    if ! command -v openssl >/dev/null; then
        apt_install openssl
    fi
    if ! as_root test -s "$dir/ca.pem" -a -s "$dir/server.pem" -a -s "$dir/server.key"; then
        echo "services: making the test CA and server certificate in $dir" >&2
        as_root mkdir -p "$dir"
        as_root openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=teletraan test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
        as_root openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" |
            as_root tee "$dir/server.ext" >/dev/null
        as_root openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 3650 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
        as_root rm -f "$dir/postgres.key" "$dir/rabbitmq.key"
    fi
    as_root chmod 755 "$dir"
    as_root chmod 644 "$dir/ca.pem" "$dir/server.pem"
    as_root chmod 600 "$dir/ca.key" "$dir/server.key"
    local user
    for user in postgres rabbitmq; do
        if ! as_root test -s "$dir/$user.key"; then
            as_root install -m 600 -o "$user" -g "$user" "$dir/server.key" "$dir/$user.key"
        fi
    done
}

# Whether ADDRESS completes a TLS handshake (after STARTTLS-style PROTOCOL, if any) with a
# certificate the test CA signed.
serves_test_certificate() { # protocol, address
    local starttls=()
    if [ -n "$1" ]; then starttls=(-starttls "$1"); fi
    openssl s_client "${starttls[@]}" -connect "$2" -CAfile "$TELETRAAN_TEST_TLS_DIR/ca.pem" \
        -verify_return_error </dev/null >/dev/null 2>&1
}

# PostgreSQL serves the test certificate (plain connections keep working: TLS is offered,
# never required).
ensure_postgres_tls() {
    local dir=$TELETRAAN_TEST_TLS_DIR
    if [ "$(as_postgres "psql -qAtc 'SHOW ssl_cert_file'")" != "$dir/server.pem" ] ||
        [ "$(as_postgres "psql -qAtc 'SHOW ssl'")" != on ]; then
        echo "services: PostgreSQL serves TLS with $dir/server.pem" >&2
        as_postgres "psql -qc \"ALTER SYSTEM SET ssl_cert_file = '$dir/server.pem'\" \
            -c \"ALTER SYSTEM SET ssl_key_file = '$dir/postgres.key'\" -c \"ALTER SYSTEM SET ssl = on\" \
            -c 'SELECT pg_reload_conf()'" >/dev/null
    fi
    wait_for 30 "PostgreSQL's TLS with the test certificate" serves_test_certificate postgres 127.0.0.1:5432
}

# RabbitMQ opens a TLS listener on 127.0.0.1:5671 beside the plain one on 5672 (a restart,
# once, when the listener is not configured yet).
ensure_rabbitmq_tls() {
    local dir=$TELETRAAN_TEST_TLS_DIR conf=/etc/rabbitmq/rabbitmq.conf
    if ! as_root grep -qs '^listeners.ssl.teletraan_test' "$conf"; then
        echo "services: RabbitMQ opens a TLS listener on 127.0.0.1:5671 (restarting it once)" >&2
        printf '%s\n' "# TLS for the tests (ops/lib/services.sh)" \
            "listeners.ssl.teletraan_test = 127.0.0.1:5671" \
            "ssl_options.cacertfile = $dir/ca.pem" \
            "ssl_options.certfile = $dir/server.pem" \
            "ssl_options.keyfile = $dir/rabbitmq.key" \
            "ssl_options.verify = verify_none" \
            "ssl_options.fail_if_no_peer_cert = false" | as_root tee -a "$conf" >/dev/null
        as_root rabbitmqctl -q stop >/dev/null 2>&1 || true
        as_root rabbitmq-server -detached || true
        wait_for 120 "RabbitMQ" as_root rabbitmqctl -q await_startup
    fi
    wait_for 60 "RabbitMQ's TLS listener" serves_test_certificate "" 127.0.0.1:5671
}

# Headless Chromium and its WebDriver, for the board's browser tests.
ensure_browser() {
    if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
        apt_install chromium chromium-driver
    fi
    ensure_axe
}

# axe-core checks the board's pages for accessibility in the browser tests. It is fetched from
# the npm registry (never shipped in the binary), pinned by version and by the registry's SHA-512,
# into the user's cache; TELETRAAN_AXE_CORE names the script for the tests.
AXE_CORE_VERSION=4.10.3
AXE_CORE_SHA512=Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg==
ensure_axe() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/teletraan-tests/axe-core-$AXE_CORE_VERSION"
    if [ ! -s "$dir/axe.min.js" ]; then
        command -v npm >/dev/null || apt_install npm
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && npm pack --silent "axe-core@$AXE_CORE_VERSION" >/dev/null)
        local got
        got=$(openssl dgst -sha512 -binary "$tmp/axe-core-$AXE_CORE_VERSION.tgz" | base64 -w0)
        if [ "$got" != "$AXE_CORE_SHA512" ]; then
            echo "services: axe-core $AXE_CORE_VERSION from npm has SHA-512 $got, expected $AXE_CORE_SHA512" >&2
            rm -rf "$tmp"
            return 1
        fi
        mkdir -p "$dir"
        tar -xzf "$tmp/axe-core-$AXE_CORE_VERSION.tgz" -C "$tmp" package/axe.min.js package/LICENSE
        mv "$tmp/package/axe.min.js" "$tmp/package/LICENSE" "$dir/"
        rm -rf "$tmp"
    fi
    export TELETRAAN_AXE_CORE="$dir/axe.min.js"
}

# Prometheus and promtool (Debian package) for the rules check and the Prometheus test; no
# service is started (the test runs its own).
ensure_prometheus() {
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        apt_install --no-install-recommends prometheus
    fi
}

# HAProxy balances the pings over a pool of gateways in the tests.
ensure_haproxy() {
    if ! command -v haproxy >/dev/null; then
        apt_install --no-install-recommends haproxy
    fi
}

ensure_services() {
    ensure_build_deps
    ensure_postgres
    ensure_rabbitmq
    ensure_test_certificates
    ensure_postgres_tls
    ensure_rabbitmq_tls
    echo "services: PostgreSQL (5432, TLS offered) and RabbitMQ (5672, TLS on 5671) run; test CA: $TELETRAAN_TEST_TLS_DIR/ca.pem" >&2
}
