#!/usr/bin/env python3
"""List the operations of a bundled spec that a running server implements.

Reads the JSON written by bundle_spec.py, sends ONE request per operation with
harmless dummy path parameters (a nonexistent room, user, event, ...) and an
empty JSON object as body for POST/PUT/PATCH, and prints `METHOD /path` for
each operation the server knows, for `bundle_spec.py --only-implemented`.

An operation counts as NOT implemented when the server answers it the way it
answers a route it does not have: 404 or 405 with errcode M_UNRECOGNIZED, a
404/405 without a JSON body, or 501. Anything else (a Matrix error such as
400/401/403/404 M_NOT_FOUND, a success) means a handler answered.

Operations in --skip (same METHOD /path format) are never sent nor listed; operations
that would create state even with dummy parameters (createRoom, media upload)
are sent WITHOUT the access token so nothing is created: a server that has the
route answers 401 M_MISSING_TOKEN.

Only the Python standard library is needed.
"""
import argparse
import json
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request

METHODS = ("get", "put", "post", "delete", "patch")
NO_TOKEN = {
    ("POST", "/_matrix/client/v3/createRoom"),
    ("POST", "/_matrix/media/v3/upload"),
    ("POST", "/_matrix/media/v1/create"),
    ("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}"),
}
# Keep long-polls short; point key-backup calls at a nonexistent version.
QUERY = {
    "/_matrix/client/v3/sync": "timeout=0",
    "/_matrix/client/v3/events": "timeout=0",
    "/_matrix/client/v3/room_keys/keys": "version=999999",
    "/_matrix/client/v3/room_keys/keys/{roomId}": "version=999999",
    "/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}": "version=999999",
}


def dummies(server_name):
    return {
        "roomId": f"!fuzzprobe-nonexistent:{server_name}",
        "roomIdOrAlias": f"!fuzzprobe-nonexistent:{server_name}",
        "roomAlias": f"#fuzzprobe-nonexistent:{server_name}",
        "eventId": "$fuzzprobe-nonexistent",
        "userId": f"@fuzzprobe-nobody:{server_name}",
        "deviceId": "FUZZPROBEDUMMY",
        "eventType": "org.example.fuzzprobe",
        "stateKey": "fuzzprobe",
        "txnId": "fuzzprobe" + secrets.token_hex(6),
        "type": "org.example.fuzzprobe",
        "tag": "u.fuzzprobe",
        "kind": "override",
        "ruleId": "org.example.fuzzprobe",
        "version": "999999",
        "sessionId": "fuzzprobe-session",
        "mediaId": "fuzzprobenonexistent",
        "serverName": server_name,
        "fileName": "fuzzprobe.txt",
        "filterId": "999999",
        "idpId": "org.example.fuzzprobe",
        "keyName": "displayname",
        "protocol": "org.example.fuzzprobe",
        "receiptType": "m.read",
        "relType": "m.annotation",
    }


def fill(template, values):
    def sub(m):
        return urllib.parse.quote(values.get(m.group(1), "fuzzprobe"), safe="")
    return re.sub(r"\{([^}]+)\}", sub, template)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def http(method, url, token=None, body=None, timeout=10.0):
    headers = {"User-Agent": "palisade-fuzz-probe/1"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read(65536)
    except urllib.error.HTTPError as e:
        try:
            return e.code, e.read(65536)
        except Exception:
            return e.code, b""


def classify(status, payload):
    try:
        doc = json.loads(payload.decode("utf-8"))
    except Exception:
        doc = None
    errcode = doc.get("errcode") if isinstance(doc, dict) else None
    if status in (404, 405) and (errcode == "M_UNRECOGNIZED" or doc is None):
        return False, f"{status} {errcode or 'non-JSON'}"
    if status == 501:
        return False, "501"
    return True, f"{status} {errcode or ''}".strip()


def read_ops(path):
    ops = set()
    if path:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.split("#", 1)[0].strip()
                if line:
                    m, _, p = line.partition(" ")
                    ops.add((m.upper(), p.strip()))
    return ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, help="bundled spec JSON from bundle_spec.py")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("--skip", help="operations never to send (METHOD /path per line)")
    ap.add_argument("-o", "--output", help="write the implemented list here (default stdout)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    base = args.base_url.rstrip("/")
    spec = json.load(open(args.spec, encoding="utf-8"))
    skip = read_ops(args.skip)
    values = dummies(args.server_name)

    # Calibration: the server must answer a made-up route with M_UNRECOGNIZED.
    st, payload = http("GET", base + "/_matrix/client/v3/org.example.fuzzprobe/no-such-endpoint",
                       args.token)
    ok, why = classify(st, payload)
    if ok:
        sys.exit(f"probe: the server answers an unknown route with {why}, not 404 M_UNRECOGNIZED; "
                 "cannot tell implemented operations apart")

    implemented, missing = [], []
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            op = (method.upper(), path)
            if op in skip:
                continue  # never sent, never listed
            url = base + fill(path, values)
            if path in QUERY:
                url += "?" + QUERY[path]
            token = None if op in NO_TOKEN else args.token
            body = {} if method in ("post", "put", "patch") else None
            try:
                st, payload = http(op[0], url, token, body)
            except OSError as e:
                sys.exit(f"probe: {op[0]} {url}: {e}")
            ok, why = classify(st, payload)
            (implemented if ok else missing).append(op)
            if args.verbose:
                print(f"{'implemented' if ok else 'missing':<11} {op[0]:<6} {path} [{why}]",
                      file=sys.stderr)
    lines = "".join(f"{m} {p}\n" for m, p in sorted(implemented, key=lambda o: (o[1], o[0])))
    if args.output:
        open(args.output, "w", encoding="utf-8").write(lines)
    else:
        sys.stdout.write(lines)
    print(f"probe: {len(implemented)} implemented, {len(missing)} not implemented "
          f"(of {len(implemented) + len(missing)} probed)", file=sys.stderr)


if __name__ == "__main__":
    main()
