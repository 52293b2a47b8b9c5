#!/usr/bin/env bash
# Spec-driven fuzzing of the client-server API with schemathesis.
#
#   fuzz/run.sh [--smoke|--long] BASE_URL            # against a server that is running
#   fuzz/run.sh [--smoke|--long] --start BIN         # start BIN with a temporary config, stop it after
#   fuzz/run.sh --smoke --start "$CARGO_TARGET_DIR/debug/palisade"     # what CI runs
#   fuzz/run.sh --venv-only                          # only make the virtualenv (install-deps)
#
# Extra options:
#   --server-log FILE  (with BASE_URL) the running server's stderr, grepped for "panicked"
#   --server-pid PID   (with BASE_URL) the running server's pid, must still be alive afterwards
#   -- ARGS...         passed on to `schemathesis run` as they are
# Environment:
#   FUZZ_VENV          virtualenv to use/create (default fuzz/.venv; installed into again
#                      when requirements.txt or constraints.txt change)
#   FUZZ_WORK          directory for the bundled spec, config, reports, server data, and
#                      the caches schemathesis and hypothesis write to their working
#                      directory (default: a new /tmp/palisade-fuzz.XXXXXX, removed after
#                      a passing run and kept after a failing one)
#   FUZZ_MAX_EXAMPLES  override the examples per operation (smoke 20, long 300)
#   FUZZ_SEED          override the seed (smoke: fixed 20251123; long: random)
#   FUZZ_WORKERS       schemathesis workers (smoke 1, for a repeatable order; long 2)
#   MATRIX_SPEC_DIR    a matrix-spec checkout to fuzz against (default: fuzz/spec, the
#                      stripped copy of the client-server definitions in the repository)
#
# Server requirements: open registration (m.login.dummy) and generous rate limits,
# as in the config --start writes.
#
# What is checked, for every operation the server implements (probed first: an
# operation it answers with 404/405 M_UNRECOGNIZED is left out):
#   not_a_server_error, response_schema_conformance, and matrix_status_code_conformance
#   (fuzz/hooks.py: schemathesis' status_code_conformance, except that the spec's generic
#   errors -- 400 M_BAD_JSON, 403 M_FORBIDDEN, 404 M_NOT_FOUND, ... as a standard error
#   body -- are allowed on every operation, as the spec says), and matrix_route_matched
#   (fuzz/hooks.py: an implemented operation must never answer 404/405 M_UNRECOGNIZED);
# and afterwards that the server process is still alive and never logged "panicked".
# Before fuzzing, fuzz/check_versions.py checks that the versions /versions advertises
# have their endpoints (or list them in fuzz/version_gaps.txt).
# Exit status is non-zero on any failure.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ="$REPO/fuzz"
MODE=smoke
BASE_URL=""
START_BIN=""
SERVER_LOG=""
SERVER_PID=""
EXTRA=()
VENV_ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) MODE=smoke ;;
        --long) MODE=long ;;
        --venv-only) VENV_ONLY=1 ;;
        --start) START_BIN="$2"; shift ;;
        --server-log) SERVER_LOG="$2"; shift ;;
        --server-pid) SERVER_PID="$2"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) BASE_URL="$1" ;;
    esac
    shift
done
log() { printf '[fuzz %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- virtualenv with the pinned schemathesis -------------------------------------------
VENV="${FUZZ_VENV:-$FUZZ/.venv}"
mkdir -p "$VENV"
VENV="$(cd "$VENV" && pwd)"
# The venv records the pins it was installed from; changed pins install again.
STAMP="$(cat "$FUZZ/requirements.txt" "$FUZZ/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/schemathesis" ] || [ "$(cat "$VENV/.fuzz-pins" 2>/dev/null)" != "$STAMP" ]; then
    log "installing schemathesis into $VENV"
    python3 -m venv "$VENV" 2>/dev/null || {
        # Debian's python3 needs python3-venv for this.
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$FUZZ/requirements.txt" -c "$FUZZ/constraints.txt"
    echo "$STAMP" > "$VENV/.fuzz-pins"
fi
[ -z "$VENV_ONLY" ] || exit 0

case "$SERVER_LOG" in ""|/*) ;; *) SERVER_LOG="$PWD/$SERVER_LOG" ;; esac
if [ -z "$BASE_URL" ] && [ -z "$START_BIN" ]; then
    echo "usage: fuzz/run.sh [--smoke|--long] (BASE_URL | --start BIN) [-- schemathesis args]" >&2
    exit 2
fi

SPEC_DIR="${MATRIX_SPEC_DIR:-$FUZZ/spec}"
[ -d "$SPEC_DIR/data/api/client-server" ] || { echo "run.sh: no spec at $SPEC_DIR (set MATRIX_SPEC_DIR)" >&2; exit 2; }
OWN_WORK=""
if [ -z "${FUZZ_WORK:-}" ]; then
    WORK="$(mktemp -d /tmp/palisade-fuzz.XXXXXX)"
    OWN_WORK=1
else
    mkdir -p "$FUZZ_WORK"
    WORK="$(cd "$FUZZ_WORK" && pwd)"
fi

case "$MODE" in
    smoke)
        MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-20}"
        SEED="${FUZZ_SEED:-20251123}"
        PHASES="examples,coverage,fuzzing"
        # One worker: operations run in a fixed order, so server state and results repeat.
        WORKERS="${FUZZ_WORKERS:-1}"
        ;;
    long)
        MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-300}"
        SEED="${FUZZ_SEED:-$RANDOM$RANDOM}"
        PHASES="examples,coverage,fuzzing,stateful"
        WORKERS="${FUZZ_WORKERS:-2}"
        ;;
esac

PY="$VENV/bin/python"
log "schemathesis $("$VENV/bin/schemathesis" --version | awk '{print $NF}'), mode $MODE, work dir $WORK"

# --- server --------------------------------------------------------------------------
STARTED_PID=""
cleanup() {
    if [ -n "$STARTED_PID" ] && kill -0 "$STARTED_PID" 2>/dev/null; then
        kill "$STARTED_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$STARTED_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$STARTED_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [ -n "$START_BIN" ]; then
    [ -x "$START_BIN" ] || { echo "run.sh: $START_BIN is not an executable" >&2; exit 2; }
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    mkdir -p "$WORK/server"
    rm -rf "$WORK/server/db"
    cat > "$WORK/server/config.toml" <<EOF
[global]
server_name = "localhost"
address = "127.0.0.1"
port = $PORT
database_path = "$WORK/server/db"
allow_registration = true
registration_shared_secret = "fuzz-secret-$RANDOM$RANDOM"
# Keep /sync long-polls short: generated timeouts would otherwise hold a request.
sync_timeout_max_ms = 1000
log = "info"
[global.rate_limits.login]
per_second = 100000.0
burst = 100000
[global.rate_limits.registration]
per_second = 100000.0
burst = 100000
[global.rate_limits.message]
per_second = 100000.0
burst = 100000
EOF
    SERVER_LOG="$WORK/server/stderr.log"
    "$START_BIN" --config "$WORK/server/config.toml" >"$WORK/server/stdout.log" 2>"$SERVER_LOG" &
    STARTED_PID=$!
    SERVER_PID="$STARTED_PID"
    BASE_URL="http://127.0.0.1:$PORT"
    for i in $(seq 300); do
        if curl -fsS -o /dev/null "$BASE_URL/_matrix/client/versions" 2>/dev/null; then break; fi
        kill -0 "$STARTED_PID" 2>/dev/null || { echo "run.sh: server exited at startup:" >&2; tail -50 "$SERVER_LOG" >&2; exit 1; }
        [ "$i" -lt 300 ] || { echo "run.sh: server did not answer within 60 s" >&2; exit 1; }
        sleep 0.2
    done
    log "started $START_BIN (pid $STARTED_PID) at $BASE_URL, log $SERVER_LOG"
fi
BASE_URL="${BASE_URL%/}"
curl -fsS -o /dev/null "$BASE_URL/_matrix/client/versions" || { echo "run.sh: no server at $BASE_URL" >&2; exit 1; }

# --- advertised versions ----------------------------------------------------------------
# Every endpoint of every version /versions advertises is served, or listed in
# fuzz/version_gaps.txt with why.
"$PY" "$FUZZ/check_versions.py" --base-url "$BASE_URL" --spec-dir "$SPEC_DIR" \
    --gaps "$FUZZ/version_gaps.txt" || { echo "run.sh: check_versions failed" >&2; exit 1; }

# --- account, rooms, ids ---------------------------------------------------------------
FIXTURES="$("$PY" "$FUZZ/setup_fixtures.py" --base-url "$BASE_URL")"  # fails the run if setup fails
eval "$FIXTURES"
export FUZZ_SERVER_NAME
log "fuzzing as $FUZZ_USER_ID; main room $FUZZ_ROOM_ID ($FUZZ_ROOM_ALIAS), spare room $FUZZ_SPARE_ROOM_ID"

# --- operations never sent --------------------------------------------------------------
# Each would end or cripple the fuzzing account's session, and every later request
# would then fail with 401 instead of testing anything.
cat > "$WORK/excluded.txt" <<'EOF'
# Deactivates the fuzzing account (generated UIA bodies may be accepted).
POST /_matrix/client/v3/account/deactivate
# Changes the password and, with logout_devices (default true), logs the token out.
POST /_matrix/client/v3/account/password
# Invalidate the access token the run uses.
POST /_matrix/client/v3/logout
POST /_matrix/client/v3/logout/all
# Delete devices and with them their access tokens (the device id of the run's token is fed
# to {deviceId}).
POST /_matrix/client/v3/delete_devices
DELETE /_matrix/client/v3/devices/{deviceId}
# Server-admin operations that lock or suspend an account: a fuzzing account with admin
# rights would lock itself out. (Not sent even if the server implements them.)
PUT /_matrix/client/v1/admin/lock/{userId}
PUT /_matrix/client/v1/admin/suspend/{userId}
EOF

# --- spec: bundle, probe, keep what the server implements -----------------------------
# Spec fixes applied while bundling (each one is a spec defect, not a server one):
#   --fix-ambiguous-oneof: GET /rooms/{roomId}/state/{eventType}/{stateKey} answers
#     `oneOf: [{type: object}, ClientEvent]`; a full event (format=event) matches both
#     branches, so under oneOf every correct answer "violates" the schema. Made anyOf.
BUNDLE_FIXES=(--fix-ambiguous-oneof)
"$PY" "$FUZZ/bundle_spec.py" --spec-dir "$SPEC_DIR" --base-url "$BASE_URL" "${BUNDLE_FIXES[@]}" \
    --exclude "$WORK/excluded.txt" -o "$WORK/spec-all.json" 2>"$WORK/bundle.log" || { cat "$WORK/bundle.log" >&2; exit 1; }
"$PY" "$FUZZ/probe_implemented.py" --spec "$WORK/spec-all.json" --base-url "$BASE_URL" \
    --token "$FUZZ_TOKEN" --server-name "$FUZZ_SERVER_NAME" -o "$WORK/implemented.txt" --verbose \
    2>"$WORK/probe.log" || { cat "$WORK/probe.log" >&2; exit 1; }
tail -1 "$WORK/probe.log" >&2
"$PY" "$FUZZ/bundle_spec.py" --spec-dir "$SPEC_DIR" --base-url "$BASE_URL" "${BUNDLE_FIXES[@]}" \
    --exclude "$WORK/excluded.txt" --only-implemented "$WORK/implemented.txt" \
    -o "$WORK/spec.json" 2>>"$WORK/bundle.log" || { cat "$WORK/bundle.log" >&2; exit 1; }
tail -1 "$WORK/bundle.log" >&2

# --- schemathesis config ---------------------------------------------------------------
toml_str() { "$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
cat > "$WORK/schemathesis.toml" <<EOF
# Written by fuzz/run.sh.

# No crash cache (.schemathesis/ in the current directory): nothing carried over between
# runs, so a smoke seed always gives the same cases, and nothing left in the work tree.
[cache]
enabled = false

[generation]
# The token goes in the Authorization header (-H); do not let schemathesis generate
# (random) access_token query parameters from the accessTokenQuery scheme as well.
with-security-parameters = false

# Real ids, so room-, user-, event- and filter-scoped operations get past "not found" /
# "forbidden" most of the time; the rest of the time the value is generated.
[dictionaries.room]
values = [$(toml_str "$FUZZ_ROOM_ID")]
[dictionaries.spare_room]
values = [$(toml_str "$FUZZ_SPARE_ROOM_ID")]
[dictionaries.room_or_alias]
values = [$(toml_str "$FUZZ_ROOM_ID"), $(toml_str "$FUZZ_ROOM_ALIAS")]
[dictionaries.alias]
values = [$(toml_str "$FUZZ_ROOM_ALIAS")]
[dictionaries.user]
values = [$(toml_str "$FUZZ_USER_ID")]
[dictionaries.event]
values = [$(toml_str "$FUZZ_EVENT_ID")]
[dictionaries.filter]
values = [$(toml_str "$FUZZ_FILTER_ID")]
[dictionaries.device]
# The run's device and the second one setup_fixtures.py logged in without a display name.
values = [$(toml_str "$FUZZ_DEVICE_ID"), $(toml_str "$FUZZ_DEVICE2_ID")]
[dictionaries.push_rule]
# The run's own rules (setup_fixtures.py) and server-default ones.
values = ["fuzz-content", "fuzz-override", ".m.rule.master", ".m.rule.message", ".m.rule.contains_user_name"]
[dictionaries.short_timeout]
values = [0, 50]

[parameters]
"path.roomId" = { dictionary = "room", probability = 0.8 }
"path.roomIdOrAlias" = { dictionary = "room_or_alias", probability = 0.8 }
"path.roomAlias" = { dictionary = "alias", probability = 0.5 }
"path.userId" = { dictionary = "user", probability = 0.8 }
"path.eventId" = { dictionary = "event", probability = 0.8 }
"path.filterId" = { dictionary = "filter", probability = 0.8 }
"path.deviceId" = { dictionary = "device", probability = 0.8 }
"path.ruleId" = { dictionary = "push_rule", probability = 0.8 }

# The coverage phase also sends methods a path does not define. Not DELETE: on
# /devices/{deviceId} (fed the run's own device) that is the excluded device deletion.
[phases.coverage]
unexpected-methods = ["GET", "PUT", "POST", "PATCH", "TRACE"]

# Leaving (and then forgetting) the main room would turn every later room-scoped request
# into a 403: these two get the spare room instead.
[[operations]]
include-path-regex = "/rooms/\\\\{roomId\\\\}/(leave|forget)\$"
parameters = { "path.roomId" = { dictionary = "spare_room", probability = 0.8 } }

# An alias needs an existing room to point at.
[[operations]]
include-path = "/_matrix/client/v3/directory/room/{roomAlias}"
include-method = "PUT"
parameters = { "body.room_id" = { dictionary = "room", probability = 0.8 } }

# Long-polls: a generated timeout would hold each request up to the server's maximum.
[[operations]]
include-path = ["/_matrix/client/v3/sync", "/_matrix/client/v3/events"]
parameters = { "query.timeout" = { dictionary = "short_timeout", probability = 0.95 } }
EOF

# --- run ---------------------------------------------------------------------------------
mkdir -p "$WORK/report"
log "running schemathesis: $MAX_EXAMPLES examples/operation, seed $SEED, phases $PHASES"
T0=$(date +%s)
set +e
# From the work directory: schemathesis and hypothesis keep caches (.schemathesis/,
# .hypothesis/) in the current directory, and none may land in the work tree.
cd "$WORK"
SCHEMATHESIS_HOOKS="$FUZZ/hooks.py" "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run \
    "$WORK/spec.json" \
    --url "$BASE_URL" \
    -H "Authorization: Bearer $FUZZ_TOKEN" \
    --checks not_a_server_error,response_schema_conformance,matrix_status_code_conformance,matrix_route_matched \
    --phases "$PHASES" \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --generation-database none \
    --workers "$WORKERS" \
    --request-timeout 30 \
    --continue-on-failure \
    --report junit,ndjson \
    --report-dir "$WORK/report" \
    --report-junit-path "$WORK/report/junit.xml" \
    --report-ndjson-path "$WORK/report/events.ndjson" \
    --no-color \
    ${EXTRA[@]+"${EXTRA[@]}"}
ST_RC=$?
set -e
log "schemathesis exited $ST_RC after $(( $(date +%s) - T0 )) s; reports in $WORK/report"
if [ "$ST_RC" -ne 0 ] && [ -f "$WORK/report/events.ndjson" ]; then
    # One line group per distinct failure, with a curl command to reproduce it.
    "$PY" "$FUZZ/summarize.py" "$WORK/report/events.ndjson" --json "$WORK/failures.json" >"$WORK/failures.txt" || true
    log "distinct failures ($WORK/failures.txt; \$TOKEN is the fuzzing account's access token):"
    cat "$WORK/failures.txt" >&2
fi

# --- the server must have survived -----------------------------------------------------
RC=$ST_RC
if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "FAIL: the server process (pid $SERVER_PID) is gone"
    RC=1
elif ! curl -fsS -o /dev/null --max-time 10 "$BASE_URL/_matrix/client/versions"; then
    log "FAIL: the server no longer answers $BASE_URL/_matrix/client/versions"
    RC=1
fi
if [ -n "$SERVER_LOG" ] && [ -f "$SERVER_LOG" ] && grep -q "panicked" "$SERVER_LOG"; then
    log "FAIL: the server panicked:"
    grep -n -A3 "panicked" "$SERVER_LOG" | head -60 >&2
    RC=1
fi
if [ "$RC" -eq 0 ]; then
    if [ -n "$OWN_WORK" ]; then
        cleanup
        trap - EXIT
        cd "$REPO"
        rm -rf "$WORK"
        log "OK (work dir removed; set FUZZ_WORK to keep one)"
    else
        log "OK"
    fi
else
    log "FAILED (exit $RC); work dir $WORK"
fi
exit "$RC"
