#!/usr/bin/env bash
# Installs what building and testing need on a Debian machine with a Rust toolchain:
# libclang for the RocksDB bindings, the JavaScript and Python client libraries the
# black-box tests drive the server with, ffmpeg for the video thumbnail tests, coturn
# for the TURN test, and schemathesis for the spec-driven fuzz run.
#
#   scripts/install-deps.sh                  everything the test suite needs
#   scripts/install-deps.sh --server-only    what building the server needs
#   scripts/install-deps.sh --print-missing [--root DIR] [--server-only]
#       print the Debian packages that are missing, one per line, and install nothing;
#       with --root, look at DIR as if it were / (scripts/check-install-deps.sh runs the
#       detection against fake roots this way)
#
# What a fresh Debian 12 image with a Rust toolchain has (dpkg -s on such an image):
#   installed:     gcc, g++, make, pkg-config, curl, git, python3 and python3-venv 3.11,
#                  nodejs 20 (NodeSource's, which carries npm), llvm-14 and llvm-14-dev,
#                  and libclang-cpp14: /usr/lib/llvm-14/lib/libclang-cpp.so.14 is clang's
#                  C++ library, which bindgen cannot load.
#   not installed: ffmpeg, coturn, libclang-dev (with libclang1-14, the C library bindgen loads, and
#                  libclang-common-14-dev, clang's own headers such as stddef.h that
#                  bindgen needs to parse RocksDB's C header), clang, cmake.
# So every check below looks for the file a build step really uses, never for a
# neighbour whose name looks alike.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=/
PRINT_ONLY=""
SERVER_ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --server-only) SERVER_ONLY=1 ;;
        --print-missing) PRINT_ONLY=1 ;;
        --root) ROOT="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-deps.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
ROOT="${ROOT%/}"

# bindgen (through clang-sys, which dlopen()s it at build time) loads the C library
# libclang: libclang.so, libclang.so.N, libclang-N.so or libclang-N.so.M, from
# $LIBCLANG_PATH, `llvm-config --libdir` or the usual library folders.
# libclang-cpp.so.N is another library and does not count.
has_libclang_library() {
    local dirs=() d f name
    if [ "$ROOT" = "" ] && [ -n "${LIBCLANG_PATH:-}" ]; then
        dirs+=("$LIBCLANG_PATH")
    fi
    dirs+=("$ROOT"/usr/lib/llvm-*/lib "$ROOT"/usr/lib/*-linux-gnu "$ROOT"/usr/lib "$ROOT"/usr/lib64
        "$ROOT"/usr/local/lib "$ROOT"/usr/local/lib64)
    for d in "${dirs[@]}"; do
        [ -d "$d" ] || continue
        for f in "$d"/libclang*.so*; do
            [ -e "$f" ] || continue
            name="${f##*/}"
            case "$name" in
                libclang.so | libclang.so.[0-9]* | libclang-[0-9]*.so | libclang-[0-9]*.so.[0-9]*) return 0 ;;
            esac
        done
    done
    return 1
}

# clang's resource headers (stddef.h, stdarg.h): without them bindgen cannot parse
# rocksdb/c.h. Debian ships them in libclang-common-N-dev.
has_clang_headers() {
    local f
    if [ "$ROOT" = "" ] && [ -n "${LIBCLANG_PATH:-}" ]; then
        for f in "$LIBCLANG_PATH"/clang/*/include/stddef.h; do [ -e "$f" ] && return 0; done
    fi
    for f in "$ROOT"/usr/lib/llvm-*/lib/clang/*/include/stddef.h "$ROOT"/usr/lib/clang/*/include/stddef.h \
        "$ROOT"/usr/local/lib/clang/*/include/stddef.h; do
        [ -e "$f" ] && return 0
    done
    return 1
}

# A command on the PATH; under --root, one in the root's bin folders.
has_command() {
    if [ "$ROOT" = "" ]; then
        command -v "$1" >/dev/null 2>&1
    else
        local d
        for d in usr/local/bin usr/bin bin; do
            [ -x "$ROOT/$d/$1" ] && return 0
        done
        return 1
    fi
}

apt_install() {
    echo "install-deps.sh: installing $*" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
{ has_libclang_library && has_clang_headers; } || missing+=(libclang-dev)
has_command cc || missing+=(gcc)
has_command c++ || missing+=(g++)
has_command make || missing+=(make)
if [ -z "$SERVER_ONLY" ]; then
    has_command node || missing+=(nodejs)
    has_command npm || missing+=(npm)
    has_command curl || missing+=(curl)
    # Debian's python3 makes virtualenvs only with python3-venv; a python3 that is there
    # already is tried below and python3-venv installed if it cannot.
    has_command python3 || missing+=(python3 python3-venv)
    # The server makes video thumbnails with ffmpeg when it is there; the tests of
    # that need it (a fresh image has none).
    has_command ffmpeg || missing+=(ffmpeg)
    # The TURN test runs coturn's server and its allocation client (a fresh image has
    # neither).
    { has_command turnserver && has_command turnutils_uclient; } || missing+=(coturn)
fi

if [ -n "$PRINT_ONLY" ]; then
    [ ${#missing[@]} -eq 0 ] || printf '%s\n' "${missing[@]}"
    exit 0
fi
[ "$ROOT" = "" ] || { echo "install-deps.sh: --root only goes with --print-missing" >&2; exit 2; }

if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
    { has_libclang_library && has_clang_headers; } || {
        echo "install-deps.sh: libclang-dev is installed but no libclang.so with clang's headers was found" >&2
        exit 1
    }
fi

if [ -z "$SERVER_ONLY" ]; then
    if [ ! -d complement-tests/js/node_modules/matrix-js-sdk ] \
        || [ ! -d complement-tests/js/node_modules/matrix-appservice-bridge ]; then
        (cd complement-tests/js && npm ci --no-audit --no-fund --loglevel=error)
    fi
    venv=complement-tests/python/.venv
    if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r complement-tests/python/requirements.txt
    fuzz/run.sh --venv-only
fi
