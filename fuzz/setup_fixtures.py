#!/usr/bin/env python3
"""Create the account and rooms a fuzz run works with, print them as shell variables.

  eval "$(python3 fuzz/setup_fixtures.py --base-url http://127.0.0.1:8008)"

Registers `fuzzer-<random>` through open registration (UIA stage
m.login.dummy), then, as that user:
  * creates the main room (public, with an alias) that room-scoped operations
    are pointed at, and sends one message into it (a real event id);
  * creates a spare room for the operations that take the user out of a room
    (leave, forget), so the main room stays usable for the rest of the run;
  * uploads a filter (a real filter id);
  * logs in a second time without a device display name, so the account always
    has a device without one (device listings must then omit display_name);
  * adds a content and an override push rule of its own.
Prints FUZZ_* variables (shell-quoted). Only the Python standard library.
"""
import argparse
import json
import secrets
import shlex
import sys
import urllib.error
import urllib.parse
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(base, method, path, body=None, token=None, ok=(200,)):
    headers = {"User-Agent": "palisade-fuzz-setup/1"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with OPENER.open(req, timeout=30) as r:
            status, payload = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        doc = json.loads(payload or b"null")
    except ValueError:
        doc = {"raw": payload[:500].decode("utf-8", "replace")}
    if status not in ok:
        sys.exit(f"setup_fixtures: {method} {path} -> {status} {doc}")
    return status, doc


def q(s):
    return urllib.parse.quote(s, safe="")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--username", default="fuzzer-" + secrets.token_hex(4))
    ap.add_argument("--password", default="fuzz-" + secrets.token_hex(12))
    args = ap.parse_args()
    base = args.base_url.rstrip("/")

    body = {"username": args.username, "password": args.password,
            "auth": {"type": "m.login.dummy"}, "initial_device_display_name": "fuzzer"}
    status, doc = call(base, "POST", "/_matrix/client/v3/register", body, ok=(200, 401))
    if status == 401 and doc.get("session"):
        body["auth"]["session"] = doc["session"]
        status, doc = call(base, "POST", "/_matrix/client/v3/register", body)
    elif status == 401:
        sys.exit(f"setup_fixtures: registration refused: {doc}")
    token, user_id, device_id = doc["access_token"], doc["user_id"], doc.get("device_id", "")
    server_name = user_id.split(":", 1)[1]

    tag = secrets.token_hex(4)
    _, room = call(base, "POST", "/_matrix/client/v3/createRoom",
                   {"preset": "public_chat", "name": "fuzz main room",
                    "room_alias_name": f"fuzz-main-{tag}", "topic": "schemathesis target"},
                   token)
    room_id = room["room_id"]
    alias = f"#fuzz-main-{tag}:{server_name}"
    _, spare = call(base, "POST", "/_matrix/client/v3/createRoom",
                    {"preset": "public_chat", "name": "fuzz spare room"}, token)
    _, sent = call(base, "PUT",
                   f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/fuzz{tag}",
                   {"msgtype": "m.text", "body": "hello from the fuzzer"}, token)
    _, filt = call(base, "POST", f"/_matrix/client/v3/user/{q(user_id)}/filter",
                   {"room": {"timeline": {"limit": 5}}}, token)

    _, login2 = call(base, "POST", "/_matrix/client/v3/login",
         {"type": "m.login.password", "password": args.password,
          "identifier": {"type": "m.id.user", "user": user_id}})
    call(base, "PUT", "/_matrix/client/v3/pushrules/global/content/fuzz-content",
         {"pattern": "fuzzword", "actions": ["notify"]}, token)
    call(base, "PUT", "/_matrix/client/v3/pushrules/global/override/fuzz-override",
         {"conditions": [{"kind": "event_match", "key": "type", "pattern": "org.example.fuzz"}],
          "actions": []}, token)

    out = {
        "FUZZ_TOKEN": token,
        "FUZZ_USER_ID": user_id,
        "FUZZ_PASSWORD": args.password,
        "FUZZ_DEVICE_ID": device_id,
        "FUZZ_DEVICE2_ID": login2.get("device_id", device_id),
        "FUZZ_SERVER_NAME": server_name,
        "FUZZ_ROOM_ID": room_id,
        "FUZZ_ROOM_ALIAS": alias,
        "FUZZ_SPARE_ROOM_ID": spare["room_id"],
        "FUZZ_EVENT_ID": sent["event_id"],
        "FUZZ_FILTER_ID": str(filt["filter_id"]),
    }
    for k, v in out.items():
        print(f"{k}={shlex.quote(v)}")


if __name__ == "__main__":
    main()
