#!/usr/bin/env python3
"""Check that every spec version /versions advertises has the endpoints the spec adds in it.

Reads the client-server definitions (data/api/client-server/*.yaml of a spec tree, the
stripped copy in fuzz/spec by default). An operation belongs to the version named by its
`x-addedInMatrixVersion`, or to v1.0 when it has none (it predates the marker). A server
that advertises v1.N must serve every operation of v1.0 to v1.N.

Each operation is probed once WITHOUT an access token, with dummy path parameters and `{}`
as the body of POST/PUT, so nothing is changed: a server that has the route answers 401
M_MISSING_TOKEN (or, for an open endpoint, whatever it answers); one that has not answers
as to an unknown route (404/405 M_UNRECOGNIZED, see probe_implemented.classify).

The server may lack an operation of an advertised version only where the gaps file
(fuzz/version_gaps.txt) lists it, with the reason on the same line. The check fails on:
  - an operation of an advertised version that the server lacks and the file does not list;
  - a listed operation the server has (strike it from the file);
  - a listed operation that no advertised version needs (strike it, or advertise the version).
Fields and parameters added in a version are not checked here; the test suites cover them.

Only the standard library and PyYAML (in the fuzz virtualenv) are needed.
"""
import argparse
import glob
import json
import os
import sys

import yaml

from probe_implemented import classify, dummies, fill, http

METHODS = ("get", "put", "post", "delete", "patch")
HERE = os.path.dirname(os.path.abspath(__file__))


def version_key(text):
    """`v1.12` / `1.12` -> (1, 12); `r0.6.1` -> (1, 0): the r0 releases predate v1.1."""
    text = str(text).strip()
    if text.startswith("r0"):
        return (1, 0)
    major, _, minor = text.lstrip("v").partition(".")
    return (int(major), int(minor or 0))


def operations(spec_dir):
    """{(METHOD, full path): version key} of every client-server operation."""
    ops = {}
    files = sorted(glob.glob(os.path.join(spec_dir, "data", "api", "client-server", "*.yaml")))
    if not files:
        sys.exit(f"check_versions: no client-server definitions under {spec_dir}")
    for name in files:
        with open(name, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        if not isinstance(doc, dict) or "paths" not in doc:
            continue
        base = doc["servers"][0]["variables"]["basePath"]["default"].rstrip("/")
        for rel, item in (doc["paths"] or {}).items():
            for method in METHODS:
                if method in (item or {}):
                    added = item[method].get("x-addedInMatrixVersion", "1.0")
                    ops[(method.upper(), base + rel.strip())] = version_key(added)
    return ops


def read_gaps(path):
    """{(METHOD, path): reason} from lines `METHOD /path  reason`."""
    gaps = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3:
                sys.exit(f"{path}:{number}: want `METHOD /path reason`, got {line!r}")
            gaps[(parts[0].upper(), parts[1])] = parts[2]
    return gaps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--spec-dir", default=os.path.join(HERE, "spec"))
    ap.add_argument("--gaps", default=os.path.join(HERE, "version_gaps.txt"))
    ap.add_argument("--server-name", default="localhost")
    args = ap.parse_args()
    base = args.base_url.rstrip("/")

    status, payload = http("GET", base + "/_matrix/client/versions")
    if status != 200:
        sys.exit(f"check_versions: /versions answered {status}")
    advertised = json.loads(payload)["versions"]
    newest = max(version_key(v) for v in advertised)

    ops = operations(args.spec_dir)
    gaps = read_gaps(args.gaps)
    values = dummies(args.server_name)
    problems = []
    needed = 0
    for (method, path), added in sorted(ops.items()):
        if added > newest:
            continue
        needed += 1
        body = {} if method in ("POST", "PUT", "PATCH") else None
        try:
            status, payload = http(method, base + fill(path, values), None, body)
        except OSError as error:
            sys.exit(f"check_versions: {method} {path}: {error}")
        served, answer = classify(status, payload)
        listed = (method, path) in gaps
        since = "v%d.%d" % added
        if not served and not listed:
            problems.append(f"{method} {path} (added in {since}) is missing ({answer}) "
                            f"and not in {os.path.basename(args.gaps)}")
        if served and listed:
            problems.append(f"{method} {path} is served now ({answer}): strike it from "
                            f"{os.path.basename(args.gaps)}")
    for (method, path) in sorted(gaps):
        if (method, path) not in ops:
            problems.append(f"{method} {path} is listed but is no operation of the spec")
        elif ops[(method, path)] > newest:
            problems.append(f"{method} {path} is listed but no advertised version needs it")
    print(f"check_versions: /versions advertises up to v{newest[0]}.{newest[1]}; "
          f"{needed} operations belong to it, {len(gaps)} listed as not yet served",
          file=sys.stderr)
    for problem in problems:
        print(f"check_versions: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
