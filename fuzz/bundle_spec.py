#!/usr/bin/env python3
"""Bundle the Matrix client-server OpenAPI files into ONE OpenAPI 3.1 document.

The spec (matrix-org/matrix-spec, data/api/client-server/*.yaml) is split over
many files. Each has its own `paths` relative to
`servers[0].variables.basePath.default`, its own `components`, and `$ref`s to
other files by relative path. Schemathesis wants one self-contained document,
so this script:

  * prefixes every path key with its file's basePath
    (`/rooms/{roomId}/send/...` -> `/_matrix/client/v3/rooms/{roomId}/send/...`);
  * merges path keys that end in a space into the plain key: the spec uses
    `"/rooms/{roomId}/invite "` and `"/events "` to give a SECOND operation on a
    path that already has one (invite by user id next to 3PID invite, peeking
    /events next to the deprecated /events). OpenAPI allows only one operation
    per method and path, so the two become one operation whose request body is
    `anyOf` both bodies, whose parameters are the union (a parameter required
    by only one of them becomes optional) and whose responses are the union
    (`anyOf` of both schemas where both define the same status). With
    --drop-spaced-duplicates the spaced operation is dropped instead;
  * inlines every `$ref` (file refs and in-file `#/...` refs), so the output
    has no `$ref` at all, except for recursive schemas, which are moved to
    `#/components/schemas/<name>` and referenced from there;
  * sets `servers` to the given base URL and keeps the security schemes
    (`accessTokenBearer` is HTTP bearer, `accessTokenQuery` the deprecated
    `access_token` query parameter);
  * drops `$schema` keys inside schemas: the event schemas the spec pulls in
    declare draft-04, which in an OpenAPI 3.1 (JSON Schema 2020-12) document is
    only allowed at a resource root and would be ignored or misread;
  * with --fix-ambiguous-oneof, turns a `oneOf` into `anyOf` when one branch is
    a bare `{type: T}` and another branch is also of type T: every value the
    second branch accepts matches the first too, so `oneOf` rejects exactly the
    values the spec means to allow (GET /rooms/{roomId}/state/{eventType}/{stateKey}
    answers `oneOf: [{type: object}, ClientEvent]` -- every full event fails);
  * with --only-implemented FILE keeps only the operations listed there, one
    `METHOD /full/path` per line (`#` comments and blank lines ignored), and with
    --exclude FILE drops those listed (same format).

Output is JSON (stdout, or -o FILE). Needs PyYAML.

  python3 fuzz/bundle_spec.py --base-url http://127.0.0.1:8008 -o /tmp/cs.json
  python3 fuzz/bundle_spec.py --only-implemented implemented.txt -o /tmp/cs.json
"""
import argparse
import copy
import glob
import json
import os
import re
import sys

import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Keys that, next to a `$ref` in a schema, constrain the value: such a node is
# rewritten as `allOf: [target, siblings]` instead of a plain overlay, so that
# neither side's constraints are lost.
CONSTRAINT_KEYS = {
    "type", "properties", "required", "additionalProperties", "items", "allOf",
    "anyOf", "oneOf", "not", "enum", "const", "pattern", "minimum", "maximum",
    "minLength", "maxLength", "minItems", "maxItems", "patternProperties",
    "format", "propertyNames", "unevaluatedProperties",
}


def default_spec_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "spec")


class Bundler:
    def __init__(self):
        self.docs = {}          # absolute file path -> parsed YAML
        self.components = {}    # name -> schema, for recursive schemas only
        self.comp_names = {}    # (file, pointer) -> component name
        self.stack = []         # (file, pointer) being inlined, for cycle detection
        self.cache = {}         # (file, pointer) -> inlined copy

    def load(self, path):
        path = os.path.normpath(os.path.abspath(path))
        if path not in self.docs:
            with open(path, encoding="utf-8") as fh:
                self.docs[path] = yaml.safe_load(fh)
        return self.docs[path]

    @staticmethod
    def pointer(doc, frag):
        if frag in ("", "/"):
            return doc
        node = doc
        for part in frag.lstrip("/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node[part]
        return node

    def resolve_ref(self, ref, cur_file):
        file_part, _, frag = ref.partition("#")
        target_file = (os.path.normpath(os.path.join(os.path.dirname(cur_file), file_part))
                       if file_part else cur_file)
        return target_file, frag

    def component_name(self, key):
        if key not in self.comp_names:
            file, frag = key
            base = os.path.splitext(os.path.basename(file))[0]
            if frag:
                base += "_" + frag.strip("/").replace("/", "_")
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", base)
            n, i = name, 2
            while n in self.components or n in self.comp_names.values():
                n, i = f"{name}_{i}", i + 1
            self.comp_names[key] = n
        return self.comp_names[key]

    def inline(self, node, cur_file):
        if isinstance(node, list):
            return [self.inline(x, cur_file) for x in node]
        if not isinstance(node, dict):
            return node
        if isinstance(node.get("$ref"), str):
            target_file, frag = self.resolve_ref(node["$ref"], cur_file)
            key = (target_file, frag)
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if key in self.stack:
                # Recursive schema: keep it as a component and refer to it.
                target = {"$ref": "#/components/schemas/" + self.component_name(key)}
            elif key in self.cache:
                target = copy.deepcopy(self.cache[key])
            else:
                raw = self.pointer(self.load(target_file), frag)
                self.stack.append(key)
                try:
                    target = self.inline(raw, target_file)
                finally:
                    self.stack.pop()
                if key in self.comp_names and self.comp_names[key] not in self.components:
                    self.components[self.comp_names[key]] = target
                    target = {"$ref": "#/components/schemas/" + self.comp_names[key]}
                self.cache[key] = copy.deepcopy(target)
            if not siblings:
                return target
            siblings = self.inline(siblings, cur_file)
            if isinstance(target, dict) and not (CONSTRAINT_KEYS & siblings.keys()):
                # description/title/example next to a $ref (OpenAPI 3.1 allows siblings of
                # a $ref, which covers a recursive schema's component reference too).
                merged = dict(target)
                merged.update(siblings)
                return merged
            return {"allOf": [target, {k: v for k, v in siblings.items() if k in CONSTRAINT_KEYS}],
                    **{k: v for k, v in siblings.items() if k not in CONSTRAINT_KEYS}}
        return {k: self.inline(v, cur_file) for k, v in node.items()
                if not (k == "$schema" and isinstance(v, str))}


def _merge_schemas(a, b):
    if a == b:
        return a
    return {"anyOf": [a, b]}


def _merge_content(ca, cb):
    out = dict(ca or {})
    for mt, media in (cb or {}).items():
        if mt in out and "schema" in out[mt] and "schema" in media:
            m = dict(out[mt])
            m["schema"] = _merge_schemas(out[mt]["schema"], media["schema"])
            m.pop("example", None)
            m.pop("examples", None)
            out[mt] = m
        else:
            out.setdefault(mt, media)
    return out


def merge_operations(a, b):
    """One operation accepting what either of two same-path operations accepts."""
    out = dict(a)
    out["operationId"] = f"{a.get('operationId')}_or_{b.get('operationId')}"
    out["summary"] = f"{a.get('summary', '')} / {b.get('summary', '')}"
    out["description"] = (f"Merged by bundle_spec.py from two spec operations on the same "
                          f"path: {a.get('operationId')} and {b.get('operationId')}.")
    out["deprecated"] = bool(a.get("deprecated") and b.get("deprecated"))
    # Parameters: union; required only where both require it.
    pa = {(p["in"], p["name"]): p for p in a.get("parameters", [])}
    pb = {(p["in"], p["name"]): p for p in b.get("parameters", [])}
    params = []
    for key in list(pa) + [k for k in pb if k not in pa]:
        p = dict(pa.get(key) or pb[key])
        if key[0] != "path":
            p["required"] = bool(pa.get(key, {}).get("required") and pb.get(key, {}).get("required"))
        params.append(p)
    if params:
        out["parameters"] = params
    # Request body: either body.
    ra, rb = a.get("requestBody"), b.get("requestBody")
    if ra and rb:
        out["requestBody"] = {"required": bool(ra.get("required") and rb.get("required")),
                              "content": _merge_content(ra.get("content"), rb.get("content"))}
    elif ra or rb:
        body = dict(ra or rb)
        body["required"] = False
        out["requestBody"] = body
    # Responses: union.
    resp = dict(a.get("responses", {}))
    for code, r in b.get("responses", {}).items():
        if code in resp and resp[code] != r:
            merged = dict(resp[code])
            merged["content"] = _merge_content(resp[code].get("content"), r.get("content"))
            if not merged["content"]:
                del merged["content"]
            resp[code] = merged
        else:
            resp.setdefault(code, r)
    out["responses"] = resp
    # Security: alternatives of both (same in practice).
    if a.get("security") != b.get("security"):
        sec = list(a.get("security") or [])
        sec += [s for s in (b.get("security") or []) if s not in sec]
        out["security"] = sec
    return out


def fix_ambiguous_oneof(node, where="", log=sys.stderr):
    """oneOf [{type: T}, {type: T, ...}] -> anyOf (see the module docstring)."""
    if isinstance(node, list):
        for i, x in enumerate(node):
            fix_ambiguous_oneof(x, f"{where}/{i}", log)
    elif isinstance(node, dict):
        branches = node.get("oneOf")
        if isinstance(branches, list):
            bare = {b.get("type") for b in branches if isinstance(b, dict) and b.get("type")
                    and not (set(b) - {"type", "description", "title"})}
            others = [b.get("type") for b in branches if isinstance(b, dict)
                      and (set(b) - {"type", "description", "title"})]
            if bare & set(others):
                node["anyOf"] = node.pop("oneOf")
                print(f"bundle_spec: oneOf -> anyOf at {where} (a bare {sorted(bare)} branch "
                      f"overlaps another branch)", file=log)
        for k, v in node.items():
            fix_ambiguous_oneof(v, f"{where}/{k}", log)


def read_op_list(path):
    ops = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            method, _, p = line.partition(" ")
            ops.add((method.strip().upper(), p.strip()))
    return ops


def bundle(spec_dir, base_url, only=None, exclude=None, drop_spaced=False, fix_oneof=False,
           log=sys.stderr):
    api_dir = os.path.join(spec_dir, "data", "api", "client-server")
    files = sorted(glob.glob(os.path.join(api_dir, "*.yaml")))
    if not files:
        raise SystemExit(f"no client-server YAML files under {api_dir}")
    b = Bundler()
    schemes = {}
    ops = {}        # (METHOD, full path) -> operation
    path_items = {}  # full path -> path-level keys (parameters, summary, ...)
    origin = {}
    spaced = []     # operations defined under a path key with a trailing space
    for f in files:
        doc = b.load(f)
        if not isinstance(doc, dict) or "paths" not in doc:
            continue
        try:
            base_path = doc["servers"][0]["variables"]["basePath"]["default"]
        except (KeyError, IndexError, TypeError):
            raise SystemExit(f"{f}: no servers[0].variables.basePath.default")
        for name, scheme in (doc.get("components", {}).get("securitySchemes") or {}).items():
            schemes.setdefault(name, b.inline(scheme, os.path.abspath(f)))
        for rel, item in (doc["paths"] or {}).items():
            full = base_path.rstrip("/") + rel.strip()
            item = b.inline(item, os.path.abspath(f))
            level = {k: v for k, v in item.items() if k not in HTTP_METHODS}
            for key, val in item.items():
                if key not in HTTP_METHODS:
                    continue
                val = dict(val)
                # Path-level parameters move into the operation (they may differ
                # between the two operations merged below).
                if level.get("parameters"):
                    names = {(p["in"], p["name"]) for p in val.get("parameters", [])}
                    val["parameters"] = val.get("parameters", []) + [
                        p for p in level["parameters"] if (p["in"], p["name"]) not in names]
                val.setdefault("tags", [os.path.splitext(os.path.basename(f))[0]])
                op = (key.upper(), full)
                where = f"{os.path.basename(f)}: {val.get('operationId')}"
                if rel != rel.rstrip():
                    spaced.append((op, val, where))
                    continue
                if op in ops:
                    raise SystemExit(f"{op[0]} {full} defined twice: {origin[op]} and {where}")
                ops[op] = val
                origin[op] = where
            path_items.setdefault(full, {}).update(
                {k: v for k, v in level.items() if k != "parameters"})
    dropped = []
    for op, val, where in spaced:
        if op not in ops:
            ops[op], origin[op] = val, where
        elif drop_spaced:
            dropped.append(f"{op[0]} {op[1]!r} ({where}): same path as {origin[op]}")
        else:
            ops[op] = merge_operations(ops[op], val)
            print(f"bundle_spec: merged {op[0]} {op[1]}: {origin[op]} + {where} "
                  f"(the spec's trailing-space path key)", file=log)
            origin[op] += " + " + where
    seen = set(ops)
    paths = {}
    for (method, full), val in sorted(ops.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if only is not None and (method, full) not in only:
            continue
        if exclude and (method, full) in exclude:
            continue
        paths.setdefault(full, dict(path_items.get(full, {})))[method.lower()] = val
    for d in dropped:
        print("bundle_spec: dropped " + d, file=log)
    if only is not None:
        unknown = sorted(only - set(seen))
        for m, p in unknown:
            print(f"bundle_spec: warning: {m} {p} from --only-implemented is not in the spec", file=log)
    # Only schemes referenced by some operation are needed; keep the access-token ones.
    out = {
        "openapi": "3.1.0",
        "info": {
            "title": "Matrix Client-Server API (bundled from matrix-spec for fuzzing)",
            "version": "1.0.0",
        },
        "servers": [{"url": base_url.rstrip("/")}],
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": schemes},
    }
    if b.components:
        out["components"]["schemas"] = b.components
    if fix_oneof:
        fix_ambiguous_oneof(out["paths"], "", log)
        fix_ambiguous_oneof(out["components"], "#/components", log)
    n_ops = sum(1 for item in paths.values() for k in item if k in HTTP_METHODS)
    print(f"bundle_spec: {n_ops} operations on {len(paths)} paths from {len(files)} files"
          f" ({len(b.components)} recursive schemas as components)", file=log)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec-dir", default=os.environ.get("MATRIX_SPEC_DIR") or default_spec_dir(),
                    help="folder holding data/api/client-server (default: $MATRIX_SPEC_DIR or fuzz/spec)")
    ap.add_argument("--base-url", default="http://127.0.0.1:8008",
                    help="server origin written to `servers` (paths already carry /_matrix/...)")
    ap.add_argument("--only-implemented", metavar="FILE",
                    help="keep only the operations listed (METHOD /full/path per line)")
    ap.add_argument("--exclude", metavar="FILE", help="drop the operations listed (same format)")
    ap.add_argument("--drop-spaced-duplicates", action="store_true",
                    help="drop the trailing-space duplicate operations instead of merging them")
    ap.add_argument("--fix-ambiguous-oneof", action="store_true",
                    help="oneOf -> anyOf where a bare {type: T} branch overlaps another branch")
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    args = ap.parse_args()
    only = read_op_list(args.only_implemented) if args.only_implemented else None
    exclude = read_op_list(args.exclude) if args.exclude else None
    out = bundle(args.spec_dir, args.base_url, only, exclude, args.drop_spaced_duplicates,
                 args.fix_ambiguous_oneof)
    text = json.dumps(out, indent=1, ensure_ascii=False) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
