#!/usr/bin/env bash
# Runs the same load (the `loadtest` tool) against this server and against Synapse on
# SQLite and on PostgreSQL 15, one after the other on this machine, all on loopback,
# and writes the side-by-side table of quotients (this server ÷ Synapse).
#
#   bench/compare.sh            full sizes, release build; rewrites the results part
#                               of docs/benchmarks.md (by hand: tens of minutes)
#   bench/compare.sh --smoke    tiny sizes, seconds per server; writes only to
#                               $BENCH_DIR/results-smoke (CI runs this so the tool never rots)
#
# Environment:
#   BENCH_DIR      work directory: venv, databases, reports (default /tmp/palisade-bench)
#   SYNAPSE_VENV   Synapse's venv (default $BENCH_DIR/synapse-venv)
#   PALISADE_BIN   server binary to measure (default: built here, release)
#   LOADTEST_BIN   load tool binary (default: built here, release)
#   BACKENDS       Synapse databases to measure (default "sqlite postgres"; "" for none)
#   PALISADE_BASELINE_BIN
#                  an earlier build of this server, measured the same way after it (but
#                  for the idle phases) as `palisade-baseline`: a change's cost shows as
#                  the quotient beside it, on the same machine in the same run
#   LOADTEST_ARGS  extra arguments for `loadtest run` (e.g. --sync-rooms 20)
#   PHASES         the load phases to run (default every one, idle syncs included);
#                  e.g. "send,delivery" to check a change to the send path. A partial run
#                  writes its table to $BENCH_DIR/results-full/comparison.md and leaves
#                  docs/benchmarks.md as it is
set -euo pipefail
cd "$(dirname "$0")/.."

size=full
report_only=false
ALL_PHASES=send,delivery,sync,messages,media,rooms,websocket,history
PHASES="${PHASES:-$ALL_PHASES,idle}"
partial=false
[[ "$PHASES" == "$ALL_PHASES,idle" ]] || partial=true
busy_phases="$(tr ',' '\n' <<<"$PHASES" | grep -vx idle | paste -sd, -)"
with_idle=false
tr ',' '\n' <<<"$PHASES" | grep -qx idle && with_idle=true
case "${1:-}" in
    --smoke) size=smoke ;;
    # Rebuild the table and docs/benchmarks.md from the reports of the last full run.
    --report-only) report_only=true ;;
esac
BENCH_DIR="${BENCH_DIR:-/tmp/palisade-bench}"
SYNAPSE_VENV="${SYNAPSE_VENV:-$BENCH_DIR/synapse-venv}"
export BENCH_DIR SYNAPSE_VENV
BACKENDS="${BACKENDS-sqlite postgres}"
# Smoke runs keep their reports apart, so they never replace those of a full run.
results="$BENCH_DIR/results-$size"
mkdir -p "$results"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

# Holding thousands of idle syncs takes a descriptor each, in the server and in the tool.
ulimit -n "$(ulimit -Hn)"

# `--pid` arguments for Synapse in DIR and, when it has one, its PostgreSQL cluster.
synapse_pids() {
    echo "--pid $(cat "$1/synapse.pid")"
    [[ -s "$1/postgres.pid" ]] && echo "--pid $(cat "$1/postgres.pid")"
    return 0
}

if [[ -n "$BACKENDS" ]]; then
    step "Synapse"
    bench/synapse.sh install
    synapse_version="$("$SYNAPSE_VENV/bin/python" -c 'import synapse; print(synapse.__version__)')"
fi

if [[ -z "${PALISADE_BIN:-}" || -z "${LOADTEST_BIN:-}" ]]; then
    step "release build"
    cargo build --release --bin palisade --bin loadtest
fi
palisade_bin="${PALISADE_BIN:-$CARGO_TARGET_DIR/release/palisade}"
loadtest_bin="${LOADTEST_BIN:-$CARGO_TARGET_DIR/release/loadtest}"

if ! $with_idle; then
    idle_h1=() idle_h2=()
elif [[ "$size" == smoke ]]; then
    idle_h1=(50) idle_h2=(200)
else
    idle_h1=(10000) idle_h2=(10000 50000 100000)
fi

# One `loadtest run` into the server's report; extra arguments pass through.
loadtest() {
    local label="$1" url="$2"
    shift 2
    # shellcheck disable=SC2086 # LOADTEST_ARGS is a list of words
    "$loadtest_bin" run --base-url "$url" --label "$label" --size "$size" \
        --out "$results/$label.json" ${LOADTEST_ARGS:-} "$@"
}

srv="$BENCH_DIR/palisade"
start_palisade() {
    "${1:-$palisade_bin}" --config "$srv/config.toml" >>"$srv/log" 2>&1 &
    palisade_pid=$!
    for _ in $(seq 100); do
        curl -fs -o /dev/null http://127.0.0.1:18018/_matrix/client/versions && return 0
        sleep 0.1
    done
    echo "palisade did not start; see $srv/log" >&2
    exit 1
}
stop_palisade() {
    kill "$palisade_pid" 2>/dev/null || true
    wait "$palisade_pid" 2>/dev/null || true
}

# A fresh database and configuration for this server.
fresh_palisade() {
    rm -rf "$srv"
    mkdir -p "$srv"
    cat >"$srv/config.toml" <<EOF
[global]
server_name = "localhost"
address = "127.0.0.1"
port = 18018
database_path = "$srv/db"
allow_registration = true
sync_timeout_max_ms = 300000
log = "warn"
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
}

# Runs the load against this server (and the baseline build), then against Synapse on
# each backend.
measure() {
    step "palisade"
    rm -f "$results/palisade.json"
    fresh_palisade
    trap stop_palisade EXIT
    start_palisade
    loadtest palisade http://127.0.0.1:18018 --pid "$palisade_pid" --only "$busy_phases"
    stop_palisade
    # Each count of idle syncs is held by a freshly started process, so memory freed by an
    # earlier phase and kept by the allocator does not hide what the held syncs cost.
    for n in "${idle_h1[@]+"${idle_h1[@]}"}"; do
        start_palisade
        loadtest palisade http://127.0.0.1:18018 --pid "$palisade_pid" --only idle \
            --idle-http1 "$n" --idle-http2 0 --append
        stop_palisade
    done
    for n in "${idle_h2[@]+"${idle_h2[@]}"}"; do
        start_palisade
        loadtest palisade http://127.0.0.1:18018 --pid "$palisade_pid" --only idle \
            --idle-http1 0 --idle-http2 "$n" --append
        stop_palisade
    done
    trap - EXIT
    if [[ -n "${PALISADE_BASELINE_BIN:-}" ]]; then
        step "palisade-baseline ($PALISADE_BASELINE_BIN)"
        rm -f "$results/palisade-baseline.json"
        fresh_palisade
        trap stop_palisade EXIT
        start_palisade "$PALISADE_BASELINE_BIN"
        loadtest palisade-baseline http://127.0.0.1:18018 --pid "$palisade_pid" \
            --only "$busy_phases"
        stop_palisade
        trap - EXIT
    fi

    port=18019
    for backend in $BACKENDS; do
        step "Synapse on $backend"
        dir="$BENCH_DIR/synapse-$backend"
        label="synapse-$backend"
        bench/synapse.sh stop "$dir" 2>/dev/null || true
        rm -rf "$dir" "$results/$label.json"
        trap 'bench/synapse.sh stop "$dir"' EXIT
        bench/synapse.sh start "$backend" "$port" "$dir" >/dev/null
        loadtest "$label" "http://127.0.0.1:$port" $(synapse_pids "$dir") --only "$busy_phases"
        # Synapse does not speak HTTP/2 without TLS, so its idle syncs are HTTP/1.1 only.
        for n in "${idle_h1[@]+"${idle_h1[@]}"}"; do
            bench/synapse.sh stop "$dir"
            bench/synapse.sh start "$backend" "$port" "$dir" >/dev/null
            loadtest "$label" "http://127.0.0.1:$port" $(synapse_pids "$dir") --only idle \
                --idle-http1 "$n" --idle-http2 0 --append
        done
        bench/synapse.sh stop "$dir"
        trap - EXIT
        port=$((port + 1))
    done
}

if ! $report_only; then
    measure
fi
reports=("$results/palisade.json")
if [[ -n "${PALISADE_BASELINE_BIN:-}" ]]; then
    reports+=("$results/palisade-baseline.json")
fi
for backend in $BACKENDS; do
    reports+=("$results/synapse-$backend.json")
done

step "comparison"
table="$("$loadtest_bin" compare "${reports[@]}")"
echo "$table"
# A smoke run, a partial one, or one without Synapse, leaves docs/benchmarks.md as it is.
if [[ "$size" == smoke || -z "$BACKENDS" ]] || $partial; then
    echo "$table" >"$results/comparison.md"
    echo "comparison in $results/comparison.md"
    exit 0
fi

# The machine, the versions and the commands, then the table; docs/benchmarks.md keeps
# its hand-written parts outside the markers.
section="$results/section.md"
{
    echo "Measured $(date -u +%Y-%m-%d) by \`bench/compare.sh\` at commit \`$(git rev-parse --short HEAD)\`."
    echo
    echo "- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)"
    echo "- This server: release build, RocksDB, WAL synced before every acknowledgement"
    echo "- Synapse $synapse_version (PyPI, Python $("$SYNAPSE_VENV/bin/python" -c 'import platform; print(platform.python_version())')), default settings but rate limits raised; PostgreSQL $("${PG_BIN:-/usr/lib/postgresql/15/bin}/postgres" --version | awk '{print $3}') with default settings (fsync on)"
    echo "- Commands: \`bench/compare.sh\`, which runs \`loadtest run --size full\` against each server in turn and \`loadtest compare ${reports[*]##*/}\`"
    echo
    echo "$table"
} >"$section"
doc=docs/benchmarks.md
python3 - "$doc" "$section" <<'EOF'
import sys
doc, section = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
start, end = "<!-- results:start -->", "<!-- results:end -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(head + start + "\n" + section + end + tail)
EOF
echo "results written to $doc (reports in $results)"
