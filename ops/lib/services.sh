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

ensure_rabbitmq() {
    if ! command -v rabbitmq-server >/dev/null; then
        apt_install rabbitmq-server
    fi
    if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
        as_root rabbitmq-server -detached || true
        wait_for 120 "RabbitMQ" as_root rabbitmqctl -q await_startup
    fi
}

ensure_services() {
    ensure_build_deps
    ensure_postgres
    ensure_rabbitmq
}
