#!/usr/bin/env bash
# Installs what building and testing need on a Debian machine with a Rust toolchain:
# libclang for the RocksDB bindings, the JavaScript and Python client libraries the
# black-box tests drive the server with, and schemathesis for the spec-driven fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${1:-}" != "--server-only" ]; then
    if [ ! -d complement-tests/js/node_modules/matrix-js-sdk ]; then
        (cd complement-tests/js && npm ci --no-audit --no-fund --loglevel=error)
    fi
    venv=complement-tests/python/.venv
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" 2>/dev/null || {
            SUDO=""
            [ "$(id -u)" -eq 0 ] || SUDO="sudo"
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$venv"
        }
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r complement-tests/python/requirements.txt
    fuzz/run.sh --venv-only
fi
