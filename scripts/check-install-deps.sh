#!/usr/bin/env bash
# Checks the detection of scripts/install-deps.sh against fake roots, so a check that
# takes the wrong file for what a build step needs fails here and not on a newcomer's
# machine. scripts/test.sh and .ci/run (first, before anything is installed) run it.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0

# expect NAME "PACKAGES" ARGS...: install-deps.sh --print-missing ARGS must print PACKAGES.
expect() {
    local name="$1" want="$2" got
    shift 2
    got="$(scripts/install-deps.sh --print-missing "$@" | tr '\n' ' ' | sed 's/ $//')"
    if [ "$got" = "$want" ]; then
        echo "ok   $name"
    else
        echo "FAIL $name: wanted [$want], got [$got]"
        failed=1
    fi
}

# A root with the commands a fresh Debian 12 image has, and nothing of libclang.
fresh_root() {
    local root="$work/$1" cmd
    mkdir -p "$root/usr/bin"
    for cmd in cc c++ make node npm curl python3; do
        printf '#!/bin/sh\n' > "$root/usr/bin/$cmd"
        chmod +x "$root/usr/bin/$cmd"
    done
    echo "$root"
}

# clang's headers and the C library, where Debian's libclang-dev puts them.
add_libclang() {
    mkdir -p "$1/usr/lib/llvm-14/lib/clang/14.0.6/include" "$1/usr/lib/x86_64-linux-gnu"
    touch "$1/usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h"
    touch "$1/usr/lib/llvm-14/lib/libclang.so.1" "$1/usr/lib/x86_64-linux-gnu/libclang-14.so.1"
    ln -sf libclang.so.1 "$1/usr/lib/llvm-14/lib/libclang.so"
}

expect "an empty root needs everything" \
    "libclang-dev gcc g++ make nodejs npm curl python3 python3-venv ffmpeg coturn" --root "$work/empty"
expect "an empty root, server only" "libclang-dev gcc g++ make" --root "$work/empty" --server-only

# The image ships clang's C++ library (libclang-cpp14) and llvm-14-dev: neither is
# what bindgen loads.
root="$(fresh_root cpp-only)"
mkdir -p "$root/usr/lib/llvm-14/lib" "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib/llvm-14/bin"
touch "$root/usr/lib/llvm-14/lib/libclang-cpp.so.14" "$root/usr/lib/llvm-14/lib/libLLVM-14.so"
ln -s ../lib/llvm-14/lib/libclang-cpp.so.14 "$root/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14"
touch "$root/usr/lib/llvm-14/bin/llvm-config"
expect "only libclang-cpp.so.14 asks for libclang-dev" "libclang-dev ffmpeg coturn" --root "$root"
expect "only libclang-cpp.so.14 asks for libclang-dev (server only)" "libclang-dev" --root "$root" --server-only

# The C library without clang's headers (libclang1-14 alone): bindgen loads it but
# cannot parse rocksdb/c.h.
root="$(fresh_root library-only)"
mkdir -p "$root/usr/lib/x86_64-linux-gnu"
touch "$root/usr/lib/x86_64-linux-gnu/libclang-14.so.1"
expect "libclang without clang's headers asks for libclang-dev" "libclang-dev ffmpeg coturn" --root "$root"

# What Debian's libclang-dev leaves: nothing more to install.
root="$(fresh_root with-libclang)"
add_libclang "$root"
touch "$root/usr/lib/llvm-14/lib/libclang-cpp.so.14"
expect "libclang-dev installed: only the tests' ffmpeg and coturn missing" "ffmpeg coturn" --root "$root"
expect "libclang-dev installed, server only: nothing missing" "" --root "$root" --server-only
printf '#!/bin/sh\n' > "$root/usr/bin/ffmpeg"
chmod +x "$root/usr/bin/ffmpeg"
expect "libclang-dev and ffmpeg installed: coturn missing" "coturn" --root "$root"
printf '#!/bin/sh\n' > "$root/usr/bin/turnserver"
chmod +x "$root/usr/bin/turnserver"
expect "coturn's server without its client: coturn missing" "coturn" --root "$root"
printf '#!/bin/sh\n' > "$root/usr/bin/turnutils_uclient"
chmod +x "$root/usr/bin/turnutils_uclient"
expect "libclang-dev, ffmpeg and coturn installed: nothing missing" "" --root "$root"

# A libclang built by hand under /usr/local.
root="$(fresh_root local-libclang)"
mkdir -p "$root/usr/local/lib/clang/18/include"
touch "$root/usr/local/lib/libclang.so" "$root/usr/local/lib/clang/18/include/stddef.h"
expect "a libclang under /usr/local counts" "ffmpeg coturn" --root "$root"

# Node from Debian's packages has no npm of its own.
root="$(fresh_root no-npm)"
add_libclang "$root"
rm "$root/usr/bin/npm"
expect "node without npm asks for npm" "npm ffmpeg coturn" --root "$root"
expect "node without npm, server only: nothing" "" --root "$root" --server-only

exit "$failed"
