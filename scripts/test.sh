#!/usr/bin/env bash
# The whole test suite: unit and in-process tests, then the black-box tests that start
# the real binary and drive it with matrix-sdk (Rust), matrix-nio (Python) and
# matrix-js-sdk (Node), then a bounded spec-driven fuzz run (fuzz/README.md). Needs
# nothing beside the clone: what is missing is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"

# The install step's detection, against fake roots; then the install itself.
scripts/check-install-deps.sh
scripts/install-deps.sh

# With a spec checkout named (MATRIX_SPEC_DIR, which the fuzz run then reads too), the
# stripped copy in fuzz/spec must be what fuzz/strip_spec.py makes of it.
if [ -n "${MATRIX_SPEC_DIR:-}" ]; then
    fuzz/.venv/bin/python fuzz/strip_spec.py --check
fi

cargo build --workspace --all-targets
export PALISADE_BIN="$CARGO_TARGET_DIR/debug/palisade"

# Synapse from PyPI, the other server of the federation tests (complement-tests/src/
# synapse.rs), in the venv bench/compare.sh uses too. Skipped when already installed.
bench/synapse.sh install

cargo test --workspace --no-fail-fast

complement-tests/python/.venv/bin/python -m unittest discover -s complement-tests/python -p 'test_*.py'

(cd complement-tests/js && node --test --test-force-exit --test-concurrency=1 tests/)

# About a minute, fixed seed: every operation the server implements, checked against the
# spec's OpenAPI definitions.
fuzz/run.sh --smoke --start "$CARGO_TARGET_DIR/debug/palisade"
