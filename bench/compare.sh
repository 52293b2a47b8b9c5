#!/usr/bin/env bash
# Runs the same load (the `loadtest` tool) against this server and against Synapse on
# SQLite and on PostgreSQL 15, one after the other on this machine, all on loopback,
# and writes the side-by-side table of quotients (this server ÷ Synapse).
#
#   bench/compare.sh            full sizes, release build; rewrites the results part
#                               of docs/benchmarks.md (by hand: tens of minutes)
#   bench/compare.sh --smoke    tiny sizes, seconds per server; writes only to
#                               $BENCH_DIR/results (CI runs this so the tool never rots)
#
# Environment:
#   BENCH_DIR      work directory: venv, databases, reports (default /tmp/palisade-bench)
#   PALISADE_BIN   server binary to measure (default: built here, release)
#   LOADTEST_BIN   load tool binary (default: built here, release)
#   BACKENDS       Synapse databases to measure (default "sqlite postgres")
#   LOADTEST_ARGS  extra arguments for `loadtest run` (e.g. --sync-rooms 20)
set -euo pipefail
cd "$(dirname "$0")/.."

size=full
[[ "${1:-}" == "--smoke" ]] && size=smoke
BENCH_DIR="${BENCH_DIR:-/tmp/palisade-bench}"
export BENCH_DIR
BACKENDS="${BACKENDS:-sqlite postgres}"
results="$BENCH_DIR/results"
mkdir -p "$results"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

# Holding thousands of idle syncs takes a descriptor each, in the server and in the tool.
ulimit -n "$(ulimit -Hn)"

step "Synapse"
bench/synapse.sh install
synapse_version="$("$BENCH_DIR/synapse-venv/bin/python" -c 'import synapse; print(synapse.__version__)')"

if [[ -z "${PALISADE_BIN:-}" || -z "${LOADTEST_BIN:-}" ]]; then
    step "release build"
    cargo build --release --bin palisade --bin loadtest
fi
palisade_bin="${PALISADE_BIN:-$CARGO_TARGET_DIR/release/palisade}"
loadtest_bin="${LOADTEST_BIN:-$CARGO_TARGET_DIR/release/loadtest}"

loadtest() {
    local label="$1" url="$2"
    shift 2
    # shellcheck disable=SC2086 # LOADTEST_ARGS is a list of words
    "$loadtest_bin" run --base-url "$url" --label "$label" --size "$size" \
        --out "$results/$label.json" ${LOADTEST_ARGS:-} "$@"
}

step "palisade"
srv="$BENCH_DIR/palisade"
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
"$palisade_bin" --config "$srv/config.toml" >"$srv/log" 2>&1 &
palisade_pid=$!
trap 'kill $palisade_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs -o /dev/null http://127.0.0.1:18018/_matrix/client/versions && break
    sleep 0.1
done
loadtest palisade http://127.0.0.1:18018 --pid "$palisade_pid"
kill "$palisade_pid"
wait "$palisade_pid" 2>/dev/null || true
trap - EXIT

reports=("$results/palisade.json")
port=18019
for backend in $BACKENDS; do
    step "Synapse on $backend"
    dir="$BENCH_DIR/synapse-$backend"
    bench/synapse.sh stop "$dir" 2>/dev/null || true
    rm -rf "$dir"
    synapse_pid="$(bench/synapse.sh start "$backend" "$port" "$dir" | tail -n 1)"
    trap 'bench/synapse.sh stop "$dir"' EXIT
    pids=(--pid "$synapse_pid")
    [[ -s "$dir/postgres.pid" ]] && pids+=(--pid "$(cat "$dir/postgres.pid")")
    # Synapse does not speak HTTP/2 without TLS, so its idle syncs are HTTP/1.1 only.
    loadtest "synapse-$backend" "http://127.0.0.1:$port" "${pids[@]}" --idle-http2 0
    bench/synapse.sh stop "$dir"
    trap - EXIT
    reports+=("$results/synapse-$backend.json")
    port=$((port + 1))
done

step "comparison"
table="$("$loadtest_bin" compare "${reports[@]}")"
echo "$table"
if [[ "$size" == smoke ]]; then
    echo "$table" >"$results/comparison.md"
    echo "smoke run: comparison in $results/comparison.md"
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
    echo "- Synapse $synapse_version (PyPI, Python $("$BENCH_DIR/synapse-venv/bin/python" -c 'import platform; print(platform.python_version())')), default settings but rate limits raised; PostgreSQL $("${PG_BIN:-/usr/lib/postgresql/15/bin}/postgres" --version | awk '{print $3}') with default settings (fsync on)"
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
