"""Schemathesis hooks for the Palisade fuzz run (loaded via SCHEMATHESIS_HOOKS by run.sh).

Teaches schemathesis the Matrix string formats of the spec
(data/string-formats.yaml), so that positive test cases carry syntactically
valid identifiers instead of arbitrary text. Generated user ids are always
`@fuzz-...` and can never be the fuzzing account itself (`@fuzzer-...`), so a
generated kick/ban/invite never takes that account out of its own room.

Real ids of the account, its rooms, an event and a filter are fed to path
parameters through the `dictionaries` of the schemathesis.toml that run.sh
writes, not here.
"""
import json
import os
import string

import schemathesis
from hypothesis import strategies as st

SERVER = os.environ.get("FUZZ_SERVER_NAME", "localhost")

_servers = st.sampled_from([SERVER, "example.org", "matrix.example.com:8448", "127.0.0.1:8448"])
_local = st.text(alphabet=string.ascii_lowercase + string.digits + "._=-/", min_size=1, max_size=16)
_opaque = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=24)
_b64 = st.text(alphabet=string.ascii_letters + string.digits + "+/", min_size=4, max_size=43)
_b64url = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=4, max_size=43)

schemathesis.openapi.format("mx-user-id", st.builds(lambda l, s: f"@fuzz-{l}:{s}", _local, _servers))
schemathesis.openapi.format("mx-room-id", st.builds(lambda o, s: f"!{o}:{s}", _opaque, _servers))
schemathesis.openapi.format("mx-room-alias", st.builds(lambda l, s: f"#fuzz-{l}:{s}", _local, _servers))
# Room versions 4+ use `$` + url-safe base64 of the hash; older ones `$opaque:server`.
schemathesis.openapi.format("mx-event-id", st.one_of(
    st.builds(lambda o: f"${o}", _b64url),
    st.builds(lambda o, s: f"${o}:{s}", _opaque, _servers)))
schemathesis.openapi.format("mx-server-name", _servers)
schemathesis.openapi.format("mx-mxc-uri", st.builds(lambda s, o: f"mxc://{s}/{o}", _servers, _opaque))
schemathesis.openapi.format("mx-unpadded-base64", _b64)
schemathesis.openapi.format("mx-urlsafe-unpadded-base64", _b64url)


# --- matrix_status_code_conformance ----------------------------------------------------
# Schemathesis' own status_code_conformance fails every status an operation does not list.
# The Matrix spec lists only the statuses particular to each operation and states the
# common ones once for all ("Standard error response" and "Common error codes" in the
# client-server API): any endpoint may answer a malformed body with 400 M_NOT_JSON /
# M_BAD_JSON, a bad parameter with 400 M_INVALID_PARAM / M_MISSING_PARAM, a missing or bad
# token with 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN, refused access with 403 M_FORBIDDEN,
# a missing resource with 404 M_NOT_FOUND, an oversized request with 413 M_TOO_LARGE and
# rate limiting with 429 M_LIMIT_EXCEEDED. On the first smoke run every one of the 52
# status_code_conformance failures was such an answer. This check accepts exactly those
# and still fails:
#   * an undocumented 2xx/3xx status, or any other undocumented status (409, 422, 502...);
#   * an undocumented error status whose body is not a standard error response
#     (a JSON object with a string `errcode`, and `error` a string when present);
#   * an undocumented status whose errcode does not belong to it (e.g. 400 M_FORBIDDEN).
# (5xx are the business of not_a_server_error as well.) Requests with a method other than
# the operation's (the coverage phase's "unexpected method" cases) are not judged here.
GENERIC_ERRORS = {
    400: {"M_NOT_JSON", "M_BAD_JSON", "M_INVALID_PARAM", "M_MISSING_PARAM", "M_UNKNOWN"},
    401: {"M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"},
    403: {"M_FORBIDDEN", "M_USER_DEACTIVATED", "M_USER_LOCKED", "M_USER_SUSPENDED",
          "M_GUEST_ACCESS_FORBIDDEN"},
    404: {"M_NOT_FOUND"},
    413: {"M_TOO_LARGE"},
    429: {"M_LIMIT_EXCEEDED"},
}


def _documented(case):
    codes = set()
    for code in case.operation.responses.status_codes:
        code = str(code)
        if code == "default":
            return None
        if code.upper().endswith("XX"):
            codes.update(range(int(code[0]) * 100, int(code[0]) * 100 + 100))
        else:
            codes.add(int(code))
    return codes


@schemathesis.check
def matrix_status_code_conformance(ctx, response, case):
    sent = (getattr(response.request, "method", None) or case.method).upper()
    if sent != case.operation.method.upper():
        # The coverage phase also sends methods the path does not have; the operation's
        # documented statuses say nothing about those (405 M_UNRECOGNIZED is right).
        return None
    documented = _documented(case)
    status = response.status_code
    if documented is None or status in documented:
        return None
    listed = ", ".join(sorted(str(c) for c in case.operation.responses.status_codes))
    if status not in GENERIC_ERRORS:
        raise AssertionError(f"Undocumented status {status} (documented: {listed}; "
                             f"generic Matrix errors: {sorted(GENERIC_ERRORS)})")
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"Undocumented status {status} (documented: {listed}) without a "
                             f"JSON body: a standard Matrix error response is required")
    if not isinstance(body, dict) or not isinstance(body.get("errcode"), str):
        raise AssertionError(f"Undocumented status {status} (documented: {listed}) whose body "
                             f"has no string `errcode`: not a standard Matrix error response")
    if "error" in body and not isinstance(body["error"], str):
        raise AssertionError(f"Status {status}: `error` is not a string in the error response")
    if body["errcode"] not in GENERIC_ERRORS[status]:
        raise AssertionError(f"Undocumented status {status} (documented: {listed}) with errcode "
                             f"{body['errcode']}, which is not a generic Matrix error for {status} "
                             f"(expected one of {sorted(GENERIC_ERRORS[status])})")
    return None


# --- matrix_route_matched ----------------------------------------------------------------
# An operation the server implements must never be answered 404/405 M_UNRECOGNIZED
# ("this endpoint does not exist" / "wrong method"): that means the router failed to match a request whose
# path the spec defines, e.g. GET /rooms/{roomId}/state/{eventType}/ with the empty state
# key the spec explicitly allows ("when an empty string, the trailing slash on this
# endpoint is optional"). Not judged: requests with another method than the operation's,
# and paths where a parameter other than stateKey is empty or a dot segment (`/rooms//...`
# is not a path the spec defines).
@schemathesis.check
def matrix_route_matched(ctx, response, case):
    sent = (getattr(response.request, "method", None) or case.method).upper()
    if sent != case.operation.method.upper():
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if response.status_code not in (404, 405) or not (
            isinstance(body, dict) and body.get("errcode") == "M_UNRECOGNIZED"):
        return None
    for name, value in (case.path_parameters or {}).items():
        if str(value) in ("", ".", "..") and not (name == "stateKey" and str(value) == ""):
            return None
    raise AssertionError(
        f"{sent} {case.operation.path} is implemented, but this request was answered "
        f"{response.status_code} M_UNRECOGNIZED (route not matched) for path parameters "
        f"{case.path_parameters!r}")
