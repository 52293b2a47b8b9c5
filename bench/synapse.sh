#!/usr/bin/env bash
# Manage a loopback-only Synapse instance for side-by-side benchmarks.
#
#   bench/synapse.sh install
#       Create a venv at $SYNAPSE_VENV and pip-install matrix-synapse and
#       psycopg2-binary (skipped when already installed; concurrent installs wait
#       for each other). Prints the version.
#   bench/synapse.sh start sqlite|postgres PORT DIR
#       Write DIR/homeserver.yaml, generate the signing key, start a private
#       PostgreSQL 15 cluster in DIR/pg (postgres only), start Synapse in the
#       background and wait until /_matrix/client/versions answers.
#       The last line of stdout is the Synapse pid.
#   bench/synapse.sh stop DIR
#       Stop Synapse (SIGTERM, SIGKILL after 10 s) and the PostgreSQL cluster.
#
# Environment:
#   BENCH_DIR        base directory for the venv (default /tmp/palisade-bench)
#   SYNAPSE_VENV     the venv (default $BENCH_DIR/synapse-venv); the federation
#                    tests (complement-tests/src/synapse.rs) use the same one
#   PYTHON           interpreter used to create the venv (default python3)
#   SYNAPSE_VERSION  pin matrix-synapse to this version at install (default: latest)
#   PG_BIN           PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   PG_USER          unprivileged user that runs PostgreSQL (default postgres;
#                    created as a system user when missing)
#   START_TIMEOUT    seconds to wait for Synapse to answer (default 120)
#
# The rate limits come from bench/synapse-ratelimits.yaml (shared with the tests).
#
# Files written in DIR: homeserver.yaml, log.config, homeserver.log,
# synapse.out (stdout/stderr), synapse.pid, registration_shared_secret,
# and for postgres: pg/ (data dir), pgsock/ (unix socket), postgres.log,
# postgres.pid.
set -euo pipefail

BENCH_DIR="${BENCH_DIR:-/tmp/palisade-bench}"
VENV="${SYNAPSE_VENV:-$BENCH_DIR/synapse-venv}"
VPY="$VENV/bin/python"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_USER="${PG_USER:-postgres}"
PG_PORT=5432 # only names the socket file; PostgreSQL listens on no TCP port
START_TIMEOUT="${START_TIMEOUT:-120}"

die() {
    echo "synapse.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

synapse_version() {
    "$VPY" -c 'import synapse; print(synapse.__version__)'
}

cmd_install() {
    mkdir -p "$(dirname "$VENV")"
    exec 9>"$VENV.lock"
    flock 9
    if [[ -x "$VPY" ]] && "$VPY" -c 'import synapse, psycopg2' 2>/dev/null; then
        echo "Synapse already installed in $VENV"
    else
        "${PYTHON:-python3}" -m venv "$VENV"
        "$VPY" -m pip install --quiet --upgrade pip
        "$VPY" -m pip install --quiet \
            "matrix-synapse${SYNAPSE_VERSION:+==$SYNAPSE_VERSION}" psycopg2-binary
    fi
    echo "Synapse version: $(synapse_version)"
}

# Print a random hex secret.
secret() {
    "$VPY" -c 'import secrets; print(secrets.token_hex(32))'
}

# Is the pid in file $1 a live process?
pid_alive() {
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Run a command as the unprivileged PostgreSQL user.
as_pg() {
    runuser -u "$PG_USER" -- "$@"
}

# Initialise (first time only) and start the private PostgreSQL cluster.
start_postgres() {
    local dir="$1" pgdata="$1/pg" sock="$1/pgsock"
    if [[ ! -x "$PG_BIN/initdb" ]]; then
        # Debian's server package; its own cluster is not used (ours lives in DIR).
        local sudo=""
        [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-15 >/dev/null
    fi
    [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL not found in $PG_BIN (apt-get install postgresql-15)"
    if ! id -u "$PG_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    fi
    mkdir -p "$pgdata" "$sock"
    chown "$PG_USER:" "$pgdata" "$sock"
    chmod 700 "$pgdata"
    chmod 755 "$dir" "$sock"
    if [[ ! -f "$pgdata/PG_VERSION" ]]; then
        # Synapse requires C collation/ctype and UTF8; trust auth on the socket only.
        as_pg "$PG_BIN/initdb" -D "$pgdata" -U synapse --auth=trust \
            --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        cat >>"$pgdata/postgresql.conf" <<EOF

# palisade bench: unix socket only, no TCP.
listen_addresses = ''
port = $PG_PORT
unix_socket_directories = '$sock'
EOF
    fi
    # The log file must be writable by the PostgreSQL user.
    touch "$dir/postgres.log"
    chown "$PG_USER:" "$dir/postgres.log"
    (cd "$pgdata" && as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$dir/postgres.log" -w -t 60 start) >/dev/null \
        || { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL failed to start"; }
    head -n 1 "$pgdata/postmaster.pid" >"$dir/postgres.pid"
    if ! "$PG_BIN/psql" -h "$sock" -p "$PG_PORT" -U synapse -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'synapse'" | grep -q 1; then
        "$PG_BIN/createdb" -h "$sock" -p "$PG_PORT" -U synapse \
            --encoding=UTF8 --lc-collate=C --lc-ctype=C --template=template0 synapse
    fi
}

stop_postgres() {
    local dir="$1"
    [[ -f "$dir/pg/postmaster.pid" ]] || { rm -f "$dir/postgres.pid"; return 0; }
    (cd "$dir/pg" && as_pg "$PG_BIN/pg_ctl" -D "$dir/pg" -m fast -w -t 30 stop) >/dev/null \
        || die "failed to stop PostgreSQL in $dir/pg"
    rm -f "$dir/postgres.pid"
}

# Write DIR/log.config and DIR/homeserver.yaml.
write_config() {
    local backend="$1" port="$2" dir="$3" db_yaml reg_secret

    if [[ "$backend" == sqlite ]]; then
        db_yaml="database:
  name: sqlite3
  args:
    database: $dir/homeserver.db"
    else
        db_yaml="database:
  name: psycopg2
  args:
    user: synapse
    dbname: synapse
    host: $dir/pgsock
    port: $PG_PORT
    cp_min: 5
    cp_max: 10"
    fi

    # Keep the shared secret stable across restarts of the same DIR.
    if [[ ! -s "$dir/registration_shared_secret" ]]; then
        secret >"$dir/registration_shared_secret"
    fi
    reg_secret="$(cat "$dir/registration_shared_secret")"

    cat >"$dir/log.config" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
    encoding: utf8
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
EOF

    cat >"$dir/homeserver.yaml" <<EOF
# Generated by bench/synapse.sh -- loopback-only benchmark instance.
server_name: localhost
public_baseurl: http://127.0.0.1:$port/
report_stats: false
listeners:
  - port: $port
    type: http
    tls: false
    bind_addresses: ['127.0.0.1']
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
$db_yaml
log_config: $dir/log.config
media_store_path: $dir/media_store
signing_key_path: $dir/localhost.signing.key
registration_shared_secret: $reg_secret
macaroon_secret_key: $(secret)
form_secret: $(secret)
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
suppress_key_server_warning: true
presence:
  enabled: true
enable_metrics: false

EOF
    cat "$(dirname "$0")/synapse-ratelimits.yaml" >>"$dir/homeserver.yaml"
}

cmd_start() {
    [[ $# -eq 3 ]] || usage
    local backend="$1" port="$2" dir="$3" pid deadline
    [[ "$backend" == sqlite || "$backend" == postgres ]] || usage
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    [[ -x "$VPY" ]] || die "no venv at $VENV; run '$0 install' first"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if pid_alive "$dir/synapse.pid"; then
        die "Synapse already running in $dir (pid $(cat "$dir/synapse.pid"))"
    fi

    if [[ "$backend" == postgres ]]; then
        start_postgres "$dir"
    fi
    write_config "$backend" "$port" "$dir"
    mkdir -p "$dir/media_store"
    (cd "$dir" && "$VPY" -m synapse.app.homeserver --generate-keys -c "$dir/homeserver.yaml") >/dev/null

    # Start detached (own session); the child records its pid before exec'ing Synapse.
    rm -f "$dir/synapse.pid"
    # shellcheck disable=SC2016 # expanded by the inner bash
    (cd "$dir" && setsid -f bash -c 'echo $$ >"$0"; exec "$@"' "$dir/synapse.pid" \
        "$VPY" -m synapse.app.homeserver -c "$dir/homeserver.yaml" \
        >>"$dir/synapse.out" 2>&1 </dev/null)

    deadline=$((SECONDS + START_TIMEOUT))
    until [[ -s "$dir/synapse.pid" ]]; do
        ((SECONDS < deadline)) || die "Synapse did not record its pid"
        sleep 0.1
    done
    pid="$(cat "$dir/synapse.pid")"
    until curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$port/_matrix/client/versions"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$dir/synapse.out" "$dir/homeserver.log" >&2 || true
            die "Synapse exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$dir/synapse.out" "$dir/homeserver.log" >&2 || true
            die "Synapse did not answer on port $port within ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    echo "Synapse $(synapse_version) ($backend) listening on http://127.0.0.1:$port"
    echo "$pid"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir="$1" pid i
    [[ -d "$dir" ]] || die "no such directory: $dir"
    if pid_alive "$dir/synapse.pid"; then
        pid="$(cat "$dir/synapse.pid")"
        kill -TERM "$pid"
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "Synapse $pid ignored SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    fi
    rm -f "$dir/synapse.pid"
    stop_postgres "$dir"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
