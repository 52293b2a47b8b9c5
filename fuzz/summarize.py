#!/usr/bin/env python3
"""Summarize the failures in a schemathesis NDJSON report, one reproduction each.

  python3 fuzz/summarize.py WORK/report/ndjson-*.ndjson [--token TOKEN] [--json OUT]

Groups failures by (operation, check, failure title, status, errcode) and prints
for each group: how often it happened, one request as a runnable curl command
(the Authorization header as $TOKEN unless --token is given), the response
status and body, and the failure message. Standard library only.
"""
import argparse
import base64
import json
import shlex
import sys


def decode(payload):
    if not isinstance(payload, dict):
        return payload
    if "$base64" in payload:
        raw = base64.b64decode(payload["$base64"])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw)
    return json.dumps(payload)


def curl(req, token):
    parts = ["curl", "-sS", "-X", req["method"]]
    for name, values in (req.get("headers") or {}).items():
        if name.lower() in ("user-agent", "x-schemathesis-testcaseid", "accept", "accept-encoding",
                            "connection", "content-length"):
            continue
        for v in values:
            if name.lower() == "authorization":
                v = f"Bearer {token}" if token else "Bearer $TOKEN"
                parts += ["-H", f"Authorization: {v}"] if token else ["-H", '"Authorization: Bearer $TOKEN"']
                continue
            parts += ["-H", f"{name}: {v}"]
    body = req.get("body")
    if body is not None:
        parts += ["--data-binary", decode(body)]
    parts.append(req["uri"])
    return " ".join(p if p.startswith('"Authorization') else shlex.quote(p) for p in parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ndjson")
    ap.add_argument("--token")
    ap.add_argument("--json", help="also write the groups as JSON")
    ap.add_argument("--max-body", type=int, default=600)
    args = ap.parse_args()

    groups = {}
    errors = []
    with open(args.ndjson, encoding="utf-8") as fh:
        for line in fh:
            ev = json.loads(line)
            if "NonFatalError" in ev or "FatalError" in ev:
                errors.append(ev)
                continue
            s = ev.get("ScenarioFinished")
            if not s or not s.get("recorder"):
                continue
            rec = s["recorder"]
            for case_id, checks in (rec.get("checks") or {}).items():
                for chk in checks:
                    if chk.get("status") != "failure":
                        continue
                    info = (chk.get("failure_info") or {}).get("failure") or {}
                    inter = (rec.get("interactions") or {}).get(case_id) or {}
                    resp = inter.get("response") or {}
                    body = decode(resp.get("content")) if resp else None
                    try:
                        errcode = json.loads(body).get("errcode") if body else None
                    except (ValueError, AttributeError):
                        errcode = None
                    key = (rec["label"], chk["name"], info.get("title", ""), resp.get("status_code"), errcode)
                    g = groups.setdefault(key, {"count": 0, "phase": s.get("phase"), "case": case_id,
                                                "message": info.get("message", ""),
                                                "request": inter.get("request"),
                                                "status": resp.get("status_code"), "body": body})
                    g["count"] += 1
    out = []
    for i, (key, g) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])), 1):
        label, check, title, status, errcode = key
        body = g["body"] or ""
        if len(body) > args.max_body:
            body = body[:args.max_body] + f"... ({len(g['body'])} chars)"
        print(f"#{i} {label}\n   check: {check} ({title}); {g['count']}x, phase {g['phase']}, case {g['case']}")
        if g["request"]:
            print("   request: " + curl(g["request"], args.token))
        print(f"   response: {status} {body}")
        msg = g["message"].strip().replace("\n", "\n            ")
        if msg:
            print(f"   message: {msg[:1500]}")
        print()
        out.append({"operation": label, "check": check, "title": title, "status": status,
                    "errcode": errcode, "count": g["count"], "phase": g["phase"],
                    "request": g["request"], "response_body": g["body"], "message": g["message"]})
    for e in errors:
        print("ERROR: " + json.dumps(e)[:2000])
    print(f"{len(groups)} distinct failures, {sum(g['count'] for g in groups.values())} in all; "
          f"{len(errors)} errors")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
