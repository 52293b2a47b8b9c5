#!/usr/bin/env bash
# Starts a homeserver on http://127.0.0.1:8008 with the default configuration and an
# embedded RocksDB in ./data. Open registration is on for this local try-out; edit
# conf/homeserver.toml (or pass another file as the first argument) to change that.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --server-only
config="${1:-conf/local.toml}"
if [ ! -f "$config" ]; then
    sed 's/^allow_registration = false/allow_registration = true/' conf/homeserver.toml > "$config"
fi
exec cargo run --release --bin palisade -- --config "$config"
